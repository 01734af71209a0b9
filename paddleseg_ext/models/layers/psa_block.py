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

from typing import Callable, List, Optional, Sequence, Tuple, Union

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs.validators import (BOOL, NON_NEGATIVE_INT, POSITIVE_INT, POSITIVE_NUMBER, one_of,
                                             optional, validated)
from paddleseg_ext.ops import psa_mask

from .conv_bn import ConvBNReLU
from .resize import spatial_size
from .softmax import channel_softmax

__all__ = ["PSAModule", "psa_aggregate", "matching_dtypes", "parse_psa_type", "PSA_TYPES", "PSA_CONCAT_ORDERS",
           "PSA_RESIZE_RULES"]

#: Accepted ``psa_type`` names and PaddleSeg's integer codes.
PSA_TYPES = {"collect": 0, "distribute": 1, "bi-direction": 2}
#: Bytes per element of the dtypes the PSA ops take (the wider wins when the branches differ).
_DTYPE_BYTES = {f"paddle.{k}": v for k, v in
                (("float16", 2), ("bfloat16", 2), ("float32", 4), ("float64", 8))}
#: Accepted ``concat_order`` values: which bi-direction branch comes first in
#: the context fed to ``proj`` (the authors' code: collect; PSANet_paddle:
#: distribute).
PSA_CONCAT_ORDERS = ("collect_first", "distribute_first")
#: Accepted ``resize_rule`` values: how the branch input is shrunk and the
#: context expanded back (see :class:`PSAModule`).
PSA_RESIZE_RULES = ("authors", "mmseg")

PsaType = Union[str, int]


# --------------------------------------------------------------------------
# Argument helpers (shared with PSANet so errors name the right owner)
# --------------------------------------------------------------------------

#: ``psa_type``: a name, or PaddleSeg's integer code; the constructor receives the code.
PSA_TYPE = one_of(*PSA_TYPES, aliases={**PSA_TYPES, **{v: v for v in PSA_TYPES.values()}},
                  normalise=str.lower,
                  words="one of 'collect', 'distribute', 'bi-direction' (or PaddleSeg's 0, 1, 2)")
PSA_CONCAT_ORDER = one_of(*PSA_CONCAT_ORDERS)
PSA_RESIZE_RULE = one_of(*PSA_RESIZE_RULES)
#: Attention sums are divided by it; None means the window size (the authors' convention).
NORMALIZATION_FACTOR = optional(POSITIVE_NUMBER)


def parse_psa_type(value: PsaType, owner: str = "PSAModule") -> int:
    """``'collect' | 'distribute' | 'bi-direction'`` or ``0 | 1 | 2`` -> 0/1/2.

    Raises:
        ValueError: any other value (bools included).
    """
    return PSA_TYPE(owner, "psa_type", value)


# --------------------------------------------------------------------------
# The aggregation (paper Eq. 6/7)
# --------------------------------------------------------------------------

