"""Choosing the service's runtime by measurement: the fastest one that is exact (serve.py --runtime auto).

Which exported runtime is fastest depends on the model, the image size, the
CPU and the load (docs/benchmarks.md, "Deployment runtimes": OpenVINO was
1.1-1.6x onnxruntime on some models and runs and slower on others, and once
missed the exactness bar). So ``auto`` decides at start-up, on this machine,
for this export:

1. The export's ONNX graph is cut before its output op (``ArgMax`` /
   ``Softmax``), so every candidate is compared on the logits, where a
   rounding difference is visible before it flips a class.
2. The reference is onnxruntime with every graph optimisation off: the
   exported graph executed node by node, as written (no fused kernels).
3. Each installed candidate (onnxruntime with its optimisations, OpenVINO in
   float32) runs a probe batch (random inputs in the normalised range); it is
   exact when its logits are within :func:`rounding_bound` of the reference's
   and it picks the reference's class at every pixel where the reference's
   top-two margin exceeds twice that bound (closer pixels may flip by
   rounding alone).
4. The exact candidates are timed by :func:`time_candidates`, the one timing
   routine of the service and of the deploy benchmark (benchmarks/deployment.py):
   each timed call is what a request costs a service worker (the predictor the
   service builds, at the threads a worker gets, and its post-processing),
   made the way the service makes it: right after the same runtime's previous
   call, with no other runtime's threads still spinning on the cores. The
   fastest median wins; runtimes the rounds cannot tell from it (a one-sided
   sign test on the paired rounds, :func:`slower_beyond_noise`) are *within
   noise*, and among those ``auto`` takes the first in :data:`PREFERENCE`, so
   that repeated starts serve the same runtime when the measurement cannot
   order them. The choice with every candidate's figures is logged and reported
   in ``/metadata``. A candidate that fails to load or run is reported and skipped.

Paddle Inference (plain and with oneDNN) runs the export's Paddle program,
whose output is the export's (class indices for ``output_op: argmax``,
probabilities for ``softmax``): it is compared on what it returns. An export
without ``model.onnx`` has no reference graph to check against and is served
by plain Paddle Inference, as before.

The bound follows the probabilistic rounding model of tests/tolerance.py
(Higham & Mary, "A new approach to probabilistic rounding error analysis",
SIAM J. Sci. Comput. 41(5), 2019, Theorem 2.4): a sum of ``n`` float32
products carries at most ``lam * sqrt(n) * u`` of the terms' magnitude,
``depth`` accumulating layers on the path to an output add theirs, and two
implementations each carry one. ``depth`` and ``n`` are read from the graph.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: Unit roundoff of float32 (2^-24) and the tail factor of the bound (lam = 6: a rounding sum
#: exceeds it with probability below 1e-7 per term; Higham & Mary 2019).
UNIT_ROUNDOFF_F32 = 2.0 ** -24
LAMBDA = 6.0
#: Ops that sum products (their fan-in is the length of one sum).
ACCUMULATING = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "AveragePool", "GlobalAveragePool",
                "ReduceMean", "ReduceSum")
#: Ops between the logits and the exported output (deploy.yaml output_op argmax / softmax).
OUTPUT_OPS = ("ArgMax", "Softmax", "Cast", "Identity", "Unsqueeze", "Squeeze")
#: Pause before each candidate's calls in a round. A runtime's worker threads keep spinning after its
#: call returns (Paddle's Intel OpenMP for KMP_BLOCKTIME, 200 ms by default; OpenVINO's TBB and
#: onnxruntime's pool briefly), and a call made meanwhile by another runtime shares the cores with
#: them: up to 2-3x slower (benchmarks/timing_neighbours.py). The service runs one runtime, so it
#: never pays that; the measurement must not either.
SETTLE_S = 0.25
#: Which of the runtimes within noise of the fastest ``auto`` serves: onnxruntime first (its
#: unoptimised graph is the reference, and it is the smallest dependency), then OpenVINO, then
#: Paddle Inference with and without oneDNN. Runtimes not listed come after, by median.
PREFERENCE = ("onnx", "openvino", "paddle-mkldnn", "paddle")
#: Significance of :func:`slower_beyond_noise`.
NOISE_ALPHA = 0.05
#: Timed rounds of ``auto`` (serve.py --probe_rounds) and of the quick deploy benchmark, the same so
#: that both resolve the same differences. With 15 paired rounds the sign test calls a runtime slower
#: when it lost 12 of them; with 7 it must lose all 7, and a 6 % difference the table resolved was not.
PROBE_ROUNDS = 15

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Candidate:
    """One runtime's figures on the probe."""

    runtime: str
    exact: bool = False
    max_abs_diff: Optional[float] = None
    bound: Optional[float] = None
    argmax_agree: Optional[float] = None  # share of the probe's decided pixels with the reference's class
    ms: Optional[float] = None  # median timed call (run + post-processing), whole probe batch
    error: Optional[str] = None
    rounds_ms: Optional[List[float]] = None  # every timed call, in round order (paired across candidates)
    within_noise: Optional[bool] = None  # exact and not measurably slower than the fastest exact one


