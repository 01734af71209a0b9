"""mmsegmentation 1.2.2 checkpoints give mmsegmentation's logits here (peer environment only).

PyTorch and mmsegmentation never enter the toolkit's ``.venv``, so in the main
suite every test here is skipped with the reason. To run them:

    bash benchmarks/setup_peer_env.sh
    .venv-peers/bin/python -m pytest tests/test_peer_mmseg.py -q -p no:cacheprovider

mmseg's own model, built from its own config file with random weights and
random BatchNorm statistics, is saved as mmseg saves it (the model zoo's
``{'meta', 'state_dict'}`` in torch's legacy layout, and mmengine's
``save_checkpoint`` with a ``message_hub``), loaded into ours through
``load_model_weights`` with the recipe of the same name, and the eval logits
(mmseg's ``encode_decode``) are compared at three input sizes (two odd), and in
float64 where both sides run in it. PSANet's ``PSAMask`` and PointRend's
``point_sample`` are compiled mmcv ops that mmcv-lite lacks: the stand-ins of
``benchmarks/mmcv_ops_standin.py`` run in their place, checked here against
this toolkit's own references. The main suite guards the same conversions from the committed key/shape lists and
golden logits (``tests/test_mmseg_adapter.py``); the last tests here check
that those are still mmseg's.
"""

import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("mmseg", reason="mmsegmentation 1.2.2 is installed only in the peer "
                    "environment: bash benchmarks/setup_peer_env.sh && .venv-peers/bin/python "
                    "-m pytest tests/test_peer_mmseg.py")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import mmseg_checkpoints as mc  # noqa: E402

#: The issue's criterion: max abs diff <= 1e-5 of the largest logit magnitude, float32.
RELATIVE = 1e-5
#: The same in float64 (both sides sum in float64: measured ratios ~3e-13).
RELATIVE_F64 = 1e-9


