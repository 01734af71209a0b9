"""PaddleSeg 2.8.0, the peer the benchmarks compare against, made to run on Paddle 3.

PaddleSeg 2.8.0 (April 2023) predates Paddle 3 and NumPy 2. It lives only in
the benchmark environment (``bash benchmarks/setup_bench_env.sh`` installs it
with ``numpy<2`` into ``.venv-bench``), never in the toolkit's own ``.venv``.
Its files are not edited and none of its code is copied here: the few fixes it
needs are applied at run time by :func:`load`, each listed in :data:`FIXES`
with the reason, and reported with every result.

The recipes in :func:`build_model` and :func:`train_transforms` follow
PaddleSeg 2.8's own Cityscapes configs for each architecture
(``configs/{pspnet,danet,pointrend}/*_resnet50*_cityscapes_1024x512_80k.yml``),
except PointRend's backbone stride (see :func:`build_model`).
"""

from __future__ import annotations

import types
from typing import Any, Callable, Dict, List, Tuple

PADDLESEG_VERSION = "2.8.0"

FIXES: List[str] = [
    "paddleseg.models.losses.cross_entropy_loss and point_cross_entropy_loss: the loss "
    "builds its per-pixel weight with paddle.ones_like(label), an int64 tensor, and "
    "multiplies it with the float32 mask. Paddle 2.x cast the int operand silently; "
    "Paddle 3's type promotion refuses float32 x int64. These two modules see a "
    "`paddle` whose ones_like returns float32 for integer input (the value is the same).",
    "paddleseg.models.pointrend.PointHead: inference concatenates paddle.shape(...) values "
    "(int32 in Paddle 2, int64 in Paddle 3) with its subdivision_num_points tensor, stored "
    "as int32, and in Paddle 3 both are 0-D (Paddle 2 gave shape [1]). Paddle 3's concat "
    "refuses mixed dtypes and 0-D inputs: the built model's tensor is re-created as int64 "
    "with the same value, and that module sees a `paddle` whose concat turns a list of 0-D "
    "tensors into 1-element vectors first.",
]


class PeerUnavailable(RuntimeError):
    """PaddleSeg 2.8 is not installed here (the toolkit's own environment)."""


class _PatchedPaddle(types.ModuleType):
    """``paddle`` as seen by one PaddleSeg module, with some functions replaced.

    Only the named module's global ``paddle`` is swapped, so neither Paddle
    itself nor our toolkit (timed in the same process) is affected.
    """

    def __init__(self, paddle_module: Any, **overrides: Callable) -> None:
        super().__init__("paddle")
        self._paddle = paddle_module
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._paddle, name)


def _float_ones_like(paddle: Any) -> Callable:
    def ones_like(x: Any, dtype: Any = None, name: Any = None) -> Any:
        if dtype is None and not paddle.is_floating_point(x):
            dtype = "float32"
        return paddle.ones_like(x, dtype=dtype, name=name)

    return ones_like


def _concat_scalars_as_vectors(paddle: Any) -> Callable:
    def concat(x: Any, axis: int = 0, name: Any = None) -> Any:
        if all(getattr(t, "ndim", None) == 0 for t in x):
            x = [t.reshape([1]) for t in x]
        return paddle.concat(x, axis=axis, name=name)

    return concat


_loaded: Dict[str, Any] = {}


def load() -> Any:
    """Import PaddleSeg 2.8.0 with the run-time fixes applied; returns the module.

    Raises:
        PeerUnavailable: PaddleSeg is missing or a different version.
    """
    if "paddleseg" in _loaded:
        return _loaded["paddleseg"]
    try:
        import paddleseg
    except ImportError as e:
        raise PeerUnavailable(
            "PaddleSeg is not installed in this environment; run the benchmarks from "
            "the benchmark environment: bash benchmarks/setup_bench_env.sh && "
            ".venv-bench/bin/python benchmarks/run.py") from e
    if paddleseg.__version__ != PADDLESEG_VERSION:
        raise PeerUnavailable(f"PaddleSeg {paddleseg.__version__} is installed; the benchmark "
                              f"peer is {PADDLESEG_VERSION}")
    import paddle
    from paddleseg.models import pointrend
    from paddleseg.models.losses import cross_entropy_loss, point_cross_entropy_loss

    for module in (cross_entropy_loss, point_cross_entropy_loss):
        module.paddle = _PatchedPaddle(paddle, ones_like=_float_ones_like(paddle))
    pointrend.paddle = _PatchedPaddle(paddle, concat=_concat_scalars_as_vectors(paddle))
    _loaded["paddleseg"] = paddleseg
    return paddleseg


