"""Tests of the fused PSA attention op (PSANet, Zhao et al., ECCV 2018,
https://hszhao.github.io/papers/eccv18_psanet.pdf).

Oracle: an independent NumPy computation of the unfused composition
``bmm(x, softmax(psa_mask(a), axis=1)) / norm`` on the dense ``[P, P]`` map,
with its gradients written out by hand (dense matrix calculus, no autograd).
The compiled op (both its AVX2 and portable CPU code paths) and the chunked
pure-Paddle fallback must match it in float64 within 1e-10 relative, forward
and both gradients.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("PADDLESEG_EXT_OP_THREADS", "2")

import paddle  # noqa: E402

from paddleseg_ext.ops import (  # noqa: E402
    load_attention_op_library,
    psa_attention,
    psa_attention_reference,
    psa_mask,
)
import tolerance as tol  # noqa: E402

attn_module = importlib.import_module("paddleseg_ext.ops.psa_attention")
RTOL = 1e-10

# ----------------------------------------------------------------------------
# NumPy oracle
# ----------------------------------------------------------------------------


def np_mask_map(a: np.ndarray, psa_type: int, mh: int, mw: int):
    """Dense ``Y [N, P, P]`` (rows r, columns q) and, per logit, its (row, col)
    or -1: written from the formulas, one mask cell at a time."""
    n, _, h_, w_ = a.shape
    plane = h_ * w_
    hh, hw = (mh - 1) // 2, (mw - 1) // 2
    y = np.zeros((n, plane, plane), a.dtype)
    where = -np.ones((mh * mw, plane, 2), np.int64)
    for h in range(h_):
        for w in range(w_):
            for i in range(mh):
                for j in range(mw):
                    th, tw = h + i - hh, w + j - hw
                    if not (0 <= th < h_ and 0 <= tw < w_):
                        continue
                    p, t = h * w_ + w, th * w_ + tw
                    row, col = (t, p) if psa_type == 0 else (p, t)
                    y[:, row, col] = a[:, i * mw + j, h, w]
                    where[i * mw + j, p] = (row, col)
    return y, where


def np_attention(x, a, psa_type, mh, mw, norm, softmax, dout):
    """Forward and both gradients of the unfused composition."""
    n, c, h, w = x.shape
    y, where = np_mask_map(a, psa_type, mh, mw)
    if softmax:
        e = np.exp(y - y.max(axis=1, keepdims=True))
        wts = e / e.sum(axis=1, keepdims=True)
    else:
        wts = y
    xf = x.reshape(n, c, -1)
    out = xf @ wts / norm
    g = dout.reshape(n, c, -1) / norm
    dx = g @ wts.transpose(0, 2, 1)
    dw = xf.transpose(0, 2, 1) @ g
    dy = wts * (dw - (wts * dw).sum(axis=1, keepdims=True)) if softmax else dw
    da = np.zeros_like(a).reshape(n, mh * mw, -1)
    for k in range(mh * mw):
        used = where[k, :, 0] >= 0
        rows, cols = where[k, used, 0], where[k, used, 1]
        da[:, k, used] = dy[:, rows, cols]
    return out.reshape(x.shape), dx.reshape(x.shape), da.reshape(a.shape)


def _rand(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype("float64")


def _run(fn, x_np, a_np, dout_np):
    x = paddle.to_tensor(x_np, stop_gradient=False)
    a = paddle.to_tensor(a_np, stop_gradient=False)
    out = fn(x, a)
    dx, da = paddle.grad([out], [x, a], [paddle.to_tensor(dout_np)])
    return out.numpy(), dx.numpy(), da.numpy()


def _assert_close(got, want, what):
    scale = max(np.abs(want).max(), 1e-300)
    err = np.abs(got - want).max() / scale
    assert err <= RTOL, f"{what}: max error {err:.3g} relative to max |value| {scale:.3g}"


@pytest.fixture(scope="session")
def attention_op():
    try:
        module, _ = load_attention_op_library(build=True)
    except RuntimeError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"could not build the compiled psa_attention op: {exc}")
    return module


def _impls():
    return {
        "op": lambda kw: (lambda x, a: psa_attention(x, a, impl="op", **kw)),
        "paddle": lambda kw: (lambda x, a: psa_attention(x, a, impl="paddle", **kw)),
        # Small chunks: the column loop of the fallback runs several times.
        "paddle-chunk3": lambda kw: (lambda x, a: psa_attention_reference(
            x, a, chunk_columns=3, **kw)),
    }


# (N, C, H, W, mh, mw): odd, even, lopsided, larger than the map, covering
# the whole map (no zeros in any column), a 1-wide map.
CASES = [
    (2, 3, 4, 5, 3, 3),
    (1, 4, 5, 4, 4, 2),
    (2, 2, 3, 3, 7, 9),
    (1, 5, 4, 6, 7, 11),
    (1, 3, 1, 5, 1, 4),
    (2, 130, 3, 4, 3, 5),  # more channels than one CPU channel block (128)
]


@pytest.mark.parametrize("impl", list(_impls()))
@pytest.mark.parametrize("softmax", [True, False])
@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_numpy_oracle(attention_op, impl, softmax, psa_type, case):
    n, c, h, w, mh, mw = case
    x = _rand((n, c, h, w), 1)
    a = _rand((n, mh * mw, h, w), 2, scale=3.0)
    dout = _rand((n, c, h, w), 3)
    norm = 2.5
    fn = _impls()[impl](dict(psa_type=psa_type, normalization_factor=norm, softmax=softmax,
                             mask_size=(mh, mw)))
    out, dx, da = _run(fn, x, a, dout)
    want = np_attention(x, a, psa_type, mh, mw, norm, softmax, dout)
    for got, ref, what in zip((out, dx, da), want, ("out", "dx", "dmask")):
        _assert_close(got, ref, f"{impl} type {psa_type} softmax {softmax} {case} {what}")


@pytest.mark.parametrize("psa_type", ["collect", "distribute"])
def test_portable_cpu_path_matches_oracle(attention_op, psa_type, tmp_path):
    # The kernels are compiled twice (AVX2+FMA and portable); the choice is made
    # once per process, so the portable path runs in a child process.
    script = f"""
