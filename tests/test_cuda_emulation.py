"""The CUDA kernels of the PSA ops, executed on the CPU under sanitizers.

PSANet (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).

The kernel headers (``custom_ops/*/*_kernels.cuh``) are what nvcc compiles for
the GPU; here g++ compiles the same text with the CUDA emulation
(``custom_ops/common/cuda_emulation.h``: every thread of every block runs in
turn) into ``tests/cuda_emulation/emulate_kernels.cc``, built with
``-fsanitize=address,undefined -fno-sanitize-recover=all`` into the op cache.
Each test runs the real launchers (zero passes, launch shapes, every kernel)
with launch shapes so small that every grid-stride loop wraps, blocks and
threads in both orders, and compares against the NumPy oracles of
``test_psa_mask.py`` / ``test_psa_attention.py`` and the compiled CPU ops:

* psa_mask is a permutation plus zeros: bit for bit, in every dtype;
* psa_attention in float64: the sums run in another order than on the CPU,
  so within ``depth * eps64`` of the sum of the terms' magnitudes;
* float16 / bfloat16: stored rounded, computed in float32, within a bound
  derived from the format's unit roundoff (see :func:`_attention_bound`).

Only g++ is needed; nvcc and the CUDA headers, where present, add compile
checks of the GPU side.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("PADDLESEG_EXT_OP_THREADS", "2")

import paddle  # noqa: E402

from paddleseg_ext.ops import op_cache_dir, psa_attention, psa_mask  # noqa: E402
from paddleseg_ext.ops.custom_op_build import want_cuda  # noqa: E402
from test_psa_attention import CASES as ATTENTION_CASES  # noqa: E402
from test_psa_attention import attention_op, np_attention, np_mask_map  # noqa: E402,F401
from test_psa_mask import CASES as MASK_CASES  # noqa: E402
from test_psa_mask import np_psa_mask, np_psa_mask_grad, op_module  # noqa: E402,F401

OPS = ROOT / "custom_ops"
RUNNER_SRC = ROOT / "tests" / "cuda_emulation" / "emulate_kernels.cc"
INCLUDES = [OPS / "common", OPS / "psa_mask", OPS / "psa_attention"]
SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer"]
CXXFLAGS = ["-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror", *SANITIZE]
# Sanitizer reports end the run with a non-zero status (halt_on_error); leaks too.
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}

# Launch shapes: (threads per block, most blocks). (32, 3) and (64, 1) make
# every grid-stride loop of these sizes wrap; (256, 2^31 - 1) is the GPU's.
WRAP_SHAPES = [(32, 3, "forward"), (64, 1, "reverse")]
GPU_SHAPE = (256, 2147483647, "forward")
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}
# Smallest subnormal: below the smallest normal number, rounding errs by up to
# half of it, whatever the value (gradients of float16 reach there).
SUBNORMAL = {"float64": 2.0 ** -1074, "float32": 2.0 ** -149, "float16": 2.0 ** -24,
             "bfloat16": 2.0 ** -133}


def _sources() -> list:
    return [RUNNER_SRC] + sorted(p for d in INCLUDES for ext in ("h", "cuh")
                                 for p in d.glob(f"*.{ext}"))


@pytest.fixture(scope="session")
def emulator() -> Path:
    """The sanitized runner, built once per source version into the op cache."""
    cxx = shutil.which("g++")
    if cxx is None:  # pragma: no cover - the suite needs g++ for the ops anyway
        pytest.fail("g++ is needed to build the emulated CUDA kernels")
    digest = hashlib.sha256()
    for path in _sources():
        digest.update(path.name.encode() + path.read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    digest.update((version + " ".join(CXXFLAGS)).encode())
    exe = op_cache_dir() / f"cuda-emulation-{digest.hexdigest()[:16]}" / "emulate_kernels"
    if not exe.exists():
        exe.parent.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_name(f"emulate_kernels.{os.getpid()}.tmp")
        cmd = [cxx, *CXXFLAGS, *(f"-I{d}" for d in INCLUDES), str(RUNNER_SRC), "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
        os.replace(tmp, exe)  # atomic: a concurrent session sees all or nothing
    return exe


def _emulate(exe: Path, op: str, direction: str, dtype: str, geometry, inputs: dict,
             outputs, shape=GPU_SHAPE, psa_type=0, softmax=True) -> dict:
    """Run one op pass in the emulator; ``geometry`` is (N, C, H, W, mh, mw)."""
    threads, blocks, order = shape
    with tempfile.TemporaryDirectory(prefix="psa-emu-") as tmp:
        for name, value in inputs.items():
            np.ascontiguousarray(value, dtype="<f8").tofile(os.path.join(tmp, f"{name}.bin"))
        args = [str(exe), op, direction, dtype, *map(str, geometry), str(psa_type),
                str(int(softmax)), str(threads), str(blocks), order, tmp]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300,
                              env={**os.environ, **SAN_ENV})
        assert proc.returncode == 0, f"{' '.join(args[1:-1])}: {proc.stderr[-4000:]}"
        return {name: np.fromfile(os.path.join(tmp, f"{name}.bin"), dtype="<f8")
                for name in outputs}


def _bits_equal(got: np.ndarray, want: np.ndarray) -> bool:
    want = np.ascontiguousarray(want, dtype=np.float64)
    return got.shape == want.reshape(-1).shape and np.array_equal(
        got.view(np.uint64), want.reshape(-1).view(np.uint64))


def _assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    want = np.ascontiguousarray(want, dtype=np.float64).reshape(-1)
    assert got.shape == want.shape, f"{what}: {got.shape} values, expected {want.shape}"
    bad = np.flatnonzero(got.view(np.uint64) != want.view(np.uint64))
    assert bad.size == 0, (f"{what}: {bad.size} of {want.size} entries differ, first at "
                           f"{bad[0]}: {got[bad[0]]!r} instead of {want[bad[0]]!r}")


def _rounded(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` rounded to ``dtype`` (nearest, ties to even), as float64."""
    if dtype == "float64":
        return values.astype(np.float64)
    if dtype in ("float32", "float16"):
        with np.errstate(over="ignore"):  # beyond the format's range: inf, as intended
            return values.astype(dtype).astype(np.float64)
    # bfloat16: the two bfloat16 neighbours of the float32 value, the nearer
    # one (ties: even last bit); float32 inputs make the result exact.
    f = values.astype(np.float32)
    low = (f.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32).astype(np.float64)
    high_bits = (f.view(np.uint32) & np.uint32(0xFFFF0000)) + np.uint32(0x10000)
    high = high_bits.view(np.float32).astype(np.float64)
    exact = f.astype(np.float64)
    d_low, d_high = np.abs(exact - low), np.abs(high - exact)
    low_even = ((f.view(np.uint32) >> 16) & 1) == 0
    pick_low = (d_low < d_high) | ((d_low == d_high) & low_even)
    return np.where(pick_low, low, high)


