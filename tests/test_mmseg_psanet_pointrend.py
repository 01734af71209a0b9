"""mmsegmentation PSANet / PointRend: the switches that build its networks, and its files' errors.

The conversions themselves (every tensor placed, mmseg's golden logits) are guarded with the
PSPNet / DANet ones in ``tests/test_mmseg_adapter.py`` from the committed key/shape lists;
``tests/test_peer_mmseg.py`` (peer environment) proves them against mmsegmentation. Here:

* PSAModule's ``resize_rule='mmseg'`` shrink sizes and ``proj_padding`` ring, checked against
  a NumPy computation of mmseg's PSAHead rule;
* SemanticFPNHead's ``fixed_x2`` equals ``to_next_level`` at sizes that are multiples of the
  coarsest stride and differs otherwise; ``subdivision_cap=False`` overshoots the input;
* a file for another architecture, another mask size or another switch setting gets one clear
  error naming the layout and the mismatch; bad switch values are refused by name.
"""

import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.models import PointRend
from paddleseg_ext.models.layers.fpn import SemanticFPNHead
from paddleseg_ext.models.layers.psa_block import PSAModule

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mmseg_checkpoints as mc  # noqa: E402  (NumPy-only parts)

from test_mmseg_adapter import build, fixture  # noqa: E402

PSA_CITY = "psanet_r50-d8_4xb2-80k_cityscapes-512x1024"
PSA_ADE = "psanet_r50-d8_4xb4-80k_ade20k-512x512"
POINTREND = "pointrend_r50_4xb2-80k_cityscapes-512x1024"


