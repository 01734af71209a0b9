"""DANet: attention modules, head, model, recipes."""

import copy
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml

import paddleseg_ext.models.danet  # noqa: F401  (registers DANet / DAHead)
from paddleseg_ext.cvlibs import Config, SegBuilder, manager
from paddleseg_ext.models.backbones import ResNet18_vd
from paddleseg_ext.models.danet import DAHead, DANet
from paddleseg_ext.models.layers.attention import CAM, PAM
from paddleseg_ext.models.losses import CrossEntropyLoss
import tolerance as tol

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "danet"
QUICK_START = ROOT / "configs" / "quick_start" / "danet_resnet18_os8_landcover_64x64_400.yml"


def small(**kwargs):
    kwargs.setdefault("inter_channels", 32)
    return DANet(num_classes=kwargs.pop("num_classes", 3),
                 backbone=ResNet18_vd(output_stride=8), **kwargs)


def softmax(a, axis=-1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# -- attention modules ---------------------------------------------------------

def test_pam_and_cam_are_identity_at_init():
    x = paddle.randn([2, 16, 5, 7])
    pam, cam = PAM(16), CAM()
    assert pam.gamma.shape == [1] and pam.gamma.item() == 0.0 and cam.beta.item() == 0.0
    assert not pam.gamma.stop_gradient and not cam.beta.stop_gradient
    np.testing.assert_array_equal(pam(x).numpy(), x.numpy())
    np.testing.assert_array_equal(cam(x).numpy(), x.numpy())
    assert pam.query_conv.weight.shape == [2, 16, 1, 1] and pam.key_conv.weight.shape == [2, 16, 1, 1]
    assert pam.value_conv.weight.shape == [16, 16, 1, 1]


def test_pam_matches_numpy_reference():
    pam = PAM(16)
    pam.gamma.set_value(paddle.to_tensor([0.7]))
    x = paddle.randn([2, 16, 3, 4])
    xn = x.numpy().reshape(2, 16, -1)

    def conv(layer):
        w = layer.weight.numpy()[:, :, 0, 0]
        return np.einsum("oc,ncp->nop", w, xn) + layer.bias.numpy()[None, :, None]

    q, k, v = conv(pam.query_conv), conv(pam.key_conv), conv(pam.value_conv)
    attn = softmax(np.einsum("ncj,nci->nji", q, k))  # [N, out j, in i], rows sum to 1
    ref = 0.7 * np.einsum("nci,nji->ncj", v, attn) + xn
    # The softmax turns the energies' absolute rounding into relative weight errors.
    e_scale = max(1.0, float(np.abs(np.einsum("ncj,nci->nji", q, k)).max()))
    tol.assert_close(pam(x).numpy().reshape(2, 16, -1), ref,
                     tol.bound(e_scale * max(1.0, np.abs(ref).max()), 16, depth=3, implementations=1),
                     "PAM vs float64 numpy")


def test_cam_max_minus_energy_stabilisation():
    cam = CAM()
    cam.beta.set_value(paddle.to_tensor([1.0]))
    x = paddle.randn([2, 6, 3, 4])
    xn = x.numpy().reshape(2, 6, -1).astype(np.float64)
    energy = xn @ xn.transpose(0, 2, 1)
    attn = softmax(energy.max(-1, keepdims=True) - energy)  # the paper's energy_new
    ref = attn @ xn + xn
    e_scale = max(1.0, float(np.abs(energy).max()))
    tol.assert_close(cam(x).numpy().reshape(2, 6, -1), ref,
                     tol.bound(e_scale * max(1.0, np.abs(ref).max()), 12, depth=2, implementations=1),
                     "CAM vs float64 numpy")
    # Energies ~1e6 stay finite (max - energy >= 0 keeps exp bounded) ...
    big = cam(x * 1000.0).numpy()
    assert np.isfinite(big).all()
    # ... and dissimilar channels get the larger weights (lowest energy -> largest max - energy).
    assert np.all(attn.argmax(-1) == energy.argmin(-1))


# -- head and model ------------------------------------------------------------

def test_dahead_outputs_and_own_classifiers():
    head = DAHead(64, 5)
    assert head.inter_channels == 16
    assert head.pam_cls[1] is not head.cam_cls[1] and head.pam_in is not head.cam_in
    x = paddle.randn([1, 64, 6, 6])
    head.train()
    assert [list(o.shape) for o in head(x)] == [[1, 5, 6, 6]] * 3
    head.eval()
    assert len(head(x)) == 1


@pytest.mark.parametrize("shape", [(1, 3, 129, 257), (1, 3, 65, 97)])
def test_train_and_eval_outputs_at_odd_sizes(shape):
    net = small()
    x = paddle.randn(list(shape))
    net.train()
    out = net(x)
    assert net.output_names == ("fused", "pam", "cam", "aux") and len(out) == 4
    assert all(list(o.shape) == [1, 3, *shape[2:]] for o in out)
    net.eval()
    with paddle.no_grad():
        out = net(x)
    assert net.output_names == ("fused",) and len(out) == 1
    assert list(out[0].shape) == [1, 3, *shape[2:]]


def test_eval_skips_auxiliary_classifiers():
    net = small()
    calls = []
    for name in ("aux_head", "head.pam_cls", "head.cam_cls", "head.fused_cls"):
        layer = net
        for part in name.split("."):
            layer = getattr(layer, part)
        layer.register_forward_post_hook(lambda *a, n=name: calls.append(n))
    net.eval()
    with paddle.no_grad():
        net(paddle.randn([1, 3, 32, 32]))
    assert calls == ["head.fused_cls"]
    net.train()
    net(paddle.randn([1, 3, 32, 32]))
    assert sorted(calls[1:]) == ["aux_head", "head.cam_cls", "head.fused_cls", "head.pam_cls"]


def test_without_aux():
    net = small(enable_auxiliary_loss=False)
    assert net.aux_head is None
    net.train()
    assert len(net(paddle.randn([1, 3, 32, 32]))) == 3 and net.output_names == ("fused", "pam", "cam")


def fixed_batch():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 3, 48, 48)).astype("float32")
    label = np.zeros((2, 48, 48), dtype="int64")
    label[:, :, 24:] = 1
    label[:, 24:, :] = 2
    label[0, :4, :4] = 255  # some ignored pixels
    img[:, 0] += np.where(label == 255, 0, label)  # learnable from the pixels
    return paddle.to_tensor(img), paddle.to_tensor(label)


