"""Trainer hooks: each does one thing around the training step.

A hook implements any of ``before_train``, ``after_step``, ``after_train``;
each receives the :class:`~paddleseg_ext.core.train.Trainer`.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Dict

from ..checkpoints import training as ckpt


class NonFiniteLossError(FloatingPointError):
    """Training stopped because a loss became NaN or Inf."""


class Hook:
    def before_train(self, trainer: Any) -> None:
        pass

    def after_step(self, trainer: Any) -> None:
        pass

    def after_train(self, trainer: Any) -> None:
        pass


class NaNGuardHook(Hook):
    """Stops (or reports a skipped step) when a loss term is not finite.

    Runs first, so a bad step is never checkpointed: the last checkpoint on
    disk is the last good state.
    """

    def after_step(self, t: Any) -> None:
        if t.step_ok:
            return
        bad = [k for k, v in t.last.items() if k != "lr" and not _finite(v)]
        msg = (f"[TRAIN] non-finite loss at iter {t.iter}: "
               + ", ".join(f"{k}={t.last[k]}" for k in bad))
        if t.nan_policy == "skip":
            t.log.warning("%s; step skipped (nan_policy=skip)", msg)
            return
        last = ckpt.latest_checkpoint(t.save_dir)
        raise NonFiniteLossError(
            f"{msg}. Training stopped; the last good checkpoint is "
            f"{last or 'none (no checkpoint was saved yet)'}. Lower the learning rate or check the "
            "data, then resume with --resume_model auto (or set nan_policy skip)")


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))


class LoggerHook(Hook):
    """Logs losses per term, lr, batch/reader cost, ips and ETA every ``log_iters``."""

    def __init__(self, log_iters: int) -> None:
        self.log_iters = max(1, int(log_iters))

    def before_train(self, t: Any) -> None:
        self.sums: Dict[str, float] = {}
        self.n = 0
        self.batch_cost = self.reader_cost = 0.0

    def after_step(self, t: Any) -> None:
        for k, v in t.last.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1
        self.batch_cost += t.batch_cost
        self.reader_cost += t.reader_cost
        if t.iter % self.log_iters and t.iter != t.iters:
            return
        avg = {k: v / self.n for k, v in self.sums.items()}
        bc, rc = self.batch_cost / self.n, self.reader_cost / self.n
        eta = int(bc * (t.iters - t.iter))
        terms = " ".join(f"{k}={v:.4f}" for k, v in avg.items() if k.startswith("loss_")
                         and len(avg) > 3)
        t.log.info("[TRAIN] iter: %d/%d, loss: %.4f%s, lr: %.6f, batch_cost: %.4f, reader_cost: %.5f, "
                   "ips: %.2f samples/sec | ETA %02d:%02d:%02d", t.iter, t.iters, avg["loss"],
                   f" ({terms})" if terms else "", t.last["lr"], bc, rc,
                   t.batch_size * t.world / max(bc, 1e-9), eta // 3600, eta % 3600 // 60, eta % 60)
        t.logged = dict(avg, batch_cost=bc, reader_cost=rc)
        self.before_train(t)


class VisualDLHook(Hook):
    """Writes losses, lr and eval metrics as VisualDL scalars."""

    def __init__(self, logdir: str, log_iters: int) -> None:
        self.logdir, self.log_iters = logdir, max(1, int(log_iters))
        self.writer = None

    def before_train(self, t: Any) -> None:
        from visualdl import LogWriter

        self.writer = LogWriter(logdir=self.logdir)

    def after_step(self, t: Any) -> None:
        if t.iter % self.log_iters == 0:
            for k, v in t.last.items():
                self.writer.add_scalar(f"Train/{k}", v, t.iter)
        ev = getattr(t, "last_eval", None)
        if ev is not None and ev.get("iter") == t.iter:
            for k in ("mIoU", "Acc", "Kappa", "mDice"):
                self.writer.add_scalar(f"Evaluate/{k}", ev[k], t.iter)

    def after_train(self, t: Any) -> None:
        if self.writer is not None:
            self.writer.close()


class EvalHook(Hook):
    """Evaluates every ``interval`` iterations and at the end; tracks the best mIoU."""

    def __init__(self, interval: int, eval_kwargs: Dict[str, Any]) -> None:
        self.interval, self.kwargs = max(1, int(interval)), eval_kwargs

    def after_step(self, t: Any) -> None:
        if t.iter % self.interval == 0 or t.iter == t.iters:
            self.run(t)

    def run(self, t: Any) -> None:
        from .val import EvalInterrupted, evaluate

        try:
            metrics = evaluate(t.model, t.val_dataset, num_workers=0,
                               should_stop=lambda: bool(t.stop_requested), **self.kwargs)
        except EvalInterrupted as e:
            t.model.train()
            t.log.warning("[EVAL] %s at iter %d: %s received", e, t.iter, t.stop_requested)
            return
        t.model.train()
        t.last_eval = dict(metrics, iter=t.iter)
        if metrics["mIoU"] > t.best["mIoU"]:
            t.best = {"mIoU": metrics["mIoU"], "iter": t.iter}
            if t.rank == 0:
                ckpt.save_checkpoint(t.save_dir, "best_model", t.model, None, t.state())
        t.log.info("[EVAL] The model with the best validation mIoU (%.4f) was saved at iter %d.",
                   t.best["mIoU"], t.best["iter"])


class CheckpointHook(Hook):
    """Saves ``iter_N`` every ``interval`` iterations and at the end; keeps the newest ``keep``."""

    def __init__(self, interval: int, keep: int) -> None:
        self.interval, self.keep = max(1, int(interval)), keep

    def after_step(self, t: Any) -> None:
        if t.rank == 0 and (t.iter % self.interval == 0 or t.iter == t.iters):
            t.save()
            ckpt.prune_checkpoints(t.save_dir, self.keep)


class SignalHook(Hook):
    """SIGINT / SIGTERM: finish the current step, save a checkpoint, stop cleanly.

    A second signal while the first is being handled raises KeyboardInterrupt
    at once (checkpoints are written atomically, so even that loses at most
    the step in flight).
    """

    def before_train(self, t: Any) -> None:
        self.old: Dict[int, Any] = {}

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if t.stop_requested:
                raise KeyboardInterrupt(f"second signal ({name}) while stopping")
            t.stop_requested = name

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    def after_step(self, t: Any) -> None:
        if t.stop_requested:
            path = None
            if t.rank == 0:
                path = (os.path.join(t.save_dir, f"iter_{t.iter}") if t.last_saved_iter == t.iter
                        else t.save())
            t.log.warning("[TRAIN] %s received at iter %d: saved %s; continue with --resume_model %s "
                          "(or --resume_model auto)", t.stop_requested, t.iter, path, path)

    def after_train(self, t: Any) -> None:
        for sig, old in getattr(self, "old", {}).items():
            signal.signal(sig, old)


