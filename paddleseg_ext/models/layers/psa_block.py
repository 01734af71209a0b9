"""Point-wise spatial attention (PSA) module of PSANet.

Zhao et al., "PSANet: Point-wise Spatial Attention Network for Scene Parsing",
ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf, Sec. 3.

Every position ``i`` of a feature map predicts an ``mh x mw`` window of
attention weights centred on itself (``hh = (mh-1)//2`` rows above,
``hw = (mw-1)//2`` columns left). Two directions use that window:

* **collect** (paper Eq. 6): ``z_i = 1/N * sum_j a^c_{i,j} x_j`` -- position
  ``i`` gathers from the positions ``j`` of its window, with weights
  predicted *at i*;
* **distribute** (paper Eq. 7): ``z_i = 1/N * sum_j a^d_{j,i} x_j`` -- every
  position ``j`` sends to the positions of its window, with weights predicted
  *at j*; ``i`` sums what it receives.

The PSA mask op (``paddleseg_ext.ops.psa_mask``) scatters each window into an
``[H*W, H*W]`` map ``Y`` with rows = source positions ``j`` and columns =
receiving positions ``i``, so both directions become one batched matmul
``X [C, HW] @ Y [HW, HW]`` (the official code's ``torch.bmm``).

Implementation choices (checked against the authors' code,
https://github.com/hszhao/semseg ``model/psanet.py``, and mmsegmentation's
``PSAHead``):

* shrink: the reduced feature map is resized *bilinearly with
  align_corners=True* to ``((h-1)//s + 1, (w-1)//s + 1)`` -- neither an
  average pool nor a strided conv. For ``h = s*k + 1`` this is exact
  subsampling of every s-th pixel. The context is resized back to the input
  feature size the same way (mmseg's choice; the authors' ``(h'-1)*s+1``
  only equals ``h`` for such odd sizes).
* softmax (``psa_softmax``) runs over the source axis of ``Y`` *after*
  masking, so cells outside the window take part with logit 0 (as in the
  authors' code; they are not set to -inf).
* ``compact=True`` skips the mask op: the ``mh*mw`` attention channels are
  read as absolute positions of the (shrunk) map, which needs
  ``mh*mw == h*w``. Collect then uses ``Y[j, i] = A[j, i]`` (channel j at
  position i) and distribute ``Y[j, i] = A[i, j]`` (a transpose), as in the
  authors' code. (mmseg transposes the *collect* map in its single-direction
  branch, which contradicts its own bi-direction branch; we do not follow
  that.)
"""

from __future__ import annotations

import os
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs.validators import (BOOL, POSITIVE_INT, POSITIVE_NUMBER, one_of,
                                             optional, validated)
from paddleseg_ext.ops import (ATTENTION_OP_NAME, OP_NAME, is_attention_op_available,
                               is_compiled_op_available, load_attention_op_library,
                               load_op_library, psa_attention, psa_mask)

from .conv_bn import ConvBNReLU
from .softmax import channel_softmax

__all__ = ["PSAModule", "psa_aggregate", "parse_psa_type", "resolve_psa_impl",
           "PSA_TYPES", "PSA_IMPLS", "PSA_CONCAT_ORDERS"]

#: Accepted ``psa_type`` names and PaddleSeg's integer codes.
PSA_TYPES = {"collect": 0, "distribute": 1, "bi-direction": 2}
#: Accepted ``psa_impl`` values.
PSA_IMPLS = ("auto", "op", "paddle", "fused")
#: ``fused`` runs the unfused compiled path on maps of at most this many
#: positions, where it is faster on CPU (docs/benchmarks.md, psa_attention).
FUSED_MIN_POSITIONS = 16384
#: Accepted ``concat_order`` values: which bi-direction branch comes first in
#: the context fed to ``proj`` (the authors' code: collect; PSANet_paddle:
#: distribute).
PSA_CONCAT_ORDERS = ("collect_first", "distribute_first")

_IMPL_ENV = "PADDLESEG_EXT_PSA_IMPL"  # same variable as paddleseg_ext.ops.psa_mask
_FALLBACK_WARNED = False

PsaType = Union[str, int]


# --------------------------------------------------------------------------
# Argument helpers (shared with PSANet so errors name the right owner)
# --------------------------------------------------------------------------