@dataclass
class RuntimeChoice:
    """What ``auto`` chose and why (serve.py's ``/metadata`` ``runtime_choice``)."""

    runtime: str
    reason: str
    reference: Optional[str] = None
    probe: Optional[List[int]] = None
    depth: Optional[int] = None
    fan_in: Optional[int] = None
    candidates: List[Candidate] = field(default_factory=list)
    workers: int = 1  # predictors timed at once (serve.py --workers)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def logits_graph(onnx_path: str) -> Tuple[Any, str]:
    """``(onnx.ModelProto, name)``: the export with its output replaced by the tensor its output ops
    (``OUTPUT_OPS``) start from, the logits."""
    import onnx

    model = onnx.load(onnx_path)
    producers = {out: node for node in model.graph.node for out in node.output}
    name = model.graph.output[0].name
    while name in producers and producers[name].op_type in OUTPUT_OPS:
        name = producers[name].input[0]
    if name != model.graph.output[0].name:
        del model.graph.output[:]
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return model, name


def graph_depth_and_fan_in(model: Any, spatial: int) -> Tuple[int, int]:
    """``(depth, fan_in)`` of an ONNX graph: the most accumulating ops on one path from an input to
    an output, and the longest sum any of them does (a convolution's ``C_in / groups * kh * kw``
    from its weight; ``spatial``, the probe's pixel count, for a sum whose length is not in the
    graph, such as an attention matmul over positions)."""
    from onnx import numpy_helper

    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            shapes[node.output[0]] = tuple(numpy_helper.to_array(node.attribute[0].t).shape)
    depth: Dict[str, int] = {}
    fan_in = 1
    for node in model.graph.node:  # ONNX nodes are topologically sorted
        if node.op_type == "Identity" and node.input[0] in shapes:  # paddle2onnx copies shared weights
            shapes[node.output[0]] = shapes[node.input[0]]
        d = max((depth.get(i, 0) for i in node.input if i), default=0)
        if node.op_type in ACCUMULATING:
            d += 1
            fan_in = max(fan_in, _fan_in(node, shapes, spatial))
        for out in node.output:
            depth[out] = d
    outputs = [o.name for o in model.graph.output]
    return max((depth.get(o, 0) for o in outputs), default=0), fan_in


def _fan_in(node: Any, shapes: Dict[str, tuple], spatial: int) -> int:
    weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if node.op_type in ("Conv", "ConvTranspose") and weight and len(weight) >= 2:
        per_out = weight[1] if node.op_type == "Conv" else weight[0]
        return int(per_out * int(np.prod(weight[2:])))
    if node.op_type in ("MatMul", "Gemm") and weight and len(weight) >= 2:
        return int(weight[-2])
    if node.op_type == "AveragePool":
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
        if kernel:
            return int(np.prod(kernel))
    return spatial


def rounding_bound(scale: float, fan_in: int, depth: int, implementations: int = 2) -> float:
    """Largest ``max |a - b|`` two float32 implementations of one network should show.

    Args:
        scale: magnitude of the compared values (``max |reference|``, at least 1).
        fan_in: the longest sum in one layer.
        depth: accumulating layers on the way to the compared values.
        implementations: each carries its own rounding.
    """
    per = LAMBDA * math.sqrt(max(1, depth) * max(1, fan_in)) * UNIT_ROUNDOFF_F32
    return implementations * per * max(1.0, float(scale))


