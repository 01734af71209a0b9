"""ResNet-vd backbones with dilation for dense prediction."""

from __future__ import annotations

import inspect
from typing import Callable, List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.cvlibs.validators import (BOOL, POSITIVE_INT, copy_rules, list_of, one_of,
                                             optional, validated)
from paddleseg_ext.models.layers import ConvBN, ConvBNReLU
from paddleseg_ext.utils.pretrained import load_pretrained

# depth -> (block type, blocks per stage)
_ARCH = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
         50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
         152: ("bottleneck", (3, 8, 36, 3))}
# output_stride -> dilation of stages 1..4 (stages 3/4 dilated as in PSPNet/DeepLab)
_DILATIONS = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}
# output_stride -> stride of stages 1..4 (the stem and its max-pool subsample 4x before them)
_STRIDES = {8: (1, 2, 1, 1), 16: (1, 2, 2, 1), 32: (1, 2, 2, 2)}
#: How a strided shortcut subsamples: ResNet-D's 2x2 average pool before a 1x1
#: conv, or the original ResNet's 1x1 conv with stride 2 (mmseg ``ResNetV1c``).
SHORTCUTS = ("avg_pool", "strided_conv")
#: The stem before the max-pool: ResNet-D's three 3x3 convs (``conv1_1..3``), or
#: the original ResNet's one 7x7 conv with stride 2 (``conv1``, torchvision).
STEMS = ("deep", "7x7")
#: Stem widths when ``stem_channels`` is not given: ResNet-D's, and torchvision's 7x7 conv.
_STEM_CHANNELS = {"deep": (32, 32, 64), "7x7": (64,)}