def build_model(name: str, backbone: str = "ResNet50_vd", num_classes: int = 19,
                pointrend_output_stride: int = 32) -> Tuple[Any, List[Callable], List[float]]:
    """PaddleSeg's model and training losses for one architecture.

    Args:
        name: ``PSPNet``, ``DANet`` or ``PointRend``.
        backbone: a PaddleSeg ResNet*_vd name.
        num_classes: classes of the classifier.
        pointrend_output_stride: PointRend's backbone stride (32: the same
            network as ours; 8: PaddleSeg's shipped Cityscapes recipe).

    Returns:
        ``(model, losses, coefs)``, one loss and coef per training output.
    """
    ps = load()
    import paddle
    from paddleseg.models import DANet, PointRend, PSPNet, backbones
    from paddleseg.models.losses import CrossEntropyLoss, PointCrossEntropyLoss

    make_backbone = getattr(backbones, backbone)
    if name == "PSPNet":
        model = PSPNet(num_classes, make_backbone(output_stride=8), backbone_indices=(2, 3),
                       pp_out_channels=1024, bin_sizes=(1, 2, 3, 6),
                       enable_auxiliary_loss=True, align_corners=False)
        return model, [CrossEntropyLoss()] * 2, [1.0, 0.4]
    if name == "DANet":
        model = DANet(num_classes, make_backbone(output_stride=8), backbone_indices=(2, 3))
        return model, [CrossEntropyLoss()] * 4, [1.0, 1.0, 1.0, 0.4]
    if name == "PointRend":
        # Output stride 32, like our paper recipes (an FPN over an undilated
        # ResNet); PaddleSeg's FPN decoder still differs from their Semantic FPN
        # (ours builds PaddleSeg's with decoder: paddleseg). PaddleSeg's shipped
        # recipe dilates to output stride 8 (pointrend_resnet50_os8_*.yml), a
        # ~4x costlier network with the same parameters;
        # pointrend_output_stride=8 builds that one.
        net = make_backbone(output_stride=pointrend_output_stride)
        model = PointRend(num_classes, net, backbone_indices=(0, 1, 2, 3),
                          fpn_inplanes=list(net.feat_channels))
        head = model.pointhead
        head.subdivision_num_points = paddle.to_tensor(int(head.subdivision_num_points),
                                                       dtype="int64")
        return model, [CrossEntropyLoss(), PointCrossEntropyLoss()], [1.0, 1.0]
    raise ValueError(f"no PaddleSeg {ps.__version__} peer recipe for {name!r}")


def loss_sum(logits: List[Any], label: Any, losses: List[Callable], coefs: List[float]) -> Any:
    """PaddleSeg's training loss: the weighted sum over outputs (as its ``loss_computation``)."""
    total = None
    for logit, fn, coef in zip(logits, losses, coefs):
        term = fn(logit, label) * coef
        total = term if total is None else total + term
    return total


def train_transforms(crop: Tuple[int, int]) -> Any:
    """PaddleSeg's Cityscapes training transforms, cropped to ``crop`` = (w, h)."""
    load()
    from paddleseg import transforms as T

    return T.Compose([
        T.ResizeStepScaling(min_scale_factor=0.5, max_scale_factor=2.0, scale_step_size=0.25),
        T.RandomPaddingCrop(crop_size=list(crop)),
        T.RandomHorizontalFlip(),
        T.RandomDistort(brightness_range=0.4, contrast_range=0.4, saturation_range=0.4),
        T.Normalize(),
    ])
