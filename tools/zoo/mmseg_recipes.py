"""Write the mmsegmentation PSPNet / DANet recipes and the model-zoo tables of their READMEs.

    python tools/zoo/mmseg_recipes.py           # (re)write configs/{pspnet,danet}/mmseg/*.yml + tables
    python tools/zoo/mmseg_recipes.py --check   # exit 1, naming the files, if any would change

:data:`ZOO` lists every config of mmsegmentation 1.2.2's ``configs/pspnet/`` and
``configs/danet/``: the models of their ``metafile.yaml`` and the PSPNet configs it leaves out
(the Cityscapes checkpoints tested on Dark Zurich and Nighttime Driving, the R50 Pascal Context
configs without published weights), each with its dataset and the published single-scale and
multi-scale + flip mIoU where mmseg gives one. A family whose network and dataset this toolkit builds gets a recipe
named exactly after mmseg's config file, on a base in ``configs/_base_/mmseg/`` that carries
mmseg's test settings; the others are listed in the table with what they need. The tables sit
between ``<!-- mmseg-zoo:begin -->`` and ``<!-- mmseg-zoo:end -->`` in
``configs/<model>/README.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- mmseg-zoo:begin -->", "<!-- mmseg-zoo:end -->"

#: (mmseg config name, dataset as the metafile names it, mIoU, mIoU ms+flip; None: not published).
ZOO: Tuple[Tuple[str, str, Optional[float], Optional[float]], ...] = (
    ("pspnet_r50-d8_4xb2-40k_cityscapes-512x1024", "Cityscapes", 77.85, 79.18),
    ("pspnet_r101-d8_4xb2-40k_cityscapes-512x1024", "Cityscapes", 78.34, 79.74),
    ("pspnet_r50-d8_4xb2-40k_cityscapes-769x769", "Cityscapes", 78.26, 79.88),
    ("pspnet_r101-d8_4xb2-40k_cityscapes-769x769", "Cityscapes", 79.08, 80.28),
    ("pspnet_r18-d8_4xb2-80k_cityscapes-512x1024", "Cityscapes", 74.87, 76.04),
    ("pspnet_r50-d8_4xb2-80k_cityscapes-512x1024", "Cityscapes", 78.55, 79.79),
    ("pspnet_r50-d8-rsb_4xb2-adamw-80k_cityscapes-512x1024", "Cityscapes", 78.47, 79.45),
    ("pspnet_r101-d8_4xb2-80k_cityscapes-512x1024", "Cityscapes", 79.76, 81.01),
    ("pspnet_r101-d8_4xb2-amp-80k_cityscapes-512x1024", "Cityscapes", 79.46, None),
    ("pspnet_r18-d8_4xb2-80k_cityscapes-769x769", "Cityscapes", 75.9, 77.86),
    ("pspnet_r50-d8_4xb2-80k_cityscapes-769x769", "Cityscapes", 79.59, 80.69),
    ("pspnet_r101-d8_4xb2-80k_cityscapes-769x769", "Cityscapes", 79.77, 81.06),
    ("pspnet_r18b-d8_4xb2-80k_cityscapes-512x1024", "Cityscapes", 74.23, 75.79),
    ("pspnet_r50b-d8_4xb2-80k_cityscapes-512x1024", "Cityscapes", 78.22, 79.46),
    ("pspnet_r101b-d8_4xb2-80k_cityscapes-512x1024", "Cityscapes", 79.69, 80.79),
    ("pspnet_r18b-d8_4xb2-80k_cityscapes-769x769", "Cityscapes", 74.92, 76.9),
    ("pspnet_r50b-d8_4xb2-80k_cityscapes-769x769", "Cityscapes", 78.5, 79.96),
    ("pspnet_r101b-d8_4xb2-80k_cityscapes-769x769", "Cityscapes", 78.87, 80.04),
    # The metafile names this model pspnet_r50b-d32 as well; its weights and figures are the
    # ResNetV1c d32 model's (pspnet_r50-d32_512x1024_80k_cityscapes_20220316_224840).
    ("pspnet_r50-d32_4xb2-80k_cityscapes-512x1024", "Cityscapes", 73.88, 76.85),
    ("pspnet_r50-d32_rsb_4xb2-adamw-80k_cityscapes-512x1024", "Cityscapes", 74.09, 77.18),
    ("pspnet_r50b-d32_4xb2-80k_cityscapes-512x1024", "Cityscapes", 72.61, 75.51),
    ("pspnet_r50-d8_4xb4-80k_ade20k-512x512", "ADE20K", 41.13, 41.94),
    ("pspnet_r101-d8_4xb4-80k_ade20k-512x512", "ADE20K", 43.57, 44.35),
    ("pspnet_r50-d8_4xb4-160k_ade20k-512x512", "ADE20K", 42.48, 43.44),
    ("pspnet_r101-d8_4xb4-160k_ade20k-512x512", "ADE20K", 44.39, 45.35),
    ("pspnet_r50-d8_4xb4-20k_voc12aug-512x512", "Pascal VOC 2012 + Aug", 76.78, 77.61),
    ("pspnet_r101-d8_4xb4-20k_voc12aug-512x512", "Pascal VOC 2012 + Aug", 78.47, 79.25),
    ("pspnet_r50-d8_4xb4-40k_voc12aug-512x512", "Pascal VOC 2012 + Aug", 77.29, 78.48),
    ("pspnet_r101-d8_4xb4-40k_voc12aug-512x512", "Pascal VOC 2012 + Aug", 78.52, 79.57),
    ("pspnet_r101-d8_4xb4-40k_pascal-context-480x480", "Pascal Context", 46.6, 47.78),
    ("pspnet_r101-d8_4xb4-80k_pascal-context-480x480", "Pascal Context", 46.03, 47.15),
    ("pspnet_r101-d8_4xb4-40k_pascal-context-59-480x480", "Pascal Context 59", 52.02, 53.54),
    ("pspnet_r101-d8_4xb4-80k_pascal-context-59-480x480", "Pascal Context 59", 52.47, 53.99),
    # Configs without published weights (not in the metafile; mmseg's README has no row for them).
    ("pspnet_r50-d8_4xb4-40k_pascal-context-480x480", "Pascal Context", None, None),
    ("pspnet_r50-d8_4xb4-80k_pascal-context-480x480", "Pascal Context", None, None),
    ("pspnet_r50-d8_4xb4-40k_pascal-context-59-480x480", "Pascal Context 59", None, None),
    ("pspnet_r50-d8_4xb4-80k_pascal-context-59-480x480", "Pascal Context 59", None, None),
    ("pspnet_r50-d8_4xb4-20k_coco-stuff10k-512x512", "COCO-Stuff 10k", 35.69, 36.62),
    ("pspnet_r101-d8_4xb4-20k_coco-stuff10k-512x512", "COCO-Stuff 10k", 37.26, 38.52),
    ("pspnet_r50-d8_4xb4-40k_coco-stuff10k-512x512", "COCO-Stuff 10k", 36.33, 37.24),
    ("pspnet_r101-d8_4xb4-40k_coco-stuff10k-512x512", "COCO-Stuff 10k", 37.76, 38.86),
    ("pspnet_r50-d8_4xb4-80k_coco-stuff164k-512x512", "COCO-Stuff 164k", 38.8, 39.19),
    ("pspnet_r101-d8_4xb4-80k_coco-stuff164k-512x512", "COCO-Stuff 164k", 40.34, 40.79),
    ("pspnet_r50-d8_4xb4-160k_coco-stuff164k-512x512", "COCO-Stuff 164k", 39.64, 39.97),
    ("pspnet_r101-d8_4xb4-160k_coco-stuff164k-512x512", "COCO-Stuff 164k", 41.28, 41.66),
    ("pspnet_r50-d8_4xb4-320k_coco-stuff164k-512x512", "COCO-Stuff 164k", 40.53, 40.75),
    ("pspnet_r101-d8_4xb4-320k_coco-stuff164k-512x512", "COCO-Stuff 164k", 41.95, 42.42),
    ("pspnet_r18-d8_4xb4-80k_loveda-512x512", "LoveDA", 48.62, 47.57),
    ("pspnet_r50-d8_4xb4-80k_loveda-512x512", "LoveDA", 50.46, 50.19),
    ("pspnet_r101-d8_4xb4-80k_loveda-512x512", "LoveDA", 51.86, 51.34),
    ("pspnet_r18-d8_4xb4-80k_potsdam-512x512", "Potsdam", 77.09, 78.3),
    ("pspnet_r50-d8_4xb4-80k_potsdam-512x512", "Potsdam", 78.12, 78.98),
    ("pspnet_r101-d8_4xb4-80k_potsdam-512x512", "Potsdam", 78.62, 79.47),
    ("pspnet_r18-d8_4xb4-80k_vaihingen-512x512", "Vaihingen", 71.46, 73.36),
    ("pspnet_r50-d8_4xb4-80k_vaihingen-512x512", "Vaihingen", 72.36, 73.75),
    ("pspnet_r101-d8_4xb4-80k_vaihingen-512x512", "Vaihingen", 72.61, 74.18),
    ("pspnet_r18-d8_4xb4-80k_isaid-896x896", "iSAID", 60.22, 61.25),
    ("pspnet_r50-d8_4xb4-80k_isaid-896x896", "iSAID", 65.36, 66.48),
    # The Cityscapes checkpoints of the same name without the suffix, tested on Dark Zurich val
    # and Nighttime Driving test: not in the metafile; the single-scale mIoU is from the "Dark
    # Zurich and Nighttime Driving" table of mmseg's configs/pspnet/README.md (no R50 80k row).
    ("pspnet_r50-d8_4xb2-40k_cityscapes-512x1024_dark-zurich-1920x1080", "Dark Zurich", 10.91, None),
    ("pspnet_r50-d8_4xb2-80k_cityscapes-512x1024_dark-zurich-1920x1080", "Dark Zurich", None, None),
    ("pspnet_r101-d8_4xb2-40k_cityscapes-512x1024_dark-zurich-1920x1080", "Dark Zurich", 10.16, None),
    ("pspnet_r101b-d8_4xb2-80k_cityscapes-512x1024_dark-zurich-1920x1080", "Dark Zurich", 15.54, None),
    ("pspnet_r50-d8_4xb2-40k_cityscapes-512x1024_night-driving-1920x1080", "Nighttime Driving", 23.02, None),
    ("pspnet_r50-d8_4xb2-80k_cityscapes-512x1024_night-driving-1920x1080", "Nighttime Driving", None, None),
    ("pspnet_r101-d8_4xb2-40k_cityscapes-512x1024_night-driving-1920x1080", "Nighttime Driving", 20.25, None),
    ("pspnet_r101b-d8_4xb2-80k_cityscapes-512x1024_night-driving-1920x1080", "Nighttime Driving", 22.25, None),
    ("danet_r50-d8_4xb2-40k_cityscapes-512x1024", "Cityscapes", 78.74, None),
    ("danet_r101-d8_4xb2-40k_cityscapes-512x1024", "Cityscapes", 80.52, None),
    ("danet_r50-d8_4xb2-40k_cityscapes-769x769", "Cityscapes", 78.88, 80.62),
    ("danet_r101-d8_4xb2-40k_cityscapes-769x769", "Cityscapes", 79.88, 81.47),
    ("danet_r50-d8_4xb2-80k_cityscapes-512x1024", "Cityscapes", 79.34, None),
    ("danet_r101-d8_4xb2-80k_cityscapes-512x1024", "Cityscapes", 80.41, None),
    ("danet_r50-d8_4xb2-80k_cityscapes-769x769", "Cityscapes", 79.27, 80.96),
    ("danet_r101-d8_4xb2-80k_cityscapes-769x769", "Cityscapes", 80.47, 82.02),
    ("danet_r50-d8_4xb4-80k_ade20k-512x512", "ADE20K", 41.66, 42.9),
    ("danet_r101-d8_4xb4-80k_ade20k-512x512", "ADE20K", 43.64, 45.19),
    ("danet_r50-d8_4xb4-160k_ade20k-512x512", "ADE20K", 42.45, 43.25),
    ("danet_r101-d8_4xb4-160k_ade20k-512x512", "ADE20K", 44.17, 45.02),
    ("danet_r50-d8_4xb4-20k_voc12aug-512x512", "Pascal VOC 2012 + Aug", 74.45, 75.69),
    ("danet_r101-d8_4xb4-20k_voc12aug-512x512", "Pascal VOC 2012 + Aug", 76.02, 77.23),
    ("danet_r50-d8_4xb4-40k_voc12aug-512x512", "Pascal VOC 2012 + Aug", 76.37, 77.29),
    ("danet_r101-d8_4xb4-40k_voc12aug-512x512", "Pascal VOC 2012 + Aug", 76.51, 77.32),
)

#: mmseg dataset-and-crop suffix -> our base in configs/_base_/mmseg/ (the settings mmseg tests with).
BASES = {
    "cityscapes-512x1024": "cityscapes-512x1024.yml",
    "cityscapes-769x769": "cityscapes-769x769.yml",
    "ade20k-512x512": "ade20k-512x512.yml",
    "voc12aug-512x512": "voc12aug-512x512.yml",
    "loveda-512x512": "loveda-512x512.yml",
    "potsdam-512x512": "potsdam-512x512.yml",
    "vaihingen-512x512": "vaihingen-512x512.yml",
    "isaid-896x896": "isaid-896x896.yml",
    "coco-stuff164k-512x512": "coco-stuff164k-512x512.yml",
    "pascal-context-480x480": "pascal-context-480x480.yml",
    "pascal-context-59-480x480": "pascal-context-59-480x480.yml",
    "coco-stuff10k-512x512": "coco-stuff10k-512x512.yml",
    "cityscapes-512x1024_dark-zurich-1920x1080": "cityscapes-512x1024_dark-zurich-1920x1080.yml",
    "cityscapes-512x1024_night-driving-1920x1080": "cityscapes-512x1024_night-driving-1920x1080.yml",
}
#: Classes of each mmseg suffix's dataset.
NUM_CLASSES = {"cityscapes-512x1024": 19, "cityscapes-769x769": 19, "ade20k-512x512": 150,
               "voc12aug-512x512": 21, "loveda-512x512": 7, "potsdam-512x512": 6,
               "vaihingen-512x512": 6, "isaid-896x896": 16, "coco-stuff164k-512x512": 171,
               "pascal-context-480x480": 60, "pascal-context-59-480x480": 59,
               "coco-stuff10k-512x512": 171, "cityscapes-512x1024_dark-zurich-1920x1080": 19,
               "cityscapes-512x1024_night-driving-1920x1080": 19}
#: How each mmseg suffix tests (for the table): crop, test mode.
TEST_MODES = {
    "cityscapes-512x1024": "whole 2048x1024",
    "cityscapes-769x769": "slide 769 / 513 on 2049x1025, align_corners",
    "ade20k-512x512": "whole, short side 512",
    "voc12aug-512x512": "whole, short side 512",
    "loveda-512x512": "whole 1024x1024",
    "potsdam-512x512": "whole 512x512",
    "vaihingen-512x512": "whole 512x512",
    "isaid-896x896": "whole 896x896",
    "coco-stuff164k-512x512": "whole, short side 512",
    "pascal-context-480x480": "fitted into 520x520, slide 480 / 320",
    "pascal-context-59-480x480": "fitted into 520x520, slide 480 / 320",
    "coco-stuff10k-512x512": "whole, short side 512",
    "cityscapes-512x1024_dark-zurich-1920x1080": "Dark Zurich val (night), whole, fitted into 1920x1080",
    "cityscapes-512x1024_night-driving-1920x1080": "Nighttime Driving test, whole, fitted into 1920x1080",
}
#: Configs whose weights mmseg does not publish (not in its metafile, no README row).
UNPUBLISHED = {f"pspnet_r50-d8_4xb4-{iters}_pascal-context{c}-480x480"
               for iters in ("40k", "80k") for c in ("", "-59")}
#: How many configs mmsegmentation 1.2.2's wheel ships in ``configs/<model>/`` (``*.py``).
CONFIGS = {"pspnet": 66, "danet": 16}
#: The configs of a folder that its metafile does not list, for the table's header.
EXTRA_CONFIGS = {"pspnet": ", the Cityscapes checkpoints tested on Dark Zurich and Nighttime Driving, "
                           "and the R50 Pascal Context configs without published weights"}
PAPERS = {
    "pspnet": "PSPNet (Zhao et al., CVPR 2017)",
    "danet": "DANet (Fu et al., CVPR 2019)",
}

NAME = re.compile(r"^(?P<model>pspnet|danet)_r(?P<depth>\d+)(?P<b>b?)-d(?P<os>8|32)(?P<rsb>[-_]rsb)?"
                  r"_(?P<gpus>\d)xb(?P<batch>\d)-(?P<amp>amp-)?(?P<adamw>adamw-)?(?P<iters>\d+)k"
                  r"_(?P<data>[a-z0-9-]+?)-(?P<crop>\d+x\d+)"
                  r"(?P<test>_(?:dark-zurich|night-driving)-\d+x\d+)?$")


class Family(NamedTuple):
    """One published mmseg model, parsed from its config name."""

    name: str
    model: str
    depth: int
    dataset: str
    suffix: str                 # '<dataset>-<crop>[_<test set>-<test size>]' as in the config name
    iters: int
    batch: int
    miou: Optional[float]
    miou_ms: Optional[float]
    needs: Optional[str]        # what this toolkit lacks to build it; None: it has a recipe
    amp: bool
    b: bool                     # mmseg's "b" variant: type='ResNet', torchvision's 7x7 stem
    output_stride: int = 8      # 8 (d8) or 32 (d32: strides 1, 2, 2, 2 with d8's dilations)
    rsb: bool = False           # ResNet-strikes-back: type='ResNet' from mmcls' rsb file, AdamW
    crop: str = ""              # the training crop, e.g. '512x1024'

    @property
    def stem7(self) -> bool:
        """Whether mmseg builds it on ``type='ResNet'`` (the 7x7 stem): "b" and rsb configs."""
        return self.b or self.rsb


def parse(name: str, dataset: str, miou: Optional[float], miou_ms: Optional[float]) -> Family:
    m = NAME.match(name)
    if m is None:
        raise ValueError(f"{name}: not an mmseg PSPNet/DANet config name this tool understands")
    suffix = f"{m['data']}-{m['crop']}{m['test'] or ''}"
    needs = None
    if suffix not in BASES:
        needs = f"the {dataset} dataset and its mmseg test setting"
    if bool(m["rsb"]) != bool(m["adamw"]):
        raise ValueError(f"{name}: mmseg's ResNet-strikes-back configs are the '-adamw-' ones")
    return Family(name, m["model"], int(m["depth"]), dataset, suffix, int(m["iters"]) * 1000,
                  int(m["batch"]), miou, miou_ms, needs, bool(m["amp"]), bool(m["b"]),
                  int(m["os"]), bool(m["rsb"]), m["crop"])


def families(model: Optional[str] = None) -> List[Family]:
    out = [parse(*row) for row in ZOO]
    return [f for f in out if model is None or f.model == model]


def recipe_path(family: Family) -> Path:
    return ROOT / "configs" / family.model / "mmseg" / f"{family.name}.yml"


def _line(code: str, comment: str) -> str:
    return f"{code.ljust(30)}# {comment}"


def _head_lines(family: Family) -> List[str]:
    lines = [f"  type: {'PSPNet' if family.model == 'pspnet' else 'DANet'}", "  backbone:",
             f"    type: ResNet{family.depth}_vd"]
    if family.rsb:
        lines += [_line("    stem: 7x7", "mmseg type='ResNet': torchvision's conv1 / bn1"),
                  "    # mmseg initialises it from mmcls' ResNet-strikes-back ImageNet file",
                  "    # (resnet50_8xb256-rsb-a1-600e_in1k_20211228-20e21305.pth), which `pretrained:`",
                  "    # takes here too (checkpoints/adapters/mmcls_resnet.py)."]
    elif family.b:
        lines += [_line("    stem: 7x7", "mmseg type='ResNet': torchvision's conv1 / bn1"),
                  "    # mmseg initialises it from torchvision's ImageNet ResNet file, which",
                  "    # `pretrained:` takes here too (checkpoints/adapters/torchvision_resnet.py)."]
    if family.output_stride == 32:
        lines += [_line("    output_stride: 32", "mmseg d32: strides (1, 2, 2, 2)"),
                  _line("    dilations: [1, 1, 2, 4]", "with the d8 dilations (1, 1, 2, 4)")]
    if family.model == "pspnet":
        ch, aux, stage4 = (512, 256, 2048) if family.depth >= 50 else (128, 64, 512)
        return lines + [
            _line(f"  pp_out_channels: {ch}", f"PSPHead channels={ch} (PPM branches {stage4}/4 = {ch})"),
            _line(f"  aux_inter_channels: {aux}", f"FCNHead channels={aux}, one conv")]
    return lines + [
        _line("  inter_channels: 512", "DAHead channels=512, pam_channels=64 (512 / PAM reduction 8)"),
        _line("  aux_head: fcn", "FCNHead on stage 3, channels=256, one conv"),
        _line("  align_mode: 0", "mmseg resizes logits with half-pixel centres")]


def recipe_text(family: Family) -> str:
    """The YAML recipe of ``family`` (a family with a recipe)."""
    d = f"d{family.output_stride}"
    backbone = (f"ResNet{family.depth} (mmseg type='ResNet', 7x7 stem) {d}" if family.stem7
                else f"ResNet{family.depth}-V1c {d}")
    weights = ("published checkpoint" if family.name not in UNPUBLISHED
               else "checkpoint (mmseg publishes none for this config)")
    lines = [f"# mmsegmentation 1.2.2 configs/{family.model}/{family.name}.py:",
             f"# {PAPERS[family.model]} on {backbone}, tested as mmseg tests it; its",
             f"# {weights} loads with --model_path",
             f"# (configs/{family.model}/README.md says what was verified).",
             "# Written by tools/zoo/mmseg_recipes.py: change the generator, not this file.",
             f"_base_: '../../_base_/mmseg/{BASES[family.suffix]}'",
             "",
             f"iters: {family.iters}"]
    if family.amp:
        lines += ["# mmseg trained this one with mixed precision (AmpOptimWrapper, loss scale 512):",
                  "# tools/train.py --precision fp16 does the same here; eval is unaffected."]
    lines += ["", "model:", *_head_lines(family), ""]
    if family.rsb:
        lines += _rsb_schedule_lines(family)
    if family.model == "pspnet":
        lines += ["loss:", "  types:", "    - type: CrossEntropyLoss",
                  _line("  coef: [1, 0.4]", "decode head 1.0, auxiliary head 0.4")]
    else:
        lines += ["# Training outputs [fused, pam, cam, aux]: DAHead's pam_cam, pam and cam losses weigh 1 each,",
                  "# the auxiliary head 0.4.",
                  "loss:", "  types:", "    - type: CrossEntropyLoss", "  coef: [1, 1, 1, 0.4]"]
    return "\n".join(lines) + "\n"


def _rsb_schedule_lines(family: Family) -> List[str]:
    """mmseg's ResNet-strikes-back schedule: AdamW, gradient clipping, warm-up then steps."""
    return [
        "# mmseg's optim_wrapper: AdamW lr 5e-4, weight decay 0.05 on every parameter, gradients",
        "# clipped to global L2 norm 1; LinearLR from factor 0.001 over iterations 0..999, then",
        "# MultiStepLR x0.1 at 60k and 72k iterations counted from 1000 (mmengine's `begin`).",
        "optimizer:",
        "  _inherited_: false",
        "  type: AdamW",
        "  weight_decay: 0.05",
        "  grad_clip_norm: 1.0",
        "",
        "lr_scheduler:",
        "  _inherited_: false",
        "  type: MultiStepLR",
        "  learning_rate: 5.0e-4",
        "  milestones: [60000, 72000]",
        "  gamma: 0.1",
        "  warmup_iters: 1000",
        "  warmup_start_factor: 0.001",
        ""]


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"