@pytest.mark.parametrize("style", ["mmcv1", "mmengine"])
@pytest.mark.parametrize("family", mc.NETWORKS)
def test_mmseg_checkpoint_gives_mmseg_logits(family, style, tmp_path, caplog):
    caplog.set_level("INFO", logger="paddleseg_ext")
    rows = mc.compare(family, tmp_path, style)
    assert [size for size, _, _ in rows] == list(mc.SIZES)
    for size, diff, scale in rows:
        assert scale > 0.1, f"{family} {size}: logits too small to mean anything ({scale})"
        assert diff <= RELATIVE * scale, \
            f"{family} {style} {size}: max abs diff {diff} > {RELATIVE} x {scale}"
    model = mc.ARCH[family.split("_")[0]]
    lines = [r.getMessage() for r in caplog.records if "detected mmsegmentation" in r.getMessage()]
    assert len(lines) == 1 and f"mmsegmentation {model} checkpoint" in lines[0]
    assert "num_batches_tracked" in lines[0]
    left_out = "message_hub, meta" if style == "mmengine" else "meta"
    assert any(f"leaving out {left_out}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("family", mc.F64_NETWORKS)
def test_float64_logits_are_mmsegs(family, tmp_path):
    rows = mc.compare(family, tmp_path, "mmcv1", dtype="float64", sizes=mc.F64_SIZES)
    for size, diff, scale in rows:
        assert scale > 0.1, f"{family} {size}: logits too small to mean anything ({scale})"
        assert diff <= RELATIVE_F64 * scale, \
            f"{family} float64 {size}: max abs diff {diff} > {RELATIVE_F64} x {scale}"


@pytest.mark.parametrize("mask", [(9, 13), (10, 12), (8, 8), (66, 66), (97, 97)])
@pytest.mark.parametrize("direction", [0, 1])
def test_psamask_stand_in_is_our_psa_mask(mask, direction):
    """The PSAMask stand-in equals our psa_mask reference, odd and even windows."""
    import paddle
    import torch
    from mmcv_ops_standin import PSAMask

    from paddleseg_ext.ops.psa_mask import psa_mask_reference

    for h, w in ((5, 7), (6, 4), (9, 13)):
        x = np.random.default_rng(h * w).normal(size=(2, mask[0] * mask[1], h, w)).astype(np.float32)
        got = PSAMask(("collect", "distribute")[direction], mask)(torch.from_numpy(x)).numpy()
        want = psa_mask_reference(paddle.to_tensor(x), direction, mask).numpy()
        np.testing.assert_array_equal(got, want)


def test_point_sample_stand_in_is_our_zero_padded_point_sample():
    import paddle
    import torch
    from mmcv_ops_standin import point_sample

    from paddleseg_ext.models.layers.point_geometry import point_sample as ours

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)
    points = rng.uniform(-0.05, 1.05, size=(2, 40, 2)).astype(np.float32)  # edges included
    got = point_sample(torch.from_numpy(feats), torch.from_numpy(points)).numpy()
    want = ours(paddle.to_tensor(feats), paddle.to_tensor(points), "zeros").numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family,switch,size", [
    ("psanet_r50-d8_4xb2-80k_cityscapes-512x1024", "psa_resize_rule=authors", (64, 96)),
    ("psanet_r50-d8_4xb2-80k_cityscapes-512x1024", "psa_proj_padding=0", (65, 97)),
    ("pointrend_r50_4xb2-80k_cityscapes-512x1024", "fpn_upsample=to_next_level", (67, 93)),
    ("pointrend_r50_4xb2-80k_cityscapes-512x1024", "subdivision_cap=True", (67, 93)),
    ("pointrend_r50_4xb2-80k_cityscapes-512x1024", "point_padding=border", (67, 93)),
])
def test_each_mmseg_switch_is_needed(family, switch, size, tmp_path):
    """With one switch back at our default, the same tensors no longer give mmseg's logits."""
    from paddleseg_ext.checkpoints.weights import load_model_weights
    from paddleseg_ext.cvlibs import Config, SegBuilder

    peer = mc.randomized_peer(family, 0)
    path = tmp_path / "m.pth"
    mc.save_like_mmseg(peer, path, "mmcv1")
    ours = mc.our_model(family)
    load_model_weights(ours, str(path))
    variant = SegBuilder(Config(str(mc.ROOT / mc.FAMILIES[family]), opts=[f"model.{switch}"])).model
    variant.set_state_dict(ours.state_dict())
    variant.eval()
    x = mc.random_input(size, 3)
    want = mc.peer_logits(peer, x)
    scale = float(np.abs(want).max())
    assert float(np.abs(mc.our_logits(ours, x) - want).max()) <= RELATIVE * scale
    assert float(np.abs(mc.our_logits(variant, x) - want).max()) > 1e-3 * scale, switch


@pytest.mark.parametrize("family", mc.NETWORKS)
def test_committed_key_lists_are_mmsegs(family):
    path = mc.FIXTURES / f"{mc.fixture_name(family)}.json"
    doc = json.loads(path.read_text())
    assert doc["keys"] == mc.key_shapes(family), \
        f"{path} is stale: rerun .venv-peers/bin/python benchmarks/mmseg_checkpoints.py --fixtures"


@pytest.mark.parametrize("family,seed,size", mc.GOLDEN)
def test_committed_golden_logits_are_mmsegs(family, seed, size):
    want = mc.peer_logits(mc.randomized_peer(family, seed), mc.random_input(size, seed))
    got = np.load(mc.FIXTURES / f"{mc.fixture_name(family)}_golden_seed{seed}.npy")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.abs(want).max()))


@pytest.mark.parametrize("family", mc.FAMILIES)
def test_recipe_builds_the_peer_network(family):
    """Every recipe (40k and 80k schedules too) has the peer config's key/shape list."""
    ours = mc.our_model(family)
    peer_keys = mc.key_shapes(family)
    from paddleseg_ext.checkpoints.adapters import to_native

    native, conv = to_native(mc.random_state(peer_keys, 0), ours, source=family)
    assert not conv.unplaced and set(native) == set(ours.state_dict())


@pytest.mark.parametrize("family", ["psanet_r50-d8_4xb2-40k_cityscapes-769x769",
                                    "psanet_r50-d8_4xb4-20k_voc12aug-512x512"])