# ----------------------------------------------------------------------------
# psa_mask: bit for bit
# ----------------------------------------------------------------------------


def _mask_geometry(case):
    _, n, h, w, mh, mw = case
    return n, 0, h, w, mh, mw


@pytest.mark.parametrize("shape", WRAP_SHAPES + [GPU_SHAPE], ids=["wrap", "wrap-reverse", "gpu"])
@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("case", MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_mask_kernels_equal_cpu_op_and_oracle(emulator, op_module, case, psa_type, shape):
    if case[0] == "even66":  # 7M x elements: one wrapping shape is enough
        if shape != WRAP_SHAPES[0]:
            pytest.skip("even66 runs with one launch shape (7M elements under the sanitizers)")
        shape = (256, 1000, "reverse")
    n, _, h, w, mh, mw = geometry = _mask_geometry(case)
    rng = np.random.default_rng(len(case[0]) + psa_type)
    x = rng.standard_normal((n, mh * mw, h, w))
    dy = rng.standard_normal((n, h * w, h, w))
    y = _emulate(emulator, "mask", "forward", "float64", geometry, {"x": x}, ["y"], shape,
                 psa_type)["y"]
    dx = _emulate(emulator, "mask", "backward", "float64", geometry, {"dy": dy}, ["dx"], shape,
                  psa_type)["dx"]
    _assert_bits_equal(y, np_psa_mask(x, psa_type, mh, mw), "y vs oracle")
    _assert_bits_equal(dx, np_psa_mask_grad(dy, psa_type, mh, mw), "dx vs oracle")
    xt = paddle.to_tensor(x, stop_gradient=False)
    yt = psa_mask(xt, psa_type, (mh, mw), impl="op")
    (dxt,) = paddle.grad([yt], [xt], [paddle.to_tensor(dy)])
    _assert_bits_equal(y, yt.numpy(), "y vs CPU op")
    _assert_bits_equal(dx, dxt.numpy(), "dx vs CPU op")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("psa_type", [0, 1])
def test_mask_kernels_copy_narrow_types_exactly(emulator, dtype, psa_type):
    _, n, h, w, mh, mw = MASK_CASES[3]  # oversized: unused cells everywhere
    rng = np.random.default_rng(7)
    x = _rounded(rng.standard_normal((n, mh * mw, h, w)), dtype)
    dy = _rounded(rng.standard_normal((n, h * w, h, w)), dtype)
    geometry = (n, 0, h, w, mh, mw)
    y = _emulate(emulator, "mask", "forward", dtype, geometry, {"x": x}, ["y"], WRAP_SHAPES[0],
                 psa_type)["y"]
    dx = _emulate(emulator, "mask", "backward", dtype, geometry, {"dy": dy}, ["dx"],
                  WRAP_SHAPES[1], psa_type)["dx"]
    _assert_bits_equal(y, np_psa_mask(x, psa_type, mh, mw), f"{dtype} y")
    _assert_bits_equal(dx, np_psa_mask_grad(dy, psa_type, mh, mw), f"{dtype} dx")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_conversions_round_to_nearest_even(emulator, dtype):
    # A 1x1 mask on a 1x1 map copies x to y: the round trip float64 -> float32
    # -> dtype -> float32 -> float64 through the emulation's software types.
    # Inputs: every finite value of the format, the midpoints between
    # neighbours (ties), and values just off them, plus overflow and underflow.
    finite = np.arange(1 << 16, dtype=np.uint32)
    with np.errstate(invalid="ignore"):  # the NaN patterns, dropped below
        if dtype == "float16":
            values = finite.astype(np.uint16).view(np.float16).astype(np.float64)
        else:
            values = (finite << 16).view(np.float32).astype(np.float64)
    values = np.unique(values[np.isfinite(values)])
    mids = (values[:-1] + values[1:]) / 2
    off = np.concatenate([np.nextafter(mids.astype(np.float32), np.float32(np.inf)),
                          np.nextafter(mids.astype(np.float32), np.float32(-np.inf))])
    x = np.concatenate([values, mids, off.astype(np.float64), [1e6, -1e6, 1e-30, -1e-30]])
    # Inputs must be float32 values (the runner converts through float32).
    x = x[x.astype(np.float32).astype(np.float64) == x]
    y = _emulate(emulator, "mask", "forward", dtype, (x.size, 0, 1, 1, 1, 1),
                 {"x": x.reshape(-1, 1, 1, 1)}, ["y"])["y"]
    _assert_bits_equal(y, _rounded(x, dtype), f"{dtype} round trip")


# ----------------------------------------------------------------------------
# psa_attention
# ----------------------------------------------------------------------------


def _attention_inputs(case, seed):
    n, c, h, w, mh, mw = case
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c, h, w)), 2.0 * rng.standard_normal((n, mh * mw, h, w)),
            rng.standard_normal((n, c, h, w)))


