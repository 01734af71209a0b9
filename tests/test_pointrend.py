"""PointRend: FPN decoder, point head, subdivision inference, point loss, recipes."""

import copy
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import yaml

import paddleseg_ext.models.pointrend  # noqa: F401  (registers PointRend / PointHead)
import paddleseg_ext.models.losses.point_cross_entropy_loss  # noqa: F401  (registers the loss)
from paddleseg_ext.cvlibs import Config, SegBuilder, manager
from paddleseg_ext.models.backbones import ResNet18_vd
from paddleseg_ext.models.layers.fpn import FPN, SemanticFPNHead
from paddleseg_ext.models.losses import CrossEntropyLoss
from paddleseg_ext.models.losses.point_cross_entropy_loss import PointCrossEntropyLoss
from paddleseg_ext.models.pointrend import PointRend
import tolerance as tol

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "pointrend"
QUICK_START = ROOT / "configs" / "quick_start" / "pointrend_resnet18_landcover_64x64_400.yml"


def small(output_stride=32, **kwargs):
    kwargs.setdefault("decoder", "semantic_fpn")  # the papers' decoder; PaddleSeg's is tested below
    for k, v in (("fpn_channels", 32), ("fpn_head_channels", 16), ("point_channels", 32),
                 ("num_points", 256), ("subdivision_num_points", 200)):
        kwargs.setdefault(k, v)
    return PointRend(num_classes=kwargs.pop("num_classes", 3),
                     backbone=ResNet18_vd(output_stride=output_stride), **kwargs)


# -- FPN neck and Semantic FPN head -------------------------------------------

def test_fpn_and_semantic_fpn_head_shapes_at_odd_sizes():
    feats = [paddle.randn([1, c, s, s + 2]) for c, s in ((8, 17), (16, 9), (24, 5), (32, 3))]
    neck = FPN([8, 16, 24, 32], 12)
    pyramid = neck(feats)
    assert [list(p.shape) for p in pyramid] == [[1, 12, s, s + 2] for s in (17, 9, 5, 3)]
    head = SemanticFPNHead(12, [4, 8, 16, 32], 10, num_classes=5)
    assert [len(h) for h in head.scale_heads] == [1, 1, 2, 3]  # convs per level
    assert list(head(pyramid).shape) == [1, 5, 17, 19]
    # a dilated backbone's strides work too
    assert [len(h) for h in SemanticFPNHead(12, [4, 8, 8, 8], 10, 5).scale_heads] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="feature_strides must start with the finest stride"):
        SemanticFPNHead(12, [4, 16, 32], 10, 5)


# -- model outputs -------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3, 129, 257), (1, 3, 65, 97)])
def test_train_and_eval_outputs_at_odd_sizes(shape):
    net = small()
    x = paddle.randn(list(shape))
    net.train()
    out = net(x)
    assert net.output_names == ("seg", "point") and len(out) == 2
    assert list(out[0].shape) == [1, 3, *shape[2:]]
    point_logits, points = out[1]
    assert list(point_logits.shape) == [1, 3, 256] and list(points.shape) == [1, 256, 2]
    assert points.stop_gradient and 0.0 <= float(points.min()) and float(points.max()) < 1.0
    net.eval()
    with paddle.no_grad():
        out = net(x)
    assert net.output_names == ("seg",) and len(out) == 1
    assert list(out[0].shape) == [1, 3, *shape[2:]]


def test_dilated_backbone_also_works():
    net = small(output_stride=8)
    net.eval()
    with paddle.no_grad():
        assert list(net(paddle.randn([1, 3, 65, 97]))[0].shape) == [1, 3, 65, 97]


def coarse_and_fine(net, x):
    feats = net.backbone(x)
    pyramid = net.neck([feats[i] for i in net.backbone_indices])
    return net.fpn_head(pyramid), pyramid[0]


