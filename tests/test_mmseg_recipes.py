"""The mmsegmentation PSPNet / DANet recipes and zoo tables (tools/zoo/mmseg_recipes.py).

* the committed recipes and README tables are what the generator writes, and every recipe is
  named after an mmseg config of the zoo;
* each recipe carries mmseg 1.2.2's test settings for its dataset (written out here from
  mmseg's config files, not from the generator);
* every distinct network of the recipes takes an mmseg-layout state whole: the key/shape lists
  committed from mmseg's own models (ResNet18 / 50 / 101), the classifiers resized to the
  recipe's classes;
* every recipe a zoo table names exists.
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.cvlibs import Config, SegBuilder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tools" / "zoo"))
import mmseg_checkpoints as mc  # noqa: E402  (NumPy-only parts)
import mmseg_recipes as gen  # noqa: E402

RECIPES = sorted(p for model in ("pspnet", "danet") for p in (ROOT / "configs" / model / "mmseg").glob("*.yml"))
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
#: mmseg 1.2.2's test settings per dataset suffix: its _base_/datasets/*.py test_pipeline and
#: the recipes' test_cfg / align_corners / num_classes.
MMSEG_TEST = {
    "cityscapes-512x1024": dict(dataset="Cityscapes", num_classes=19, align_corners=False, slide=None,
                                resize=None),
    "cityscapes-769x769": dict(dataset="Cityscapes", num_classes=19, align_corners=True,
                               slide=([769, 769], [513, 513]), resize=[2049, 1025]),
    "ade20k-512x512": dict(dataset="ADE20K", num_classes=150, align_corners=False, slide=None,
                           resize=[2048, 512]),
    "voc12aug-512x512": dict(dataset="PascalVOC", num_classes=21, align_corners=False, slide=None,
                             resize=[2048, 512]),
    "loveda-512x512": dict(dataset="LoveDA", num_classes=7, align_corners=False, slide=None,
                           resize=[1024, 1024]),
    "potsdam-512x512": dict(dataset="Potsdam", num_classes=6, align_corners=False, slide=None,
                            resize=[512, 512]),
    "vaihingen-512x512": dict(dataset="Vaihingen", num_classes=6, align_corners=False, slide=None,
                              resize=[512, 512]),
    "isaid-896x896": dict(dataset="ISAID", num_classes=16, align_corners=False, slide=None,
                          resize=[896, 896]),
    "coco-stuff164k-512x512": dict(dataset="COCOStuff164k", num_classes=171, align_corners=False, slide=None,
                                   resize=[2048, 512]),
    "pascal-context-480x480": dict(dataset="PascalContext", num_classes=60, align_corners=False,
                                   slide=([480, 480], [320, 320]), resize=[520, 520], sgd=(0.004, 1e-4)),
    "pascal-context-59-480x480": dict(dataset="PascalContext59", num_classes=59, align_corners=False,
                                      slide=([480, 480], [320, 320]), resize=[520, 520], sgd=(0.004, 1e-4)),
    "coco-stuff10k-512x512": dict(dataset="COCOStuff10k", num_classes=171, align_corners=False, slide=None,
                                  resize=[2048, 512]),
    # trained on Cityscapes, tested (test_dataloader) on the night set with Resize(1920x1080, keep_ratio)
    "cityscapes-512x1024_dark-zurich-1920x1080": dict(dataset="DarkZurich", train="Cityscapes", num_classes=19,
                                                      align_corners=False, slide=None, resize=[1920, 1080]),
    "cityscapes-512x1024_night-driving-1920x1080": dict(dataset="NightDriving", train="Cityscapes",
                                                        num_classes=19, align_corners=False, slide=None,
                                                        resize=[1920, 1080]),
}


def test_generated_files_are_up_to_date():
    assert gen.stale() == [], "run: python tools/zoo/mmseg_recipes.py"


def test_recipes_are_named_after_mmseg_configs():
    zoo = {f.name: f for f in gen.families()}
    assert len(zoo) == len(gen.ZOO)  # names are unique
    assert RECIPES and all(p.stem in zoo and zoo[p.stem].needs is None for p in RECIPES)
    assert sorted(p.stem for p in RECIPES) == sorted(f.name for f in zoo.values() if f.needs is None)
    # The PSPNet / DANet families the peer proof covers are recipes here.
    assert {f for f in mc.FAMILIES if f.startswith(("pspnet", "danet"))} <= {p.stem for p in RECIPES}
    # Every V1c d8 PSPNet / DANet family on Cityscapes, ADE20K and VOC aug has one, and every
    # d8 "b" (7x7 stem) family.
    assert all(f.needs is None for f in zoo.values()
               if f.suffix in gen.BASES and re.search(r"_r\d+b?-d8_4xb", f.name))
    assert sum(f.b and f.needs is None for f in zoo.values()) == 9  # 7 + R101b on the two night sets
    # Every PSPNet config of mmseg 1.2.2 has one: d32, ResNet-strikes-back, COCO-Stuff 10k, the
    # night test sets and the R50 Pascal Context configs too.
    assert all(f.needs is None for f in zoo.values() if f.model == "pspnet")
    assert sum(f.model == "pspnet" for f in zoo.values()) == gen.CONFIGS["pspnet"] == 66
    night = {f.name: f for f in zoo.values() if f.dataset in ("Dark Zurich", "Nighttime Driving")}
    assert len(night) == 8 and all(f.crop == "512x1024" for f in night.values())
    for name, f in night.items():  # the network of the Cityscapes recipe of that name
        twin = zoo[re.sub(r"_(dark-zurich|night-driving)-1920x1080$", "", name)]
        assert (f.depth, f.b, f.output_stride, f.iters) == (twin.depth, twin.b, twin.output_stride, twin.iters)
    assert {f.name for f in zoo.values() if f.output_stride == 32} == {
        "pspnet_r50-d32_4xb2-80k_cityscapes-512x1024", "pspnet_r50b-d32_4xb2-80k_cityscapes-512x1024",
        "pspnet_r50-d32_rsb_4xb2-adamw-80k_cityscapes-512x1024"}
    assert {f.name for f in zoo.values() if f.rsb} == {
        "pspnet_r50-d8-rsb_4xb2-adamw-80k_cityscapes-512x1024",
        "pspnet_r50-d32_rsb_4xb2-adamw-80k_cityscapes-512x1024"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_has_mmsegs_test_settings(path):
    family = {f.name: f for f in gen.families()}[path.stem]
    want = MMSEG_TEST[family.suffix]
    cfg = Config(str(path))
    d = cfg.dic
    SegBuilder(cfg).validate()
    model = d["model"]
    assert model["type"] == {"pspnet": "PSPNet", "danet": "DANet"}[family.model]
    assert model["backbone"]["type"] == f"ResNet{family.depth}_vd"
    assert model["num_classes"] == d["val_dataset"]["num_classes"] == want["num_classes"]
    assert d["val_dataset"]["type"] == want["dataset"]
    assert d["train_dataset"]["type"] == want.get("train", want["dataset"])
    assert model["align_corners"] is want["align_corners"]
    assert cfg.iters == family.iters and cfg.batch_size == family.batch
    if family.rsb:  # mmseg's ResNet-strikes-back optim_wrapper and param_scheduler
        assert d["optimizer"] == {"type": "AdamW", "weight_decay": 0.05, "grad_clip_norm": 1.0}
        assert d["lr_scheduler"] == {"type": "MultiStepLR", "learning_rate": 5e-4, "milestones": [60000, 72000],
                                     "gamma": 0.1, "warmup_iters": 1000, "warmup_start_factor": 0.001}
    else:
        assert (d["lr_scheduler"]["learning_rate"], d["optimizer"]["weight_decay"]) == want.get("sgd", (0.01, 5e-4))
        assert (d["lr_scheduler"]["power"], d["lr_scheduler"]["end_lr"], d["optimizer"]["momentum"]) == (0.9, 1e-4, 0.9)
    vt = d["val_dataset"]["transforms"]
    assert vt[-1] == {"type": "Normalize", "mean": MEAN, "std": STD}
    if want["resize"] is None:
        assert len(vt) == 1
    else:
        assert vt[0] == {"type": "Resize", "target_size": want["resize"], "keep_ratio": True}
    test = d.get("test_config") or {}
    if want["slide"] is None:
        assert not test.get("is_slide")
    else:
        assert test["is_slide"] and [test["crop_size"], test["stride"]] == list(want["slide"])
    bb = model["backbone"]
    # mmseg's "b" and rsb configs replace ResNetV1c by type='ResNet': torchvision's 7x7 stem.
    assert bb.get("stem", "deep") == ("7x7" if re.search(r"b-d(8|32)_|[-_]rsb_", path.stem) else "deep")
    assert (bb["output_stride"], bb["shortcut"], bb["identity_shortcut"], bb["contract_dilation"],
            bb["dilate_basic_second_conv"]) == (family.output_stride, "strided_conv", True, True, False)
    # d32: strides (1, 2, 2, 2) with the d8 dilations (1, 1, 2, 4)
    assert bb.get("dilations") == ([1, 1, 2, 4] if "-d32_" in path.stem else None)
    if family.model == "pspnet":
        wide = family.depth >= 50
        assert (model["pp_out_channels"], model["aux_inter_channels"]) == ((512, 256) if wide else (128, 64))
        assert d["loss"]["coef"] == [1, 0.4]
    else:
        assert (model["inter_channels"], model["aux_head"], model["align_mode"]) == (512, "fcn", 0)
        assert d["loss"]["coef"] == [1, 1, 1, 0.4]


def _mmseg_keys(model, depth, num_classes, b=False):
    """mmseg's key/shape list for ``model`` at ``depth`` (``b``: the 7x7-stem "b" variant) with
    ``num_classes`` classifiers: the committed list of mmseg's own model (ResNet18, 50 and 101)."""
    v = "b" if b else ""
    keys = json.loads((mc.FIXTURES / f"{model}_r{depth}{v}-d8.json").read_text())["keys"]
    return {k: [num_classes, *v[1:]] if "conv_seg." in k else v for k, v in keys.items()}