#: What benchmarks/mmseg_recipe_proofs.py measured, recipe by recipe, against mmseg's own config
#: of the same name (written there with --write; the peer suite checks it covers every recipe).
PROVEN_FILE = ROOT / "tests" / "fixtures" / "mmseg" / "proven_recipes.json"
def proven() -> Dict[str, dict]:
    """``{recipe name: record}`` of :data:`PROVEN_FILE` (empty when it is absent)."""
    return json.loads(PROVEN_FILE.read_text())["recipes"] if PROVEN_FILE.is_file() else {}


def _worst(rows: Sequence[Sequence[float]]) -> str:
    return f"{max(row[-2] / row[-1] for row in rows):.1e}"


def verified_text(record: Optional[dict]) -> str:
    """The "verified here" cell of a recipe from its record in :data:`PROVEN_FILE` (None: not
    compared)."""
    if record is None:
        return "every tensor placed from mmseg's key list; not compared with mmseg's model"
    sizes = " and ".join(f"{h}x{w}" for h, w, *_ in record["logits"])
    done = [f"logits = mmseg's to {_worst(record['logits'])} of max (fp32, {sizes})"
            if record["agrees"]["logits"] else "logits differ from mmseg's (see the peer check)"]
    mode = "slide" if "slide" in record["test"] else "whole"
    if record["agrees"]["inference"]:
        where = "; image of mmseg's test size: no test resize here" if record.get("image_at_test_scale") else ""
        done.append(f"test-time path ({mode}, scaled down{where}) = mmseg's to {_worst([record['inference']])}")
    else:
        done.append(f"test-time path ({mode}) differs from mmseg's by {_worst([record['inference']])} "
                    "of max (see the peer check)")
    return "; ".join(done)