#: ``psa_type``: a name, or PaddleSeg's integer code; the constructor receives the code.
PSA_TYPE = one_of(*PSA_TYPES, aliases={**PSA_TYPES, **{v: v for v in PSA_TYPES.values()}},
                  normalise=str.lower,
                  words="one of 'collect', 'distribute', 'bi-direction' (or PaddleSeg's 0, 1, 2)")
#: ``psa_impl`` (case and surrounding blanks ignored).
PSA_IMPL = one_of(*PSA_IMPLS, normalise=lambda v: v.strip().lower())
PSA_CONCAT_ORDER = one_of(*PSA_CONCAT_ORDERS)
#: Attention sums are divided by it; None means the window size (the authors' convention).
NORMALIZATION_FACTOR = optional(POSITIVE_NUMBER)


def parse_psa_type(value: PsaType, owner: str = "PSAModule") -> int:
    """``'collect' | 'distribute' | 'bi-direction'`` or ``0 | 1 | 2`` -> 0/1/2.

    Raises:
        ValueError: any other value (bools included).
    """
    return PSA_TYPE(owner, "psa_type", value)


def resolve_psa_impl(requested: str) -> str:
    """Resolve ``'auto' | 'op' | 'paddle' | 'fused'`` to the implementation that will run.

    ``'auto'`` follows ``$PADDLESEG_EXT_PSA_IMPL`` when it is set (like
    :func:`paddleseg_ext.ops.psa_mask`), else picks ``'op'`` when the compiled
    mask op can be loaded or built and ``'paddle'`` otherwise (one warning).
    ``'fused'`` is chosen explicitly (the PSANet recipes do).

    Args:
        requested: the layer's ``psa_impl``.

    Returns:
        ``'fused'``, ``'op'`` or ``'paddle'``.
    """
    mode = PSA_IMPL("PSAModule", "psa_impl", requested)
    if mode == "auto":
        env = os.environ.get(_IMPL_ENV, "").strip().lower()
        if env:
            mode = PSA_IMPL(f"PSAModule (from ${_IMPL_ENV})", "psa_impl", env)
    if mode != "auto":
        return mode
    if is_compiled_op_available(build=True):
        return "op"
    global _FALLBACK_WARNED
    if not _FALLBACK_WARNED:
        _FALLBACK_WARNED = True
        warnings.warn("PSAModule: psa_impl='auto' found no compiled psa_mask op (build it with "
                      "`python -m paddleseg_ext.ops.build`); using the pure-Paddle PSA mask.",
                      RuntimeWarning, stacklevel=3)
    return "paddle"


@paddle.jit.not_to_static
def _traced_mask_fn(impl: Optional[str]):
    """The PSA mask callable to put in a traced program (``to_static``).

    ``psa_mask``'s op loader (locks, module state) is not traceable, so while
    tracing the raw compiled op is fetched here, outside the trace, via the
    public :func:`paddleseg_ext.ops.load_op_library`; ``None`` means the
    pure-Paddle path (``psa_mask(impl='paddle')`` traces fine).
    """
    if resolve_psa_impl(impl or "auto") == "op":
        return load_op_library(build=True)[0].psa_mask
    return None


@paddle.jit.not_to_static
def _traced_attention_fn():
    """The compiled fused op for a traced program, or None (not loadable):
    fetched outside the trace, as :func:`_traced_mask_fn` does."""
    if is_attention_op_available(build=True):
        return load_attention_op_library(build=True)[0].psa_attention
    return None


def _apply_mask(attn: paddle.Tensor, direction: int, mh: int, mw: int,
                impl: Optional[str]) -> paddle.Tensor:
    if not paddle.in_dynamic_mode():
        op = _traced_mask_fn(impl)
        if op is not None:
            return op(attn, direction, mh, mw)
        impl = "paddle"
    return psa_mask(attn, direction, (mh, mw), impl=impl)