def matching_dtypes(feat: paddle.Tensor, attn: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """``feat`` and ``attn`` in one dtype, the wider of theirs.

    Mixed precision can leave the two branches in different dtypes (a GPU's AMP convolutions
    give 16-bit outputs); the PSA ops take one, and the wider loses no precision.
    """
    if feat.dtype == attn.dtype:
        return feat, attn
    wide = max((feat.dtype, attn.dtype), key=lambda d: _DTYPE_BYTES.get(str(d), 0))
    return feat.astype(wide), attn.astype(wide)


MaskFn = Callable[[paddle.Tensor, int, int, int], paddle.Tensor]


def psa_aggregate(feat: paddle.Tensor, attn: paddle.Tensor, direction: int,
                  mask_size: Sequence[int], *, compact: bool = False, softmax: bool = True,
                  normalization_factor: float = 1.0,
                  mask_fn: Optional[MaskFn] = None) -> paddle.Tensor:
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
        mask_fn: ``mask_fn(attn, direction, mh, mw) -> [N, h*w, h, w]``, the PSA mask;
            default :func:`paddleseg_ext.ops.psa_mask` (the execution policy picks its
            implementation).

    Returns:
        ``[N, C, h, w]``: ``z[:, :, i] = sum_j Y[j, i] * feat[:, :, j] / norm``.

    Raises:
        ValueError: ``compact`` and ``mh*mw != h*w``.
    """
    mh, mw = int(mask_size[0]), int(mask_size[1])
    size = spatial_size(feat)
    if compact:
        if not isinstance(size, paddle.Tensor):  # a traced program has no static size to check
            h, w = size
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
    else:
        y = (psa_mask(attn, direction, (mh, mw)) if mask_fn is None
             else mask_fn(attn, direction, mh, mw)).reshape([0, 0, -1])
    # y: [N, HW_source j, HW_receiver i]
    if softmax:
        y = channel_softmax(y)
    out = paddle.bmm(feat.reshape([0, 0, -1]), y)  # [N, C, HW_source] @ [N, HW, HW]
    if normalization_factor != 1.0:
        out = out * (1.0 / normalization_factor)
    return out.reshape(paddle.shape(feat))


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------

@validated(in_channels=POSITIVE_INT, mid_channels=POSITIVE_INT, psa_type=PSA_TYPE,
           shrink_factor=POSITIVE_INT, normalization_factor=NORMALIZATION_FACTOR,
           psa_softmax=BOOL, compact=BOOL, concat_order=PSA_CONCAT_ORDER,
           resize_rule=PSA_RESIZE_RULE, proj_padding=NON_NEGATIVE_INT, align_corners=BOOL)
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
        concat_order: bi-direction only: ``'collect_first'`` (the authors')
            or ``'distribute_first'`` (PSANet_paddle, justld/PSANet_paddle,
            ``paddle.concat([x_dis, x_col])``), i.e. which half of ``proj``'s
            input channels reads which branch. The same function class; it
            only decides which checkpoints fit.
        resize_rule: how a map of ``h x w`` is shrunk by ``s`` and the context
            expanded back. ``'authors'`` (hszhao/semseg): to
            ``((h-1)//s+1, (w-1)//s+1)`` and back, both bilinear with
            align_corners=True. ``'mmseg'`` (mmsegmentation's ``PSAHead``,
            ``mmseg/models/decode_heads/psa_head.py``): when *both* ``h`` and
            ``w`` are not multiples of ``s``, as the authors; otherwise to
            ``(h//s, w//s)`` with align_corners=False; the expand uses the same
            align_corners as the shrink (``align_corners`` below when
            ``shrink_factor`` is 1). Equal for odd ``h`` and ``w``.
        proj_padding: zero padding of the 1x1 ``proj`` conv (0, ours). mmseg's
            ``PSAHead`` builds it with ``padding=1``: the projected context is
            2 pixels larger, its outer ring the constant ``ReLU(BN(0))``, and
            the expand resizes that larger map to the input size.
        align_corners: the expand's align_corners under ``resize_rule='mmseg'``
            with ``shrink_factor`` 1 (mmseg's head setting); unused otherwise.

    Shape:
        x: ``[N, C, H, W]`` -> ``[N, 2C, H, W]`` (input, then context).
    """

    def __init__(self, in_channels: int, mid_channels: int = 512, psa_type: PsaType = 2,
                 mask_size: Sequence[int] = (59, 59), shrink_factor: int = 2,
                 normalization_factor: Optional[float] = 1.0, psa_softmax: bool = True,
                 compact: bool = False, concat_order: str = "collect_first",
                 resize_rule: str = "authors", proj_padding: int = 0,
                 align_corners: bool = False) -> None:
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
        self.concat_order = concat_order
        self.resize_rule = resize_rule
        self.proj_padding = proj_padding
        self.align_corners = align_corners
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
        self.proj = ConvBNReLU(mid_channels * n_branches, in_channels, 1, padding=proj_padding)

    # -- forward --------------------------------------------------------------
    def _shrunk_size(self, x: paddle.Tensor) -> Tuple[Sequence, bool]:
        """The shrunk ``[h', w']`` of ``x``'s map and the align_corners of both resizes."""
        s = self.shrink_factor
        if self.resize_rule == "authors":
            hw = spatial_size(x)
            return [(hw[0] - 1) // s + 1, (hw[1] - 1) // s + 1], True
        # mmseg's rule picks its resize from the size, so it needs the size as Python ints:
        # the static shape (a traced program with a fixed input shape has it too).
        h, w = (int(d) if d is not None else -1 for d in x.shape[2:])
        if h < 0 or w < 0:
            raise ValueError("PSAModule: resize_rule='mmseg' picks its resize from the feature "
                             "size, which must be known when the model is traced: export with "
                             "a fixed input shape (--input_shape 1 3 H W)")
        if h % s and w % s:
            return [(h - 1) // s + 1, (w - 1) // s + 1], True
        return [h // s, w // s], False

    def _shrink(self, feat: paddle.Tensor, size: List, align_corners: bool) -> paddle.Tensor:
        if self.shrink_factor == 1:
            return feat
        # align_corners=True: for h = s*k+1 this picks exactly every s-th pixel.
        return F.interpolate(feat, size=size, mode="bilinear", align_corners=align_corners)

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
                             normalization_factor=self.normalization_factor)

    def _branch(self, x: paddle.Tensor, reduce: nn.Layer, attention: nn.Layer,
                direction: int, size: List, align_corners: bool) -> paddle.Tensor:
        feat = self._shrink(reduce(x), size, align_corners)
        return self.aggregate(*matching_dtypes(feat, attention(feat)), direction)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat(self.forward_parts(x), axis=1)

    def forward_parts(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        """``[x, ctx]``, the two halves :meth:`forward` concatenates (a
        consumer that is linear in channels can skip the concat)."""
        in_size = spatial_size(x)
        size, align = self._shrunk_size(x)
        if self.shrink_factor == 1 and self.resize_rule == "mmseg":
            align = self.align_corners
        if self.psa_type == 2:
            branches = [self._branch(x, self.reduce, self.attention, 0, size, align),
                        self._branch(x, self.reduce_p, self.attention_p, 1, size, align)]
            if self.concat_order == "distribute_first":
                branches.reverse()
            ctx = paddle.concat(branches, axis=1)
        else:
            ctx = self._branch(x, self.reduce, self.attention, self.psa_type, size, align)
        ctx = self.proj(ctx)
        if self.shrink_factor != 1 or self.proj_padding:
            ctx = F.interpolate(ctx, size=in_size, mode="bilinear", align_corners=align)
        return [x, ctx]

    def extra_repr(self) -> str:
        names: List[str] = ["collect", "distribute", "bi-direction"]
        return (f"psa_type={names[self.psa_type]}, mask_size={self.mask_size}, "
                f"shrink_factor={self.shrink_factor}, compact={self.compact}, "
                f"psa_softmax={self.psa_softmax}, "
                f"normalization_factor={self.normalization_factor}, "
                f"concat_order={self.concat_order}, resize_rule={self.resize_rule}, "
                f"proj_padding={self.proj_padding}")