def test_sgd_steps_reduce_loss_and_reach_every_parameter():
    paddle.seed(2024)
    net = small(dropout=0.0)
    net.train()
    img, label = fixed_batch()
    ce = CrossEntropyLoss()
    coef = (1.0, 1.0, 1.0, 0.4)
    opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=net.parameters())
    losses = []
    for step in range(5):
        loss = paddle.add_n([c * ce(o, label) for c, o in zip(coef, net(img))])
        loss.backward()
        trainable = [(n, p) for n, p in net.named_parameters() if not p.stop_gradient]
        assert [n for n, p in trainable if p.grad is None] == []
        assert all(np.isfinite(p.grad.numpy()).all() for _, p in trainable)
        if step == 1:  # gamma/beta moved off 0, so the attention projections now learn too
            for p in (net.head.pam.query_conv.weight, net.head.pam.key_conv.weight,
                      net.head.pam.value_conv.weight, net.head.pam.gamma, net.head.cam.beta):
                assert np.abs(p.grad.numpy()).max() > 0
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], losses


def test_to_static_dynamic_shape_matches_dygraph(tmp_path):
    net = small()
    net.eval()
    static = paddle.jit.to_static(
        net, input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")],
        full_graph=True)
    paddle.jit.save(static, str(tmp_path / "danet"))
    loaded = paddle.jit.load(str(tmp_path / "danet"))
    for shape in ([1, 3, 33, 45], [2, 3, 24, 24]):
        x = paddle.randn(shape)
        got = loaded(x)
        got = got[0] if isinstance(got, (list, tuple)) else got
        want = net(x)[0].numpy()
        att = ((shape[2] + 7) // 8) * ((shape[3] + 7) // 8)
        tol.assert_close(got.numpy(), want, tol.network_bound(net, want, attention_fan_in=att),
                         f"traced vs dygraph {shape}")


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes must be a positive int, got 0"),
    ({"backbone_indices": (2, 4)}, r"backbone_indices must be two ints in \[0, 4\)"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ({"inter_channels": 0}, "inter_channels must be a positive int or None, got 0"),
])
def test_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_backbone_must_be_built():
    with pytest.raises(ValueError, match="backbone must be a built backbone layer"):
        DANet(3, backbone={"type": "ResNet18_vd"})


def test_pretrained_whole_model(tmp_path):
    src = small()
    path = str(tmp_path / "danet.pdparams")
    paddle.save(src.state_dict(), path)
    dst = small(pretrained=path)
    src.eval(), dst.eval()
    x = paddle.randn([1, 3, 32, 32])
    np.testing.assert_allclose(src(x)[0].numpy(), dst(x)[0].numpy(), rtol=1e-5, atol=1e-5)


# -- recipes -------------------------------------------------------------------

def recipe_names():
    return sorted(p.name for p in RECIPES.glob("*.yml"))