def test_subdivision_changes_only_the_chosen_points():
    net = small(subdivision_num_points=50)
    net.eval()
    x = paddle.randn([2, 3, 64, 96])
    with paddle.no_grad():
        coarse, fine = coarse_and_fine(net, x)  # [2, 3, 16, 24]
        up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
        refined, idx = net.refine_step(up, fine, coarse)
    assert list(idx.shape) == [2, 50]
    a, b = up.numpy().reshape(2, 3, -1), refined.numpy().reshape(2, 3, -1)
    for n in range(2):
        chosen = np.zeros(a.shape[-1], dtype=bool)
        chosen[idx.numpy()[n]] = True
        np.testing.assert_array_equal(b[n][:, ~chosen], a[n][:, ~chosen])
        assert (np.abs(b[n][:, chosen] - a[n][:, chosen]).max(0) > 0).all()
    # The chosen cells hold the point head's prediction at their centres.
    cols, rows = idx.numpy() % 48, idx.numpy() // 48
    centres = np.stack([(cols + 0.5) / 48, (rows + 0.5) / 32], -1).astype("float32")
    with paddle.no_grad():
        direct = net.point_head(fine, coarse, paddle.to_tensor(centres)).numpy()
    # The same point head, its features sampled by another call (another batching of the MLP).
    tol.assert_close(np.take_along_axis(b, idx.numpy()[:, None, :].repeat(3, 1), 2), direct,
                     tol.network_bound(net.point_head, direct, winograd=False), "refined cells")

    # Whole eval forward with one step == plain 2x bilinear upsampling of the coarse
    # logits except at <= subdivision_num_points cells per image.
    net.subdivision_steps = 1
    x = x[:, :, :32, :40]
    with paddle.no_grad():
        out = net(x)[0]
        coarse, _ = coarse_and_fine(net, x)  # stride 4: 8x10
        plain = F.interpolate(coarse, size=[16, 20], mode="bilinear", align_corners=False)
        plain = F.interpolate(plain, size=[32, 40], mode="bilinear", align_corners=False)
    changed = (np.abs(out.numpy() - plain.numpy()) > 0).any(1).reshape(2, -1)  # [N, H*W]
    # The 16x20 map was refined at <= 50 cells; the final 2x bilinear resize spreads
    # each over at most 4x4 output pixels.
    assert (changed.sum(1) > 0).all() and changed.sum(1).max() <= 16 * 50
    assert changed.sum(1).max() < changed.shape[1]


def test_subdivision_stops_at_input_size_and_caps_points():
    net = small(subdivision_steps=4, subdivision_num_points=10 ** 6)
    net.eval()
    x = paddle.randn([1, 3, 9, 13])  # stride-4 coarse map 3x4; 4 doublings would overshoot
    with paddle.no_grad():
        coarse, fine = coarse_and_fine(net, x)
        assert list(coarse.shape[2:]) == [3, 4]
        refined, idx = net.refine_step(coarse, fine, coarse)
        assert list(idx.shape) == [1, 12]  # capped at H*W, every cell re-predicted
        out = net.subdivide(coarse, fine, paddle.to_tensor([9, 13]))
        assert list(out.shape) == [1, 3, 9, 13]
        assert list(net(x)[0].shape) == [1, 3, 9, 13]


@pytest.mark.parametrize("decoder", ["semantic_fpn", "paddleseg"])
def test_to_static_save_load_matches_dygraph(tmp_path, decoder):
    net = small(decoder=decoder)
    net.eval()
    static = paddle.jit.to_static(
        net, input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")],
        full_graph=True)
    paddle.jit.save(static, str(tmp_path / "pointrend"))
    loaded = paddle.jit.load(str(tmp_path / "pointrend"))
    for shape in ([1, 3, 65, 97], [2, 3, 40, 36], [1, 3, 8, 8]):  # last: fewer cells than points
        x = paddle.randn(shape)
        got = loaded(x)
        got = got[0] if isinstance(got, (list, tuple)) else got
        with paddle.no_grad():
            ref = net(x)[0]
        assert got.shape == ref.shape
        tol.assert_close(got.numpy(), ref.numpy(), tol.network_bound(net, ref.numpy()),
                         f"traced vs dygraph {shape}")


# -- loss ----------------------------------------------------------------------

def test_point_cross_entropy_matches_hand_computation_with_ignore():
    label = np.array([[[0, 1, 2, 255],
                       [2, 2, 1, 0]]], dtype="int64")  # [1, 2, 4]
    # points at pixel centres (x, y) in [0, 1]: (col + 0.5) / 4, (row + 0.5) / 2
    cells = [(0, 0), (0, 1), (0, 3), (1, 2), (1, 3), (0, 3)]  # (row, col); two ignored hits
    points = np.array([[[(c + 0.5) / 4, (r + 0.5) / 2] for r, c in cells]], dtype="float32")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 3, len(cells))).astype("float32")
    loss = PointCrossEntropyLoss(ignore_index=255)
    assert loss.ignore_index == 255
    got = float(loss((paddle.to_tensor(logits), paddle.to_tensor(points)), paddle.to_tensor(label)))
    logp = logits[0] - np.log(np.exp(logits[0]).sum(0, keepdims=True))
    terms = [-logp[label[0, r, c], p] for p, (r, c) in enumerate(cells) if label[0, r, c] != 255]
    assert len(terms) == 4
    np.testing.assert_allclose(got, np.mean(terms), rtol=1e-5)
    # all points ignored -> 0, not NaN
    ign = np.full_like(label, 255)
    assert float(loss((paddle.to_tensor(logits), paddle.to_tensor(points)), paddle.to_tensor(ign))) == 0.0


