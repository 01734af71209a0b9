"""The PSA ops on a GPU against the CPU ops (PSANet, Zhao et al., ECCV 2018,
https://hszhao.github.io/papers/eccv18_psanet.pdf).

Runs only with Paddle's GPU build on a machine with a CUDA device and nvcc
(``bash scripts/gpu_check.sh`` runs it there); skipped elsewhere, where
``test_cuda_emulation.py`` runs the same kernels on the CPU. Same geometries
and bounds as the emulated tests:

* psa_mask: the GPU result equals the CPU op's bit for bit in every dtype
  (float16 / bfloat16 against the CPU op on a float32 copy);
* psa_attention: float64 / float32 within depth * eps of the terms'
  magnitudes of the CPU op and the oracle; float16 / bfloat16 within the
  rounding bound of ``test_cuda_emulation.attention_oracle_and_bounds``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import paddle

from paddleseg_ext.ops import psa_attention, psa_mask
from paddleseg_ext.ops.custom_op_build import want_cuda
from test_cuda_emulation import (ATTENTION_CASES, MASK_CASES, UNIT_ROUNDOFF, _assert_bits_equal,
                                 _assert_within, _attention_inputs, _depth, _magnitudes,
                                 _rounded, attention_oracle_and_bounds, no_full_map)  # noqa: F401
from test_psa_attention import np_attention

GPU = (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
       and shutil.which("nvcc") is not None)
pytestmark = pytest.mark.skipif(
    not GPU, reason="needs Paddle's GPU build, a CUDA device and nvcc (scripts/gpu_check.sh)")

DTYPES = ["float64", "float32", "float16", "bfloat16"]


def _tensor(values: np.ndarray, dtype: str, gpu: bool) -> paddle.Tensor:
    place = paddle.CUDAPlace(0) if gpu else paddle.CPUPlace()
    t = paddle.to_tensor(values.astype("float32" if dtype in ("float16", "bfloat16") else dtype),
                         place=place).astype(dtype)
    t.stop_gradient = False
    return t


def _numpy(t: paddle.Tensor) -> np.ndarray:
    return t.astype("float64").cpu().numpy().reshape(-1)


def test_ops_are_cuda_builds():
    assert want_cuda()
    for name in ("psa_mask", "psa_attention"):
        from paddleseg_ext.ops.custom_op_build import registered_op

        op = registered_op(name)
        op.build()
        assert (op.build_dir(True) / "BUILD_OK.json").exists(), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("case", MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_mask_gpu_equals_cpu(case, psa_type, dtype):
    _, n, h, w, mh, mw = case
    rng = np.random.default_rng(psa_type)
    x = _rounded(rng.standard_normal((n, mh * mw, h, w)), dtype)
    dy = _rounded(rng.standard_normal((n, h * w, h, w)), dtype)
    # The CPU kernels take 16-bit values through a float32 copy (exact: a copy).
    cpu_dtype = "float32" if dtype in ("float16", "bfloat16") else dtype
    results = []
    for gpu, run_dtype in ((False, cpu_dtype), (True, dtype)):
        xt = _tensor(x, run_dtype, gpu)
        y = psa_mask(xt, psa_type, (mh, mw), impl="op")
        (dx,) = paddle.grad([y], [xt], [_tensor(dy, run_dtype, gpu)])
        assert str(y.dtype) == str(dx.dtype) == f"paddle.{run_dtype}"
        results.append((_numpy(y.astype(dtype)), _numpy(dx.astype(dtype))))
    _assert_bits_equal(results[1][0], results[0][0], f"{dtype} y")
    _assert_bits_equal(results[1][1], results[0][1], f"{dtype} dx")


def _attention(x, a, dout, dtype, psa_type, softmax, mh, mw, gpu):
    xt, at = _tensor(x, dtype, gpu), _tensor(a, dtype, gpu)
    out = psa_attention(xt, at, psa_type, 1.0, softmax, (mh, mw), impl="op")
    dx, da = paddle.grad([out], [xt, at], [_tensor(dout, dtype, gpu)])
    return _numpy(out), _numpy(dx), _numpy(da)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("softmax", [True, False])
@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: "x".join(map(str, c)))
def test_attention_gpu_matches_cpu_and_oracle(case, psa_type, softmax, dtype):
    n, c, h, w, mh, mw = case
    x, a, dout = (_rounded(v, dtype) for v in _attention_inputs(case, 3 + psa_type))
    want = np_attention(x, a, psa_type, mh, mw, 1.0, softmax, dout)
    mags = _magnitudes(x, a, psa_type, mh, mw, softmax, dout)[:3]
    cpu = _attention(x, a, dout, dtype, psa_type, softmax, mh, mw, False)
    gpu = _attention(x, a, dout, dtype, psa_type, softmax, mh, mw, True)
    tol = 2 * _depth(case) * UNIT_ROUNDOFF[dtype]
    for name, g_, c_, w_, m_ in zip(("out", "dx", "da"), gpu, cpu, want, mags):
        bound = tol * m_ + UNIT_ROUNDOFF[dtype] * np.abs(w_).reshape(-1)
        _assert_within(g_, w_, bound, f"GPU {dtype} {name} vs oracle")
        _assert_within(g_, c_, 2 * bound, f"GPU {dtype} {name} vs CPU op")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: "x".join(map(str, c)))
def test_half_attention_gpu_within_rounding_bound(case, psa_type, dtype):
    n, c, h, w, mh, mw = case
    x, a, dout = (_rounded(v, dtype) for v in _attention_inputs(case, 5 + psa_type))
    want, bounds = attention_oracle_and_bounds(dtype, case, x, a, dout, psa_type)
    got = _attention(x, a, dout, dtype, psa_type, True, mh, mw, True)
    for name, g_ in zip(("out", "dx", "da"), got):
        _assert_within(g_, want[name], bounds[name], f"GPU {dtype} {name}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_psanet_under_auto_cast_runs_the_op_in_16_bit(no_full_map, monkeypatch, dtype):
    # The fused PSA of PSANet under AMP: the branches reach the op in 16 bits
    # (or the wider dtype where they differ), never the [HW, HW] fallbacks.
    from paddleseg_ext.models.layers import psa_block
    from test_psanet import small

    seen = []

    def spy(x, *args, **kwargs):
        seen.append(str(x.dtype))
        return psa_attention(x, *args, **kwargs)

    monkeypatch.setattr(psa_block, "FUSED_MIN_POSITIONS", 0)
    monkeypatch.setattr(psa_block, "psa_attention", spy)
    paddle.seed(0)
    net = small(psa_impl="fused", mask_h=7, mask_w=7)
    net.eval()
    with paddle.no_grad(), paddle.amp.auto_cast(dtype=dtype):
        logits = net(paddle.randn([1, 3, 64, 64]))[0]
    assert np.isfinite(logits.astype("float32").numpy()).all()
    assert seen and all(d in (f"paddle.{dtype}", "paddle.float32") for d in seen), seen
