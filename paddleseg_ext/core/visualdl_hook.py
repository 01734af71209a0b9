"""VisualDL logging during training."""

from __future__ import annotations

from typing import Any, Optional

from .hooks_base import Hook


class VisualDLHook(Hook):
    """Writes losses, lr and eval metrics as VisualDL scalars (rank 0 only)."""

    def __init__(self, logdir: str, log_iters: int) -> None:
        self.logdir, self.log_iters = logdir, max(1, int(log_iters))
        self.writer: Optional[Any] = None

    def before_train(self, t: Any) -> None:
        if t.rank != 0:
            return
        from visualdl import LogWriter

        self.writer = LogWriter(logdir=self.logdir)

    def after_step(self, t: Any) -> None:
        if self.writer is None:
            return
        s = t.storage
        if t.iter % self.log_iters == 0:
            for k, v in s.scalars.items():
                self.writer.add_scalar(f"Train/{k}", v, t.iter)
        if s.evaluated_at(t.iter):
            for k in ("mIoU", "Acc", "Kappa", "mDice"):
                self.writer.add_scalar(f"Evaluate/{k}", s.latest_eval[k], t.iter)

    def after_train(self, t: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