def compare(reference: np.ndarray, got: np.ndarray, bound: float, kind: str = "logits"
            ) -> Tuple[bool, Optional[float], float]:
    """``(exact, max |diff|, argmax agreement)`` of a candidate's output against the reference logits
    ``[N, C, H, W]``.

    Args:
        reference: the reference logits.
        got: the candidate's output: ``logits`` (same shape), ``probs`` (softmax of the logits; its
            Jacobian's rows sum to at most 1/2 in absolute value, so ``bound`` covers them) or
            ``classes`` (``[N, H, W]`` or ``[N, 1, H, W]`` indices: only the classes are compared).
        bound: the logits' rounding bound (:func:`rounding_bound`).
        kind: which of the three ``got`` is.

    Agreement counts the pixels whose reference top-two margin exceeds ``2 * bound``: only there is a
    different class more than rounding.
    """
    top2 = np.sort(reference, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > 2 * bound
    want = reference.argmax(axis=1)
    if kind == "classes":
        classes = got.reshape(want.shape) if got.size == want.size else None
        if classes is None:
            return False, None, 0.0
        same = classes == want
        agree = float(same[decided].mean()) if decided.any() else 1.0
        return agree == 1.0, None, agree
    if kind == "probs":
        e = np.exp(reference - reference.max(axis=1, keepdims=True))
        reference = e / e.sum(axis=1, keepdims=True)
    if got.shape != reference.shape or not np.isfinite(got).all():
        return False, float("inf"), 0.0
    diff = float(np.abs(got.astype(np.float64) - reference).max())
    same = want == got.argmax(axis=1)
    agree = float(same[decided].mean()) if decided.any() else 1.0
    return diff <= bound and agree == 1.0, diff, agree


def time_candidates(runners: Dict[str, Runner], probe: np.ndarray, runs: int,
                    settle_s: float = SETTLE_S) -> Dict[str, List[float]]:
    """Milliseconds of ``runs`` timed calls of each runner on ``probe``, the same round index paired
    across runners: the timing routine of ``--runtime auto`` and of the deploy benchmark.

    A round calls every runner once, in an order rotated by one each round (so no runner always
    follows the same one). For each runner: a pause of ``settle_s`` (the previous runner's threads
    stop spinning), one untimed call (its own threads and caches as after the service's previous
    request), then the timed call. The garbage collector is off during the rounds (a collection
    would land on whichever call it interrupts).
    """
    import gc

    names = list(runners)
    times: Dict[str, List[float]] = {name: [] for name in names}
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(runs):
            shift = r % max(1, len(names))
            for name in names[shift:] + names[:shift]:
                time.sleep(settle_s)
                runners[name](probe)
                start = time.perf_counter()
                runners[name](probe)
                times[name].append(1e3 * (time.perf_counter() - start))
    finally:
        if enabled:
            gc.enable()
    return times


def slower_beyond_noise(slower: Sequence[float], faster: Sequence[float], alpha: float = NOISE_ALPHA) -> bool:
    """Whether ``slower`` took longer than ``faster`` in more of the paired rounds than chance allows.

    A one-sided sign test: were the two equally fast, each round would be a fair coin, and the
    chance of ``k`` or more slower rounds out of ``n`` is the binomial tail. It makes no assumption
    about the shape of the timing noise (a shared machine's is skewed), and pairing the rounds
    cancels load that changes between rounds. With 7 rounds only 7 of 7 counts; with 15, 12.
    """
    pairs = [(a, b) for a, b in zip(slower, faster) if a != b]
    n = len(pairs)
    k = sum(a > b for a, b in pairs)
    tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0 ** n if n else 1.0
    return tail < alpha


def rank(candidates: Sequence[Candidate], alpha: float = NOISE_ALPHA) -> Optional[Candidate]:
    """Mark each timed exact candidate ``within_noise`` of the fastest (lowest median) or not, and
    return the one ``auto`` serves: the first within noise in :data:`PREFERENCE` (None if none is
    timed)."""
    timed = [c for c in candidates if c.exact and c.rounds_ms]
    if not timed:
        return None
    fastest = min(timed, key=lambda c: c.ms)
    for c in timed:
        c.within_noise = c is fastest or not slower_beyond_noise(c.rounds_ms, fastest.rounds_ms, alpha)

    def order(c: Candidate) -> Tuple[int, float]:
        return (PREFERENCE.index(c.runtime) if c.runtime in PREFERENCE else len(PREFERENCE), c.ms)

    return min((c for c in timed if c.within_noise), key=order)


def choose(reference: Runner, candidates: Dict[str, Callable[[], Any]], probe: np.ndarray, depth: int,
           fan_in: int, runs: int = PROBE_ROUNDS, reference_name: str = "reference",
           kinds: Optional[Dict[str, str]] = None, settle_s: float = SETTLE_S,
           outputs: Optional[Dict[str, np.ndarray]] = None) -> RuntimeChoice:
    """The exact candidate to serve on ``probe``: the fastest, or the first in :data:`PREFERENCE` of
    those within noise of it (:func:`rank`).

    Args:
        reference: the reference logits of a batch.
        candidates: name -> a factory (called once; may raise) of the runtime's runner, or of a pair
            ``(timed, checked)``: the call a request costs, and the runner whose output is compared
            (the logits graph, where the served graph ends in an output op).
        probe: the input batch ``[N, C, H, W]``.
        depth, fan_in: the graph's, for :func:`rounding_bound`.
        runs: timed rounds (:func:`time_candidates`).
        reference_name: how the report names the reference.
        kinds: what each candidate's checked runner returns (:func:`compare`; default ``logits``).
        settle_s: :func:`time_candidates`' pause.
        outputs: if given, receives each loaded candidate's checked output.

    Raises:
        RuntimeError: no candidate is exact (every figure is in the message).
    """
    ref = np.asarray(reference(probe), dtype=np.float64)
    bound = rounding_bound(float(np.abs(ref).max()), fan_in, depth)
    report: List[Candidate] = []
    runners: Dict[str, Runner] = {}
    for name, factory in candidates.items():
        cand = Candidate(name, bound=bound)
        report.append(cand)
        try:
            made = factory()
            timed, checked = made if isinstance(made, tuple) else (made, made)
            got = np.asarray(checked(probe))  # the first calls also warm the runtime up
            if timed is not checked:
                timed(probe)
        except Exception as e:  # noqa: BLE001 - a runtime that cannot run this export is reported, not fatal
            cand.error = f"{type(e).__name__}: {e}"
            continue
        if outputs is not None:
            outputs[name] = got
        cand.exact, cand.max_abs_diff, cand.argmax_agree = compare(ref, got, bound, (kinds or {}).get(name, "logits"))
        if cand.exact:
            runners[name] = timed
    for name, ms in time_candidates(runners, probe, runs, settle_s).items():
        cand = next(c for c in report if c.runtime == name)
        cand.rounds_ms, cand.ms = ms, float(np.median(ms))
    choice = RuntimeChoice("", "", reference_name, list(probe.shape), depth, fan_in, report)
    best = rank(report)
    if best is None:
        def why(c: Candidate) -> str:
            return c.error or f"max |diff| {c.max_abs_diff} vs bound {c.bound:.3g}, argmax {c.argmax_agree:.4f}"

        raise RuntimeError("serve.py --runtime auto: no runtime is exact on this export: "
                           + "; ".join(f"{c.runtime}: {why(c)}" for c in report))
    fastest = min((c for c in report if c.exact), key=lambda c: c.ms)
    others = ", ".join(f"{c.runtime} {c.ms:.1f} ms{' (within noise)' if c.within_noise else ''}" if c.exact else
                       f"{c.runtime} {'failed' if c.error else 'not exact'}" for c in report if c is not best)
    how = ("fastest exact" if best is fastest else
           f"within noise of the fastest exact ({fastest.runtime}), first in the preference order "
           f"{', '.join(PREFERENCE)}")
    choice.runtime = best.runtime
    choice.reason = (f"{how} on a {'x'.join(map(str, probe.shape))} probe ({runs} rounds, median of each; "
                     f"within noise = not slower in more rounds than chance, sign test at {NOISE_ALPHA}): "
                     f"{best.runtime} {best.ms:.1f} ms{' (' + others + ')' if others else ''}; exact = logits "
                     f"within {bound:.3g} of {reference_name} (float32 rounding bound, depth {depth}, fan-in "
                     f"{fan_in}) and the same class wherever the margin exceeds twice that")
    return choice


def probe_batch(channels: int, side: int, batch: int, seed: int = 0) -> np.ndarray:
    """A normalised-range random input ``[batch, channels, side, side]`` (what Normalize outputs)."""
    return np.random.RandomState(seed).standard_normal((batch, channels, side, side)).astype(np.float32)


class SideWorker:
    """One long-lived thread that runs ``call(x)`` whenever :meth:`start` hands it an input, as a service
    worker runs its predictor: the same thread for every call (Paddle Inference, oneDNN and OpenMP keep
    state per thread, so a new thread per call is not how the service runs them)."""

    def __init__(self, call: Callable[[np.ndarray], Any]) -> None:
        import queue

        self._call = call
        self._inbox: "queue.Queue[Optional[np.ndarray]]" = queue.Queue()
        self._done: "queue.Queue[Optional[BaseException]]" = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="auto-side-worker", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            x = self._inbox.get()
            if x is None:
                return
            try:
                self._call(x)
                self._done.put(None)
            except BaseException as e:  # noqa: BLE001 - handed to the caller of wait()
                self._done.put(e)

    def start(self, x: np.ndarray) -> None:
        self._inbox.put(x)

    def wait(self) -> None:
        error = self._done.get()
        if error is not None:
            raise error

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join()


def auto_runtime(cfg: Any, threads: int, side: int = 64, batch: int = 1, runs: int = PROBE_ROUNDS,
                 runtimes: Sequence[str] = ("onnx", "openvino", "paddle", "paddle-mkldnn"),
                 settle_s: float = SETTLE_S, outputs: Optional[Dict[str, np.ndarray]] = None,
                 workers: int = 1) -> RuntimeChoice:
    """``auto`` for a deploy config: see the module's docstring.

    Args:
        cfg: the :class:`infer.DeployConfig`.
        threads: threads per predictor (what a service worker gets).
        side: the probe's height and width.
        batch: the probe's batch (the service's micro-batch).
        runs: timed rounds (:func:`time_candidates`).
        runtimes: the candidates considered, those installed are probed.
        settle_s: :func:`time_candidates`' pause.
        outputs: if given, receives each candidate's checked output (the ONNX runtimes' logits; Paddle
            Inference's the export's own output).
        workers: predictors timed at once, each on the probe in its own thread (the service's
            ``--workers``): a runtime whose predictors do not run side by side is charged for it
            (measured: two OpenVINO predictors pinned to the same cores ran 0.96x one's images/s,
            before infer_openvino stopped pinning predictors that share the cores; 1.69x after;
            benchmarks/serve_concurrency.py).
    """
    import copy

    if not (cfg.onnx_file and os.path.isfile(cfg.onnx_file)):
        return RuntimeChoice("paddle", "the export has no ONNX model: Paddle Inference is the only runtime")
    try:
        import onnxruntime as ort
    except ImportError:
        return RuntimeChoice("paddle", "onnxruntime is not installed: no reference to check other runtimes "
                                       "against; Paddle Inference (pip install onnxruntime for auto's choice)")
    model, logits_name = logits_graph(cfg.onnx_file)
    probe = probe_batch(cfg.transforms.img_channels, side, batch)
    depth, fan_in = graph_depth_and_fan_in(model, side * side)
    with tempfile.TemporaryDirectory(prefix="serve_auto_") as tmp:
        path = os.path.join(tmp, "logits.onnx")
        import onnx

        onnx.save(model, path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        probe_cfg = copy.copy(cfg)
        probe_cfg.onnx_file = path
        # the graph was cut where an output op (still in the graph, unused) reads the logits
        cut = any(logits_name in n.input and n.op_type in OUTPUT_OPS for n in model.graph.node)

        paddle_kind = {"argmax": "classes", "softmax": "probs"}.get(cfg.output_op, "logits")
        kinds = {r: paddle_kind if r.startswith("paddle") else "logits" for r in runtimes}

        def factory(runtime: str) -> Callable[[], Tuple[Runner, Runner]]:
            def make() -> Tuple[Runner, Runner]:
                from serve import make_predictor_for

                # Timed: the predictor the service builds, and the post-processing its answer needs
                # (a class map from logits or probabilities costs an argmax the ArgMax export spares).
                served = make_predictor_for(cfg, runtime, threads)
                others = [make_predictor_for(cfg, runtime, threads) for _ in range(workers - 1)]

                def answer(predictor: Any, x: np.ndarray) -> List[np.ndarray]:
                    return [predictor.postprocess(o, []) for o in predictor.run(x)]

                side = [SideWorker(lambda x, p=p: answer(p, x)) for p in others]
                sides.extend(side)

                def request(x: np.ndarray) -> List[np.ndarray]:
                    # The other workers' requests at the same time, as under load.
                    for w in side:
                        w.start(x)
                    out = answer(served, x)
                    for w in side:
                        w.wait()
                    return out

                # Checked: the ONNX runtimes on the logits graph, Paddle Inference on its own program.
                if runtime.startswith("paddle") or not cut:
                    return request, served.run
                return request, make_predictor_for(probe_cfg, runtime, threads).run
            return make

        sides: List[SideWorker] = []
        try:
            choice = choose(lambda x: session.run(None, {name: x})[0], {r: factory(r) for r in runtimes}, probe,
                            depth, fan_in, runs, "onnxruntime with graph optimisations off", kinds, settle_s,
                            outputs)
        finally:
            for w in sides:
                w.stop()
    if workers > 1:
        choice.workers = workers
        choice.reason += f"; each call timed with {workers} predictors running it at once (the service's workers)"
    return choice