def _mmseg_shrink(h, w, s=2):
    """mmseg PSAHead.forward's rule, written out (psa_head.py)."""
    if h % s and w % s:
        return ((h - 1) // s + 1, (w - 1) // s + 1), True
    return (h // s, w // s), False


@pytest.mark.parametrize("hw", [(8, 12), (9, 13), (9, 12), (8, 13), (7, 7)])
def test_psa_mmseg_resize_rule_sizes(hw):
    x = paddle.zeros([1, 16, *hw])
    module = PSAModule(16, 8, "bi-direction", (5, 5), resize_rule="mmseg")
    assert module._shrunk_size(x) == (list(_mmseg_shrink(*hw)[0]), _mmseg_shrink(*hw)[1])
    authors = PSAModule(16, 8, "bi-direction", (5, 5))
    assert authors._shrunk_size(x) == ([(hw[0] - 1) // 2 + 1, (hw[1] - 1) // 2 + 1], True)


def test_psa_proj_padding_adds_a_ring_of_relu_bn_zero():
    """The padded 1x1 proj: inside the conv, on the 1-pixel ring the constant ReLU(BN(0))."""
    paddle.seed(0)
    module = PSAModule(6, 4, "collect", (3, 3), shrink_factor=1, proj_padding=1)
    module.eval()
    bn = module.proj._batch_norm
    bn.weight.set_value(paddle.to_tensor(np.linspace(-1, 1, 6).astype("float32")))
    bn._mean.set_value(paddle.to_tensor(np.linspace(-0.5, 0.5, 6).astype("float32")))
    ctx = module.proj(paddle.randn([1, 4, 5, 7]))
    assert list(ctx.shape) == [1, 6, 7, 9]
    ring = np.maximum(0.0, (0 - bn._mean.numpy()) / np.sqrt(bn._variance.numpy() + bn._epsilon)
                      * bn.weight.numpy() + bn.bias.numpy())
    got = ctx.numpy()[0]
    for edge in (got[:, 0, :], got[:, -1, :], got[:, :, 0], got[:, :, -1]):
        np.testing.assert_allclose(edge, np.broadcast_to(ring[:, None], edge.shape), atol=1e-6)
    # The module resizes that larger map back to the input size.
    x = paddle.randn([1, 6, 5, 7])
    assert list(module(x).shape) == [1, 12, 5, 7]


def _fpn_heads():
    paddle.seed(1)
    a = SemanticFPNHead(4, [4, 8, 16, 32], 4, 3, 0.0)
    b = SemanticFPNHead(4, [4, 8, 16, 32], 4, 3, 0.0, upsample="fixed_x2")
    b.set_state_dict(a.state_dict())
    a.eval(), b.eval()
    return a, b


def _pyramid(size):
    """Random stride-4, 8, 16, 32 maps of the sizes a ResNet gives an ``size`` input."""
    h, w = ((size[0] + 1) // 2 + 1) // 2, ((size[1] + 1) // 2 + 1) // 2  # stem, max pool
    sizes = [(h, w)]
    for _ in range(3):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return [paddle.randn([1, 4, *s]) for s in sizes]


def test_fpn_fixed_x2_equals_exact_steps_only_at_multiples_of_32():
    a, b = _fpn_heads()
    feats = _pyramid((64, 96))  # 16x24 .. 2x3
    np.testing.assert_allclose(a(feats).numpy(), b(feats).numpy(), atol=1e-5)
    feats = _pyramid((67, 93))  # 17x24, 9x12, 5x6, 3x3: 3 -> 6 -> 12 -> 24 then 17
    out_a, out_b = a(feats).numpy(), b(feats).numpy()
    assert out_a.shape == out_b.shape == (1, 3, 17, 24)
    assert np.abs(out_a - out_b).max() > 1e-3


def test_uncapped_subdivision_overshoots_the_input_then_resizes():
    model = build(POINTREND)
    seen = []
    refine = model.refine_step

    def spy(logits, fine, coarse):
        seen.append(list(logits.shape[2:]))
        return refine(logits, fine, coarse)

    model.refine_step = spy
    with paddle.no_grad():
        out = model(paddle.randn([1, 3, 67, 93]))[0]
    assert list(out.shape) == [1, 19, 67, 93]
    assert seen == [[34, 48], [68, 96]]  # stride-4 level 17x24, doubled twice, past 67x93
    capped = build(POINTREND, ["model.subdivision_cap=True"])
    assert capped.subdivision_cap is True and model.subdivision_cap is False


@pytest.mark.parametrize("opt,words", [
    ("model.psa_resize_rule=mmseg2", "psa_resize_rule"),
    ("model.psa_proj_padding=-1", "psa_proj_padding"),
])
def test_bad_psanet_switch_values_are_refused_by_name(opt, words):
    with pytest.raises(Exception, match=words):
        build(PSA_CITY, [opt])


@pytest.mark.parametrize("opt,words", [
    ("model.fpn_upsample=x2", "fpn_upsample"),
    ("model.point_padding=reflect", "point_padding"),
    ("model.subdivision_cap=1", "subdivision_cap"),
])
def test_bad_pointrend_switch_values_are_refused_by_name(opt, words):
    with pytest.raises(Exception, match=words):
        build(POINTREND, [opt])


def test_psanet_and_pointrend_rules_place_the_right_values():
    state = mc.random_state(fixture(PSA_CITY)["keys"], seed=12)
    native, _ = to_native(state, build(PSA_CITY))
    for peer, ours in {"decode_head.reduce_p.bn.running_var": "psa.reduce_p._batch_norm._variance",
                       "decode_head.attention.1.weight": "psa.attention.1.weight",
                       "decode_head.attention_p.0.conv.weight": "psa.attention_p.0._conv.weight",
                       "decode_head.proj.bn.weight": "psa.proj._batch_norm.weight",
                       "decode_head.bottleneck.conv.weight": "bottleneck._conv.weight",
                       "decode_head.conv_seg.bias": "cls.bias",
                       "auxiliary_head.conv_seg.weight": "aux_head.conv.weight"}.items():
        np.testing.assert_array_equal(native[ours], state[peer], err_msg=peer)
    state = mc.random_state(fixture(POINTREND)["keys"], seed=13)
    native, _ = to_native(state, build(POINTREND))
    for peer, ours in {"neck.lateral_convs.2.conv.bias": "neck.lateral_convs.2.bias",
                       "neck.fpn_convs.3.conv.weight": "neck.output_convs.3.weight",
                       "decode_head.0.scale_heads.3.4.conv.weight":
                           "fpn_head.scale_heads.3.2._conv.weight",
                       "decode_head.0.scale_heads.2.2.bn.running_mean":
                           "fpn_head.scale_heads.2.1._batch_norm._mean",
                       "decode_head.0.conv_seg.weight": "fpn_head.cls.weight",
                       "decode_head.1.fcs.1.conv.weight": "point_head.fcs.1.weight",
                       "decode_head.1.fc_seg.bias": "point_head.cls.bias",
                       "backbone.layer4.2.bn3.weight": "backbone.bb_3_2.conv2._batch_norm.weight"
                       }.items():
        np.testing.assert_array_equal(native[ours], state[peer], err_msg=peer)


def test_a_97_mask_file_for_a_66_mask_recipe_names_both():
    state = mc.random_state(fixture(PSA_CITY)["keys"], seed=14)
    model = build(PSA_ADE, ["model.num_classes=19", "train_dataset.num_classes=19",
                            "val_dataset.num_classes=19"])
    with pytest.raises(ValueError) as e:
        to_native(state, model, source="psa.pth")
    msg = str(e.value)
    assert msg.count("\n") == 0
    assert ("psa.pth: detected an mmsegmentation PSANet checkpoint with 97x97 masks (9409 "
            "attention channels), but this PSANet is built with mask_h=66, mask_w=66 (4356)") in msg


@pytest.mark.parametrize("family,opt,named", [
    (PSA_CITY, "model.psa_resize_rule=authors", "psa_resize_rule='authors' (mmseg: 'mmseg')"),
    (PSA_CITY, "model.psa_proj_padding=0", "psa_proj_padding=0 (mmseg: 1)"),
    (PSA_CITY, "model.psa_type=collect", "psa_type='collect' (the file: bi-direction)"),
    (POINTREND, "model.fpn_upsample=to_next_level",
     "fpn_upsample='to_next_level' (mmseg: 'fixed_x2')"),
    (POINTREND, "model.point_padding=border", "point_padding='border' (mmseg: 'zeros')"),
    (POINTREND, "model.subdivision_cap=True", "subdivision_cap=True (mmseg: False)"),
    (POINTREND, "model.backbone.output_stride=8", "backbone output_stride=8 (mmseg: 32)"),
])
def test_a_model_of_another_variant_is_refused_naming_the_switch(family, opt, named):
    state = mc.random_state(fixture(family)["keys"], seed=15)
    model = build(family, [opt])
    arch = type(model).__name__
    with pytest.raises(ValueError) as e:
        to_native(state, model, source="m.pth")
    assert (f"m.pth: detected an mmsegmentation {arch} checkpoint, but this {arch} is built "
            "with") in str(e.value)
    assert named in str(e.value) and str(e.value).count("\n") == 0


def test_a_file_of_another_architecture_is_refused_naming_it():
    psa = mc.random_state(fixture(PSA_CITY)["keys"], seed=17)
    with pytest.raises(ValueError, match="pr.pth: detected an mmsegmentation PSANet checkpoint, "
                                         "but the model is a PointRend"):
        to_native(psa, build(POINTREND), source="pr.pth")
    pr = mc.random_state(fixture(POINTREND)["keys"], seed=18)
    with pytest.raises(ValueError, match="psa.pth: detected an mmsegmentation PointRend "
                                         "checkpoint, but the model is a PSANet"):
        to_native(pr, build(PSA_CITY), source="psa.pth")
    assert isinstance(build(POINTREND), PointRend)