def _at_logits(dense: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The entries of a dense ``[N, P, P]`` map that the logits feed, as
    ``[N, mh*mw * P]`` (0 for unused cells); ``where`` from np_mask_map."""
    cells, plane = where.shape[:2]
    out = np.zeros((dense.shape[0], cells, plane))
    for k in range(cells):
        used = where[k, :, 0] >= 0
        out[:, k, used] = dense[:, where[k, used, 0], where[k, used, 1]]
    return out.reshape(dense.shape[0], -1)


def _abs_weights(a, psa_type, mh, mw, softmax):
    """|W| of the dense map (softmax weights, or |Y|), the map Y and its
    logit positions (np_mask_map's ``where``)."""
    y, where = np_mask_map(a, psa_type, mh, mw)
    if not softmax:
        return np.abs(y), y, where
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), y, where


def _magnitudes(x, a, psa_type, mh, mw, softmax, dout):
    """Per output entry, the sum of the magnitudes of its terms (what
    rounding errors scale with): out, dx, da and lse."""
    n, c, h, w = x.shape
    wts, y, where = _abs_weights(a, psa_type, mh, mw, softmax)
    xf, g = np.abs(x.reshape(n, c, -1)), np.abs(dout.reshape(n, c, -1))
    m_out = xf @ wts
    m_dx = g @ wts.transpose(0, 2, 1)
    m_dw = xf.transpose(0, 2, 1) @ g
    if softmax:  # w (<x, g> - sum_r w <x, g>)
        m_dw = wts * (m_dw + (wts * m_dw).sum(axis=1, keepdims=True))
    m_da = _at_logits(m_dw, where)
    m_lse = np.abs(y).max(axis=1) + np.log(h * w) + 1.0
    return m_out.reshape(-1), m_dx.reshape(-1), m_da.reshape(-1), m_lse.reshape(-1)


def _depth(case) -> int:
    """Longest chain of roundings behind one output: a window or column sum
    (up to P terms), a channel sum (C terms), plus exp/log/products."""
    n, c, h, w, mh, mw = case
    return h * w + c + mh * mw + 16


def _assert_within(got, want, bound, what):
    err = np.abs(got - want.reshape(-1))
    worst = int(np.argmax(err - bound))
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    assert (err <= bound).all(), (f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} "
                                  f"at {worst} (value {want.reshape(-1)[worst]:.6g})")