def test_769_and_voc_psanet_recipes_give_mmseg_logits(family, tmp_path):
    """The 769x769 recipes resize the logits with align_corners=True, the VOC ones have 21
    classes; the network is otherwise the 512x1024 one compared above."""
    sizes = mc.SIZES[:2]  # 64x96 and the odd 67x93
    rows = mc.compare(family, tmp_path, "mmcv1", sizes=sizes)
    assert [size for size, _, _ in rows] == list(sizes)
    for size, diff, scale in rows:
        assert scale > 0.1, f"{family} {size}: logits too small to mean anything ({scale})"
        assert diff <= RELATIVE * scale, f"{family} {size}: max abs diff {diff} > {RELATIVE} x {scale}"


def _peer_cfg(family):
    from mmengine.config import Config

    return Config.fromfile(str(mc.peer_config_path(family))).model


@pytest.mark.parametrize("rsb,b", sorted(mc.RSB_NETWORKS.items()))
def test_rsb_configs_build_the_b_networks(rsb, b, tmp_path):
    """mmseg's ResNet-strikes-back configs build their "b" config's network (type='ResNet',
    same strides, dilations and heads; only the ImageNet file and the schedule differ): the
    same key/shape list, and our rsb recipe gives mmseg's logits on a file of mmseg's rsb model."""
    peer, same = _peer_cfg(rsb), _peer_cfg(b)
    backbone = {k: v for k, v in peer.backbone.items() if k != "init_cfg"}
    assert backbone == dict(same.backbone) and backbone["type"] == "ResNet"
    assert (peer.decode_head, peer.auxiliary_head) == (same.decode_head, same.auxiliary_head)
    assert mc.key_shapes(rsb) == mc.key_shapes(b)
    sizes = mc.SIZES[:2]  # 64x96 and the odd 67x93
    for size, diff, scale in mc.compare(rsb, tmp_path, "mmcv1", sizes=sizes):
        assert scale > 0.1 and diff <= RELATIVE * scale, f"{rsb} {size}: {diff} > {RELATIVE} x {scale}"


@pytest.mark.parametrize("d32", mc.D32_NETWORKS)
def test_d32_configs_are_d8_tensors_with_another_function(d32, tmp_path):
    """A d32 file has a d8 file's keys and shapes (so the recipe decides), and the d8 recipe
    given a d32 file does not give mmseg's d32 logits."""
    from paddleseg_ext.checkpoints.weights import load_model_weights

    d8 = d32.replace("-d32_", "-d8_")
    assert mc.key_shapes(d32) == mc.key_shapes(d8)
    peer = mc.randomized_peer(d32, 0)
    path = tmp_path / "d32.pth"
    mc.save_like_mmseg(peer, path, "mmcv1")
    ours = mc.our_model(d8)
    load_model_weights(ours, str(path))
    x = mc.random_input((64, 96), 5)
    want = mc.peer_logits(peer, x)
    assert float(np.abs(mc.our_logits(ours, x) - want).max()) > 1e-3 * float(np.abs(want).max())


def test_mmcls_resnet50_file_gives_the_resnets_features(tmp_path, caplog):
    """An ImageNet ResNet50 file in mmcls' layout (the rsb recipes' initialisation) gives the
    peer ResNet's four stage features through ``pretrained:``, the classifier reported."""
    caplog.set_level("INFO", logger="paddleseg_ext")
    rows = mc.compare_mmcls(tmp_path)
    assert len(rows) == 8
    for size, stage, diff, scale in rows:
        assert scale > 0.1 and diff <= RELATIVE * scale, f"{size} stage {stage}: {diff} vs {scale}"
    assert "2 ImageNet classifier tensors (head.fc, not part of the backbone) not loaded" in caplog.text


def test_committed_mmcls_key_list_is_the_peers():
    doc = json.loads(mc.MMCLS_FIXTURE.read_text())
    assert doc["keys"] == mc.mmcls_key_shapes(mc.mmcls_resnet(50))