# unified: run as plain Python under paddle.jit.to_static (the size dispatch
# and the op lookup are not graph code), as psa_mask does.
@paddle.jit.marker.unified
def _fused(feat: paddle.Tensor, attn: paddle.Tensor, direction: int, mh: int, mw: int,
           softmax: bool, normalization_factor: float) -> paddle.Tensor:
    """``psa_impl='fused'``: the fused attention, or the unfused path where it is faster.

    Dygraph: the unfused compiled path on maps of at most
    :data:`FUSED_MIN_POSITIONS` positions (faster there on CPU), else the
    fused op (its chunked pure-Paddle fallback if the op cannot load). A traced
    program has no static map size: it calls the compiled fused op whenever it
    loads (exact at every size), else the unfused pure-Paddle composition.
    """
    if not paddle.in_dynamic_mode():
        op = _traced_attention_fn()
        if op is None:
            return psa_aggregate(feat, attn, direction, (mh, mw), softmax=softmax,
                                 normalization_factor=normalization_factor, impl="paddle")
        out = op(feat, attn, direction, mh, mw, softmax)[0]
    elif int(feat.shape[2]) * int(feat.shape[3]) <= FUSED_MIN_POSITIONS:
        return psa_aggregate(feat, attn, direction, (mh, mw), softmax=softmax,
                             normalization_factor=normalization_factor, impl="auto")
    else:
        out = psa_attention(feat, attn, direction, 1.0, softmax, (mh, mw))
    return out * (1.0 / normalization_factor) if normalization_factor != 1.0 else out


def _shape(x: paddle.Tensor):
    """Static list in dygraph; a shape tensor while tracing (dynamic H, W)."""
    return list(x.shape) if paddle.in_dynamic_mode() else paddle.shape(x)


# --------------------------------------------------------------------------
# The aggregation (paper Eq. 6/7)
# --------------------------------------------------------------------------

def psa_aggregate(feat: paddle.Tensor, attn: paddle.Tensor, direction: int,
                  mask_size: Sequence[int], *, compact: bool = False, softmax: bool = True,
                  normalization_factor: float = 1.0, impl: Optional[str] = None) -> paddle.Tensor:
    """Point-wise spatial attention aggregation for one direction.

    Args:
        feat: ``[N, C, h, w]`` features ``x`` to aggregate.
        attn: ``[N, mh*mw, h, w]`` attention logits predicted at every
            position (``[N, h*w, h, w]`` absolute-position logits if
            ``compact``).
        direction: 0 collect, 1 distribute.
        mask_size: ``(mh, mw)``.
        compact: read ``attn`` channels as absolute positions (no mask op).
        softmax: softmax over the source positions after masking.
        normalization_factor: the result is multiplied by its inverse
            (the paper's ``1/N``).
        impl: ``'op' | 'paddle' | 'auto'`` or None (= auto), as in
            :func:`paddleseg_ext.ops.psa_mask` (in a traced program the
            choice is resolved once, at trace time); ``'fused'``:
            :func:`paddleseg_ext.ops.psa_attention` without the ``[hw, hw]``
            map on maps of more than :data:`FUSED_MIN_POSITIONS` positions,
            the compiled unfused path (or pure Paddle) below that.

    Returns:
        ``[N, C, h, w]``: ``z[:, :, i] = sum_j Y[j, i] * feat[:, :, j] / norm``.

    Raises:
        ValueError: ``compact`` and ``mh*mw != h*w`` (checked in dygraph).
    """
    mh, mw = int(mask_size[0]), int(mask_size[1])
    if compact:
        if paddle.in_dynamic_mode():
            h, w = int(feat.shape[2]), int(feat.shape[3])
            if mh * mw != h * w:
                raise ValueError(
                    f"PSAModule: compact=True reads the mask_h*mask_w = {mh}*{mw} = {mh * mw} "
                    f"attention channels as absolute positions of the {h}x{w} attention map "
                    f"(after shrink_factor), so mask_h*mask_w must equal {h * w}; use "
                    f"mask_h={h}, mask_w={w} for this input size, or compact=False")
        # A[c, s]: channel c (absolute target) predicted at position s.
        y = attn.reshape([0, 0, -1])
        if direction == 1:
            y = y.transpose([0, 2, 1])  # distribute: Y[j, i] = A[i, j] (predicted at sender j)
    elif impl == "fused":
        return _fused(feat, attn, direction, mh, mw, softmax, normalization_factor)
    else:
        y = _apply_mask(attn, direction, mh, mw, impl).reshape([0, 0, -1])
    # y: [N, HW_source j, HW_receiver i]
    if softmax:
        y = channel_softmax(y)
    out = paddle.bmm(feat.reshape([0, 0, -1]), y)  # [N, C, HW_source] @ [N, HW, HW]
    if normalization_factor != 1.0:
        out = out * (1.0 / normalization_factor)
    return out.reshape(_shape(feat))


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------

@validated(in_channels=POSITIVE_INT, mid_channels=POSITIVE_INT, psa_type=PSA_TYPE,
           shrink_factor=POSITIVE_INT, normalization_factor=NORMALIZATION_FACTOR,
           psa_softmax=BOOL, compact=BOOL, impl=PSA_IMPL, concat_order=PSA_CONCAT_ORDER)