def _networks():
    """Recipes of distinct networks: each (model, depth) at 19 classes, each other class count at
    the smallest depth a recipe of the model has it (a class count changes the classifiers' shapes
    alone; align_corners adds no tensor)."""
    zoo = {f.name: f for f in gen.families()}
    smallest = {}
    for path in RECIPES:
        f = zoo[path.stem]
        key = (f.model, MMSEG_TEST[f.suffix]["num_classes"])
        smallest[key] = min(smallest.get(key, f.depth), f.depth)
    seen = {}
    for path in RECIPES:
        f = zoo[path.stem]
        classes = MMSEG_TEST[f.suffix]["num_classes"]
        if classes == 19 or f.depth == smallest[(f.model, classes)]:
            seen.setdefault((f.model, f.depth, classes, f.stem7), path)
    return sorted(seen.items())


@pytest.mark.parametrize("network,path", _networks(), ids=lambda x: "-".join(map(str, x)) if isinstance(x, tuple)
                         else "")
def test_every_network_takes_an_mmseg_state_whole(network, path):
    model_name, depth, num_classes, b = network
    model = SegBuilder(Config(str(path))).model
    keys = _mmseg_keys(model_name, depth, num_classes, b)
    state = mc.random_state(keys, seed=depth + num_classes)
    native, conv = to_native(state, model, source=path.name)
    own = model.state_dict()
    assert set(native) == set(own) and not conv.unplaced
    assert all(list(native[k].shape) == list(own[k].shape) for k in own)
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(native) + len(counters) == len(state)
    if b:  # torchvision's 7x7 stem
        np.testing.assert_array_equal(native["backbone.conv1._conv.weight"], state["backbone.conv1.weight"])
        np.testing.assert_array_equal(native["backbone.conv1._batch_norm._variance"],
                                      state["backbone.bn1.running_var"])
    else:
        np.testing.assert_array_equal(native["backbone.conv1_1._conv.weight"], state["backbone.stem.0.weight"])
    if depth == 101:
        assert sum(k.startswith("backbone.bb_2_") and k.endswith("conv0._conv.weight") for k in native) == 23


TABLES = [ROOT / "README.md", ROOT / "configs" / "pspnet" / "README.md", ROOT / "configs" / "danet" / "README.md"]


def test_every_recipe_a_table_names_exists():
    named = set()
    for readme in TABLES:
        text = readme.read_text()
        for m in re.finditer(r"`(?:configs/(pspnet|danet)/)?(mmseg/[\w.-]+\.yml)`", text):
            model = m.group(1) or readme.parent.name
            named.add(ROOT / "configs" / model / m.group(2))
    assert named, "no mmseg recipe named in the tables"
    missing = sorted(str(p.relative_to(ROOT)) for p in named if not p.is_file())
    assert not missing, f"tables name recipes that do not exist: {missing}"
    # and the tables name every recipe
    assert set(RECIPES) <= named