import sys, numpy as np, paddle
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_psa_attention import np_attention, _rand, _run, RTOL
from paddleseg_ext.ops import psa_attention
x, a, d = _rand((2, 130, 4, 5), 1), _rand((2, 15, 4, 5), 2, 3.0), _rand((2, 130, 4, 5), 3)
for sm in (True, False):
    got = _run(lambda x_, a_: psa_attention(x_, a_, {psa_type!r}, 3.0, sm, (3, 5), impl="op"),
               x, a, d)
    want = np_attention(x, a, {0 if psa_type == 'collect' else 1}, 3, 5, 3.0, sm, d)
    for g_, w_ in zip(got, want):
        assert np.abs(g_ - w_).max() <= RTOL * np.abs(w_).max(), np.abs(g_ - w_).max()
print("portable ok")
"""
    env = dict(os.environ, PSA_ATTENTION_NO_AVX2="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "portable ok" in proc.stdout, proc.stderr[-3000:]


def test_float32_close_to_float64(attention_op):
    x, a, d = _rand((1, 8, 6, 7), 4), _rand((1, 25, 6, 7), 5, 3.0), _rand((1, 8, 6, 7), 6)
    want = np_attention(x, a, 1, 5, 5, 25.0, True, d)
    fn = lambda x_, a_: psa_attention(x_, a_, "distribute", 25.0, True, (5, 5), impl="op")  # noqa: E731
    got = _run(fn, x.astype("float32"), a.astype("float32"), d.astype("float32"))
    for g_, w_ in zip(got, want):
        assert g_.dtype == np.float32
        # One float32 evaluation against float64: the window's 25 logits and the 42 positions.
        # The softmax turns the logits' absolute rounding into relative weight errors.
        e_scale = max(1.0, float(np.abs(a).max()))
        tol.assert_close(g_, w_, tol.bound(e_scale * np.abs(w_).max(), 42, depth=2,
                                           implementations=1), "float32 vs float64")


def test_equals_unfused_paddle_composition(attention_op):
    # The exact expression the op replaces, in Paddle ops (psa_mask + softmax + bmm).
    x_np, a_np = _rand((2, 6, 5, 6), 7), _rand((2, 35, 5, 6), 8, 2.0)
    for psa_type in ("collect", "distribute"):
        x, a = paddle.to_tensor(x_np), paddle.to_tensor(a_np)
        y = paddle.nn.functional.softmax(
            psa_mask(a, psa_type, (5, 7), impl="paddle").reshape([2, 30, 30]), axis=1)
        want = (paddle.bmm(x.reshape([2, 6, 30]), y) / 3.0).reshape([2, 6, 5, 6]).numpy()
        got = psa_attention(x, a, psa_type, 3.0, mask_size=(5, 7), impl="op").numpy()
        _assert_close(got, want, psa_type)


@pytest.mark.parametrize("impl", ["op", "paddle"])
@pytest.mark.parametrize("psa_type", [0, 1])
def test_unused_logits_never_read_and_get_zero_gradient(attention_op, impl, psa_type):
    # Window cells whose target is off the map are unused: poisoning them with
    # NaN/inf must not reach the output or any gradient, and their own gradient
    # is exactly 0 (explicitly written, not stale memory).
    n, c, h, w, mh, mw = 2, 3, 3, 4, 5, 6
    x, a, d = _rand((n, c, h, w), 9), _rand((n, mh * mw, h, w), 10), _rand((n, c, h, w), 11)
    _, where = np_mask_map(a, psa_type, mh, mw)
    unused = (where[:, :, 0] < 0).reshape(mh * mw, h, w)
    assert unused.any() and not unused.all()
    poisoned = a.copy()
    poisoned[:, unused] = np.nan
    poisoned[0, unused] = np.inf
    fn = lambda x_, a_: psa_attention(x_, a_, psa_type, 1.0, True, (mh, mw), impl=impl)  # noqa: E731
    out, dx, da = _run(fn, x, poisoned, d)
    want = np_attention(x, np.where(np.isfinite(poisoned), poisoned, 0.0), psa_type, mh, mw,
                        1.0, True, d)
    assert np.isfinite(out).all() and np.isfinite(dx).all() and np.isfinite(da).all()
    assert (da[:, unused] == 0).all()
    for got, ref, what in zip((out, dx, da), want, ("out", "dx", "dmask")):
        _assert_close(got, ref, what)


def test_large_logits_are_stable(attention_op):
    # exp(1000) overflows: the max shift (including the zeros' logit 0) keeps it finite.
    x, d = _rand((1, 2, 3, 3), 12), _rand((1, 2, 3, 3), 13)
    a = _rand((1, 9, 3, 3), 14) * 1000.0
    for impl in ("op", "paddle"):
        for psa_type in (0, 1):
            fn = lambda x_, a_: psa_attention(x_, a_, psa_type, impl=impl)  # noqa: E731
            got = _run(fn, x, a, d)
            want = np_attention(x, a, psa_type, 3, 3, 1.0, True, d)
            for g_, w_ in zip(got, want):
                assert np.isfinite(g_).all()
            _assert_close(got[0], want[0], f"{impl} {psa_type} out")
            _assert_close(got[1], want[1], f"{impl} {psa_type} dx")
            # dmask = w (<x, g> - D) cancels when one logit dominates a column:
            # compare against the size of the terms, not of the (tiny) result.
            terms = np.abs(x).max() * np.abs(d).max() * x.shape[1]
            assert np.abs(got[2] - want[2]).max() <= RTOL * terms


def test_no_grad_and_stop_gradient_inputs(attention_op):
    x, a = paddle.to_tensor(_rand((1, 2, 3, 3), 15)), paddle.to_tensor(_rand((1, 9, 3, 3), 16))
    with paddle.no_grad():
        out = psa_attention(x, a, "collect", impl="op")
    assert out.shape == [1, 2, 3, 3] and out.stop_gradient


# ----------------------------------------------------------------------------
# Memory bound of the fallback
# ----------------------------------------------------------------------------


def test_fallback_never_builds_the_full_map(attention_op, monkeypatch):
    # Every tensor the chunked fallback builds from the map is [N, P, chunk].
    seen = []
    real = attn_module._chunk_weights

    def spy(a_ext, index, softmax):
        out = real(a_ext, index, softmax)
        seen.append(list(out.shape))
        return out

    monkeypatch.setattr(attn_module, "_chunk_weights", spy)
    x = paddle.to_tensor(_rand((1, 4, 6, 8), 17), stop_gradient=False)
    a = paddle.to_tensor(_rand((1, 9, 6, 8), 18), stop_gradient=False)
    out = psa_attention_reference(x, a, "collect", chunk_columns=10)
    out.sum().backward()
    assert seen and all(s[1] == 48 and s[2] <= 10 for s in seen), seen
    assert len(seen) == 2 * 5  # 5 chunks of <= 10 columns, forward and backward


# ----------------------------------------------------------------------------
# Errors and selection
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["op", "paddle"])
def test_input_errors(attention_op, impl):
    x, a = paddle.zeros([1, 2, 3, 4]), paddle.zeros([1, 9, 3, 4])
    with pytest.raises(ValueError, match="psa_type must be 'collect'"):
        psa_attention(x, a, "sideways", impl=impl)
    with pytest.raises(ValueError, match="has 9 channels but mask_size \\(3, 5\\)"):
        psa_attention(x, a, 0, mask_size=(3, 5), impl=impl)
    with pytest.raises(ValueError, match="not a square number"):
        psa_attention(x, paddle.zeros([1, 6, 3, 4]), 0, impl=impl)
    with pytest.raises(ValueError, match="differ in W"):
        psa_attention(x, paddle.zeros([1, 9, 3, 5]), 0, impl=impl)
    with pytest.raises(ValueError, match="x must be 4-D"):
        psa_attention(paddle.zeros([2, 3, 4]), a, 0, impl=impl)
    with pytest.raises(ValueError, match="normalization_factor must be a positive number"):
        psa_attention(x, a, 0, normalization_factor=0, impl=impl)
    with pytest.raises(ValueError, match="use one dtype"):
        psa_attention(x, a.astype("float64"), 0, impl=impl)
    with pytest.raises(ValueError, match="impl must be"):
        psa_attention(x, a, 0, impl="fast")


def test_fallback_when_op_unavailable(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("simulated: no C++ compiler")

    monkeypatch.setattr(attn_module._OP, "state", attn_module._OP.fresh_state())
    monkeypatch.setattr(attn_module._OP, "load_or_build", fail)
    monkeypatch.delenv("PADDLESEG_EXT_PSA_IMPL", raising=False)
    x, a, d = _rand((1, 2, 3, 4), 19), _rand((1, 9, 3, 4), 20), _rand((1, 2, 3, 4), 21)
    with pytest.warns(RuntimeWarning, match="chunked pure-Paddle"):
        got = _run(lambda x_, a_: psa_attention(x_, a_, 1), x, a, d)
    for g_, w_ in zip(got, np_attention(x, a, 1, 3, 3, 1.0, True, d)):
        _assert_close(g_, w_, "fallback")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process
        psa_attention(paddle.to_tensor(x), paddle.to_tensor(a), 1)
    with pytest.raises(RuntimeError, match="simulated: no C\\+\\+ compiler.*impl='paddle'"):
        psa_attention(paddle.to_tensor(x), paddle.to_tensor(a), 1, impl="op")


def test_build_cli_builds_every_op(attention_op):
    from paddleseg_ext.ops.custom_op_build import registered_ops

    names = [op.op_name for op in registered_ops()]
    assert names == ["psa_mask", "psa_attention", "winograd_input_transform"]
    proc = subprocess.run([sys.executable, "-m", "paddleseg_ext.ops.build"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in names:
        assert f"built op '{name}'" in proc.stdout


# nvcc compiling the CUDA sources (every dtype): test_cuda_emulation.py.


# ----------------------------------------------------------------------------
# PSANet: psa_impl='fused'
# ----------------------------------------------------------------------------


def _psa_pair(psa_type, mask, target="train", min_positions=0):
    """A PSA module in its fused form (fused at every size unless told) and its paper form."""
    from paddleseg_ext.models.layers import psa_block
    from paddleseg_ext.runtime import ExecutionPolicy, prepare

    paddle.seed(3)
    ref = psa_block.PSAModule(6, 4, psa_type, mask, shrink_factor=2)
    ref.eval()
    fused = prepare(ref, ExecutionPolicy(target=target, psa_impl="fused",
                                         fused_min_positions=min_positions), copy_model=True)
    fused.eval()
    return fused, ref


@pytest.mark.parametrize("psa_type,mask", [("bi-direction", (7, 9)), ("distribute", (4, 6))])
def test_psa_module_fused_equals_unfused(attention_op, monkeypatch, psa_type, mask):
    from paddleseg_ext.runtime.forms import psa as psa_forms

    fused, ref = _psa_pair(psa_type, mask)
    calls = []
    real = psa_forms.psa_attention
    monkeypatch.setattr(psa_forms, "psa_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    x_np = _rand((2, 6, 9, 11), 30).astype("float32")
    outs, grads = [], []
    for m in (fused, ref):
        x = paddle.to_tensor(x_np, stop_gradient=False)
        y = m(x)
        (g,) = paddle.grad([y], [x], [paddle.ones_like(y)])
        outs.append(y.numpy())
        grads.append(g.numpy())
    assert calls, "the fused op was not called"
    # Fused vs [HW, HW] attention: the softmax and the sums over the 5x6 shrunk map run in
    # another order; both sides share the convs around them.
    tol.assert_close(outs[0], outs[1], tol.network_bound(ref, outs[1], winograd=False,
                                                         attention_fan_in=5 * 6), "output")
    tol.assert_close(grads[0], grads[1],
                     tol.network_gradient_bound(ref, grads[1], 2 * 9 * 11, attention_fan_in=5 * 6),
                     "input gradient")
    assert fused.custom_ops == ("psa_attention",)


def test_fused_runs_unfused_on_small_maps(attention_op, monkeypatch):
    from paddleseg_ext.runtime.forms import psa as psa_forms

    called = []
    monkeypatch.setattr(psa_forms, "psa_attention", lambda *a, **k: called.append(1))
    fused, _ = _psa_pair("collect", (5, 5), min_positions=16384)
    fused(paddle.rand([1, 6, 8, 8]))  # 16 positions after the shrink <= fused_min_positions
    assert not called


def test_psa_module_fused_traces_the_fused_op(attention_op, tmp_path):
    fused, ref = _psa_pair("bi-direction", (5, 7), target="export")
    inputs = [_rand((1, 6, 9, 7), 31).astype("float32"), _rand((2, 6, 5, 11), 32).astype("float32")]
    spec = [paddle.static.InputSpec([None, 6, None, None], "float32", "x")]
    static = paddle.jit.to_static(fused, input_spec=spec, full_graph=True)
    prefix = str(tmp_path / "fused_psa")
    paddle.jit.save(static, prefix)
    program = Path(prefix + ".json").read_text()
    assert "psa_attention" in program and "psa_mask" not in program
    loaded = paddle.jit.load(prefix)
    for v in inputs:
        want = ref(paddle.to_tensor(v)).numpy()
        att = ((v.shape[2] + 1) // 2) * ((v.shape[3] + 1) // 2)
        tol.assert_close(loaded(paddle.to_tensor(v)).numpy(), want,
                         tol.network_bound(ref, want, winograd=False, attention_fan_in=att),
                         "traced fused vs dygraph unfused")


@pytest.mark.slow
def test_benchmark_section_quick(attention_op, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
                           "--sections", "psa_attention", "--threads", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    record = json.loads(next(tmp_path.glob("*-quick.json")).read_text())
    rows = record["sections"]["psa_attention"]["rows"]
    assert {r["impl"] for r in rows} == {"unfused", "fused"}
    for r in rows:
        assert r["note"] is None and r["fwd+bwd ms"] > 0 and r["peak memory MiB"] is not None
    assert all(r["fused / unfused time"].endswith("x") for r in rows if r["impl"] == "fused")


@pytest.mark.slow
def test_psanet_fused_export_deploys_with_infer(attention_op, tmp_path):
    # tools/export.py --psa_impl fused: deploy.yaml lists psa_attention, ships its
    # library, and deploy/python/infer.py registers it and matches the pure-Paddle export.
    sys.path.insert(0, str(ROOT / "deploy" / "python"))
    sys.path.insert(0, str(ROOT / "tools"))
    import yaml

    import infer  # noqa: E402
    from paddleseg_ext.cvlibs import Config, SegBuilder

    spec = importlib.util.spec_from_file_location("export_tool", ROOT / "tools" / "export.py")
    export_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_tool)
    cfg = str(ROOT / "configs" / "quick_start" / "psanet_resnet18_os8_landcover_64x64_400.yml")
    paddle.seed(0)
    weights = str(tmp_path / "w.pdparams")
    paddle.save(SegBuilder(Config(cfg, opts=["model.psa_impl=paddle"])).model.state_dict(), weights)
    for impl in ("fused", "paddle"):
        export_tool.main(["--config", cfg, "--model_path", weights, "--save_dir",
                          str(tmp_path / impl), "--psa_impl", impl])
    with open(tmp_path / "fused" / "deploy.yaml") as f:
        deploy = yaml.safe_load(f)["Deploy"]
    assert deploy["custom_ops"] == ["psa_attention"]
    assert (tmp_path / "fused" / deploy["custom_op_libs"]["psa_attention"]).is_file()
    x = np.random.RandomState(1).rand(1, 3, 40, 56).astype("float32")
    outs = [infer.Predictor(infer.DeployConfig(str(tmp_path / k)), cpu_threads=1).run(x)
            for k in ("fused", "paddle")]
    assert outs[0].shape == (1, 40, 56)
    assert (outs[0] == outs[1]).mean() >= 0.999


def test_env_fused_selects_fused_for_psanet_and_auto_for_the_ops(attention_op, monkeypatch):
    from paddleseg_ext.runtime import policy_from_environment, use_policy

    monkeypatch.setenv("PADDLESEG_EXT_PSA_IMPL", "fused")
    policy = policy_from_environment()
    assert policy.psa_impl == "fused"
    x = paddle.to_tensor(_rand((1, 9, 3, 4), 40))
    f = paddle.to_tensor(_rand((1, 2, 3, 4), 41))
    with use_policy(policy):  # the ops themselves take 'fused' as auto
        np.testing.assert_array_equal(psa_mask(x, 0, (3, 3)).numpy(),
                                      psa_mask(x, 0, (3, 3), impl="paddle").numpy())
        _assert_close(psa_attention(f, x, 0).numpy(),
                      psa_attention(f, x, 0, impl="paddle").numpy(), "env fused")