def verified(family: Family) -> str:
    """What this repository checked for ``family`` (benchmarks/mmseg_recipe_proofs.py)."""
    if family.needs:
        return "-"
    return verified_text(proven().get(family.name))


#: Model folders whose recipes are written by hand but whose README carries the generated
#: "verified here" table between these markers.
PROOF_TABLES = ("psanet", "pointrend")
PROOF_BEGIN, PROOF_END = "<!-- mmseg-proof:begin -->", "<!-- mmseg-proof:end -->"


def proof_table(model: str) -> str:
    """What was compared with mmseg for each recipe in ``configs/<model>/mmseg/``."""
    rows = ["| recipe | verified here |", "|---|---|"]
    for path in sorted((ROOT / "configs" / model / "mmseg").glob("*.yml")):
        rows.append(f"| `mmseg/{path.name}` | {verified_text(proven().get(path.stem))} |")
    return "\n".join([
        PROOF_BEGIN,
        "Each recipe against mmseg 1.2.2's own config file of the same name: random weights and "
        "BatchNorm statistics saved as mmseg's zoo files, loaded with `--model_path`'s loader "
        "(`benchmarks/mmseg_recipe_proofs.py`, its record `tests/fixtures/mmseg/proven_recipes.json`; "
        "criterion 1e-5 of the largest logit). Written by `python tools/zoo/mmseg_recipes.py`.",
        "",
        *rows,
        PROOF_END])


