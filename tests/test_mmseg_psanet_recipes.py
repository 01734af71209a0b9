"""The mmsegmentation PSANet recipes of the Cityscapes 769x769 and VOC 2012 aug families.

mmseg 1.2.2's ``configs/psanet/psanet_r{50,101}-d8_4xb2-{40,80}k_cityscapes-769x769.py`` and
``..._4xb4-{20,40}k_voc12aug-512x512.py`` keep the 97x97 masks of its
``_base_/models/psanet_r50-d8.py``; the 769x769 ones set ``align_corners=True`` on both heads
and test in 769x769 windows moved by 513; the VOC ones have 21 classes. Here, written out from
those files (not from the recipes): each recipe builds mmseg's network with those settings and
takes an mmseg-layout state whole (the committed R50 key list, stage 3 extended to 23 blocks
for R101, classifiers at the recipe's class count), and configs/psanet/README.md names each.
``tests/test_peer_mmseg.py`` compares one of each family with mmseg's own model.
"""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.cvlibs import Config, SegBuilder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mmseg_checkpoints as mc  # noqa: E402  (NumPy-only parts)

from test_mmseg_recipes import MEAN, STD, MMSEG_TEST, _mmseg_keys  # noqa: E402

#: mmseg config name -> (depth, iterations, images per GPU), from the file names.
NEW = {f"psanet_r{d}-d8_4xb{b}-{it}k_{suffix}": (d, it * 1000, b)
       for d in (50, 101)
       for b, its, suffix in ((2, (40, 80), "cityscapes-769x769"), (4, (20, 40), "voc12aug-512x512"))
       for it in its}


def _recipe(name):
    return ROOT / "configs" / "psanet" / "mmseg" / f"{name}.yml"


def test_every_family_of_mmsegs_psanet_metafile_has_a_recipe():
    # The 16 PSANet configs of mmseg 1.2.2 (4 datasets/crops x R50/R101 x 2 schedules).
    recipes = sorted(p.stem for p in (ROOT / "configs" / "psanet" / "mmseg").glob("*.yml"))
    assert set(NEW) <= set(recipes) and len(recipes) == 16
    assert set(NEW) <= set(mc.FAMILIES)


@pytest.mark.parametrize("name", sorted(NEW))
def test_recipe_builds_mmsegs_network_and_takes_its_state_whole(name):
    depth, iters, batch = NEW[name]
    want = MMSEG_TEST[name.split("_")[-1]]
    cfg = Config(str(_recipe(name)))
    builder = SegBuilder(cfg)
    builder.validate()
    d = cfg.dic
    model = d["model"]
    assert (model["type"], model["backbone"]["type"]) == ("PSANet", f"ResNet{depth}_vd")
    assert (cfg.iters, cfg.batch_size) == (iters, batch)
    assert model["num_classes"] == d["val_dataset"]["num_classes"] == want["num_classes"]
    assert d["val_dataset"]["type"] == d["train_dataset"]["type"] == want["dataset"]
    assert model["align_corners"] is want["align_corners"]
    assert d["val_dataset"]["transforms"] == [
        {"type": "Resize", "target_size": want["resize"], "keep_ratio": True},
        {"type": "Normalize", "mean": MEAN, "std": STD}]
    test = d.get("test_config") or {}
    if want["slide"] is None:
        assert not test.get("is_slide")
    else:
        assert test["is_slide"] and [test["crop_size"], test["stride"]] == list(want["slide"])
    net = builder.model
    psa = net.psa
    assert psa.mask_size == (97, 97)
    assert (psa.resize_rule, psa.proj_padding, psa.concat_order) == ("mmseg", 1, "collect_first")
    assert net.align_corners is want["align_corners"]
    assert d["loss"]["coef"] == [1, 0.4]
    _takes_an_mmseg_state_whole(name, net)


def _takes_an_mmseg_state_whole(name, model):
    depth = NEW[name][0]
    num_classes = model.num_classes
    state = mc.random_state(_mmseg_keys("psanet", depth, num_classes), seed=depth + num_classes)
    native, conv = to_native(state, model, source=f"{name}.pth")
    assert conv.layout == "mmsegmentation PSANet"
    own = model.state_dict()
    assert set(native) == set(own) and not conv.unplaced
    assert all(list(native[k].shape) == list(own[k].shape) for k in own)
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(native) + len(counters) == len(state)
    np.testing.assert_array_equal(native["cls.weight"], state["decode_head.conv_seg.weight"])
    assert native["cls.weight"].shape[0] == num_classes
    if depth == 101:
        assert sum(k.startswith("backbone.bb_2_") and k.endswith("conv0._conv.weight") for k in native) == 23


def test_readme_table_names_each_recipe_with_mmsegs_figures():
    text = (ROOT / "configs" / "psanet" / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(psanet_[\w.-]+)` \|.*$", text, re.M)}
    for name in NEW:
        assert name in rows, f"configs/psanet/README.md has no table row for {name}"
        assert "97x97" in rows[name]