def test_point_cross_entropy_rejects_plain_logits():
    with pytest.raises(ValueError, match=r"expects the model output \(point_logits, points\)"):
        PointCrossEntropyLoss()(paddle.zeros([1, 3, 4, 4]), paddle.zeros([1, 4, 4], dtype="int64"))


# -- training ------------------------------------------------------------------

def test_sgd_steps_reduce_loss_and_reach_every_parameter():
    paddle.seed(2024)
    net = small(dropout=0.0)
    net.train()
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 3, 64, 64)).astype("float32")
    label = np.zeros((2, 64, 64), dtype="int64")
    label[:, :, 32:] = 1
    label[:, 32:, :] = 2
    label[1, :8, :8] = 255
    img[:, 0] += np.where(label == 255, 0, label)
    img, label = paddle.to_tensor(img), paddle.to_tensor(label)
    losses_fn = (CrossEntropyLoss(), PointCrossEntropyLoss())
    opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=net.parameters())
    history = []
    for step in range(6):
        paddle.seed(step)  # same point draws whatever the other tests did
        out = net(img)
        loss = losses_fn[0](out[0], label) + losses_fn[1](out[1], label)
        loss.backward()
        if step == 0:
            trainable = [(n, p) for n, p in net.named_parameters() if not p.stop_gradient]
            assert [n for n, p in trainable if p.grad is None] == []
            assert all(np.isfinite(p.grad.numpy()).all() for _, p in trainable)
            assert np.abs(net.point_head.cls.weight.grad.numpy()).max() > 0
        opt.step()
        opt.clear_grad()
        history.append(float(loss))
    assert np.isfinite(history).all()
    assert history[-1] < 0.8 * history[0], history


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 1}, "num_classes must be an int >= 2, got 1"),
    ({"backbone_indices": (0, 2, 1)}, "backbone_indices must be at least two increasing ints"),
    ({"oversample_ratio": 0.5}, "oversample_ratio must be >= 1, got 0.5"),
    ({"importance_sample_ratio": 1.5}, r"importance_sample_ratio must be in \[0, 1\], got 1.5"),
    ({"subdivision_steps": -1}, "subdivision_steps must be an int >= 0, got -1"),
    ({"num_points": 0}, "num_points must be a positive int, got 0"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
])
def test_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_pretrained_whole_model(tmp_path):
    src = small()
    path = str(tmp_path / "pointrend.pdparams")
    paddle.save(src.state_dict(), path)
    dst = small(pretrained=path)
    src.eval(), dst.eval()
    x = paddle.randn([1, 3, 32, 32])
    np.testing.assert_allclose(src(x)[0].numpy(), dst(x)[0].numpy(), rtol=1e-5, atol=1e-5)


# -- recipes -------------------------------------------------------------------

def test_recipe_r50_cityscapes_pinned_parameter_count():
    cfg = yaml.safe_load((RECIPES / "pointrend_resnet50_cityscapes_1024x512_80k.yml").read_text())
    model_cfg = copy.deepcopy(cfg["model"])
    bb_cfg = model_cfg.pop("backbone")
    bb_cfg.pop("pretrained")  # no download
    backbone = manager.BACKBONES.get(bb_cfg.pop("type"))(**bb_cfg)
    net = manager.MODELS.get(model_cfg.pop("type"))(backbone=backbone, **model_cfg)
    assert net.num_classes == 19 and backbone.output_stride == 32
    n = sum(int(p.numel()) for p in net.parameters() if not p.stop_gradient)
    assert n == 28_715_119  # PaddleSeg's PointRend R50: 28.72 M


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yml")))
def test_recipe_outputs_match_loss_coefs(name):
    path = RECIPES / name
    raw = yaml.safe_load(path.read_text())
    model_cfg = raw["model"]
    assert model_cfg["type"] == "PointRend" and model_cfg["backbone"]["pretrained"].startswith("https://")
    expected = {"cityscapes": 19, "ade20k": 150}
    assert model_cfg["num_classes"] == next(v for k, v in expected.items() if k in name)
    assert raw["iters"] == (160000 if "160k" in name else 80000)
    assert [t["type"] for t in raw["loss"]["types"]] == ["CrossEntropyLoss", "PointCrossEntropyLoss"]
    net = small()
    net.train()
    n_out = len(net(paddle.randn([1, 3, 32, 32])))
    assert n_out == len(net.output_names) == len(raw["loss"]["coef"]) == 2
    base = path.parent / raw["_base_"]
    if not base.is_file():
        pytest.skip(f"base config {raw['_base_']} not written yet")
    assert len(Config(str(path)).dic["loss"]["coef"]) == n_out


