"""Inference BatchNorm folding: same logits, the original model untouched."""

import io
import pickle

import numpy as np
import paddle
import pytest

import paddleseg_ext.models  # noqa: F401  (registers backbones and losses)
from paddleseg_ext.core import evaluate
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.models.backbones import ResNet18_vd
from paddleseg_ext.models.backbones.efficientnet_lite import EfficientNet_Lite
from paddleseg_ext.models.danet import DANet
from paddleseg_ext.models.layers import ConvBN
from paddleseg_ext.runtime.forms.fold_bn import fold_batch_norms
from paddleseg_ext.utils.infer_options import InferOptions
from paddleseg_ext.models.pointrend import PointRend
from paddleseg_ext.models.psanet import PSANet
from paddleseg_ext.models.pspnet import PSPNet
from model_checks import randomise_batch_norms, sgd_losses
from tiny_config import write_tiny_config
import tolerance as tol


def _bb():
    return ResNet18_vd(output_stride=8)


# PointRend re-predicts only the most uncertain cells, and at this size cells tie exactly
# (bilinear upsampling repeats values at the borders), so a rounding-level change, folding
# included, can pick other tied cells and change their logits by a few percent. Refining
# every cell (64 x 96 = the input size here) takes the selection out of the comparison.
ALL_CELLS = 64 * 96

BUILDERS = {
    "PSPNet": lambda: PSPNet(3, backbone=_bb(), bin_sizes=(1, 2), pp_out_channels=32),
    "DANet": lambda: DANet(3, backbone=_bb()),
    "PSANet": lambda: PSANet(3, backbone=_bb()),
    "PointRend": lambda: PointRend(3, backbone=ResNet18_vd(output_stride=32), decoder="semantic_fpn",
                                   fpn_channels=32,
                                   fpn_head_channels=16, point_channels=32, num_points=256,
                                   subdivision_num_points=ALL_CELLS),
    "PointRend-paddleseg-decoder": lambda: PointRend(
        3, backbone=ResNet18_vd(output_stride=32), decoder="paddleseg", fpn_channels=32,
        fpn_head_channels=16, point_channels=32, num_points=256, subdivision_num_points=ALL_CELLS),
}


def snapshot(net):
    return {k: v.numpy().copy() for k, v in net.state_dict().items()}


def logits(net, x):
    with paddle.no_grad():
        out = net(x)
    return [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]


