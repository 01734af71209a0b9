import numpy as np
import pytest

from paddleseg_ext.utils.metrics import ConfusionMatrix, format_table


def test_against_hand_computed_confusion():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(pred, label)
    # rows=label, cols=pred; the ignored pixel is dropped
    np.testing.assert_array_equal(cm.mat, [[1, 1, 0], [0, 3, 0], [1, 0, 1]])
    m = cm.compute()
    # IoU_c = tp / (row + col - tp)
    np.testing.assert_allclose(m["class_IoU"], [1 / 3, 3 / 4, 1 / 2])
    assert m["mIoU"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert m["Acc"] == pytest.approx(5 / 7)
    po, pe = 5 / 7, (2 * 2 + 3 * 4 + 2 * 1) / 49
    assert m["Kappa"] == pytest.approx((po - pe) / (1 - pe))
    np.testing.assert_allclose(m["class_precision"], [1 / 2, 3 / 4, 1])
    np.testing.assert_allclose(m["class_recall"], [1 / 2, 1, 1 / 2])
    np.testing.assert_allclose(m["class_dice"], [2 / 4, 6 / 7, 2 / 3])


def test_absent_class_is_nan_and_left_out_of_mean():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    m = cm.compute()
    assert np.isnan(m["class_IoU"][2]) and m["mIoU"] == 1.0
    assert "n/a" in format_table(m, ["a", "b", "c"])


def test_accumulates_and_rejects_bad_labels():
    cm = ConfusionMatrix(2)
    cm.update(np.zeros(4), np.zeros(4))
    cm.update(np.ones(4), np.zeros(4))
    assert cm.compute()["class_IoU"][0] == 0.5
    with pytest.raises(ValueError, match=r"label values \[7\] are outside \[0, 2\)"):
        cm.update(np.zeros(2), np.array([0, 7]))
    with pytest.raises(ValueError, match="prediction has 3 pixels but label has 2"):
        cm.update(np.zeros(3), np.zeros(2))