class ResidualBlock(nn.Layer):
    """Basic (2x 3x3) or bottleneck (1x1-3x3-1x1, stride on the 3x3) block.

    Attribute names ``conv0/conv1/conv2/short`` follow PaddleSeg so that its
    pretrained keys (``bb_2_0.conv1._conv.weight``) load unchanged.

    Args:
        kind: ``"basic"`` or ``"bottleneck"``.
        in_ch: input channels.
        planes: width of the block (output ``planes * 4`` for a bottleneck).
        stride: stride of the block (on its 3x3 conv and its shortcut).
        dilation: dilation of the 3x3 conv(s).
        project: a 1x1 ConvBN shortcut (else the identity).
        avg_down: a strided projection average-pools 2x2 and then convolves
            with stride 1 (ResNet-D); otherwise its 1x1 conv has the stride.
        second_dilation: dilation of a basic block's second 3x3 conv;
            ``None`` takes ``dilation`` (mmseg's ``BasicBlock`` uses 1).
    """

    def __init__(self, kind: str, in_ch: int, planes: int, stride: int, dilation: int,
                 project: bool, avg_down: bool, second_dilation: Optional[int] = None) -> None:
        super().__init__()
        self.kind = kind
        if kind == "bottleneck":
            out_ch = planes * 4
            self.conv0 = ConvBNReLU(in_ch, planes, 1)
            self.conv1 = ConvBNReLU(planes, planes, 3, stride=stride, dilation=dilation)
            self.conv2 = ConvBN(planes, out_ch, 1)
        else:
            out_ch = planes
            self.conv0 = ConvBNReLU(in_ch, planes, 3, stride=stride, dilation=dilation)
            self.conv1 = ConvBN(planes, planes, 3,
                                dilation=dilation if second_dilation is None else second_dilation)
        # ResNet-D projection: 2x2 avg-pool (when striding) then 1x1 ConvBN, so
        # the shortcut sees every input pixel (Bag of Tricks, Sec. 4.1); without
        # avg_down the 1x1 conv itself strides (He et al. 2016, option B).
        self.avg_down = avg_down and stride > 1
        short_stride = 1 if self.avg_down else stride
        self.short = ConvBN(in_ch, out_ch, 1, stride=short_stride) if project else None

    def residual(self, x: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """The residual branch and the shortcut, before they are added."""
        y = self.conv1(self.conv0(x))
        if self.kind == "bottleneck":
            y = self.conv2(y)
        identity = x
        if self.short is not None:
            if self.avg_down:
                identity = F.avg_pool2d(identity, 2, 2, ceil_mode=True)
            identity = self.short(identity)
        return y, identity

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y, identity = self.residual(x)
        return F.relu(y + identity)


@validated(depth=one_of(*_ARCH), output_stride=one_of(*_DILATIONS), in_channels=POSITIVE_INT,
           multi_grid=list_of(POSITIVE_INT), shortcut=one_of(*SHORTCUTS),
           identity_shortcut=BOOL, contract_dilation=BOOL, dilate_basic_second_conv=BOOL,
           stem=one_of(*STEMS), stem_channels=optional(list_of(POSITIVE_INT)),
           dilations=optional(list_of(POSITIVE_INT)))
class ResNet_vd(nn.Layer):  # noqa: N801 (PaddleSeg's public name)
    """ResNet-vd backbone returning the four stage features.

    ResNet-D from He et al., "Bag of Tricks for Image Classification with
    Convolutional Neural Networks", CVPR 2019 (https://arxiv.org/abs/1812.01187):
    a deep stem of three 3x3 convs (32, 32, 64 channels) replaces the 7x7
    conv, and strided shortcuts average-pool before their 1x1 conv. Stages 3
    and 4 can trade stride for dilation (output_stride 8 or 16) as in PSPNet
    (https://arxiv.org/abs/1612.01105) and DeepLab.

    State-dict keys match PaddleSeg's ``ResNet_vd`` (``conv1_1._conv.weight``,
    ``bb_<stage>_<block>.conv0._batch_norm._mean`` ...), so PaddleSeg's ImageNet
    ``resnet*_vd_ssld`` checkpoints load directly through ``pretrained``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        output_stride: 8, 16 or 32; ratio of input size to the last feature's.
        multi_grid: per-block dilation multipliers of the last stage (DeepLabv3).
            One entry per block of that stage; an all-ones tuple of any length
            is accepted as "no multi-grid".
        in_channels: channels of the input image.
        pretrained: path or URL of a ``.pdparams`` file, or None.
        shortcut: how a strided projection shortcut subsamples:
            ``"avg_pool"`` (ResNet-D, the default) average-pools 2x2 before
            its 1x1 conv; ``"strided_conv"`` gives the 1x1 conv stride 2
            (mmsegmentation's ``ResNetV1c``, ``avg_down=False``).
        identity_shortcut: when True, a block whose input and output shapes
            agree adds its input unchanged even if it starts a stage
            (mmsegmentation's ``ResLayer``: no ``downsample`` in ResNet18/34
            ``layer1.0``); the default projects the first block of every stage.
        contract_dilation: when True, the first block of a dilated stage uses
            half the stage's dilation (mmsegmentation's
            ``contract_dilation=True``: dilation 1 then 2 in stage 3, 2 then 4 in
            stage 4 at output stride 8). Not combined with ``multi_grid``.
        dilate_basic_second_conv: whether a basic block's second 3x3 conv
            uses the block's dilation (the default) or none (mmsegmentation's
            ``BasicBlock``: its ``conv2`` always has dilation 1, ResNet18/34).
        stem: ``"deep"`` (the default): three 3x3 ConvBNReLU ``conv1_1``,
            ``conv1_2``, ``conv1_3``, the first with stride 2 (ResNet-C/D);
            ``"7x7"``: one 7x7 ConvBNReLU ``conv1`` with stride 2 (He et al.
            2016; torchvision's ``conv1``/``bn1``, mmsegmentation's
            ``ResNet``). Either is followed by a 3x3 max-pool with stride 2.
        stem_channels: output widths of the stem convs, three for
            ``"deep"`` and one for ``"7x7"``; the last is what stage 1 takes.
            ``None`` takes ``[32, 32, 64]`` (ResNet-vd) or ``[64]``; the
            authors' semseg ResNet (``deep_base=True``) is ``[64, 64, 128]``.
        dilations: the dilation of each of the four stages, independent of
            their strides (which ``output_stride`` alone sets: 1, 2, then 2
            for each stage until the output stride is reached). ``None`` (the
            default) dilates what the output stride leaves unstrided
            (``1, 1, 2, 4`` at 8, ``1, 1, 1, 2`` at 16, none at 32).
            mmsegmentation's d32 configs (``pspnet_r50-d32_...``) set
            ``output_stride: 32`` with ``dilations: [1, 1, 2, 4]``: strided
            and dilated stages 3 and 4 (with ``contract_dilation`` the first
            block of each uses half the dilation, as in its ``ResLayer``).

    Shape:
        x: ``[N, in_channels, H, W]`` -> list of 4 tensors,
        ``[N, feat_channels[i], H / feat_strides[i], W / feat_strides[i]]``
        (sizes rounded up).
    """

    def __init__(self, depth: int = 50, output_stride: int = 8,
                 multi_grid: Sequence[int] = (1, 1, 1), in_channels: int = 3,
                 pretrained: Optional[str] = None, shortcut: str = "avg_pool",
                 identity_shortcut: bool = False, contract_dilation: bool = False,
                 dilate_basic_second_conv: bool = True, stem: str = "deep",
                 stem_channels: Optional[Sequence[int]] = None,
                 dilations: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        kind, blocks = _ARCH[depth]
        widths = list(_STEM_CHANNELS[stem] if stem_channels is None else stem_channels)
        if len(widths) != len(_STEM_CHANNELS[stem]):
            raise ValueError(f"ResNet{depth}_vd: stem_channels={list(widths)!r} needs "
                             f"{len(_STEM_CHANNELS[stem])} width(s) for stem={stem!r} (one per "
                             f"stem conv), e.g. {list(_STEM_CHANNELS[stem])!r}")
        if dilations is not None and len(dilations) != 4:
            raise ValueError(f"ResNet{depth}_vd: dilations={list(dilations)!r} needs 4 entries, "
                             f"one per stage, e.g. [1, 1, 2, 4] (output_stride 8's own rule; "
                             f"mmseg's d32 configs use it with output_stride: 32)")
        grid = self._check_multi_grid(multi_grid, blocks[3], depth)
        if contract_dilation and any(g != 1 for g in grid):
            raise ValueError(f"ResNet{depth}_vd: contract_dilation=True sets the first block's "
                             f"dilation itself and cannot be combined with multi_grid="
                             f"{list(multi_grid)!r}; use one of them")

        self.depth = depth
        self.output_stride = output_stride
        self.multi_grid = grid
        self.shortcut = shortcut
        self.identity_shortcut = identity_shortcut
        self.contract_dilation = contract_dilation
        self.dilate_basic_second_conv = dilate_basic_second_conv
        self.stem = stem
        self.stem_channels = widths
        self.dilations = list(_DILATIONS[output_stride] if dilations is None else dilations)
        expansion = 4 if kind == "bottleneck" else 1
        planes = (64, 128, 256, 512)
        self.feat_channels: List[int] = [p * expansion for p in planes]
        dilations = self.dilations
        #: Stride of stages 1..4 (``output_stride`` sets them), as mmseg's ``strides``.
        self.strides: List[int] = list(_STRIDES[output_stride])
        strides = self.strides
        self.feat_strides: List[int] = []
        total = 4  # stem conv (2) * max-pool (2)
        for s in strides:
            total *= s
            self.feat_strides.append(total)

        # The stem convs are registered by name (PaddleSeg's conv1_1..3, or conv1);
        # `stem_names` keeps their order for forward.
        if stem == "7x7":
            self.stem_names = ["conv1"]
            self.conv1 = ConvBNReLU(in_channels, widths[0], 7, stride=2)
        else:
            self.stem_names = ["conv1_1", "conv1_2", "conv1_3"]
            for j, (name, width) in enumerate(zip(self.stem_names, widths)):
                cin = in_channels if j == 0 else widths[j - 1]
                self.add_sublayer(name, ConvBNReLU(cin, width, 3, stride=2 if j == 0 else 1))

        # Blocks are registered flat as bb_<stage>_<i> (PaddleSeg key names);
        # `stages` keeps the grouping for forward without re-registering them.
        self.stages: List[List[str]] = []
        in_ch = widths[-1]
        for s in range(4):
            names = []
            for i in range(blocks[s]):
                dilation = dilations[s] * (grid[i] if s == 3 else 1)
                if contract_dilation and i == 0 and dilation > 1:
                    dilation //= 2
                stride = strides[s] if i == 0 else 1
                out_ch = planes[s] * expansion
                reshapes = stride != 1 or in_ch != out_ch
                block = ResidualBlock(kind, in_ch, planes[s], stride, dilation,
                                      project=(reshapes if identity_shortcut else i == 0),
                                      avg_down=(shortcut == "avg_pool"),
                                      second_dilation=None if dilate_basic_second_conv else 1)
                name = f"bb_{s}_{i}"
                self.add_sublayer(name, block)
                names.append(name)
                in_ch = planes[s] * expansion
            self.stages.append(names)

        self.pretrained = pretrained
        if pretrained:
            load_pretrained(self, pretrained)

    @staticmethod
    def _check_multi_grid(multi_grid: Sequence[int], n_blocks: int, depth: int) -> List[int]:
        grid = list(multi_grid)
        if len(grid) != n_blocks:
            if all(g == 1 for g in grid):
                return [1] * n_blocks
            raise ValueError(f"multi_grid must have {n_blocks} entries (blocks in the last stage "
                             f"of ResNet{depth}_vd), got {multi_grid!r}")
        return grid

    def forward(self, x: paddle.Tensor,
                keep: Optional[Sequence[int]] = None) -> List[Optional[paddle.Tensor]]:
        """The four stage features; with ``keep``, only those stage indices
        (the others are None, so their memory is freed while later stages run:
        large-image inference that needs one stage)."""
        y = x
        for name in self.stem_names:
            y = self._sub_layers[name](y)
        y = F.max_pool2d(y, kernel_size=3, stride=2, padding=1)
        feats: List[Optional[paddle.Tensor]] = []
        for i, names in enumerate(self.stages):
            for name in names:
                y = self._sub_layers[name](y)
            feats.append(y if keep is None or i in keep else None)
        return feats


def _variant(depth: int, name: str) -> Callable[..., ResNet_vd]:
    """A named factory for one depth. It carries ResNet_vd's signature (minus
    ``depth``) so the config builder can check argument names."""

    def factory(**kwargs) -> ResNet_vd:
        return ResNet_vd(depth=depth, **kwargs)

    sig = inspect.signature(ResNet_vd.__init__)
    params = [p for n, p in sig.parameters.items() if n not in ("self", "depth")]
    factory.__signature__ = sig.replace(parameters=params, return_annotation="ResNet_vd")
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"ResNet{depth}-vd backbone; keyword arguments as :class:`ResNet_vd`."
    copy_rules(factory, ResNet_vd)
    return factory


ResNet18_vd = manager.BACKBONES.register(_variant(18, "ResNet18_vd"))
ResNet34_vd = manager.BACKBONES.register(_variant(34, "ResNet34_vd"))
ResNet50_vd = manager.BACKBONES.register(_variant(50, "ResNet50_vd"))
ResNet101_vd = manager.BACKBONES.register(_variant(101, "ResNet101_vd"))