def assert_same_function(ref, got, net):
    """Folding changes each conv's weights by one rounding: the network's rounding budget."""
    assert len(ref) == len(got)
    for a, b in zip(ref, got):
        bound = tol.network_bound(net, a)
        tol.assert_close(b, a, bound, "folded vs plain")
        if a.ndim == 4 and a.shape[1] > 1:  # class logits
            tol.assert_argmax_agrees(b, a, bound)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_folded_logits_match_and_the_model_is_untouched(name):
    paddle.seed(1)
    net = BUILDERS[name]()
    randomise_batch_norms(net)
    net.eval()
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=(1, 3, 64, 96)).astype("float32"))
    before, ref = snapshot(net), logits(net, x)
    n_bn = sum(isinstance(m, paddle.nn.BatchNorm2D) for m in net.sublayers())

    folded = fold_batch_norms(net)
    assert folded.folded_batch_norms == n_bn and folded.unfolded_batch_norms == []
    assert not any(isinstance(m, paddle.nn.BatchNorm2D) for m in folded.sublayers())
    assert not folded.training
    assert_same_function(ref, logits(folded, x), net)
    # the original: same parameters, statistics, keys and mode; same logits
    after = snapshot(net)
    assert list(after) == list(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert not net.training
    assert_same_function(ref, logits(net, x), net)
    # no parameter is shared with the copy
    ids = {id(p) for p in net.parameters()}
    assert not ids & {id(p) for p in folded.parameters()}


def test_a_model_trains_exactly_as_before_after_folding():
    paddle.seed(3)
    a = BUILDERS["PSPNet"]()
    b = BUILDERS["PSPNet"]()
    b.set_state_dict(a.state_dict())
    a.eval()
    fold_batch_norms(a)
    a.train()
    # train-mode forward uses batch statistics and updates running ones: bit-identical to a twin
    # (same seed for each run: the head's dropout draws from it)
    paddle.seed(7)
    losses_a = sgd_losses(a, 32, 32, steps=3)
    paddle.seed(7)
    assert losses_a == sgd_losses(b, 32, 32, steps=3)
    sa, sb = snapshot(a), snapshot(b)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_checkpoint_bytes_unchanged_by_folding(tmp_path):
    paddle.seed(4)
    net = BUILDERS["DANet"]()
    randomise_batch_norms(net)
    paddle.save(net.state_dict(), str(tmp_path / "before.pdparams"))
    fold_batch_norms(net)
    paddle.save(net.state_dict(), str(tmp_path / "after.pdparams"))
    assert (tmp_path / "before.pdparams").read_bytes() == (tmp_path / "after.pdparams").read_bytes()


def test_conv_bias_and_efficientnet_lite_pairs_fold():
    paddle.seed(5)
    block = ConvBN(4, 6, 3, bias=True)
    block._conv.bias.set_value(np.linspace(-1, 1, 6).astype("float32"))
    randomise_batch_norms(block)
    block.eval()
    x = paddle.randn([2, 4, 9, 7])
    assert_same_function(logits(block, x), logits(fold_batch_norms(block), x), block)

    bb = EfficientNet_Lite(output_stride=16)
    randomise_batch_norms(bb)
    bb.eval()
    x = paddle.randn([1, 3, 64, 64])
    folded = fold_batch_norms(bb)
    assert folded.unfolded_batch_norms == [] and folded.folded_batch_norms > 40
    assert_same_function(logits(bb, x), logits(folded, x), bb)


def test_an_undeclared_batch_norm_is_left_and_reported():
    class Odd(paddle.nn.Layer):  # conv -> relu -> bn: not foldable, and not declared
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 4, 3, padding=1)
            self.bn = paddle.nn.BatchNorm2D(4)

        def forward(self, x):
            return [self.bn(paddle.nn.functional.relu(self.conv(x)))]

    net = Odd()
    randomise_batch_norms(net)
    net.eval()
    folded = fold_batch_norms(net)
    assert folded.folded_batch_norms == 0 and folded.unfolded_batch_norms == ["bn"]
    x = paddle.randn([1, 3, 8, 8])
    np.testing.assert_array_equal(logits(net, x)[0], logits(folded, x)[0])


def test_evaluate_with_fold_bn_matches_and_keeps_training_mode(tmp_path):
    path, _ = write_tiny_config(tmp_path, size=(40, 24))
    b = SegBuilder(Config(path))
    net = b.model
    randomise_batch_norms(net)
    net.train()
    before = snapshot(net)
    kw = dict(progress=False, print_detail=False)
    plain = evaluate(net, b.val_dataset, **kw)
    folded = evaluate(net, b.val_dataset, fold_bn=True, **kw)
    slide = [evaluate(net, b.val_dataset, InferOptions(is_slide=True, crop_size=(24, 16), stride=(16, 8)),
                      fold_bn=f, **kw) for f in (False, True)]
    aug = [evaluate(net, b.val_dataset, InferOptions(aug_eval=True, scales=[0.75, 1.0], flip_horizontal=True),
                    fold_bn=f, **kw) for f in (False, True)]
    for x, y in ((plain, folded), slide, aug):
        np.testing.assert_array_equal(x["class_pixels"], y["class_pixels"])
        assert x["mIoU"] == y["mIoU"] and x["Acc"] == y["Acc"]
    assert net.training
    after = snapshot(net)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_val_and_predict_tools_fold_by_default(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import val

    seen = []
    from paddleseg_ext.runtime import current_policy

    # the tool states its choice in the execution policy that evaluate() prepares the model by
    monkeypatch.setattr(val, "evaluate", lambda *a, **k: seen.append(current_policy().fold_bn) or {})
    monkeypatch.setattr(val, "load_model_weights", lambda *a, **k: None)
    path, _ = write_tiny_config(tmp_path, size=(40, 24))
    val.main(["--config", path, "--model_path", "unused"])
    val.main(["--config", path, "--model_path", "unused", "--no_fold_bn"])
    val.main(["--config", path, "--model_path", "unused", "--fold_bn"])
    assert seen == [True, False, True]
    with pytest.raises(SystemExit):
        val.main(["--config", path, "--model_path", "unused", "--fold_bn", "--no_fold_bn"])
