"""Every mmseg recipe's network takes mmseg's state dict of the config of its name, whole.

The key/shape lists in ``tests/fixtures/mmseg/`` are mmseg 1.2.2's own (written from mmseg's
models by ``benchmarks/mmseg_checkpoints.py --fixtures`` and ``benchmarks/mmseg_recipe_proofs.py
--fixtures``; the peer suite checks that the list this test derives for each recipe is mmseg's,
key for key). The recipes are found on disk, so a new one is covered without listing it.
Models are built under ``paddle.LazyGuard`` (shapes without initialised values: this checks
placement, not values; ``tests/test_mmseg_adapter.py`` checks values).
"""

import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.cvlibs import Config, SegBuilder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mmseg_recipe_proofs as rp  # noqa: E402  (NumPy-only parts)

RECIPES = rp.recipes()


def test_recipes_are_found():
    models = {path.parts[-3] for path in RECIPES.values()}
    assert models == {"pspnet", "danet", "psanet", "pointrend"}, models


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_takes_its_mmseg_key_list_whole(name):
    cfg = Config(str(RECIPES[name]))
    with paddle.LazyGuard():
        model = SegBuilder(cfg).model
    keys = rp.recipe_keys(name, cfg.dic["model"]["num_classes"])
    state = {k: np.zeros(shape, np.int64 if k.endswith("num_batches_tracked") else np.float32)
             for k, shape in keys.items()}
    native, conv = to_native(state, model, source=name)
    own = model.state_dict()
    assert conv is not None and not conv.unplaced
    assert set(native) == set(own)
    assert {k: list(native[k].shape) for k in own} == {k: list(v.shape) for k, v in own.items()}
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(native) + len(counters) == len(state)


def test_resnet101_lists_are_mmsegs_own():
    """The ResNet101 lists are mmseg's models' (23 stage-3 blocks), not a ResNet50 list extended."""
    for name in ("pspnet_r101-d8_4xb2-80k_cityscapes-512x1024", "danet_r101-d8_4xb2-80k_cityscapes-512x1024",
                 "psanet_r101-d8_4xb2-80k_cityscapes-512x1024", "pointrend_r101_4xb2-80k_cityscapes-512x1024",
                 "pspnet_r101b-d8_4xb2-80k_cityscapes-512x1024"):
        path = rp.fixture_for(name)
        assert path.name == f"{name.split('_4xb')[0]}.json"
        keys = rp.recipe_keys(name, 19)
        blocks = {k.split(".")[2] for k in keys if k.startswith("backbone.layer3.")}
        assert len(blocks) == 23, (name, len(blocks))
