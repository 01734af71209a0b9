"""PSPNet model and its recipes."""

import copy
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.models import PSPNet
from paddleseg_ext.models.backbones import ResNet18_vd
from paddleseg_ext.models.losses import CrossEntropyLoss
from model_checks import sgd_losses
import tolerance as tol

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "pspnet"
H = W = 64


def small(**kwargs):
    kwargs.setdefault("pp_out_channels", 64)
    return PSPNet(num_classes=kwargs.pop("num_classes", 3),
                  backbone=ResNet18_vd(output_stride=8), **kwargs)


@pytest.fixture(scope="module")
def x():
    paddle.seed(0)
    return paddle.randn([2, 3, H, W])


def test_train_and_eval_outputs(x):
    net = small()
    net.train()
    out = net(x)
    assert net.output_names == ("seg", "aux") and len(out) == 2
    assert all(list(o.shape) == [2, 3, H, W] for o in out)
    assert all(np.isfinite(o.numpy()).all() for o in out)
    net.eval()
    with paddle.no_grad():
        out = net(x)
    assert net.output_names == ("seg",) and len(out) == 1
    assert list(out[0].shape) == [2, 3, H, W]


def test_no_aux(x):
    net = small(enable_auxiliary_loss=False)
    assert net.aux_head is None
    net.train()
    out = net(x)
    assert len(out) == 1 and net.output_names == ("seg",)


def test_odd_input_size_and_bins():
    net = small(bin_sizes=(1, 3), align_corners=True)
    assert len(net.psp_module.stages) == 2
    out = net(paddle.randn([1, 3, 37, 45]))
    assert [list(o.shape) for o in out] == [[1, 3, 37, 45]] * 2


def test_backward_reaches_every_parameter(x):
    net = small()
    net.train()
    label = paddle.randint(0, 3, [2, H, W])
    ce = CrossEntropyLoss()
    out = net(x)
    loss = sum(c * ce(o, label) for c, o in zip((1.0, 0.4), out))
    assert np.isfinite(float(loss))
    loss.backward()
    trainable = [(n, p) for n, p in net.named_parameters() if not p.stop_gradient]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None]
    assert no_grad == []
    assert all(np.isfinite(p.grad.numpy()).all() for _, p in trainable)


def test_sgd_steps_reduce_loss():
    paddle.seed(2024)
    net = small(dropout=0.0)
    losses = sgd_losses(net, H, W)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes must be a positive int, got 0"),
    ({"backbone_indices": (2, 7)}, r"backbone_indices must be two ints in \[0, 4\)"),
    ({"dropout": 1.5}, r"dropout must be in \[0, 1\), got 1.5"),
    ({"bin_sizes": (1, -2)}, "bin_sizes must be a non-empty list of positive ints"),
])
def test_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_backbone_must_be_built():
    with pytest.raises(ValueError, match="backbone must be a built backbone layer"):
        PSPNet(3, backbone={"type": "ResNet18_vd"})


def test_pretrained_whole_model(tmp_path, x):
    src = small()
    path = str(tmp_path / "psp.pdparams")
    paddle.save(src.state_dict(), path)
    dst = small(pretrained=path)
    src.eval(), dst.eval()
    np.testing.assert_allclose(src(x)[0].numpy(), dst(x)[0].numpy(), rtol=1e-5, atol=1e-5)


DATASET_CLASSES = {"cityscapes": 19, "ade20k": 150, "voc12aug": 21}


def build_from_recipe(name):
    """Build the model section of a recipe the way the config builder would
    (nested backbone built first, num_classes from the dataset), without
    downloading pretrained weights."""
    cfg = yaml.safe_load((RECIPES / name).read_text())
    model_cfg = copy.deepcopy(cfg["model"])
    model_cfg["num_classes"] = next(v for k, v in DATASET_CLASSES.items() if k in name)
    bb_cfg = model_cfg.pop("backbone")
    bb_cfg.pop("pretrained")
    backbone = manager.BACKBONES.get(bb_cfg.pop("type"))(**bb_cfg)
    cls = manager.MODELS.get(model_cfg.pop("type"))
    return cfg, cls(backbone=backbone, **model_cfg)


def test_recipe_r50_cityscapes_pinned_parameter_count():
    cfg, net = build_from_recipe("pspnet_resnet50_os8_cityscapes_1024x512_80k.yml")
    assert net.num_classes == 19 and net.backbone.output_stride == 8
    n = sum(int(p.numel()) for p in net.parameters() if not p.stop_gradient)
    assert n == 67_860_614
    assert cfg["loss"] == {"types": [{"type": "CrossEntropyLoss"}], "coef": [1, 0.4]}


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yml")))
def test_recipes_are_consistent(name):
    cfg = yaml.safe_load((RECIPES / name).read_text())
    assert cfg["_base_"].startswith("../_base_/")
    model = cfg["model"]
    assert model["type"] in manager.MODELS and model["backbone"]["type"] in manager.BACKBONES
    assert model["backbone"]["pretrained"].startswith("https://")
    assert set(cfg) >= {"batch_size", "iters", "optimizer", "lr_scheduler", "loss"}
    assert "num_classes" not in model  # single source of truth: the dataset base
    bases = {"cityscapes": "cityscapes.yml", "ade20k": "ade20k.yml",
             "voc12aug": "pascal_voc12aug.yml"}
    assert cfg["_base_"] == "../_base_/" + next(v for k, v in bases.items() if k in name)
    assert cfg["iters"] == (40000 if "40k" in name else 80000)


def test_to_static_with_dynamic_size_matches_dygraph():
    """Export traces the model with dynamic H, W (resize sizes must be tensors)."""
    net = small(bin_sizes=(1, 2))
    net.eval()
    img = paddle.randn([1, 3, 48, 40])
    with paddle.no_grad():
        ref = net(img)[0].numpy()
        spec = [paddle.static.InputSpec([None, 3, None, None], "float32", "x")]
        got = paddle.jit.to_static(net, input_spec=spec, full_graph=True)(img)[0].numpy()
    tol.assert_close(got, ref, tol.network_bound(net, ref), "traced vs dygraph")


def test_aux_width_defaults_to_a_quarter_of_stage3_as_paddleseg():
    net = small()
    assert list(net.aux_head.conv_bn_relu._conv.weight.shape)[:2] == [64, 256]  # ResNet18: 256 / 4
    assert list(small(aux_inter_channels=32).aux_head.conv.weight.shape) == [3, 32, 1, 1]
    with pytest.raises(ValueError, match="aux_inter_channels must be a positive int or None, got 0"):
        small(aux_inter_channels=0)


def test_paddleseg_recipe_builds_the_same_network_as_the_paper_recipe():
    from paddleseg_ext.cvlibs import Config, SegBuilder
    recipe = RECIPES / "paddleseg" / "pspnet_resnet50_os8_cityscapes_1024x512_80k.yml"
    net = SegBuilder(Config(str(recipe), opts=["model.backbone.pretrained=null"])).model
    n = sum(int(p.numel()) for p in net.parameters() if not p.stop_gradient)
    # PaddleSeg 2.8 builds 67,863,942 from the same file: 3,328 more, the biases of its
    # PPM and aux convs in front of BatchNorm, folded into the BN on load.
    assert n == 67_860_614