def _run_attention(exe, dtype, case, x, a, dout, psa_type, softmax, shape):
    geometry = case
    fwd = _emulate(exe, "attention", "forward", dtype, geometry, {"x": x, "a": a},
                   ["out", "lse"], shape, psa_type, softmax)
    bwd = _emulate(exe, "attention", "backward", dtype, geometry,
                   {"x": x, "a": a, "out": fwd["out"], "lse": fwd["lse"], "dout": dout},
                   ["dx", "da"], shape, psa_type, softmax)
    return fwd["out"], fwd["lse"], bwd["dx"], bwd["da"]


@pytest.mark.parametrize("softmax", [True, False])
@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: "x".join(map(str, c)))
def test_attention_kernels_match_cpu_op_and_oracle(emulator, attention_op, case, psa_type,
                                                   softmax):
    n, c, h, w, mh, mw = case
    x, a, dout = _attention_inputs(case, 11 * psa_type + int(softmax))
    shape = WRAP_SHAPES[(psa_type + int(softmax)) % 2]
    got = _run_attention(emulator, "float64", case, x, a, dout, psa_type, softmax, shape)
    want = np_attention(x, a, psa_type, mh, mw, 1.0, softmax, dout)
    xt, at = paddle.to_tensor(x, stop_gradient=False), paddle.to_tensor(a, stop_gradient=False)
    out_t, lse_t = attention_op.psa_attention(xt, at, psa_type, mh, mw, softmax)
    dx_t, da_t = paddle.grad([out_t], [xt, at], [paddle.to_tensor(dout)])
    cpu = (out_t.numpy(), lse_t.numpy(), dx_t.numpy(), da_t.numpy())
    mags = _magnitudes(x, a, psa_type, mh, mw, softmax, dout)
    mag = dict(zip(("out", "dx", "da", "lse"), mags))
    # Both sides sum the same terms in different orders: each is within
    # depth * eps of the exact value, relative to the terms' magnitudes.
    tol = 2 * _depth(case) * UNIT_ROUNDOFF["float64"]
    for name, g_, w_, c_ in zip(("out", "lse", "dx", "da"), got,
                                (want[0], None, want[1], want[2]), cpu):
        bound = tol * mag[name]
        if w_ is not None:
            _assert_within(g_, w_, bound, f"{name} vs oracle")
        _assert_within(g_, c_, 2 * bound, f"{name} vs CPU op")