def table(model: str) -> str:
    rows = ["| mmseg config (= recipe `mmseg/<name>.yml` where one exists) | dataset | crop | iters "
            "| batch | test | mmseg's mIoU (ss / ms+flip) | recipe here | verified here |",
            "|---|---|---|---|---|---|---|---|---|"]
    for f in families(model):
        recipe = f"`mmseg/{f.name}.yml`" if f.needs is None else f"none: needs {f.needs}"
        test = TEST_MODES.get(f.suffix, "-")
        rows.append(f"| `{f.name}` | {f.dataset} | {f.crop} | {f.iters // 1000}k | {f.batch} x 4 | {test} "
                    f"| {_fmt(f.miou)} / {_fmt(f.miou_ms)} | {recipe} | {verified(f)} |")
    n_recipes = sum(f.needs is None for f in families(model))
    return "\n".join([
        BEGIN,
        f"{len(families(model))} of the {CONFIGS[model]} configs of mmsegmentation 1.2.2's `configs/{model}/` "
        f"(every model of its `metafile.yaml`{EXTRA_CONFIGS.get(model, '')}); {n_recipes} have a recipe. "
        "The mIoU figures are mmseg's (its metafile, or its README where the metafile has none; "
        "\"-\": none published), not measured here: the real checkpoints cannot be downloaded on "
        "this machine. Written by "
        "`python tools/zoo/mmseg_recipes.py`.",
        "",
        *rows,
        END])


