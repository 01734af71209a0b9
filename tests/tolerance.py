"""Tolerances for comparing two implementations of one function, derived from the computation.

Two float implementations of the same function (Winograd vs ``conv2d``, folded vs plain
BatchNorm, fused vs unfused PSA attention, an exported program vs dygraph, onnxruntime vs
Paddle, a peer's network vs ours) sum the same terms in different orders, so they differ by
rounding, and by how much depends on the CPU's kernels (MKL's AVX2 and AVX-512 paths, FMA or
not, how many threads split a sum). A bound taken from one machine's run fails on the next
machine; a bound taken from the computation holds on every one and still catches a real error,
whose size is that of the values themselves.

The model, stated once here and used by every cross-implementation test:

* One sum of ``n`` products, rounded in any order, is off by at most ``lam * sqrt(n) * u``
  times the sum of the terms' magnitudes, except with probability below
  ``2 n exp(-lam^2 / 2)`` (Higham & Mary, "A new approach to probabilistic rounding error
  analysis", SIAM J. Sci. Comput. 41(5), 2019, Theorem 2.4). ``u`` is the unit roundoff of the
  dtype; ``lam = 6`` puts that probability below ``1e-7 * n``. The terms' magnitude is
  bounded by the scale of the values compared (``max |reference|``).
* Two implementations each carry such an error: the bound counts both.
* A network of ``depth`` accumulating layers (convolutions, linear layers, attention matmuls)
  of fan-in ``n`` puts at most ``depth * n`` roundings on the path to one output; under the
  same model their errors add as independent terms, so the bound is ``lam * sqrt(depth * n)
  * u`` at the scale of the output (BatchNorm keeps each layer's output at the scale of the
  next, so a rounding made early is neither shrunk nor blown up on its way).
* Winograd F(2x2, 3x3) multiplies the error of a 3x3 convolution by at most
  ``(||A^T|| ||G|| ||B^T||)^2`` (2-norms of its transform matrices, Lavin & Gray 2016),
  the growth factor of Barabasz et al., "Error analysis and improving the accuracy of
  Winograd convolution for deep neural networks", ACM TOMS 46(4), 2020.

For the small networks of the tests (depth 20-70, fan-in up to ten thousand) this allows
about 1e-4 to 1e-3 of the output's scale (1e-3 to 1e-2 with Winograd on one side), while a wrong index, weight, padding or missing term
changes outputs by a sizeable fraction of it (``tests/test_tolerance.py`` shows both sides).
Exactness tests in float64 keep their own tight bounds.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np

# Unit roundoff u = 2^-p of each format (p = significand bits including the implicit one).
UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -24,
                 "float64": 2.0 ** -53}
LAMBDA = 6.0

# Winograd F(2x2, 3x3) transform matrices (Lavin & Gray, "Fast Algorithms for Convolutional
# Neural Networks", CVPR 2016): Y = A^T [(G g G^T) * (B^T d B)] A.
_WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
_WINOGRAD_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], dtype=np.float64)
_WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
                        dtype=np.float64)
WINOGRAD_GROWTH = float(np.prod([np.linalg.norm(m, 2) for m in
                                 (_WINOGRAD_AT, _WINOGRAD_G, _WINOGRAD_BT)]) ** 2)  # ~20.5


def _dtype_name(dtype: Any) -> str:
    name = str(dtype).replace("paddle.", "")
    if name not in UNIT_ROUNDOFF:
        raise ValueError(f"no unit roundoff for dtype {dtype!r}; known: {sorted(UNIT_ROUNDOFF)}")
    return name


def sum_error(n: int, dtype: Any = "float32") -> float:
    """Relative error of one ``n``-term sum of products against the sum of |terms|."""
    return LAMBDA * math.sqrt(max(1, int(n))) * UNIT_ROUNDOFF[_dtype_name(dtype)]


def bound(scale: float, fan_in: int, depth: int = 1, dtype: Any = "float32",
          winograd: bool = False, implementations: int = 2) -> float:
    """Largest expected ``max |a - b|`` between two implementations of one computation.

    Args:
        scale: magnitude of the values compared (``max |reference|``; at least 1 for logits,
            so that a near-zero output does not make the bound vanish).
        fan_in: the longest sum in one layer (``C_in / groups * kh * kw`` for a convolution,
            the reduced length for a matmul).
        depth: accumulating layers on the way to the compared values.
        dtype: the precision both implementations run in.
        winograd: one side runs its 3x3 convolutions as Winograd F(2x2, 3x3).
        implementations: how many of the two sides round (2; 1 against an exact reference).
    """
    path = max(1, int(depth)) * max(1, int(fan_in))
    return implementations * sum_error(path, dtype) * (WINOGRAD_GROWTH if winograd else 1.0) * float(scale)


def network_shape(model: Any, attention_fan_in: int = 0) -> tuple:
    """``(depth, fan_in)`` of a Paddle network: its accumulating layers and their longest sum.

    Counts every ``Conv2D`` and ``Linear`` sub-layer (an upper bound on the longest path
    through the network) and takes the largest per-output sum among them;
    ``attention_fan_in`` adds the attention matmuls' reduction length (``H*W`` for DANet's
    PAM and PSANet's attention), counted as two more layers.
    """
    import paddle

    depth, fan_in = 0, 1
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, paddle.nn.Conv2D):
            w = layer.weight.shape  # [C_out, C_in / groups, kh, kw]
            depth += 1
            fan_in = max(fan_in, int(w[1] * w[2] * w[3]))
        elif isinstance(layer, paddle.nn.Linear):
            depth += 1
            fan_in = max(fan_in, int(layer.weight.shape[0]))
    if attention_fan_in:
        depth += 2
        fan_in = max(fan_in, int(attention_fan_in))
    return depth, fan_in


def network_bound(model: Any, reference: np.ndarray, *, winograd: bool = True,
                  attention_fan_in: int = 0, dtype: Any = "float32") -> float:
    """:func:`bound` for the outputs of ``model``, scaled by ``max(1, max |reference|)``.

    ``winograd`` defaults to True: dygraph runs CPU 3x3 convolutions as Winograd unless it is
    turned off, and the exported program never does.
    """
    depth, fan_in = network_shape(model, attention_fan_in)
    scale = max(1.0, float(np.abs(reference).max()))
    return bound(scale, fan_in, depth, dtype=dtype, winograd=winograd)


def assert_close(got: Any, want: Any, tol: float, what: str = "") -> float:
    """Assert ``max |got - want| <= tol``; returns the difference.

    The message gives the difference, the bound and their ratio, so a failure says by how
    much the computation left its rounding budget.
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shapes {got.shape} vs {want.shape}"
    assert np.isfinite(got).all() == np.isfinite(want).all(), f"{what}: non-finite values differ"
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    assert diff <= tol, (f"{what}: max |diff| {diff:.3g} > bound {tol:.3g} "
                         f"({diff / tol:.1f}x the rounding budget; see tests/tolerance.py)")
    return diff


