"""Losses against hand-computed numpy references."""

import numpy as np
import paddle
import pytest

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.models.losses import (CrossEntropyLoss, DiceLoss, MixedLoss,
                                         OhemCrossEntropyLoss)

C = 4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    logit = rng.normal(size=(2, C, 5, 6)).astype("float32") * 2
    label = rng.integers(0, C, size=(2, 5, 6)).astype("int64")
    label[0, 0, :3] = 255
    label[1, 4, :] = 255
    return logit, label


def np_nll(logit, label):
    """-log softmax at the label, per pixel; ignored pixels -> label 0 (masked later)."""
    z = logit - logit.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    safe = np.where(label == 255, 0, label)
    return -np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]


def run(loss, logit, label):
    return float(loss(paddle.to_tensor(logit), paddle.to_tensor(label)))


def test_ce_ignore_index_mean(data):
    logit, label = data
    valid = label != 255
    ref = np_nll(logit, label)[valid].mean()
    assert run(CrossEntropyLoss(), logit, label) == pytest.approx(ref, rel=1e-5)
    # same with an NHWC logit and a [N,1,H,W] label
    got = run(CrossEntropyLoss(data_format="NHWC"), logit.transpose(0, 2, 3, 1), label[:, None])
    assert got == pytest.approx(ref, rel=1e-5)


def test_ce_avg_over_all_pixels(data):
    logit, label = data
    nll = np_nll(logit, label) * (label != 255)
    got = run(CrossEntropyLoss(avg_non_ignore=False), logit, label)
    assert got == pytest.approx(nll.sum() / label.size, rel=1e-5)


def test_ce_class_weights(data):
    logit, label = data
    w = np.array([0.5, 1.0, 2.0, 0.1], dtype="float32")
    valid = label != 255
    wp = w[np.where(valid, label, 0)] * valid
    ref = (np_nll(logit, label) * wp).sum() / wp.sum()
    assert run(CrossEntropyLoss(weight=list(w)), logit, label) == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="weight has 3 entries but the logit has 4 classes"):
        run(CrossEntropyLoss(weight=[1, 1, 1]), logit, label)


def test_ce_top_k(data):
    logit, label = data
    valid = label != 255
    nll = np_nll(logit, label)[valid]
    k = int(0.25 * valid.sum())
    ref = np.sort(nll)[::-1][:k].mean()
    got = run(CrossEntropyLoss(top_k_percent_pixels=0.25), logit, label)
    assert got == pytest.approx(ref, rel=1e-5)


def test_ce_all_ignored_is_zero_not_nan(data):
    logit, _ = data
    label = np.full((2, 5, 6), 255, dtype="int64")
    for loss in (CrossEntropyLoss(), CrossEntropyLoss(top_k_percent_pixels=0.5),
                 CrossEntropyLoss(weight=[1, 2, 3, 4]), OhemCrossEntropyLoss(),
                 DiceLoss()):
        x = paddle.to_tensor(logit, stop_gradient=False)
        out = loss(x, paddle.to_tensor(label))
        assert float(out) == 0.0
        out.backward()
        assert np.isfinite(x.grad.numpy()).all()


def test_ce_gradient_flows(data):
    logit, label = data
    x = paddle.to_tensor(logit, stop_gradient=False)
    CrossEntropyLoss(top_k_percent_pixels=0.3)(x, paddle.to_tensor(label)).backward()
    assert float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("thresh, min_kept", [(0.7, 5), (0.3, 40), (0.9, 1000), (0.05, 0)])
def test_ohem(data, thresh, min_kept):
    logit, label = data
    valid = label != 255
    nll = np_nll(logit, label)[valid]
    prob = np.exp(-nll)
    n_hard = int((prob < thresh).sum())
    k = max(n_hard, min(min_kept, nll.size))
    ref = np.sort(nll)[::-1][:k].mean() if k else 0.0
    got = run(OhemCrossEntropyLoss(thresh=thresh, min_kept=min_kept), logit, label)
    assert got == pytest.approx(ref, rel=1e-5)


def np_dice(logit, label, weight=None, smooth=1.0):
    valid = (label != 255)[:, None]
    e = np.exp(logit - logit.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True) * valid
    g = np.eye(C)[np.where(label == 255, 0, label)].transpose(0, 3, 1, 2) * valid
    inter = (p * g).sum(axis=(0, 2, 3))
    card = p.sum(axis=(0, 2, 3)) + g.sum(axis=(0, 2, 3))
    per = 1 - (2 * inter + smooth) / (card + smooth)
    w = np.ones(C) if weight is None else np.asarray(weight)
    return (per * w).sum() / w.sum()


def test_dice(data):
    logit, label = data
    assert run(DiceLoss(), logit, label) == pytest.approx(np_dice(logit, label), rel=1e-5)
    w = [1.0, 0.0, 2.0, 3.0]
    got = run(DiceLoss(weight=w, smooth=0.5), logit, label)
    assert got == pytest.approx(np_dice(logit, label, w, 0.5), rel=1e-5)


def test_mixed_loss(data):
    logit, label = data
    ce, dice = CrossEntropyLoss(), DiceLoss()
    mixed = MixedLoss([ce, dice], [1.0, 0.5])
    ref = run(ce, logit, label) + 0.5 * run(dice, logit, label)
    assert run(mixed, logit, label) == pytest.approx(ref, rel=1e-5)
    assert mixed.ignore_index == 255
    with pytest.raises(ValueError, match="one number per loss"):
        MixedLoss([ce, dice], [1.0])
    with pytest.raises(ValueError, match="disagree on ignore_index"):
        MixedLoss([ce, DiceLoss(ignore_index=0)], [1, 1])


@pytest.mark.parametrize("loss", [CrossEntropyLoss(), OhemCrossEntropyLoss(), DiceLoss(),
                                  CrossEntropyLoss(weight=[1, 1, 1, 1])],
                         ids=lambda m: type(m).__name__)
def test_out_of_range_label_raises(data, loss):
    logit, label = data
    bad = label.copy()
    bad[0, 1, 1] = 254
    bad[1, 2, 2] = -1
    with pytest.raises(ValueError, match=r"label values \[-1, 254\] are outside \[0, 4\)"):
        run(loss, logit, bad)
    assert loss.ignore_index == 255


@pytest.mark.parametrize("kwargs, match", [
    ({"top_k_percent_pixels": 0.0}, "top_k_percent_pixels must be in \\(0, 1\\], got 0.0"),
    ({"data_format": "NCWH"}, "data_format must be 'NCHW' or 'NHWC', got 'NCWH'"),
    ({"weight": [1, -1]}, "weight entries must be >= 0"),
])
def test_ce_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossEntropyLoss(**kwargs)


def test_shape_mismatch_message(data):
    logit, label = data
    with pytest.raises(ValueError, match="does not match logit shape"):
        run(CrossEntropyLoss(), logit, label[:, :4])


def test_registered():
    for name in ("CrossEntropyLoss", "OhemCrossEntropyLoss", "DiceLoss", "MixedLoss"):
        assert name in manager.LOSSES