def _replace_between(readme: Path, begin: str, end: str, body: str, what: str) -> str:
    """``readme``'s text with the part from ``begin`` to ``end`` replaced by ``body``."""
    text = readme.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{readme}: add the lines {begin} and {end} where the {what} goes")
    head, rest = text.split(begin, 1)
    return head + body + rest.split(end, 1)[1]


def planned() -> Dict[Path, str]:
    """Every file the generator owns, with its content."""
    out: Dict[Path, str] = {recipe_path(f): recipe_text(f) for f in families() if f.needs is None}
    for model in PAPERS:
        readme = ROOT / "configs" / model / "README.md"
        out[readme] = _replace_between(readme, BEGIN, END, table(model), "mmseg table")
    for model in PROOF_TABLES:
        readme = ROOT / "configs" / model / "README.md"
        out[readme] = _replace_between(readme, PROOF_BEGIN, PROOF_END, proof_table(model), "proof table")
    return out


def stale() -> List[Path]:
    """Generated files missing or different from what the generator writes, and recipes it does not own."""
    plan = planned()
    bad = [p for p, text in plan.items() if not p.is_file() or p.read_text() != text]
    for model in PAPERS:
        bad += sorted(p for p in (ROOT / "configs" / model / "mmseg").glob("*.yml") if p not in plan)
    return bad


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report files that would change")
    args = p.parse_args(argv)
    if args.check:
        bad = stale()
        for path in bad:
            print(f"out of date: {path.relative_to(ROOT)}")
        return 1 if bad else 0
    for path, text in planned().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
