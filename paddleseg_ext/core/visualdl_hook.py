"""VisualDL logging during training, as segmentation users expect it.

What is written (tags):

- ``Train/<term>``: every loss term and ``lr`` every ``log_iters``.
- ``Loss/<main term>``: one chart, two lines: ``train`` (every ``log_iters``) and
  ``val`` (each evaluation; the same loss on the validation images).
- ``Evaluate/mIoU``, ``Acc``, ``Kappa``, ``mDice``; ``Evaluate/class_IoU``: every
  class's IoU in one chart (a class absent from both label and prediction has
  no IoU and is left out of that evaluation).
- ``Evaluate/confusion_matrix``: the confusion matrix as a picture (rows label,
  columns prediction, share of each row).
- ``Samples/<index>``: a fixed set of validation images (evenly spread over the
  set, the same at every evaluation) as image | ground truth | prediction.
- at the end, ``add_hparams`` with the run's settings and its metrics
  (``hparam/best_mIoU``, ``hparam/best_iter``, ``hparam/last_mIoU``,
  ``hparam/iters``), for comparing runs in VisualDL's hyper-parameter page.

mmsegmentation's ``SegVisualizationHook`` draws samples too; this draws them
from the evaluation's own predictions, so no second forward pass runs.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..utils.visualize import get_color_map_list, palette_array
from ..utils.visualize_confusion import confusion_image
from ..utils.visualize_legend import class_names_or_ids
from ..utils.visualize_panel import sample_panel
from .hooks_base import Hook

HPARAM_METRICS = ["hparam/best_mIoU", "hparam/best_iter", "hparam/last_mIoU", "hparam/iters"]


def sample_indices(n: int, k: int) -> List[int]:
    """``k`` indices evenly spread over ``range(n)`` (all of them when ``n <= k``)."""
    if k <= 0 or n <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(k, n))})


class VisualDLHook(Hook):
    """Writes training and evaluation records for VisualDL (rank 0 only).

    Args:
        logdir: VisualDL log folder.
        log_iters: iterations between training scalars.
        val_dataset: the evaluation set (for class names, ignore index and samples); None: scalars only.
        num_samples: validation images drawn at each evaluation (0: none).
        hparams: the run's settings for ``add_hparams`` (str / int / float values).
        bands: image bands drawn as red, green, blue (or one as grey) in the samples.
    """

    def __init__(self, logdir: str, log_iters: int, val_dataset: Any = None, num_samples: int = 4,
                 hparams: Optional[Dict[str, Any]] = None, bands: Optional[Sequence[int]] = None) -> None:
        self.logdir, self.log_iters = logdir, max(1, int(log_iters))
        self.val_dataset, self.num_samples = val_dataset, max(0, int(num_samples))
        self.hparams = {k: v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else str(v)
                        for k, v in (hparams or {}).items()}
        self.bands = list(bands) if bands is not None else None
        self.writer: Optional[Any] = None
        self.samples: List[int] = []

    def before_train(self, t: Any) -> None:
        if t.rank != 0:
            return
        from visualdl import LogWriter

        self.writer = LogWriter(logdir=self.logdir)
        ds = self.val_dataset
        if ds is not None:
            self.names = class_names_or_ids(getattr(ds, "class_names", None), ds.num_classes)
            self.ignore_index = getattr(ds, "ignore_index", 255)
            self.palette = palette_array(get_color_map_list(256))
            self.samples = sample_indices(len(ds), self.num_samples)
            t.storage.sample_indices = sorted(set(t.storage.sample_indices) | set(self.samples))
        self.main_loss = f"loss_{t.output_names()[0]}"

    def after_step(self, t: Any) -> None:
        if self.writer is None:
            return
        s, w = t.storage, self.writer
        if t.iter % self.log_iters == 0:
            for k, v in s.scalars.items():
                w.add_scalar(f"Train/{k}", v, t.iter)
            if self.main_loss in s.scalars:
                w.add_scalars(f"Loss/{self.main_loss}", {"train": s.scalars[self.main_loss]}, t.iter)
        if s.evaluated_at(t.iter):
            self.log_evaluation(t.iter, s.latest_eval, s.eval_samples)

    def log_evaluation(self, step: int, ev: Dict[str, Any], samples: Dict[int, Dict[str, Any]]) -> None:
        w = self.writer
        for k in ("mIoU", "Acc", "Kappa", "mDice"):
            w.add_scalar(f"Evaluate/{k}", ev[k], step)
        ious = {n: float(v) for n, v in zip(self.names, ev.get("class_IoU", [])) if v is not None and math.isfinite(v)}
        if ious:
            w.add_scalars("Evaluate/class_IoU", ious, step)
        if "loss" in ev:
            w.add_scalars(f"Loss/{self.main_loss}", {"val": float(ev["loss"])}, step)
        if "confusion" in ev:
            w.add_image("Evaluate/confusion_matrix", confusion_image(np.asarray(ev["confusion"]), self.names), step)
        for i in self.samples:
            if i in samples:
                x = samples[i]
                w.add_image(f"Samples/{i}", sample_panel(x["img"], x["label"], x["pred"], self.palette,
                                                         self.names, self.ignore_index, self.bands), step)

    def after_train(self, t: Any) -> None:
        if self.writer is None:
            return
        s, w = t.storage, self.writer
        last = s.latest_eval or {}
        values = {"hparam/best_mIoU": max(float(s.best["mIoU"]), 0.0), "hparam/best_iter": s.best["iter"],
                  "hparam/last_mIoU": float(last.get("mIoU", 0.0)), "hparam/iters": t.iter}
        if self.hparams:
            w.add_hparams(dict(self.hparams), list(HPARAM_METRICS))
            for tag, v in values.items():
                w.add_scalar(tag, v, t.iter)
        w.close()
        self.writer = None