def _attention_bound(dtype, case, ref_abs, mag, extra=0.0):
    """Error bound of a result stored in ``dtype``: one rounding of the
    stored value (u |ref|, or half a subnormal below the normal range), the
    sums in the compute type (depth * its u * magnitude: float32 for the
    16-bit types), and ``extra`` for stored intermediates fed back in (out in
    the backward's column dot)."""
    u = UNIT_ROUNDOFF[dtype]
    u_acc = UNIT_ROUNDOFF["float64" if dtype == "float64" else "float32"]
    return u * ref_abs + SUBNORMAL[dtype] / 2 + _depth(case) * u_acc * mag + extra


def attention_oracle_and_bounds(dtype, case, x, a, dout, psa_type, softmax=True):
    """The float64 oracle's out, dx, da on inputs representable in ``dtype``
    and, per entry, the error bound of a kernel storing ``dtype`` and
    computing in float32 (or float64 for float64): see :func:`_attention_bound`."""
    n, c, h, w, mh, mw = case
    out, dx, da = np_attention(x, a, psa_type, mh, mw, 1.0, softmax, dout)
    m_out, m_dx, m_da, _ = _magnitudes(x, a, psa_type, mh, mw, softmax, dout)
    u = UNIT_ROUNDOFF[dtype]
    # The backward's column dot D = <dout, out> reads the stored out: off by
    # up to u * sum_c |dout out|, times the weight (<= 1) in every da entry.
    d_err = u * (np.abs(dout) * np.abs(out)).sum(axis=1).reshape(n, 1, h * w)
    wts, _, where = _abs_weights(a, psa_type, mh, mw, softmax)
    da_extra = _at_logits(wts * d_err, where).reshape(-1) if softmax else 0.0
    want = {"out": out, "dx": dx, "da": da}
    bounds = {name: _attention_bound(dtype, case, np.abs(want[name]).reshape(-1), mag, extra)
              for name, mag, extra in (("out", m_out, 0.0), ("dx", m_dx, 0.0),
                                       ("da", m_da, da_extra))}
    return want, bounds


HALF_CASES = [ATTENTION_CASES[0], ATTENTION_CASES[1], ATTENTION_CASES[3], ATTENTION_CASES[5]]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("case", HALF_CASES, ids=lambda c: "x".join(map(str, c)))
def test_half_attention_kernels_within_rounding_bound(emulator, case, psa_type, dtype):
    n, c, h, w, mh, mw = case
    x, a, dout = (_rounded(v, dtype) for v in _attention_inputs(case, 5 + psa_type))
    half = _run_attention(emulator, dtype, case, x, a, dout, psa_type, True, WRAP_SHAPES[0])
    single = _run_attention(emulator, "float32", case, x, a, dout, psa_type, True,
                            WRAP_SHAPES[1])
    want, bounds32 = attention_oracle_and_bounds("float32", case, x, a, dout, psa_type)
    _, bounds16 = attention_oracle_and_bounds(dtype, case, x, a, dout, psa_type)
    for k, name in ((0, "out"), (2, "dx"), (3, "da")):
        _assert_within(single[k], want[name], bounds32[name], f"float32 {name}")
        _assert_within(half[k], want[name], bounds16[name], f"{dtype} {name}")
    # The softmax statistics are float32 from the same (representable) logits
    # in both: the same arithmetic, so the same bits.
    _assert_bits_equal(half[1], single[1], "lse")
    # The 16-bit path really is 16-bit: values are representable, and differ from float32.
    assert _bits_equal(half[0], _rounded(half[0], dtype))
    assert not np.array_equal(half[0], single[0])


# ----------------------------------------------------------------------------
# Index arithmetic past 2^31, launch checks, refused features
# ----------------------------------------------------------------------------


def _map_x_to_y(index: int, n, h, w, mh, mw, psa_type) -> int:
    """psa_mask's element map in Python integers (no overflow possible)."""
    rest, ww = divmod(index, w)
    rest, hh_ = divmod(rest, h)
    b, k = divmod(rest, mh * mw)
    i, j = divmod(k, mw)
    th, tw = hh_ + i - (mh - 1) // 2, ww + j - (mw - 1) // 2
    if not (0 <= th < h and 0 <= tw < w):
        return -1
    plane = h * w
    if psa_type == 0:
        return (b * plane + th * w + tw) * plane + hh_ * w + ww
    return (b * plane + hh_ * w + ww) * plane + th * w + tw


