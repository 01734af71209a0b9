"""Segmentation metrics from an accumulated confusion matrix.

Everything derives from one ``num_classes x num_classes`` matrix (rows = label,
columns = prediction) accumulated at label resolution, so mIoU, accuracy,
Kappa and Dice are computed exactly, not averaged over images.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


class ConfusionMatrix:
    """Accumulates a confusion matrix over ``update`` calls.

    Args:
        num_classes: number of classes.
        ignore_index: label value excluded from every metric.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        """Add one batch. ``pred`` and ``label``: integer arrays of the same shape."""
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        label = np.asarray(label).reshape(-1).astype(np.int64)
        if pred.shape != label.shape:
            raise ValueError(f"prediction has {pred.size} pixels but label has {label.size}")
        keep = label != self.ignore_index
        pred, label = pred[keep], label[keep]
        bad = (label < 0) | (label >= self.num_classes)
        if bad.any():
            raise ValueError(f"label values {sorted(set(label[bad].tolist()))[:10]} are outside "
                             f"[0, {self.num_classes}) and not ignore_index {self.ignore_index}")
        self.mat += np.bincount(label * self.num_classes + pred,
                                minlength=self.num_classes ** 2).reshape(self.num_classes, -1)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.mat += other.mat

    def compute(self) -> Dict[str, object]:
        """All metrics. Classes absent from both label and prediction get IoU NaN
        and are left out of the means (as mmseg does), so they do not count as 0."""
        return metrics_from_confusion(self.mat)


def metrics_from_confusion(mat: np.ndarray) -> Dict[str, object]:
    mat = mat.astype(np.float64)
    tp = np.diag(mat)
    label_area = mat.sum(1)
    pred_area = mat.sum(0)
    total = mat.sum()
    union = label_area + pred_area - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        precision = np.where(pred_area > 0, tp / pred_area, np.nan)
        recall = np.where(label_area > 0, tp / label_area, np.nan)
        dice = np.where(label_area + pred_area > 0, 2 * tp / (label_area + pred_area), np.nan)
    acc = tp.sum() / total if total else 0.0
    pe = (label_area * pred_area).sum() / (total * total) if total else 0.0
    kappa = (acc - pe) / (1 - pe) if pe != 1 else 0.0
    return {
        "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "Acc": float(acc),
        "Kappa": float(kappa),
        "mDice": float(np.nanmean(dice)) if np.isfinite(dice).any() else 0.0,
        "class_IoU": iou.tolist(),
        "class_precision": precision.tolist(),
        "class_recall": recall.tolist(),
        "class_dice": dice.tolist(),
        "class_pixels": label_area.astype(np.int64).tolist(),
    }


def format_table(metrics: Dict[str, object], class_names: Optional[Sequence[str]] = None) -> str:
    """A plain-text per-class table plus the summary line."""
    iou: List[float] = metrics["class_IoU"]  # type: ignore[assignment]
    names = list(class_names) if class_names else [str(i) for i in range(len(iou))]
    width = max(8, max(len(n) for n in names))
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Prec':>7}  {'Recall':>7}  {'Dice':>7}  {'pixels':>9}"]
    for i, name in enumerate(names):
        row = [metrics[k][i] for k in ("class_IoU", "class_precision", "class_recall", "class_dice")]
        cells = "  ".join("    n/a" if np.isnan(v) else f"{v:7.4f}" for v in row)
        lines.append(f"{name:<{width}}  {cells}  {metrics['class_pixels'][i]:>9d}")
    lines.append(f"mIoU {metrics['mIoU']:.4f}  Acc {metrics['Acc']:.4f}  "
                 f"Kappa {metrics['Kappa']:.4f}  mDice {metrics['mDice']:.4f}")
    return "\n".join(lines)
