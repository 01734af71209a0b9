"""The authors' semseg checkpoints give semseg's logits here (peer environment only).

PyTorch never enters the toolkit's ``.venv``, and semseg's model files are read
from a checkout (none of its code is in this repository), so in the main suite
every test here is skipped with the reason. To run them:

    bash benchmarks/setup_peer_env.sh
    git clone https://github.com/hszhao/semseg /tmp/semseg
    SEMSEG_ROOT=/tmp/semseg .venv-peers/bin/python -m pytest tests/test_peer_semseg.py -q -s \
        -p no:cacheprovider

(``-s``: with pytest's output capture on, a run that holds PyTorch and Paddle in
one process was seen to stall, idle, in a float64 case; without it the same tests
run in seconds, as does ``benchmarks/semseg_checkpoints.py``.)

semseg's own PSPNet / PSANet, built as its config files set them with random
weights and random BatchNorm statistics, is saved as its ``tool/train.py``
saves (``{'epoch', 'state_dict', 'optimizer'}`` of a ``DataParallel`` model),
loaded into ours through ``load_model_weights`` with the recipe of the same
name, and the eval logits are compared at two input sizes, in float32 and
float64. The main suite guards the same conversions from the committed key/shape
lists and golden logits (``tests/test_semseg_adapter.py``); the last tests here
check that those are still the peers'.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is installed only in the peer environment: bash "
                    "benchmarks/setup_peer_env.sh && SEMSEG_ROOT=<semseg checkout> "
                    ".venv-peers/bin/python -m pytest tests/test_peer_semseg.py -s")
pytestmark = pytest.mark.skipif(
    not os.environ.get("SEMSEG_ROOT"),
    reason="needs $SEMSEG_ROOT: a checkout of https://github.com/hszhao/semseg (its model "
           "files are not committed here)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import semseg_checkpoints as sc  # noqa: E402

#: The issue's criteria: max abs diff relative to the largest logit magnitude.
RELATIVE = {"float32": 1e-5, "float64": 1e-9}
#: Paddle 3.3.1's CPU bilinear interpolation computes its source coordinates in float32 even
#: for float64 tensors (a 6 -> 8 align_corners resize is off by 4e-7 of its input scale), and
#: PSPNet resizes its 2x2, 3x3 and 6x6 pooled maps to sizes that are not whole multiples of
#: them; PSANet's resizes land on the grid (odd sizes, factor 2 and 8) and are exact.
_PADDLE_FLOAT32_RESIZE = pytest.mark.xfail(
    strict=True, reason="Paddle's float64 bilinear resize uses float32 coordinates: PSPNet's "
                        "pyramid pooling resizes reach ~1e-8 of the logits, not 1e-9")


@pytest.mark.parametrize("family,dtype", [
    ("voc2012_pspnet50", "float32"),
    pytest.param("voc2012_pspnet50", "float64", marks=_PADDLE_FLOAT32_RESIZE),
    ("voc2012_psanet50", "float32"),
    ("voc2012_psanet50", "float64"),
])
def test_semseg_checkpoint_gives_semseg_logits(family, dtype, tmp_path, caplog):
    caplog.set_level("INFO", logger="paddleseg_ext")
    rows = sc.compare(family, tmp_path, dtype=dtype)
    arch = family.split("_")[1][:6]
    assert [size for size, _, _ in rows] == list(sc.SIZES[arch])
    for size, diff, scale in rows:
        assert scale > 0.1, f"{family} {size}: logits too small to mean anything ({scale})"
        assert diff <= RELATIVE[dtype] * scale, \
            f"{family} {dtype} {size}: max abs diff {diff} > {RELATIVE[dtype]} x {scale}"
    model = "PSANet" if arch == "psanet" else "PSPNet"
    lines = [r.getMessage() for r in caplog.records if "detected semseg" in r.getMessage()]
    assert len(lines) == 1 and f"semseg {model} checkpoint" in lines[0]
    assert "num_batches_tracked" in lines[0]
    assert any("leaving out epoch, optimizer" in r.getMessage() for r in caplog.records)


def test_pspnet_float64_is_within_paddles_resize_rounding(tmp_path):
    """What the xfail above allows: float32 rounding of resize coordinates, not more."""
    for size, diff, scale in sc.compare("voc2012_pspnet50", tmp_path, dtype="float64"):
        assert diff <= 1e-7 * scale, f"{size}: {diff} > 1e-7 x {scale}"


@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("h,w,mh,mw", [(5, 7, 9, 13), (6, 4, 3, 5), (4, 4, 11, 11), (1, 3, 3, 3)])
def test_psa_mask_stand_in_equals_our_reference(psa_type, h, w, mh, mw):
    import paddle
    import torch

    from paddleseg_ext.ops.psa_mask import psa_mask_reference

    x = np.random.default_rng(h * 100 + w).normal(size=(2, mh * mw, h, w)).astype(np.float32)
    got = sc.psa_mask_stand_in(torch.from_numpy(x), psa_type, mh, mw).numpy()
    want = psa_mask_reference(paddle.to_tensor(x), psa_type, (mh, mw)).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("family", sc.NETWORKS)
def test_committed_key_lists_are_semsegs(family):
    doc = json.loads((sc.FIXTURES / f"{sc.fixture_name(family)}.json").read_text())
    assert doc["keys"] == sc.key_shapes(family), \
        f"stale: rerun SEMSEG_ROOT=... .venv-peers/bin/python benchmarks/semseg_checkpoints.py --fixtures"


@pytest.mark.parametrize("family,seed,size", sc.GOLDEN)
def test_committed_golden_logits_are_semsegs(family, seed, size):
    want = sc.peer_logits(sc.randomized_peer(family, seed), sc.random_input(size, seed))
    got = np.load(sc.FIXTURES / f"{sc.fixture_name(family)}_golden_seed{seed}.npy")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.abs(want).max()))


@pytest.mark.parametrize("family", sorted(sc.FAMILIES))
def test_recipe_builds_the_peer_network(family):
    """Every recipe (ADE20K, VOC, Cityscapes; 50 and 101 layers) takes semseg's file for its
    config: classes, mask size and depth as semseg builds them."""
    from paddleseg_ext.checkpoints.adapters import to_native

    ours = sc.our_model(family)
    native, conv = to_native(sc.random_state(sc.key_shapes(family), 0), ours, source=family)
    assert not conv.unplaced and set(native) == set(ours.state_dict())


def test_torchvision_resnet50_file_gives_torchvisions_features(tmp_path, caplog):
    caplog.set_level("INFO", logger="paddleseg_ext")
    rows = sc.compare_torchvision(tmp_path)
    assert len(rows) == 4 * len(sc.TORCHVISION_SIZES)
    for size, stage, diff, scale in rows:
        assert scale > 0.1 and diff <= 1e-5 * scale, f"{size} stage {stage}: {diff} vs {scale}"
    assert "2 ImageNet classifier tensors (fc, not part of the backbone) not loaded" in caplog.text


def test_committed_torchvision_fixtures_are_torchvisions():
    doc = json.loads((sc.FIXTURES / "torchvision_resnet50.json").read_text())
    assert doc["keys"] == sc.torchvision_key_shapes()
    seed, _ = sc.TORCHVISION_GOLDEN
    got = np.load(sc.FIXTURES / f"torchvision_resnet50_stage4_golden_seed{seed}.npy")
    want = sc.torchvision_golden()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.abs(want).max()))