def test_quick_start_builds_and_outputs_match_losses():
    if not QUICK_START.is_file():
        pytest.skip("quick-start config missing")
    builder = SegBuilder(Config(str(QUICK_START)))
    model = builder.model
    assert isinstance(model, PointRend) and model.num_classes == 7
    builder.check_outputs_match_losses(model)
    assert [type(t).__name__ for t in builder.loss["types"]] == ["CrossEntropyLoss",
                                                                 "PointCrossEntropyLoss"]
    model.train()
    out = model(paddle.randn([2, 3, 64, 64]))
    label = paddle.randint(0, 7, [2, 64, 64])
    terms = [fn(o, label) * c for o, fn, c in zip(out, builder.loss["types"], builder.loss["coef"])]
    assert len(terms) == 2 and all(np.isfinite(float(t)) for t in terms)


# -- PaddleSeg 2.x's decoder (the default) --------------------------------------------

def paddleseg_small(output_stride=8, **kwargs):
    return small(output_stride=output_stride, decoder="paddleseg", **kwargs)


@pytest.mark.parametrize("output_stride", [8, 32])
def test_paddleseg_decoder_predicts_at_the_coarsest_level(output_stride):
    net = paddleseg_small(output_stride)
    net.eval()
    x = paddle.randn([1, 3, 67, 93])
    with paddle.no_grad():
        feats = net.backbone(x)
        pyramid = net.neck([feats[i] for i in net.backbone_indices])
        coarse = net.fpn_head(pyramid)
        out = net(x)
    assert list(coarse.shape[2:]) == list(pyramid[-1].shape[2:])
    assert list(pyramid[0].shape[2:]) == list(feats[0].shape[2:])  # the neck keeps fine-to-coarse
    assert len(out) == 1 and list(out[0].shape) == [1, 3, 67, 93]
    net.train()
    out = net(x)
    assert list(out[0].shape) == [1, 3, 67, 93] and list(out[1][0].shape) == [1, 3, 256]


def test_paddleseg_decoder_backward_reaches_every_parameter():
    net = paddleseg_small(dropout=0.0)
    net.train()
    img = paddle.randn([2, 3, 48, 64])
    label = paddle.to_tensor(np.random.default_rng(0).integers(0, 3, (2, 48, 64)).astype("int64"))
    out = net(img)
    loss = CrossEntropyLoss()(out[0], label) + PointCrossEntropyLoss()(out[1], label)
    loss.backward()
    trainable = [(n, p) for n, p in net.named_parameters() if not p.stop_gradient]
    assert [n for n, p in trainable if p.grad is None] == []
    assert net.point_head.padding_mode == "zeros"


def test_bad_decoder():
    with pytest.raises(ValueError, match=r"decoder must be one of 'paddleseg', 'semantic_fpn', got 'fpn'"):
        small(decoder="fpn")


def test_paddleseg_recipe_pinned_parameter_count():
    recipe = RECIPES / "paddleseg" / "pointrend_resnet50_os8_cityscapes_1024x512_80k.yml"
    net = SegBuilder(Config(str(recipe), opts=["model.backbone.pretrained=null"])).model
    assert net.decoder == "paddleseg" and net.backbone.output_stride == 8
    n = sum(int(p.numel()) for p in net.parameters() if not p.stop_gradient)
    # PaddleSeg 2.8 builds 28,717,295 from the same file: a 3x3 output conv + BN for the coarsest
    # FPN level that its forward never calls (590,336) and 4 lateral conv biases (1,024, folded).
    assert n == 28_125_935