@pytest.mark.parametrize("geometry", [(3, 300, 300, 41, 41), (256, 512, 512, 129, 129)],
                         ids=["y-past-2^34", "blocks-capped"])
@pytest.mark.parametrize("psa_type", [0, 1])
def test_index_arithmetic_past_2_31(emulator, geometry, psa_type, tmp_path):
    n, h, w, mh, mw = geometry
    x_numel = n * mh * mw * h * w
    assert n * (h * w) ** 2 > 2 ** 34 and x_numel > 2 ** 28
    rng = np.random.default_rng(psa_type)
    picks = [0, x_numel - 1, x_numel // 2, 2 ** 31 - 1, 2 ** 31, 2 ** 32 + 5]
    picks += [int(v) for v in rng.integers(0, x_numel, 2000)]
    picks += [x_numel - 1 - k * h * w for k in range(200)]  # last image, every cell
    indices = np.array([p for p in picks if 0 <= p < x_numel], dtype="<i8")
    indices.tofile(tmp_path / "indices.bin")
    proc = subprocess.run([str(emulator), "index", *map(str, geometry), str(psa_type),
                           str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **SAN_ENV})
    assert proc.returncode == 0, proc.stderr
    got = np.fromfile(tmp_path / "targets.bin", dtype="<i8")
    want = [_map_x_to_y(int(v), n, h, w, mh, mw, psa_type) for v in indices]
    assert got.tolist() == want
    assert max(want) > 2 ** 34
    blocks = int(np.fromfile(tmp_path / "blocks.bin", dtype="<i8")[0])
    assert blocks == min(-(-x_numel // 256), 2 ** 31 - 1)


def test_launch_shape_is_checked_like_cuda(emulator):
    # 2048 threads per block is an invalid configuration on every GPU; the
    # emulated launch reports it through cudaGetLastError, as CUDA does.
    x = np.zeros((1, 9, 3, 3))
    with pytest.raises(AssertionError, match="invalid configuration argument"):
        _emulate(emulator, "mask", "forward", "float64", (1, 0, 3, 3, 3, 3), {"x": x}, ["y"],
                 (2048, 4, "forward"))


_REFUSED = {
    "shared": "__shared__ float tile[64]; tile[threadIdx.x] = p[0]; p[0] = tile[0];",
    "syncthreads": "p[threadIdx.x] = 1; __syncthreads();",
    "atomics": "atomicAdd(p, 1.0f);",
    "warp-shuffle": "p[0] = __shfl_down_sync(0xffffffffu, p[0], 1);",
}


@pytest.mark.parametrize("feature", sorted(_REFUSED))
def test_cooperative_features_are_refused_at_compile_time(feature, tmp_path):
    src = tmp_path / "kernel.cc"
    src.write_text('#include "kernel_support.h"\n'
                   f"__global__ void K(float* p) {{ {_REFUSED[feature]} }}\n"
                   "int main() { float v[64] = {};\n"
                   "  PSEXT_LAUNCH(K, 1, 64, nullptr, v); return 0; }\n")
    proc = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", f"-I{OPS / 'common'}", str(src)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot be emulated" in proc.stderr, proc.stderr[-2000:]


def test_independent_kernel_compiles_and_runs(tmp_path):
    # The control for the refusals above: the same harness, a kernel without
    # cooperative features, builds and runs every thread once.
    src = tmp_path / "kernel.cc"
    src.write_text('#include "kernel_support.h"\n'
                   "__global__ void K(int* p, int64_t n) { PSEXT_GRID_STRIDE_LOOP(i, n) p[i] += 1; }\n"
                   "int main() { int v[100] = {};\n"
                   "  PSEXT_LAUNCH(K, 3, 7, nullptr, v, int64_t{100});\n"
                   "  for (int k = 0; k < 100; ++k) if (v[k] != 1) return 1;\n"
                   "  return cudaGetLastError() == cudaSuccess ? 0 : 1; }\n")
    exe = tmp_path / "k"
    subprocess.run(["g++", "-std=c++17", f"-I{OPS / 'common'}", str(src), "-o", str(exe)],
                   check=True, timeout=120)
    assert subprocess.run([str(exe)], timeout=60).returncode == 0


# ----------------------------------------------------------------------------
# The GPU side compiles (where nvcc / the CUDA headers exist)
# ----------------------------------------------------------------------------

CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
if not (CUDA_INCLUDE / "cuda_fp16.h").is_file() and shutil.which("nvcc"):
    CUDA_INCLUDE = Path(shutil.which("nvcc")).resolve().parents[1] / "include"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("op", ["psa_mask", "psa_attention"])
def test_nvcc_compiles_every_instantiation(op, tmp_path):
    # The oldest architecture nvcc offers (CUDA 12/13: sm_75, before native
    # bfloat16 conversions) and sm_90.
    archs = subprocess.run(["nvcc", "--list-gpu-arch"], capture_output=True, text=True).stdout
    oldest = min(int(a.split("_")[1]) for a in archs.split() if a.startswith("compute_"))
    cmd = ["nvcc", "-c", str(OPS / op / f"{op}.cu"), "-o", str(tmp_path / f"{op}.o"),
           "-gencode", f"arch=compute_{oldest},code=sm_{oldest}",
           "-gencode", "arch=compute_90,code=sm_90",
           *(f"-I{d}" for d in INCLUDES), "-Xcompiler", "-Wall"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    symbols = subprocess.run(["nm", "-C", str(tmp_path / f"{op}.o")], capture_output=True,
                             text=True).stdout
    launcher = "PsaMaskForwardCuda" if op == "psa_mask" else "PsaAttentionBackwardCuda"
    for t in ("float const*", "double const*", "__half const*", "__nv_bfloat16 const*"):
        assert any(launcher in s and t in s for s in symbols.splitlines()), t


@pytest.mark.skipif(not (CUDA_INCLUDE / "cuda_fp16.h").is_file(), reason="no CUDA headers")
@pytest.mark.parametrize("op", ["psa_mask", "psa_attention"])
def test_gpu_branch_of_the_op_compiles_with_paddle_headers(op):
    # The .cc's PADDLE_WITH_CUDA branch (dtype dispatch, launcher calls)
    # against this Paddle's headers: what a CUDA build of the op compiles.
    inc = Path(paddle.__file__).parent / "include"
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-DPADDLE_WITH_CUDA", f"-I{CUDA_INCLUDE}",
           f"-I{CUDA_INCLUDE / 'cccl'}", f"-I{inc}", f"-I{inc / 'third_party'}",
           *(f"-I{d}" for d in INCLUDES), str(OPS / op / f"{op}.cc")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


# ----------------------------------------------------------------------------
# 16-bit tensors through the Python faces and PSANet: the compiled ops, never
# the [HW, HW] fallbacks
# ----------------------------------------------------------------------------


@pytest.fixture
def no_full_map(monkeypatch):
    """Make every path that builds an [HW, HW] map (or its index map) fail."""
    import importlib

    mask_mod = importlib.import_module("paddleseg_ext.ops.psa_mask")
    attn_mod = importlib.import_module("paddleseg_ext.ops.psa_attention")

    def refuse(*args, **kwargs):
        raise AssertionError("an [HW, HW] map was built")

    for mod, name in ((mask_mod, "_index_map"), (mask_mod, "psa_mask_reference"),
                      (attn_mod, "psa_attention_reference"), (attn_mod, "_unfused")):
        monkeypatch.setattr(mod, name, refuse)
    monkeypatch.delenv("PADDLESEG_EXT_PSA_IMPL", raising=False)


# With CUDA kernels, the ops take 16-bit tensors on GPU places only
# (test_gpu_ops.py); these tests cover the CPU kernels' float32 copies.
cpu_only_ops = pytest.mark.skipif(want_cuda(), reason="the ops are built with CUDA kernels")


@cpu_only_ops
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_tensors_use_the_compiled_ops(op_module, attention_op, no_full_map, dtype):
    # On the CPU the faces run the op on a float32 copy of the 16-bit values:
    # the same values as the float32 op, rounded once to the input's dtype.
    rng = np.random.default_rng(3)
    x32 = paddle.to_tensor(rng.standard_normal((2, 5, 6, 7)).astype("float32"))
    a32 = paddle.to_tensor(2 * rng.standard_normal((2, 15, 6, 7)).astype("float32"))
    x16, a16 = x32.astype(dtype), a32.astype(dtype)
    x16.stop_gradient = a16.stop_gradient = False
    y = psa_mask(a16, "distribute", (3, 5))
    assert str(y.dtype) == f"paddle.{dtype}"
    want = psa_mask(a16.astype("float32"), "distribute", (3, 5), impl="op")
    _assert_bits_equal(y.astype("float64").numpy().reshape(-1),
                       want.astype("float64").numpy(), "psa_mask")
    out = psa_attention(x16, a16, "collect", 2.0, mask_size=(3, 5))
    assert str(out.dtype) == f"paddle.{dtype}"
    ref = psa_attention(x16.astype("float32"), a16.astype("float32"), "collect", 2.0,
                        mask_size=(3, 5), impl="op").astype(dtype)
    _assert_bits_equal(out.astype("float64").numpy().reshape(-1),
                       ref.astype("float64").numpy(), "psa_attention")
    dx, da = paddle.grad([out], [x16, a16], [paddle.ones_like(out)])
    assert str(dx.dtype) == str(da.dtype) == f"paddle.{dtype}"
    assert np.isfinite(dx.astype("float32").numpy()).all()


@cpu_only_ops
def test_psanet_under_auto_cast_builds_no_full_map(attention_op, no_full_map):
    # PSANet with the fused PSA (its recipes' choice) under auto_cast, at a
    # map size where the fused op runs: on the CPU auto_cast leaves the
    # convolutions in float32, and the branches reach the op in a dtype it
    # takes. 16-bit branch outputs (what a GPU's AMP convolutions give) go
    # through the op too, as the wider dtype when the two branches differ.
    from paddleseg_ext.models import PSANet
    from paddleseg_ext.models.backbones import ResNet18_vd
    from paddleseg_ext.models.layers import psa_block
    from paddleseg_ext.runtime import ExecutionPolicy, prepare

    paddle.seed(0)
    net = PSANet(3, backbone=ResNet18_vd(output_stride=8), mask_h=7, mask_w=7)
    # the fused op at every map size (the policy's dispatch threshold at 0)
    net = prepare(net, ExecutionPolicy(target="infer", psa_impl="fused", fused_min_positions=0))
    x = paddle.randn([1, 3, 64, 64])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # auto_cast has no effect on a CPU place, and says so
        with paddle.amp.auto_cast(dtype="bfloat16"):
            logits = net(x)[0]
    assert logits.shape == [1, 3, 64, 64] and np.isfinite(logits.numpy()).all()
    psa = next(m for m in net.sublayers() if isinstance(m, psa_block.PSAModule))
    feat = paddle.randn([1, 8, 9, 9])
    attn = paddle.randn([1, 49, 9, 9])
    want = psa.aggregate(feat, attn, 0)
    for f, a in ((feat.astype("float16"), attn.astype("float16")),
                 (feat, attn.astype("bfloat16"))):
        got = psa.aggregate(*psa_block.matching_dtypes(f, a), 0)
        assert str(got.dtype) == str(f.dtype if f.dtype == a.dtype else feat.dtype)
        # Rounding the logits by u |a| moves each softmax weight by up to
        # 2 u max|a| relative; inputs and output add u each.
        u = UNIT_ROUNDOFF[str(a.dtype).replace("paddle.", "")]
        bound = u * (3 + 2 * np.abs(attn.numpy()).max()) * np.abs(want.numpy()).max()
        assert np.abs(got.astype("float32").numpy() - want.numpy()).max() <= bound



@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cpu_kernels_refuse_16_bit_tensors_clearly(op_module, attention_op, dtype):
    # Called directly (not through the faces, which pass a float32 copy).
    x = paddle.randn([1, 9, 3, 3]).astype(dtype)
    message = f"the CPU kernels take float32 or float64 tensors, got {dtype}"
    with pytest.raises(Exception, match=message):
        op_module.psa_mask(x, 0, 3, 3)
    with pytest.raises(Exception, match=message):
        attention_op.psa_attention(x, x, 0, 3, 3, True)
