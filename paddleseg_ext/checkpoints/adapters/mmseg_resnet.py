"""mmsegmentation's ResNetV1c / ResNet backbone and FCN auxiliary head, shared by its adapters.

mmsegmentation 1.2.2 (``mmseg/models/backbones/resnet.py``, ``models/utils/res_layer.py``,
``models/decode_heads/fcn_head.py``) builds every PSPNet / DANet / PSANet / PointRend of its
zoo on ``ResNetV1c`` (deep stem) or, in the "b" configs, ``ResNet`` (torchvision's 7x7
stem): our :class:`~paddleseg_ext.models.backbones.ResNet_vd` with
:data:`BACKBONE_SWITCHES` and the ``stem`` of :data:`STEMS`. The per-model adapters
(``mmseg.py``, ``mmseg_psanet.py``, ``mmseg_pointrend.py``) move the backbone and the
auxiliary head through :func:`move_backbone` / :func:`move_fcn_aux` and refuse a model
built otherwise through :func:`check_model`.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from ..recorded_config import recorded_model_config, setting
from .base import TensorMover, model_is

__all__ = ["BACKBONE_SWITCHES", "D8", "D8_OR_D32", "STEMS", "recipe_hint", "is_mmseg", "file_stem",
           "check_model", "check_recorded_config", "move_backbone", "move_fcn_aux"]

State = Dict[str, np.ndarray]
#: The ResNet_vd switches that build mmseg's ResNetV1c (d8).
BACKBONE_SWITCHES = {"shortcut": "strided_conv", "identity_shortcut": True,
                     "contract_dilation": True, "dilate_basic_second_conv": False}
#: Our ``stem`` switch for each mmseg stem, by the key that only that stem has: ResNetV1c's
#: deep stem, or ResNet's (the "b" configs) 7x7 conv.
STEMS = {"backbone.stem.0.weight": "deep", "backbone.conv1.weight": "7x7"}
#: mmseg's d8 backbone as our ``output_stride`` -> stage dilations: strides (1, 2, 1, 1),
#: dilations (1, 1, 2, 4) (every DANet / PSANet, and PSPNet's ``*-d8_*`` configs).
D8 = {8: [1, 1, 2, 4]}
#: PSPNet's ``*-d32_*`` configs add strides (1, 2, 2, 2) with the same dilations. A d32
#: file's tensors have a d8 file's shapes: only the recipe, or the config the file records
#: (:func:`check_recorded_config`), tells them apart.
D8_OR_D32 = {**D8, 32: [1, 1, 2, 4]}
_STEM_NAMES = {"deep": "ResNetV1c's deep stem (backbone.stem.*)",
               "7x7": "ResNet's 7x7 stem (backbone.conv1 / bn1, the 'b' configs)"}
_BLOCK = re.compile(r"backbone\.layer(\d+)\.(\d+)\.")


def recipe_hint(model: str, folder: str) -> str:
    """What to build for an mmseg ``model`` checkpoint (quoted when a file is refused)."""
    d32 = ("" if folder != "pspnet" else
           f". A file of a '-d32' config (e.g. {folder}_r50-d32_4xb2-80k_cityscapes-512x1024) "
           f"needs its d32 recipe (output_stride: 32, dilations: [1, 1, 2, 4]), a '-d8' file a "
           f"d8 recipe: their tensors have the same shapes, so the recipe decides where the file "
           f"records no config")
    return (f"Build the {model} from the recipe named after the mmsegmentation config the "
            f"checkpoint was trained with (configs/{folder}/mmseg/, e.g. "
            f"configs/{folder}/mmseg/{folder}_r50-d8_4xb2-80k_cityscapes-512x1024.yml): same "
            f"depth, num_classes and ResNet_vd switches "
            + ", ".join(f"{k}: {v}" for k, v in BACKBONE_SWITCHES.items()) + d32)


def is_mmseg(keys: Sequence[str]) -> bool:
    """Whether the keys are an mmseg EncoderDecoder's (a ResNet stem and a ``decode_head``)."""
    names = set(keys)
    return any(k in names for k in STEMS) and any(k.startswith("decode_head.") for k in names)


def file_stem(keys: Sequence[str]) -> str:
    """Our ``stem`` switch for the file's stem (the deep stem when it has neither key)."""
    names = set(keys)
    return next((stem for key, stem in STEMS.items() if key in names), "deep")


def check_model(model: object, name: str, layout: str, hint: str,
                 keys: Sequence[str] = (), forms: Mapping[int, List[int]] = D8) -> None:
    """Refuse a model of another architecture, a backbone of another stem than the file's
    (``keys``) or of a dilation form mmseg does not build for this model (``forms``:
    output stride -> stage dilations), before listing every key that differs."""
    if model is not None and not model_is(model, name):
        raise ValueError(f"detected an {layout} checkpoint, but the model is a "
                         f"{type(model).__name__}. {hint}")
    _check_backbone(model, layout, hint, forms)
    if model is not None and keys:
        _check_stem(file_stem(keys), model.backbone.stem, layout, name.lower())


