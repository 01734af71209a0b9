"""serve.py --runtime auto (deploy/python/serve_runtime.py): the fastest exact runtime, checked and reported.

The choice itself is timing (never asserted); what is tested is that only exact candidates can be
chosen, that the one chosen is the first in the preference order of those the reported rounds
cannot tell from the fastest, that the noise test orders only what the rounds show, that a runtime off by more than
float32 rounding (a perturbed candidate, standing in for bfloat16 or a wrong kernel) is refused
however fast it is, and that the bound is the one the graph's depth and fan-in give.
"""

import os
import sys
import threading
import time

import numpy as np
import pytest

from serve_helpers import ROOT, export_tiny

sys.path.insert(0, os.path.join(ROOT, "deploy", "python"))

import serve_runtime  # noqa: E402

pytest.importorskip("onnxruntime")
pytest.importorskip("paddle2onnx")


def _reference(x):
    """A stand-in network: 4 classes, logits of scale ~10 from a fixed mix of the bands."""
    w = np.linspace(-3.0, 3.0, 4 * x.shape[1]).reshape(4, x.shape[1]).astype(np.float32)
    return np.einsum("kc,nchw->nkhw", w, x)


PROBE = serve_runtime.probe_batch(3, 8, 2)
DEPTH, FAN_IN = 20, 1000


def _slow(run, ms):
    def timed(x):
        time.sleep(ms / 1e3)
        return run(x)
    return timed


def test_a_perturbed_runtime_is_never_picked_however_fast():
    bound = serve_runtime.rounding_bound(np.abs(_reference(PROBE)).max(), FAN_IN, DEPTH)
    rel = bound / np.abs(_reference(PROBE)).max()
    candidates = {
        # off by 1 % of the logits (bfloat16's order): far outside float32 rounding, and the fastest
        "perturbed": lambda: (lambda x: _reference(x) * 1.01),
        # off by a few float32 ulp: what a runtime summing in another order gives
        "rounding": lambda: _slow(lambda x: _reference(x) * (1 + 4 * 2.0 ** -24), 5),
        "slow exact": lambda: _slow(_reference, 30),
        "broken": lambda: (_ for _ in ()).throw(RuntimeError("cannot load the model")),
    }
    choice = serve_runtime.choose(_reference, candidates, PROBE, DEPTH, FAN_IN, runs=5, settle_s=0)
    by = {c.runtime: c for c in choice.candidates}
    assert choice.runtime == "rounding"
    # 25 ms slower in each of 5 paired rounds: beyond noise (a fair coin gives 5 of 5 with p = 1/32)
    assert by["rounding"].within_noise and by["slow exact"].within_noise is False
    assert len(by["rounding"].rounds_ms) == 5 and by["rounding"].ms == np.median(by["rounding"].rounds_ms)
    assert not by["perturbed"].exact and by["perturbed"].max_abs_diff > bound and by["perturbed"].ms is None
    assert by["rounding"].exact and by["rounding"].max_abs_diff <= bound and by["rounding"].argmax_agree == 1.0
    assert by["slow exact"].exact and by["slow exact"].ms > by["rounding"].ms
    assert by["broken"].error == "RuntimeError: cannot load the model" and not by["broken"].exact
    assert "perturbed not exact" in choice.reason and "broken failed" in choice.reason
    assert 1e-5 < rel < 1e-2  # the bound sits between float32 rounding and a real error


def test_no_exact_runtime_is_one_clear_error():
    with pytest.raises(RuntimeError, match=r"no runtime is exact on this export: a: max \|diff\| .* vs bound"):
        serve_runtime.choose(_reference, {"a": lambda: (lambda x: -_reference(x))}, PROBE, DEPTH, FAN_IN, runs=1,
                             settle_s=0)


