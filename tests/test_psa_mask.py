"""Tests of the PSA mask op (PSANet, Zhao et al., ECCV 2018,
https://hszhao.github.io/papers/eccv18_psanet.pdf).

The oracle is an independent numpy implementation written straight from the
formulas. Both the compiled op and the pure-Paddle reference must match it
exactly (max abs diff 0), forward and backward.

The compiled op is built once per session into the op cache
(``$PADDLESEG_EXT_OP_CACHE`` or ``~/.cache/paddleseg_ext/ops``); later runs
reuse it.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Keep the op modest on a shared machine (read per call by the kernels).
os.environ.setdefault("PADDLESEG_EXT_OP_THREADS", "2")

import paddle  # noqa: E402

from paddleseg_ext.ops import (  # noqa: E402
    is_compiled_op_available,
    load_op_library,
    psa_mask,
    psa_mask_reference,
)
import tolerance as tol  # noqa: E402

psa_module = importlib.import_module("paddleseg_ext.ops.psa_mask")

COLLECT, DISTRIBUTE = 0, 1

# ----------------------------------------------------------------------------
# Independent numpy oracle
# ----------------------------------------------------------------------------


def np_psa_mask_loops(x: np.ndarray, psa_type: int, mh: int, mw: int) -> np.ndarray:
    """Forward, one scalar at a time, exactly as the formulas read."""
    n, c, h_, w_ = x.shape
    assert c == mh * mw
    hh, hw = (mh - 1) // 2, (mw - 1) // 2
    y = np.zeros((n, h_ * w_, h_, w_), dtype=x.dtype)
    for b in range(n):
        for h in range(h_):
            for w in range(w_):
                for i in range(mh):
                    for j in range(mw):
                        th, tw = h + i - hh, w + j - hw
                        if not (0 <= th < h_ and 0 <= tw < w_):
                            continue
                        if psa_type == COLLECT:
                            y[b, th * w_ + tw, h, w] = x[b, i * mw + j, h, w]
                        else:
                            y[b, h * w_ + w, th, tw] = x[b, i * mw + j, h, w]
    return y


def _cell_positions(h_: int, w_: int, mh: int, mw: int, i: int, j: int):
    """Positions (h, w) whose cell (i, j) lands inside the map, as index grids."""
    hh, hw = (mh - 1) // 2, (mw - 1) // 2
    hs = np.arange(max(0, hh - i), min(h_, h_ + hh - i))
    ws = np.arange(max(0, hw - j), min(w_, w_ + hw - j))
    return hs[:, None], ws[None, :], hs[:, None] + i - hh, ws[None, :] + j - hw


def np_psa_mask(x: np.ndarray, psa_type: int, mh: int, mw: int) -> np.ndarray:
    """Forward, looping over mask cells and vectorised over positions."""
    n, c, h_, w_ = x.shape
    assert c == mh * mw
    y = np.zeros((n, h_ * w_, h_, w_), dtype=x.dtype)
    for i in range(mh):
        for j in range(mw):
            h, w, th, tw = _cell_positions(h_, w_, mh, mw, i, j)
            if h.size == 0 or w.size == 0:
                continue
            src = x[:, i * mw + j, h, w]
            if psa_type == COLLECT:
                y[:, th * w_ + tw, h, w] = src
            else:
                y[:, h * w_ + w, th, tw] = src
    return y


def np_psa_mask_grad(dy: np.ndarray, psa_type: int, mh: int, mw: int) -> np.ndarray:
    """Backward: dx[n, i*mw+j, h, w] = the dy entry the forward wrote, else 0."""
    n, _, h_, w_ = dy.shape
    dx = np.zeros((n, mh * mw, h_, w_), dtype=dy.dtype)
    for i in range(mh):
        for j in range(mw):
            h, w, th, tw = _cell_positions(h_, w_, mh, mw, i, j)
            if h.size == 0 or w.size == 0:
                continue
            if psa_type == COLLECT:
                dx[:, i * mw + j, h, w] = dy[:, th * w_ + tw, h, w]
            else:
                dx[:, i * mw + j, h, w] = dy[:, h * w_ + w, th, tw]
    return dx


# (id, N, H, W, mask_h, mask_w)
CASES = [
    ("full", 2, 5, 7, 9, 13),  # window covers the whole map from everywhere
    ("partial", 2, 5, 7, 5, 7),
    ("even", 2, 5, 7, 4, 6),  # lopsided window
    ("oversized", 2, 5, 7, 11, 15),  # larger than 2H-1 x 2W-1
    ("one", 2, 5, 7, 1, 1),  # pure diagonal
    ("even66", 1, 40, 40, 66, 66),  # mmseg ADE20K mask on a 40x40 map
]
CASE_IDS = [c[0] for c in CASES]
TYPES = [COLLECT, DISTRIBUTE]


def _rand(shape, dtype="float32", seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _fwd_bwd(fn, x_np: np.ndarray, dy_np: np.ndarray):
    x = paddle.to_tensor(x_np, stop_gradient=False)
    y = fn(x)
    (dx,) = paddle.grad([y], [x], [paddle.to_tensor(dy_np)])
    return y.numpy(), dx.numpy()


@pytest.fixture(scope="session")
def op_module():
    """The compiled op, built (once) into the op cache if needed."""
    try:
        module, _ = load_op_library(build=True)
    except RuntimeError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"could not build the compiled psa_mask op: {exc}")
    return module


@pytest.fixture
def op_unavailable(monkeypatch):
    """Simulate a machine where the op can be neither loaded nor built."""

    def fail(*args, **kwargs):
        raise RuntimeError("simulated: no C++ compiler")

    monkeypatch.setattr(psa_module._OP, "state", psa_module._OP.fresh_state())
    monkeypatch.setattr(psa_module._OP, "load_or_build", fail)
    monkeypatch.delenv("PADDLESEG_EXT_PSA_IMPL", raising=False)


# ----------------------------------------------------------------------------
# The oracle itself
# ----------------------------------------------------------------------------


def test_oracle_hand_example():
    # 3x3 mask on a 2x2 map, collect: position (0,0) cell (1,1) is the centre.
    x = np.arange(9 * 4, dtype="float64").reshape(1, 9, 2, 2)
    y = np_psa_mask_loops(x, COLLECT, 3, 3)
    # y[th*W+tw, h, w] = x[(th-h+1)*3 + (tw-w+1), h, w]
    assert y[0, 0, 0, 0] == x[0, 4, 0, 0]  # target (0,0) from (0,0): centre
    assert y[0, 1, 0, 0] == x[0, 5, 0, 0]  # target (0,1) from (0,0): right
    assert y[0, 3, 0, 0] == x[0, 8, 0, 0]  # target (1,1) from (0,0): down-right
    assert y[0, 0, 1, 1] == x[0, 0, 1, 1]  # target (0,0) from (1,1): up-left
    # A 3x3 window on a 2x2 map reaches every target from every source, and
    # the only zero of x (cell (0,0) at (0,0)) points off the map.
    assert np.count_nonzero(y) == 16
    # distribute is the transpose on the [HW, HW] view
    yd = np_psa_mask_loops(x, DISTRIBUTE, 3, 3)
    np.testing.assert_array_equal(yd.reshape(4, 4), y.reshape(4, 4).T)


def test_oracle_even_mask_is_lopsided():
    # 2x2 mask: hh = hw = 0, so cell (0,0) is the position itself and the
    # window reaches down-right only.
    x = np.arange(1, 4 * 4 + 1, dtype="float64").reshape(1, 4, 2, 2)
    y = np_psa_mask_loops(x, COLLECT, 2, 2)
    assert y[0, 0, 0, 0] == x[0, 0, 0, 0]  # (0,0) -> itself
    assert y[0, 3, 0, 0] == x[0, 3, 0, 0]  # (0,0), cell (1,1) -> (1,1)
    assert y[0, 3, 1, 1] == x[0, 0, 1, 1]  # (1,1), cell (0,0) -> itself
    assert y[0, :, 1, 1].tolist() == [0, 0, 0, x[0, 0, 1, 1]]  # nothing up-left


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "even66"], ids=CASE_IDS[:-1])
@pytest.mark.parametrize("psa_type", TYPES)
def test_oracle_vectorised_equals_loops(case, psa_type):
    _, n, h, w, mh, mw = case
    x = _rand((n, mh * mw, h, w), "float64")
    np.testing.assert_array_equal(np_psa_mask(x, psa_type, mh, mw),
                                  np_psa_mask_loops(x, psa_type, mh, mw))


# ----------------------------------------------------------------------------
# Compiled op and pure-Paddle reference against the oracle
# ----------------------------------------------------------------------------


def _check_exact(fn, case, psa_type, dtype):
    _, n, h, w, mh, mw = case
    x = _rand((n, mh * mw, h, w), dtype, seed=1)
    dy = _rand((n, h * w, h, w), dtype, seed=2)
    y, dx = _fwd_bwd(fn, x, dy)
    assert y.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    assert y.shape == (n, h * w, h, w) and dx.shape == x.shape
    assert np.abs(y - np_psa_mask(x, psa_type, mh, mw)).max() == 0
    assert np.abs(dx - np_psa_mask_grad(dy, psa_type, mh, mw)).max() == 0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("psa_type", TYPES)
@pytest.mark.parametrize("kernel", ["blocked", "elementwise"])
def test_op_matches_oracle(op_module, monkeypatch, kernel, case, psa_type):
    # "elementwise" runs the CUDA kernels' per-element map (map_x_to_y) on CPU.
    monkeypatch.setenv("PSA_MASK_CPU_KERNEL", kernel)
    _check_exact(lambda x: psa_mask(x, psa_type, case[4:], impl="op"), case, psa_type, "float32")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("psa_type", TYPES)
def test_reference_matches_oracle(case, psa_type):
    _check_exact(lambda x: psa_mask_reference(x, psa_type, case[4:]), case, psa_type, "float32")


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3]], ids=["full", "even", "oversized"])
@pytest.mark.parametrize("psa_type", TYPES)
def test_float64_exact(op_module, case, psa_type):
    _check_exact(lambda x: psa_mask(x, psa_type, case[4:], impl="op"), case, psa_type, "float64")
    _check_exact(lambda x: psa_mask_reference(x, psa_type, case[4:]), case, psa_type, "float64")


def test_string_types_and_square_mask(op_module):
    x = paddle.to_tensor(_rand((1, 9, 4, 5)))
    for impl in ("op", "paddle"):
        a = psa_mask(x, "collect", 3, impl=impl).numpy()
        b = psa_mask(x, "Distribute", (3, 3), impl=impl).numpy()
        np.testing.assert_array_equal(a, np_psa_mask(x.numpy(), COLLECT, 3, 3))
        np.testing.assert_array_equal(b, np_psa_mask(x.numpy(), DISTRIBUTE, 3, 3))


def test_concurrent_callers(op_module, monkeypatch):
    # Two Python threads share the op's helper pool; both must get exact
    # results (one of them runs on its own thread while the pool is busy).
    import threading

    monkeypatch.setenv("PADDLESEG_EXT_OP_THREADS", "2")
    # x has > 2^16 elements, so each call uses the helper pool.
    x = paddle.to_tensor(_rand((1, 256, 20, 20), seed=12))
    expected = np_psa_mask(x.numpy(), DISTRIBUTE, 16, 16)
    failures = []

    def worker():
        for _ in range(5):
            y = psa_mask(x, "distribute", (16, 16), impl="op").numpy()
            if not np.array_equal(y, expected):
                failures.append(1)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures and not any(t.is_alive() for t in threads)


def test_thread_count_does_not_change_result(op_module, monkeypatch):
    _, n, h, w, mh, mw = CASES[-1]  # large enough to run multi-threaded
    x = paddle.to_tensor(_rand((n, mh * mw, h, w), seed=3))
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("PADDLESEG_EXT_OP_THREADS", threads)
        results.append(psa_mask(x, "collect", (mh, mw), impl="op").numpy())
    np.testing.assert_array_equal(results[0], results[1])


# ----------------------------------------------------------------------------
# Algebraic properties
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["op", "paddle"])
@pytest.mark.parametrize("case", CASES[:5], ids=CASE_IDS[:5])
def test_distribute_is_collect_transposed(op_module, impl, case):
    _, n, h, w, mh, mw = case
    x = paddle.to_tensor(_rand((n, mh * mw, h, w)))
    c = psa_mask(x, "collect", (mh, mw), impl=impl).numpy().reshape(n, h * w, h * w)
    d = psa_mask(x, "distribute", (mh, mw), impl=impl).numpy().reshape(n, h * w, h * w)
    np.testing.assert_array_equal(d, c.transpose(0, 2, 1))


@pytest.mark.parametrize("impl", ["op", "paddle"])
@pytest.mark.parametrize("psa_type", TYPES)
@pytest.mark.parametrize("case", CASES[:5], ids=CASE_IDS[:5])
def test_adjoint_identity(op_module, impl, psa_type, case):
    # <op(X), G> == <X, op^T(G)>: the backward is the adjoint of the forward.
    _, n, h, w, mh, mw = case
    x_np = _rand((n, mh * mw, h, w), "float64", seed=4)
    g_np = _rand((n, h * w, h, w), "float64", seed=5)
    y, dx = _fwd_bwd(lambda x: psa_mask(x, psa_type, (mh, mw), impl=impl), x_np, g_np)
    lhs, rhs = np.vdot(y, g_np), np.vdot(x_np, dx)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def _written_mask(psa_type, h, w, mh, mw):
    """Output entries the forward writes (distinct nonzero source per entry)."""
    ids = np.arange(1, mh * mw * h * w + 1, dtype="float64").reshape(1, mh * mw, h, w)
    return np_psa_mask(ids, psa_type, mh, mw) != 0


@pytest.mark.parametrize("impl", ["op", "paddle"])
@pytest.mark.parametrize("psa_type", TYPES)
@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[3]], ids=["partial", "even", "oversized"])
def test_nan_poison_never_leaks(op_module, impl, psa_type, case):
    _, n, h, w, mh, mw = case
    fn = lambda x: psa_mask(x, psa_type, (mh, mw), impl=impl)  # noqa: E731
    written = np.broadcast_to(_written_mask(psa_type, h, w, mh, mw), (n, h * w, h, w))
    # Forward: NaN in input cells whose target is off the map must not leak.
    used_x = np_psa_mask_grad(written.astype("float32"), psa_type, mh, mw) != 0
    x_np = _rand((n, mh * mw, h, w), seed=6)
    x_np[~used_x] = np.nan
    with paddle.no_grad():
        y = fn(paddle.to_tensor(x_np)).numpy()
    assert not np.isnan(y).any()
    assert (y[~written] == 0).all()
    # Backward: NaN in dy entries the forward never wrote must not reach dx;
    # twice with different values, to prove dx is zeroed, not stale memory.
    for seed in (7, 8):
        dy = _rand((n, h * w, h, w), seed=seed)
        dy[~written] = np.nan
        _, dx = _fwd_bwd(fn, _rand((n, mh * mw, h, w), seed=seed), dy)
        assert not np.isnan(dx).any()
        np.testing.assert_array_equal(dx, np_psa_mask_grad(np.nan_to_num(dy, nan=0.0), psa_type, mh, mw))


@pytest.mark.parametrize("impl", ["op", "paddle"])
@pytest.mark.parametrize("psa_type", TYPES)
def test_finite_difference_gradient(op_module, impl, psa_type):
    # L = sum(R * bmm(F, softmax(op(X)))): the PSANet attention aggregation.
    n, h, w, mh, mw, cf = 1, 3, 4, 3, 5, 2
    rng = np.random.default_rng(9)
    x_np = rng.standard_normal((n, mh * mw, h, w))
    f = paddle.to_tensor(rng.standard_normal((n, cf, h * w)))
    r = paddle.to_tensor(rng.standard_normal((n, cf, h * w)))

    def loss(x: paddle.Tensor) -> paddle.Tensor:
        att = psa_mask(x, psa_type, (mh, mw), impl=impl).reshape([n, h * w, h * w])
        return (r * paddle.bmm(f, paddle.nn.functional.softmax(att, axis=1))).sum()

    x = paddle.to_tensor(x_np, stop_gradient=False)
    (grad,) = paddle.grad([loss(x)], [x])
    grad = grad.numpy()
    eps = 1e-6
    flat_idx = rng.choice(x_np.size, size=25, replace=False)
    for k in flat_idx:
        idx = np.unravel_index(k, x_np.shape)
        xp, xm = x_np.copy(), x_np.copy()
        xp[idx] += eps
        xm[idx] -= eps
        with paddle.no_grad():
            num = (loss(paddle.to_tensor(xp)).item() - loss(paddle.to_tensor(xm)).item()) / (2 * eps)
        assert abs(num - grad[idx]) <= 1e-6 * max(1.0, abs(num)), (idx, num, grad[idx])
    # Cells whose target is off the map get exactly zero gradient.
    used = np_psa_mask_grad(np.ones((n, h * w, h, w)), psa_type, mh, mw) != 0
    assert (grad[~used] == 0).all()


# ----------------------------------------------------------------------------
# Static graphs, export, and reload in a fresh process
# ----------------------------------------------------------------------------


def test_static_infer_shape_with_unknown_dims(op_module):
    paddle.enable_static()
    try:
        main = paddle.static.Program()
        with paddle.static.program_guard(main, paddle.static.Program()):
            x = paddle.static.data("x", [None, 15, 4, None], "float32")
            assert list(psa_mask(x, "collect", (3, 5), impl="op").shape) == [-1, -1, 4, -1]
            x2 = paddle.static.data("x2", [2, 15, 4, 6], "float64")
            y2 = psa_mask(x2, "distribute", (3, 5), impl="op")
            assert list(y2.shape) == [2, 24, 4, 6]
            assert y2.dtype == x2.dtype
    finally:
        paddle.disable_static()


class TinyPSA(paddle.nn.Layer):
    """Conv -> collect + distribute masks -> attention over features."""

    def __init__(self, impl: str):
        super().__init__()
        self.impl = impl
        self.mask = paddle.nn.Conv2D(3, 4 * 6, 1)
        self.feat = paddle.nn.Conv2D(3, 2, 1)

    def forward(self, x):
        m = self.mask(x)
        att = psa_mask(m, "collect", (4, 6), impl=self.impl) + 0.5 * psa_mask(
            m, "distribute", (4, 6), impl=self.impl)
        shape = paddle.shape(x)
        n, h, w = shape[0], shape[2], shape[3]
        f = self.feat(x).reshape([n, 2, h * w])
        out = paddle.bmm(f, att.reshape([n, h * w, h * w]))
        return out.reshape([n, 2, h, w])


_RELOAD_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, paddle
    sys.path.insert(0, {root!r})
    impl, prefix = {impl!r}, {prefix!r}
    import paddleseg_ext.ops
    state = sys.modules["paddleseg_ext.ops.psa_mask"]._OP.state
    assert state["module"] is None, "importing the package must not load the op"
    if impl == "op":
        from paddleseg_ext.ops import load_op_library
        load_op_library(build=False)
    layer = paddle.jit.load(prefix)
    layer.eval()
    for k in range(2):
        x = np.load(f"{{prefix}}_in{{k}}.npy")
        np.save(f"{{prefix}}_jit{{k}}.npy", layer(paddle.to_tensor(x)).numpy())
    if impl == "op":
        # Python Paddle Inference: the op is registered in this process.
        import paddle.inference as pi
        config = pi.Config(prefix + ".json", prefix + ".pdiparams")
        config.disable_gpu()
        predictor = pi.create_predictor(config)
        for k in range(2):
            x = np.load(f"{{prefix}}_in{{k}}.npy")
            handle = predictor.get_input_handle(predictor.get_input_names()[0])
            handle.reshape(x.shape)
            handle.copy_from_cpu(x)
            predictor.run()
            out = predictor.get_output_handle(predictor.get_output_names()[0])
            np.save(f"{{prefix}}_infer{{k}}.npy", out.copy_to_cpu())
        # The op's helper threads do not survive fork(): a forked child must
        # still compute (on a fresh pool) instead of waiting for them.
        import os
        x = paddle.rand([1, 256, 20, 20])  # big enough to use the helper pool
        os.environ["PADDLESEG_EXT_OP_THREADS"] = "2"
        ref = sys.modules["paddleseg_ext.ops.psa_mask"].psa_mask_reference(x, 0, (16, 16)).numpy()
        from paddleseg_ext.ops import psa_mask
        assert (psa_mask(x, 0, (16, 16), impl="op").numpy() == ref).all()
        pid = os.fork()
        if pid == 0:
            ok = (psa_mask(x, 0, (16, 16), impl="op").numpy() == ref).all()
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    print("reload ok")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["op", "paddle"])
def test_jit_save_and_reload_in_fresh_process(op_module, impl, tmp_path):
    paddle.seed(0)
    net = TinyPSA(impl)
    net.eval()
    inputs = [_rand((2, 3, 4, 5), seed=10), _rand((1, 3, 6, 3), seed=11)]
    eager = [net(paddle.to_tensor(v)).numpy() for v in inputs]

    spec = [paddle.static.InputSpec([None, 3, None, None], "float32", "x")]
    static_net = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
    # TinyPSA: a 1x1 conv (3 terms) and the attention's sum over at most 18 positions.
    def budget(e):
        return tol.bound(max(1.0, float(np.abs(e).max())), 18, depth=3)

    for v, e in zip(inputs, eager):
        tol.assert_close(static_net(paddle.to_tensor(v)).numpy(), e, budget(e), "traced vs eager")
    prefix = str(tmp_path / "tiny_psa")
    paddle.jit.save(static_net, prefix)
    for k, v in enumerate(inputs):
        np.save(f"{prefix}_in{k}.npy", v)

    env = dict(os.environ, OMP_NUM_THREADS="1", PADDLESEG_EXT_OP_THREADS="1")
    env.setdefault("PADDLESEG_EXT_OP_CACHE", str(psa_module.op_cache_dir()))
    script = _RELOAD_SCRIPT.format(root=str(ROOT), impl=impl, prefix=prefix)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for k, e in enumerate(eager):
        tol.assert_close(np.load(f"{prefix}_jit{k}.npy"), e, budget(e), "reloaded vs eager")
        if impl == "op":
            tol.assert_close(np.load(f"{prefix}_infer{k}.npy"), e, budget(e), "Paddle Inference vs eager")


# ----------------------------------------------------------------------------
# CUDA source
# ----------------------------------------------------------------------------


# nvcc compiling the CUDA sources (every dtype): test_cuda_emulation.py.


# ----------------------------------------------------------------------------
# Errors, selection and fallback
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["op", "paddle", "auto"])
def test_input_errors(op_module, impl):
    x = paddle.zeros([1, 15, 4, 5])
    with pytest.raises(ValueError, match=r"15 channels but mask_size \(3, 3\) needs mask_h\*mask_w = 9"):
        psa_mask(x, "collect", (3, 3), impl=impl)
    with pytest.raises(ValueError, match=r"must be 4-D"):
        psa_mask(paddle.zeros([15, 4, 5]), "collect", (3, 5), impl=impl)
    with pytest.raises(ValueError, match=r"psa_type must be 'collect' \(0\) or 'distribute' \(1\), got 'gather'"):
        psa_mask(x, "gather", (3, 5), impl=impl)
    with pytest.raises(ValueError, match=r"psa_type .* got 2"):
        psa_mask(x, 2, (3, 5), impl=impl)
    with pytest.raises(ValueError, match=r"mask_size must be positive"):
        psa_mask(x, "collect", (0, 15), impl=impl)
    with pytest.raises(ValueError, match=r"mask_size must be \(mask_h, mask_w\)"):
        psa_mask(x, "collect", (3, 5, 1), impl=impl)


def test_bad_impl_name():
    x = paddle.zeros([1, 9, 4, 5])
    with pytest.raises(ValueError, match=r"impl must be 'op', 'paddle' or 'auto', got 'cuda'"):
        psa_mask(x, "collect", (3, 3), impl="cuda")


def test_op_kernel_checks_channels(op_module):
    # The kernel checks too (a saved program may be fed other shapes).
    with pytest.raises(Exception, match=r"x has 8 channels but mask 3 x 3 needs 9"):
        op_module.psa_mask(paddle.zeros([1, 8, 4, 5]), 0, 3, 3)


def test_forced_op_unavailable_raises_with_build_hint(op_unavailable, monkeypatch):
    x = paddle.zeros([1, 9, 4, 5])
    with pytest.raises(RuntimeError, match=r"simulated: no C\+\+ compiler.*python -m paddleseg_ext\.ops\.build"):
        psa_mask(x, "collect", (3, 3), impl="op")
    monkeypatch.setenv("PADDLESEG_EXT_PSA_IMPL", "op")
    with pytest.raises(RuntimeError, match=r"python -m paddleseg_ext\.ops\.build"):
        psa_mask(x, "collect", (3, 3))
    assert not is_compiled_op_available()


def test_fallback_warns_once_and_matches_reference(op_unavailable):
    x = paddle.to_tensor(_rand((2, 20, 4, 5)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = psa_mask(x, "collect", (4, 5))
        b = psa_mask(x, "distribute", (4, 5), impl="auto")
    msgs = [str(w.message) for w in caught if "psa_mask" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert "pure-Paddle" in msgs[0] and "simulated: no C++ compiler" in msgs[0]
    np.testing.assert_array_equal(a.numpy(), np_psa_mask(x.numpy(), COLLECT, 4, 5))
    np.testing.assert_array_equal(b.numpy(), np_psa_mask(x.numpy(), DISTRIBUTE, 4, 5))


def test_env_selects_pure_paddle(monkeypatch, op_unavailable):
    monkeypatch.setenv("PADDLESEG_EXT_PSA_IMPL", "paddle")
    x = paddle.to_tensor(_rand((1, 9, 3, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: paddle was asked for
        y = psa_mask(x, "collect", (3, 3))
    np.testing.assert_array_equal(y.numpy(), np_psa_mask(x.numpy(), COLLECT, 3, 3))


def test_no_build_env_reports_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(psa_module._OP, "state", psa_module._OP.fresh_state())
    monkeypatch.setenv("PADDLESEG_EXT_OP_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("PADDLESEG_EXT_OP_NO_BUILD", "1")
    with pytest.raises(RuntimeError, match=r"no prebuilt library.*PADDLESEG_EXT_OP_NO_BUILD"):
        load_op_library()
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


_LOCK_SCRIPT = textwrap.dedent(
    """
    import sys, time, os, types
    sys.path.insert(0, {root!r})
    import paddle.utils.cpp_extension as ext
    import importlib
    mod = importlib.import_module("paddleseg_ext.ops.psa_mask")
    log = {log!r}

    def fake_load(name, sources, build_directory, **kwargs):
        with open(log, "a") as f:
            f.write(f"start {{os.getpid()}} {{time.time()}}\\n")
        time.sleep(1.0)
        so = os.path.join(build_directory, name, name + ".so")
        os.makedirs(os.path.dirname(so), exist_ok=True)
        open(so, "w").close()
        with open(log, "a") as f:
            f.write(f"end {{os.getpid()}} {{time.time()}}\\n")
        return types.SimpleNamespace(psa_mask=None)

    ext.load = fake_load
    mod._OP.import_built = lambda so_path: types.SimpleNamespace(psa_mask=None)
    print(mod.build_op())
    """
)


@pytest.mark.slow
def test_concurrent_builds_are_serialised(tmp_path):
    # Two processes start at once on an empty cache: one builds, one waits
    # and reuses the result (the compiler is faked to keep this fast).
    log = tmp_path / "build.log"
    env = dict(os.environ, PADDLESEG_EXT_OP_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    script = _LOCK_SCRIPT.format(root=str(ROOT), log=str(log))
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1 and paths.pop().endswith(".so")
    events = log.read_text().split()
    assert events.count("start") == 1 and events.count("end") == 1