def _check_stem(file_stem: str, model_stem: str, layout: str, folder: str) -> None:
    if file_stem != model_stem:
        configs = ("the 'b' configs, r<depth>b-d8 / r50b-d32, and the rsb ones" if file_stem == "7x7"
                   else "r<depth>-d8 / r50-d32")
        raise ValueError(
            f"detected an {layout} checkpoint with {_STEM_NAMES[file_stem]}, but this model's "
            f"ResNet_vd is built with stem={model_stem!r}, {_STEM_NAMES[model_stem]}: build it "
            f"with stem: {file_stem}, as the recipes of mmseg's {configs} do (configs/{folder}"
            f"/mmseg/<config>.yml)")


def _check_backbone(model: object, layout: str, hint: str,
                    forms: Mapping[int, List[int]]) -> None:
    """Refuse a backbone whose tensors would fit but whose function is not ResNetV1c's
    (no model, as for ``tools/convert_weights.py`` without ``--config``: nothing to check)."""
    if model is None:
        return
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "stages"):
        raise ValueError(f"detected an {layout} checkpoint (ResNetV1c backbone), but this "
                         f"{type(model).__name__} has a {type(backbone).__name__} backbone. {hint}")
    wrong = [f"{k}={getattr(backbone, k)!r} (mmseg: {v!r})" for k, v in BACKBONE_SWITCHES.items()
             if getattr(backbone, k) != v
             and not (k == "dilate_basic_second_conv" and backbone.depth >= 50)]
    form = forms.get(backbone.output_stride)
    if form is None or backbone.dilations != form or any(g != 1 for g in backbone.multi_grid):
        allowed = " or ".join(f"output_stride {os} with dilations {d}" for os, d in forms.items())
        wrong.append(f"output_stride={backbone.output_stride}, dilations={backbone.dilations}, "
                     f"multi_grid={backbone.multi_grid} (mmseg: {allowed}, no multi_grid)")
    if wrong:
        raise ValueError(f"detected an {layout} checkpoint, but this model's ResNet_vd is "
                         f"built with {', '.join(wrong)}: the tensors would fit a different "
                         f"function. {hint}")


def check_recorded_config(meta: Any, model: object, folder: str) -> None:
    """Refuse a model whose backbone strides / dilations or decode head ``align_corners``
    differ from the config the file records (``meta['config']`` / ``meta['cfg']``).

    These settings change the function, not a tensor's shape (a d32 file fits a d8 recipe),
    so only the recorded config can tell. A file that records none (or not as literals) is
    taken on its keys, as before.
    """
    recorded = recorded_model_config(meta)
    if model is None or recorded is None:
        return
    backbone, wrong = model.backbone, []
    for key in ("strides", "dilations"):
        theirs = setting(recorded, "backbone", key)
        if isinstance(theirs, list) and [*theirs] != [*getattr(backbone, key)]:
            wrong.append(f"backbone {key}={tuple(theirs)} (this model's: "
                         f"{tuple(getattr(backbone, key))})")
    theirs = setting(recorded, "decode_head", "align_corners")  # a list for PointRend's two heads
    if isinstance(theirs, bool) and theirs != bool(model.align_corners):
        wrong.append(f"decode_head align_corners={theirs} (this model's: {bool(model.align_corners)})")
    if wrong:
        raise ValueError(
            f"the config this mmsegmentation checkpoint records builds {', '.join(wrong)}: its "
            f"tensors fit this {type(model).__name__}, but it computes another function. Build it "
            f"from the recipe named after the checkpoint's config (configs/{folder}/mmseg/<config>"
            f".yml: e.g. a '-d32' config's recipe has output_stride: 32, dilations: [1, 1, 2, 4]; "
            f"a 769x769 one align_corners: True)")


def move_backbone(m: TensorMover) -> None:
    """Move the ResNetV1c / ResNet backbone (either stem) to our ``backbone.*``."""
    if file_stem(m.src) == "7x7":
        m.conv_bn("backbone.conv1", "backbone.bn1", "backbone.conv1")
    for j, ours in enumerate(("conv1_1", "conv1_2", "conv1_3")):
        m.conv_bn(f"backbone.stem.{3 * j}", f"backbone.stem.{3 * j + 1}", f"backbone.{ours}")
    blocks = sorted({(int(b.group(1)), int(b.group(2))) for b in map(_BLOCK.match, m.src) if b})
    for stage, i in blocks:  # mmseg's layer<stage>.<i> is our bb_<stage - 1>_<i>
        peer, ours = f"backbone.layer{stage}.{i}", f"backbone.bb_{stage - 1}_{i}"
        for j in range(3):  # conv1..3 (a basic block has two)
            m.conv_bn(f"{peer}.conv{j + 1}", f"{peer}.bn{j + 1}", f"{ours}.conv{j}")
        m.conv_bn(f"{peer}.downsample.0", f"{peer}.downsample.1", f"{ours}.short")


def move_fcn_aux(m: TensorMover) -> None:
    """Move the one-conv ``FCNHead`` auxiliary head to our ``aux_head``."""
    m.conv_bn("auxiliary_head.convs.0.conv", "auxiliary_head.convs.0.bn", "aux_head.conv_bn_relu")
    m.prefix("auxiliary_head.conv_seg.", "aux_head.conv.")