def test_classes_are_compared_where_the_margin_decides():
    ref = _reference(PROBE)
    bound = serve_runtime.rounding_bound(np.abs(ref).max(), FAN_IN, DEPTH)
    classes = ref.argmax(axis=1).astype(np.int32)
    assert serve_runtime.compare(ref, classes, bound, "classes") == (True, None, 1.0)
    top2 = np.sort(ref, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    flipped = classes.copy()
    decided = np.argwhere(margin > 2 * bound)[0]
    flipped[tuple(decided)] = (flipped[tuple(decided)] + 1) % 4
    exact, _, agree = serve_runtime.compare(ref, flipped, bound, "classes")
    assert not exact and agree < 1.0
    # a pixel whose two best logits are within rounding may go either way
    tie = ref.copy()
    n, h, w = tuple(decided)
    best = tie[n, :, h, w].argmax()
    tie[n, (best + 1) % 4, h, w] = tie[n, best, h, w] - bound / 2
    other = tie.argmax(axis=1)
    other[n, h, w] = (best + 1) % 4
    assert serve_runtime.compare(tie, other, bound, "classes")[0]
    # probabilities: the softmax of the logits, within the same bound
    e = np.exp(ref - ref.max(axis=1, keepdims=True))
    probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    assert serve_runtime.compare(ref, probs, bound, "probs")[0]
    assert not serve_runtime.compare(ref, np.roll(probs, 1, axis=1), bound, "probs")[0]


def test_auto_on_an_export_picks_an_exact_runtime_and_derives_its_bound(tmp_path):
    import onnx

    import serve
    from infer import DeployConfig

    config = export_tiny(tmp_path, "auto", onnx=True)
    cfg = DeployConfig(config)
    choice = serve.pick_runtime(cfg, "auto", threads=1, side=32)
    exact = [c for c in choice.candidates if c.exact]
    tied = [c.runtime for c in exact if c.within_noise]
    assert exact and min(exact, key=lambda c: c.ms).runtime in tied
    # the first within noise of the fastest, in the preference order
    assert choice.runtime == min(tied, key=serve_runtime.PREFERENCE.index)
    assert {c.runtime for c in choice.candidates} == {"onnx", "openvino", "paddle", "paddle-mkldnn"}
    for c in choice.candidates:  # every installed runtime runs this export exactly
        if c.error is None:
            assert c.exact and c.argmax_agree == 1.0, c
    assert choice.probe == [1, 3, 32, 32]
    # the bound's terms come from the graph: the longest convolution sum and the accumulating depth
    model = onnx.load(cfg.onnx_file)
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:  # paddle2onnx stores weights as Constant nodes (and Identity copies)
        if n.op_type == "Constant":
            weights[n.output[0]] = tuple(n.attribute[0].t.dims)
        if n.op_type == "Identity" and n.input[0] in weights:
            weights[n.output[0]] = weights[n.input[0]]
    conv_fan_in = max(weights[n.input[1]][1] * weights[n.input[1]][2] * weights[n.input[1]][3]
                      for n in model.graph.node if n.op_type == "Conv")
    assert choice.fan_in == max(conv_fan_in, 32 * 32)  # or the probe's pixels, for a sum over positions
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert 1 <= choice.depth <= convs + sum(n.op_type in ("MatMul", "Gemm") for n in model.graph.node)
    logits, name = serve_runtime.logits_graph(cfg.onnx_file)
    assert name != model.graph.output[0].name and logits.graph.output[0].name == name
    # explicit runtimes are taken as given, and say so
    assert serve.pick_runtime(cfg, "onnx").reason == "--runtime onnx (given)"


def test_an_export_without_onnx_is_served_by_paddle_inference(tmp_path):
    import serve
    from infer import DeployConfig

    choice = serve.pick_runtime(DeployConfig(export_tiny(tmp_path, "p")), "auto")
    assert choice.runtime == "paddle" and "no ONNX model" in choice.reason and choice.candidates == []


def test_noise_test_orders_only_what_the_paired_rounds_show():
    slower = serve_runtime.slower_beyond_noise
    assert slower([2.0] * 7, [1.0] * 7)  # 7 of 7: p = 1/128
    assert not slower([2.0] * 6 + [0.5], [1.0] * 7)  # 6 of 7: p = 8/128
    assert slower([2.0] * 12 + [0.5] * 3, [1.0] * 15)  # 12 of 15: p = 0.018
    assert not slower([2.0] * 11 + [0.5] * 4, [1.0] * 15)  # 11 of 15: p = 0.059
    assert not slower([1.0] * 7, [1.0] * 7) and not slower([], [])
    # a large but inconsistent gap is noise; a small consistent one is not
    assert not slower([50.0, 1.0, 50.0, 1.0, 50.0], [2.0] * 5)
    assert slower([1.01] * 7, [1.0] * 7)


def test_auto_takes_the_preferred_runtime_among_those_within_noise():
    C = serve_runtime.Candidate
    tied = [C("paddle-mkldnn", exact=True, rounds_ms=[10, 14, 10, 14, 10]),
            C("onnx", exact=True, rounds_ms=[12, 11, 12, 11, 12]),
            C("paddle", exact=True, rounds_ms=[30] * 5),
            C("openvino", exact=False, rounds_ms=None)]
    for c in tied:
        c.ms = float(np.median(c.rounds_ms)) if c.rounds_ms else None
    best = serve_runtime.rank(tied)
    assert best.runtime == "onnx"  # second by median, but the rounds cannot order it and paddle-mkldnn
    assert [c.within_noise for c in tied] == [True, True, False, None]
    clear = [C("paddle-mkldnn", exact=True, rounds_ms=[10.0] * 5, ms=10.0),
             C("onnx", exact=True, rounds_ms=[12.0] * 5, ms=12.0)]
    assert serve_runtime.rank(clear).runtime == "paddle-mkldnn" and clear[1].within_noise is False


def test_each_timed_call_follows_its_own_untimed_call_in_rotating_order():
    calls = []

    def runner(name):
        return lambda x: calls.append(name)

    times = serve_runtime.time_candidates({k: runner(k) for k in "abc"}, PROBE, runs=3, settle_s=0)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert "".join(calls) == "aabbcc" + "bbccaa" + "ccaabb"


def test_auto_probes_at_the_batch_the_workers_run_and_a_fixed_batch_is_kept(tmp_path, monkeypatch):
    """``auto`` times calls of ``--probe_batch`` images (at most ``--max_batch``) with ``--workers``
    predictors at once; an export that fixes the batch at 1 is probed and served one image per call, and
    one that fixes a larger batch is refused at start-up with a message (a lone request could not run)."""
    import yaml

    import serve

    config = export_tiny(tmp_path, "batch", onnx=True)
    seen = []

    def fake_auto(cfg, threads, side, batch=1, runs=0, workers=1, **_):
        seen.append((batch, workers))
        return serve_runtime.RuntimeChoice("onnx", "measured elsewhere")

    monkeypatch.setattr(serve, "auto_runtime", fake_auto)

    def start(*extra):
        _, pool, _ = serve.load(serve.build_parser().parse_args(["--config", config, *extra]))
        pool.close()
        return pool

    start()
    assert seen[-1] == (serve.DEFAULT_PROBE_BATCH, serve.DEFAULT_WORKERS) == (4, 2)
    start("--max_batch", "2", "--workers", "1")
    assert seen[-1] == (2, 1)
    start("--probe_batch", "1")
    assert seen[-1][0] == 1
    with pytest.raises(ValueError, match="--probe_batch must be > 0"):
        start("--probe_batch", "0")

    doc = yaml.safe_load(open(config))
    doc["Deploy"]["input_shape"][0] = 1
    yaml.safe_dump(doc, open(config, "w"))
    assert start().max_batch == 1 and seen[-1][0] == 1
    doc["Deploy"]["input_shape"][0] = 4
    yaml.safe_dump(doc, open(config, "w"))
    with pytest.raises(ValueError, match="fixes the batch size at 4"):
        start()


def test_side_workers_call_on_one_long_lived_thread_and_report_errors():
    """``auto``'s other workers run every timed call on the same thread, as a service worker does, and an
    error in a side call reaches the caller."""
    seen = []

    def call(x):
        seen.append(threading.get_ident())
        if x[0] < 0:
            raise ValueError("side call failed")

    worker = serve_runtime.SideWorker(call)
    try:
        for _ in range(3):
            worker.start(np.ones(1))
            worker.wait()
        assert len(seen) == 3 and len(set(seen)) == 1 and seen[0] != threading.get_ident()
        worker.start(-np.ones(1))
        with pytest.raises(ValueError, match="side call failed"):
            worker.wait()
    finally:
        worker.stop()
    assert not worker._thread.is_alive()