def test_recipe_r50_cityscapes_pinned_parameter_count():
    cfg = yaml.safe_load((RECIPES / "danet_resnet50_os8_cityscapes_1024x512_80k.yml").read_text())
    model_cfg = copy.deepcopy(cfg["model"])
    bb_cfg = model_cfg.pop("backbone")
    bb_cfg.pop("pretrained")  # no download
    backbone = manager.BACKBONES.get(bb_cfg.pop("type"))(**bb_cfg)
    net = manager.MODELS.get(model_cfg.pop("type"))(backbone=backbone, **model_cfg)
    assert net.num_classes == 19 and backbone.output_stride == 8 and backbone.multi_grid == [1, 2, 4]
    n = sum(int(p.numel()) for p in net.parameters() if not p.stop_gradient)
    # PaddleSeg's DANet has 47,520,814: a 1x1 aux classifier on stage 4 (38,931) instead of the
    # AuxHead FCN on stage 3 (2,364,691) used here, as in mmseg and PSPNet.
    assert n == 49_846_574


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_outputs_match_loss_coefs(name):
    path = RECIPES / name
    raw = yaml.safe_load(path.read_text())
    model_cfg = raw["model"]
    assert model_cfg["type"] == "DANet" and model_cfg["backbone"]["pretrained"].startswith("https://")
    expected = {"cityscapes": 19, "voc12aug": 21}
    assert model_cfg["num_classes"] == next(v for k, v in expected.items() if k in name)
    assert raw["iters"] == (40000 if "40k" in name else 80000)
    # Same head flags on a small backbone: count the training outputs.
    net = small(enable_auxiliary_loss=model_cfg.get("enable_auxiliary_loss", True))
    net.train()
    n_out = len(net(paddle.randn([1, 3, 32, 32])))
    assert n_out == len(net.output_names) == len(raw["loss"]["coef"]) == 4
    assert raw["loss"]["coef"] == [1, 1, 1, 0.4]
    base = path.parent / raw["_base_"]
    if not base.is_file():
        pytest.skip(f"base config {raw['_base_']} not written yet")
    assert len(Config(str(path)).dic["loss"]["coef"]) == n_out


def test_quick_start_builds_and_outputs_match_losses():
    if not QUICK_START.is_file():
        pytest.skip("quick-start config missing")
    cfg = Config(str(QUICK_START))
    builder = SegBuilder(cfg)
    model = builder.model
    assert isinstance(model, DANet) and model.num_classes == 7
    builder.check_outputs_match_losses(model)
    model.train()
    assert len(model(paddle.randn([1, 3, 64, 64]))) == len(builder.loss["types"]) == 4


# -- PaddleSeg 2.x's variant (the defaults) vs the paper recipes' -------------------

def test_paddleseg_variant_aux_head_is_linear_on_stage4():
    net = small(aux_head="linear")
    conv = net.aux_head[1]
    assert list(conv.weight.shape) == [3, net.backbone.feat_channels[3], 1, 1]
    net.train()
    out = net(paddle.randn([1, 3, 33, 47]))
    assert net.output_names == ("fused", "pam", "cam", "aux") and len(out) == 4
    assert all(list(o.shape) == [1, 3, 33, 47] for o in out)
    fcn = small(aux_head="fcn")
    assert list(fcn.aux_head.conv_bn_relu._conv.weight.shape)[1] == fcn.backbone.feat_channels[2]


def test_align_mode_is_the_final_resize_and_changes_the_function():
    a = small(align_mode=1)
    b = small(align_mode=0)
    b.set_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = paddle.randn([1, 3, 40, 56])
    with paddle.no_grad():
        head = a.head(a.backbone(x)[3])[0]
        ya, yb = a(x)[0], b(x)[0]
    want = paddle.nn.functional.interpolate(head, size=[40, 56], mode="bilinear", align_corners=False,
                                            align_mode=1)
    tol.assert_close(ya.numpy(), want.numpy(), tol.bound(max(1.0, float(paddle.abs(want).max())), 4),
                     "final resize")
    assert np.abs(ya.numpy() - yb.numpy()).max() > 1e-3


@pytest.mark.parametrize("kwargs, match", [
    ({"aux_head": "mlp"}, r"aux_head must be one of 'linear', 'fcn', got 'mlp'"),
    ({"align_mode": 2}, "align_mode must be one of 0, 1, got 2"),
])
def test_bad_variant_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_paddleseg_recipe_pinned_parameter_count():
    recipe = RECIPES / "paddleseg" / "danet_resnet50_os8_cityscapes_1024x512_80k.yml"
    net = SegBuilder(Config(str(recipe), opts=["model.backbone.pretrained=null"])).model
    assert net.aux_head_type == "linear" and net.align_mode == 1
    n = sum(int(p.numel()) for p in net.parameters() if not p.stop_gradient)
    # PaddleSeg 2.8 builds 47,522,862 from the same file: its 4 head convs also carry a
    # bias before their BN (2,048 values), folded into the BN on load.
    assert n == 47_520_814