class PSAModule(nn.Layer):
    """Point-wise spatial attention module (Zhao et al., ECCV 2018, Fig. 3).

    Per branch (collect, distribute, or both for ``'bi-direction'``): 1x1
    ConvBNReLU reduction ``C -> mid``, optional bilinear shrink by
    ``shrink_factor``, attention ``1x1 ConvBNReLU mid -> mid`` then ``1x1 conv
    mid -> mh*mw`` (no bias), PSA mask, optional softmax, aggregation by a
    batched matmul scaled by ``1/normalization_factor``. The branch outputs
    are concatenated (collect first, as in the authors' code, unless
    ``concat_order='distribute_first'``), projected back to ``C`` by a 1x1
    ConvBNReLU, resized to the input size if shrunk and concatenated after the
    input.

    Sub-layer names follow the authors' code (``reduce``/``attention`` for
    collect, or for the only branch; ``reduce_p``/``attention_p`` for
    distribute in bi-direction mode; ``proj``).

    Args:
        in_channels: channels C of the input (2048 for ResNet-50 stage 4).
        mid_channels: channels of the reduced features (512 in the paper).
        psa_type: ``'collect'``/0, ``'distribute'``/1, ``'bi-direction'``/2.
        mask_size: ``(mask_h, mask_w)``; odd or even. To cover the whole
            shrunk ``h x w`` map from every position use ``(2h-1, 2w-1)``.
        shrink_factor: spatial shrink before attention (1 = none).
        normalization_factor: the paper's N; None means ``mask_h*mask_w``.
        psa_softmax: softmax over source positions.
        compact: attention channels are absolute positions (no mask op);
            needs ``mask_h*mask_w == h*w`` of the shrunk map.
        impl: ``'fused'`` (PSA mask, softmax and aggregation in one op
            without the ``[hw, hw]`` map, on maps of more than
            :data:`FUSED_MIN_POSITIONS` positions), ``'op'`` (compiled mask
            op), ``'paddle'`` (pure Paddle) or ``'auto'``
            (``$PADDLESEG_EXT_PSA_IMPL``, else ``op`` if the mask op can be
            loaded or built, else pure Paddle); resolved once, lazily, see
            :attr:`custom_ops`.
        concat_order: bi-direction only: ``'collect_first'`` (the authors')
            or ``'distribute_first'`` (PSANet_paddle, justld/PSANet_paddle,
            ``paddle.concat([x_dis, x_col])``), i.e. which half of ``proj``'s
            input channels reads which branch. The same function class; it
            only decides which checkpoints fit.

    Shape:
        x: ``[N, C, H, W]`` -> ``[N, 2C, H, W]`` (input, then context).
    """

    def __init__(self, in_channels: int, mid_channels: int = 512, psa_type: PsaType = 2,
                 mask_size: Sequence[int] = (59, 59), shrink_factor: int = 2,
                 normalization_factor: Optional[float] = 1.0, psa_softmax: bool = True,
                 compact: bool = False, impl: str = "auto",
                 concat_order: str = "collect_first") -> None:
        super().__init__()
        owner = "PSAModule"
        size = tuple(mask_size) if isinstance(mask_size, (list, tuple)) else ()
        if len(size) != 2:
            raise ValueError(f"{owner}: mask_size must be (mask_h, mask_w), got {mask_size!r}")
        mh = POSITIVE_INT(owner, "mask_h", size[0])
        mw = POSITIVE_INT(owner, "mask_w", size[1])
        self.psa_type = psa_type
        self.mask_size = (mh, mw)
        self.shrink_factor = shrink_factor
        self.normalization_factor = (float(mh * mw) if normalization_factor is None
                                     else normalization_factor)
        self.psa_softmax = psa_softmax
        self.compact = compact
        self.psa_impl = impl
        self.concat_order = concat_order
        self._resolved_impl: Optional[str] = None
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels

        def attention() -> nn.Sequential:
            return nn.Sequential(ConvBNReLU(mid_channels, mid_channels, 1),
                                 nn.Conv2D(mid_channels, mh * mw, 1, bias_attr=False))

        self.reduce = ConvBNReLU(in_channels, mid_channels, 1)
        self.attention = attention()
        n_branches = 1
        if self.psa_type == 2:
            self.reduce_p = ConvBNReLU(in_channels, mid_channels, 1)
            self.attention_p = attention()
            n_branches = 2
        self.proj = ConvBNReLU(mid_channels * n_branches, in_channels, 1)

    # -- implementation bookkeeping -----------------------------------------
    @paddle.jit.not_to_static
    def resolve_impl(self) -> str:
        """The PSA implementation forward uses: ``'fused'``, ``'op'`` or ``'paddle'``.

        Resolved on first call (first forward, or first read of
        :attr:`custom_ops`) and then fixed for this layer, so what the
        exporter records is what the traced program calls. With ``'auto'``
        this may build the op once (cached per user).
        """
        if self._resolved_impl is None:
            self._resolved_impl = resolve_psa_impl(self.psa_impl)
        return self._resolved_impl

    @property
    def custom_ops(self) -> Tuple[str, ...]:
        """Compiled ops forward calls; read by the exporter for deploy.yaml.

        ``('psa_mask',)`` when the compiled mask op is in use,
        ``('psa_attention',)`` for the fused op (what a traced program calls
        with ``fused``), ``()`` for the pure-Paddle path and in compact mode
        (no mask op at all).
        """
        if self.compact:
            return ()
        resolved = self.resolve_impl()
        if resolved == "fused":
            return (ATTENTION_OP_NAME,) if is_attention_op_available(build=True) else ()
        return (OP_NAME,) if resolved == "op" else ()

    def _call_impl(self) -> str:
        resolved = self.resolve_impl()
        if resolved == "op" and self.psa_impl == "auto":
            # Keep psa_mask's own per-call fallback (e.g. float16, or a GPU
            # tensor with a CPU-only build); the op is loaded, so no build.
            return "auto"
        return resolved

    # -- forward --------------------------------------------------------------
    def _shrink(self, feat: paddle.Tensor) -> paddle.Tensor:
        s = self.shrink_factor
        if s == 1:
            return feat
        shape = _shape(feat)
        size = [(shape[2] - 1) // s + 1, (shape[3] - 1) // s + 1]
        # align_corners=True: for h = s*k+1 this picks exactly every s-th pixel.
        return F.interpolate(feat, size=size, mode="bilinear", align_corners=True)

    def aggregate(self, feat: paddle.Tensor, attn: paddle.Tensor, direction: int) -> paddle.Tensor:
        """:func:`psa_aggregate` with this module's settings.

        Args:
            feat: ``[N, C, h, w]`` reduced (and shrunk) features.
            attn: ``[N, mask_h*mask_w, h, w]`` attention logits.
            direction: 0 collect, 1 distribute.

        Returns:
            ``[N, C, h, w]`` aggregated context.
        """
        return psa_aggregate(feat, attn, direction, self.mask_size, compact=self.compact,
                             softmax=self.psa_softmax,
                             normalization_factor=self.normalization_factor,
                             impl=None if self.compact else self._call_impl())

    def _branch(self, x: paddle.Tensor, reduce: nn.Layer, attention: nn.Layer,
                direction: int) -> paddle.Tensor:
        feat = self._shrink(reduce(x))
        return self.aggregate(feat, attention(feat), direction)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat(self.forward_parts(x), axis=1)

    def forward_parts(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        """``[x, ctx]``, the two halves :meth:`forward` concatenates (a
        consumer that is linear in channels can skip the concat)."""
        if self.psa_type == 2:
            branches = [self._branch(x, self.reduce, self.attention, 0),
                        self._branch(x, self.reduce_p, self.attention_p, 1)]
            if self.concat_order == "distribute_first":
                branches.reverse()
            ctx = paddle.concat(branches, axis=1)
        else:
            ctx = self._branch(x, self.reduce, self.attention, self.psa_type)
        ctx = self.proj(ctx)
        if self.shrink_factor != 1:
            ctx = F.interpolate(ctx, size=_shape(x)[2:], mode="bilinear", align_corners=True)
        return [x, ctx]

    def extra_repr(self) -> str:
        names: List[str] = ["collect", "distribute", "bi-direction"]
        return (f"psa_type={names[self.psa_type]}, mask_size={self.mask_size}, "
                f"shrink_factor={self.shrink_factor}, compact={self.compact}, "
                f"psa_softmax={self.psa_softmax}, "
                f"normalization_factor={self.normalization_factor}, psa_impl={self.psa_impl}, "
                f"concat_order={self.concat_order}")