# --------------------------------------- every recipe shipped (benchmarks/mmseg_recipe_proofs.py)
import mmseg_recipe_proofs as rp  # noqa: E402

#: Recipes grouped by what decides their eval logits and test-time inference (mmseg's model and
#: test pipeline, our model, val transforms and test_config): one run per group.
RECIPE_GROUPS = rp.groups()


@pytest.mark.parametrize("group", RECIPE_GROUPS, ids=lambda g: f"{g[0]}+{len(g) - 1}")
def test_every_recipe_gives_mmsegs_logits_and_test_time_inference(group, tmp_path):
    name = group[0]
    result = rp.check(name, tmp_path)
    assert result["keys"], f"{name}: the main suite's key list (rp.recipe_keys) is not mmseg's"
    for h, w, diff, scale in result["logits"]:
        assert rp.within([diff, scale]), f"{name} {h}x{w}: max abs diff {diff} > {rp.RELATIVE} x {scale}"
    h, w, diff, scale = result["inference"]
    assert rp.within(result["inference"]), \
        f"{name} test-time path ({result['test']}) {h}x{w}: max abs diff {diff} > {rp.RELATIVE} x {scale}"


def test_the_record_of_proven_recipes_covers_every_recipe():
    recorded = json.loads(rp.PROVEN.read_text())["recipes"]
    missing = sorted(set(rp.recipes()) - set(recorded))
    assert not missing, f"not in {rp.PROVEN.name}: {missing}; rerun benchmarks/mmseg_recipe_proofs.py --write"


def _one_recipe_per_dataset():
    first = {}
    for name in rp.recipes():
        first.setdefault(name.rsplit("_", 1)[1], name)
    return sorted(first.values())


@pytest.mark.parametrize("name", _one_recipe_per_dataset())
def test_recipe_dataset_reads_labels_as_mmseg(name, tmp_path):
    """Class count, ignore index and the mapping of every raw label value (reduce_zero_label)."""
    rules = rp.label_rules(name, tmp_path)
    assert rules["ours"][:2] == rules["peer"][:2], rules["ours"][:2]
    assert rules["ours"][2] == rules["peer"][2]


# ------------------------------------------- the config a file records (checkpoints/recorded_config.py)
@pytest.mark.parametrize("name", sorted(rp.recipes()))
def test_every_recipe_agrees_with_the_config_text_mmseg_records(name):
    """mmseg writes its config's ``pretty_text`` into a checkpoint's meta: our reader gets the
    backbone's strides / dilations and the head's align_corners out of mmseg's own text of each
    recipe's config, and the recipe of that name is not refused (nor, for PSPNet, the d8 / d32
    recipe of the other form)."""
    import paddle
    from mmengine.config import Config as PeerConfig

    from paddleseg_ext.checkpoints.adapters.mmseg_resnet import check_recorded_config
    from paddleseg_ext.checkpoints.recorded_config import recorded_model_config, setting
    from paddleseg_ext.cvlibs import Config, SegBuilder

    peer = PeerConfig.fromfile(str(mc.peer_config_path(name)))
    meta = {"config": peer.pretty_text}
    recorded = recorded_model_config(meta)
    for key in ("strides", "dilations"):
        assert setting(recorded, "backbone", key) == list(peer.model.backbone.get(key)), key
    head = peer.model.decode_head
    if isinstance(head, dict):
        assert setting(recorded, "decode_head", "align_corners") == head.align_corners
    with paddle.LazyGuard():
        model = SegBuilder(Config(str(rp.recipes()[name]))).model
    folder = rp.recipes()[name].parts[-3]
    check_recorded_config(meta, model, folder)
    other = {"-d8_": "-d32_", "-d32_": "-d8_"}
    twin = next((name.replace(a, b) for a, b in other.items() if a in name), None)
    if twin in rp.recipes():
        with paddle.LazyGuard():
            wrong = SegBuilder(Config(str(rp.recipes()[twin]))).model
        with pytest.raises(ValueError, match="records builds backbone strides"):
            check_recorded_config(meta, wrong, folder)