def assert_all_close(pairs: Iterable[Sequence[Any]], tol_of: Any, what: str = "") -> None:
    """:func:`assert_close` over ``(got, want)`` pairs; ``tol_of(want)`` gives each bound."""
    for i, (got, want) in enumerate(pairs):
        assert_close(got, want, tol_of(np.asarray(want)), f"{what}[{i}]")


def gradient_bound(grad_ref: np.ndarray, fan_in: int, depth: int, dtype: Any = "float32",
                   winograd: bool = False, scale: Optional[float] = None) -> float:
    """:func:`bound` for a gradient: the backward pass sums over the same fan-in and depth.

    The scale is that of the gradient itself (``max |grad_ref|``) unless given.
    """
    s = float(np.abs(grad_ref).max()) if scale is None else float(scale)
    return bound(max(s, np.finfo(np.float64).tiny), fan_in, depth, dtype=dtype, winograd=winograd)


def network_gradient_bound(model: Any, grad_ref: np.ndarray, positions: int, *,
                           winograd: bool = False, attention_fan_in: int = 0,
                           dtype: Any = "float32", scale: Optional[float] = None) -> float:
    """:func:`bound` for a parameter gradient of ``model``.

    The backward pass runs through the forward's layers again (twice the depth) and a weight's
    gradient sums over every output position that used it (``positions``: batch times output
    pixels at the input's resolution, an upper bound for every layer). ``scale`` defaults to
    the gradient's own magnitude; pass the largest gradient of the model where some are zero
    up to rounding (a key bias under a softmax: its rounding is that of the signal around it).
    """
    depth, fan_in = network_shape(model, attention_fan_in)
    if scale is None:
        scale = float(np.abs(grad_ref).max())
    scale = max(float(scale), np.finfo(np.float32).tiny)
    return bound(scale, max(fan_in, int(positions)), 2 * depth, dtype=dtype, winograd=winograd)


def assert_argmax_agrees(got: Any, want: Any, tol: float, axis: int = 1, what: str = "") -> None:
    """Assert the class maps agree wherever the reference's top two logits are apart.

    Where ``want``'s best and second-best logits are within ``2 * tol`` of each other, two
    implementations that each stay within the rounding budget may pick either class; everywhere
    else they must pick the same one. Returns nothing; the message counts the disagreements.
    """
    got, want = np.asarray(got), np.asarray(want)
    top2 = np.sort(want, axis=axis)
    margin = np.take(top2, -1, axis=axis) - np.take(top2, -2, axis=axis)
    decided = margin > 2 * tol
    differ = (got.argmax(axis) != want.argmax(axis)) & decided
    assert not differ.any(), (f"{what}: argmax differs at {int(differ.sum())} of "
                              f"{int(decided.sum())} pixels whose top-2 margin exceeds 2 x {tol:.3g}")
