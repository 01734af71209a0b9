"""Trainer hooks: each does one thing around the training step.

A hook implements any of ``before_train``, ``after_step``, ``after_train``;
each receives the :class:`~paddleseg_ext.core.train.Trainer`. Hooks exchange
values only through ``trainer.storage`` (a
:class:`~paddleseg_ext.core.storage.TrainStorage`), as detectron2's hooks do
through its ``EventStorage``. A hook whose state must survive a resume
implements ``state_dict()`` / ``load_state_dict(state)`` and a ``name``; the
trainer writes that state into each checkpoint.

:func:`default_hooks` builds the list ``tools/train.py`` uses, in the order
that matters (see its docstring).
"""

from __future__ import annotations

import signal
from typing import Any, Dict, List, Optional

from ..checkpoints import training as ckpt
from ..utils.infer_options import InferOptions
from .early_stop import EarlyStopHook, EarlyStopping
from .hooks_base import Hook

__all__ = ["Hook", "NonFiniteLossError", "NaNGuardHook", "LoggerHook", "CheckpointHook", "EvalHook",
           "BestTrackerHook", "BestModelSaverHook", "EarlyStopHook", "SignalHook", "default_hooks"]


class NonFiniteLossError(FloatingPointError):
    """Training stopped because a loss became NaN or Inf."""


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))


class NaNGuardHook(Hook):
    """Stops (or reports a skipped step) when a loss term is not finite.

    Runs first, so a bad step is never checkpointed: the last checkpoint on
    disk is the last good state.
    """

    def after_step(self, t: Any) -> None:
        s = t.storage
        if s.step_ok:
            return
        bad = [k for k, v in s.scalars.items() if k != "lr" and not _finite(v)]
        msg = (f"[TRAIN] non-finite loss at iter {t.iter}: "
               + ", ".join(f"{k}={s.scalars[k]}" for k in bad))
        if t.nan_policy == "skip":
            t.log.warning("%s; step skipped (nan_policy=skip)", msg)
            return
        last = ckpt.latest_checkpoint(t.save_dir)
        raise NonFiniteLossError(
            f"{msg}. Training stopped; the last good checkpoint is "
            f"{last or 'none (no checkpoint was saved yet)'}. Lower the learning rate or check the "
            "data, then resume with --resume_model auto (or set nan_policy skip)")


class LoggerHook(Hook):
    """Logs losses per term, lr, batch/reader cost, ips and ETA every ``log_iters``."""

    def __init__(self, log_iters: int) -> None:
        self.log_iters = max(1, int(log_iters))

    def before_train(self, t: Any) -> None:
        self.sums: Dict[str, float] = {}
        self.n = 0
        self.batch_cost = self.reader_cost = 0.0

    def after_step(self, t: Any) -> None:
        s = t.storage
        for k, v in s.scalars.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1
        self.batch_cost += s.batch_cost
        self.reader_cost += s.reader_cost
        if t.iter % self.log_iters and t.iter != t.iters:
            return
        avg = {k: v / self.n for k, v in self.sums.items()}
        bc, rc = self.batch_cost / self.n, self.reader_cost / self.n
        eta = int(bc * (t.iters - t.iter))
        terms = " ".join(f"{k}={v:.4f}" for k, v in avg.items() if k.startswith("loss_")
                         and len(avg) > 3)
        t.log.info("[TRAIN] iter: %d/%d, loss: %.4f%s, lr: %.6f, batch_cost: %.4f, reader_cost: %.5f, "
                   "ips: %.2f samples/sec | ETA %02d:%02d:%02d", t.iter, t.iters, avg["loss"],
                   f" ({terms})" if terms else "", s.scalars["lr"], bc, rc,
                   t.batch_size * t.world / max(bc, 1e-9), eta // 3600, eta % 3600 // 60, eta % 60)
        self.before_train(t)


class CheckpointHook(Hook):
    """Saves ``iter_N`` every ``interval`` iterations and at the end; keeps the newest ``keep``."""

    def __init__(self, interval: int, keep: int) -> None:
        self.interval, self.keep = max(1, int(interval)), keep

    def after_step(self, t: Any) -> None:
        if t.rank == 0 and (t.iter % self.interval == 0 or t.iter == t.iters):
            t.save()
            ckpt.prune_checkpoints(t.save_dir, self.keep)


class EvalHook(Hook):
    """Evaluates every ``interval`` iterations and at the end; the metrics go to
    ``storage.latest_eval`` (with the iteration), nothing else.

    The validation loss (``loss``) is the training loss of the main output
    (first loss type, times its coef), comparable with ``loss_<main output>``
    of training. The validation images whose indices a hook put in
    ``storage.sample_indices`` are kept, with label and prediction, in
    ``storage.eval_samples`` (VisualDL draws them).

    Args:
        interval: iterations between evaluations.
        val_dataset: the validation set (val mode).
        options: how the images are inferred (the config's ``test_config``; default: plain).
    """

    def __init__(self, interval: int, val_dataset: Any, options: Optional[InferOptions] = None) -> None:
        self.interval, self.val_dataset = max(1, int(interval)), val_dataset
        self.options = options
        self.val_loss = True  # off after the main loss fails on a validation image (said once)

    def after_step(self, t: Any) -> None:
        if t.iter % self.interval == 0 or t.iter == t.iters:
            self.run(t)

    def run(self, t: Any) -> None:
        from .val import EvalInterrupted, evaluate

        main_loss, coef = t.losses["types"][0], t.losses["coef"][0]
        keep, samples = set(t.storage.sample_indices), {}

        def val_loss(logit: Any, label: Any) -> Any:
            try:
                return main_loss(logit, label) * coef
            except Exception as e:  # e.g. a loss that needs fields only training batches carry
                self.val_loss = False
                t.log.warning("[EVAL] no validation loss: the main loss %s fails on a validation image "
                              "(%s: %s)", type(main_loss).__name__, type(e).__name__, str(e)[:200])
                raise _NoValLoss from e

        def each_image(i: int, data: Dict[str, Any], pred: Any) -> None:
            if i in keep:
                img = data["img"]
                samples[i] = {"img": img.numpy() if hasattr(img, "numpy") else img,
                              "label": data["label"], "pred": pred}

        try:
            metrics = evaluate(t.storage.model_to_evaluate(t.model), self.val_dataset, num_workers=0,
                               should_stop=lambda: bool(t.storage.stop_signal),
                               loss_fn=val_loss if self.val_loss else None,
                               on_image=each_image if keep else None, options=self.options)
        except _NoValLoss:
            return self.run(t)  # once more, without the loss
        except EvalInterrupted as e:
            t.model.train()
            t.log.warning("[EVAL] %s at iter %d: %s received", e, t.iter, t.storage.stop_signal)
            return
        t.model.train()
        t.storage.latest_eval = dict(metrics, iter=t.iter)
        t.storage.eval_samples = samples


class _NoValLoss(Exception):
    """The main loss cannot be computed on validation images."""


class BestTrackerHook(Hook):
    """After an evaluation, records a new best validation mIoU in ``storage.best``."""

    def after_step(self, t: Any) -> None:
        s = t.storage
        if s.evaluated_at(t.iter) and s.latest_eval["mIoU"] > s.best["mIoU"]:
            s.best = {"mIoU": s.latest_eval["mIoU"], "iter": t.iter}


class BestModelSaverHook(Hook):
    """Saves ``best_model`` when this step's evaluation set a new best (rank 0)."""

    def after_step(self, t: Any) -> None:
        s = t.storage
        if not s.evaluated_at(t.iter):
            return
        if s.best["iter"] == t.iter and t.rank == 0:
            ckpt.save_checkpoint(t.save_dir, "best_model", s.model_to_evaluate(t.model), None, t.state())
        t.log.info("[EVAL] The model with the best validation mIoU (%.4f) was saved at iter %d.",
                   s.best["mIoU"], s.best["iter"])


class SignalHook(Hook):
    """SIGINT / SIGTERM: record the request in ``storage.stop_signal``; the trainer
    finishes the current step, saves and stops (``Trainer._save_on_stop``).

    A second signal while the first is being handled raises KeyboardInterrupt
    at once (checkpoints are written atomically, so even that loses at most
    the step in flight).
    """

    def before_train(self, t: Any) -> None:
        self.old: Dict[int, Any] = {}

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if t.storage.stop_signal:
                raise KeyboardInterrupt(f"second signal ({name}) while stopping")
            t.storage.stop_signal = name

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    def after_train(self, t: Any) -> None:
        for sig, old in getattr(self, "old", {}).items():
            signal.signal(sig, old)


def default_hooks(*, val_dataset: Any = None, infer_options: Optional[InferOptions] = None,
                  save_interval: int = 1000, log_iters: int = 10, keep_checkpoint_max: int = 5,
                  early_stop: Optional[EarlyStopping] = None, use_vdl: bool = False,
                  vdl_dir: Optional[str] = None, vdl_samples: int = 4,
                  vdl_hparams: Optional[Dict[str, Any]] = None, vdl_bands: Optional[List[int]] = None,
                  handle_signals: bool = True, ema: Optional["WeightAveraging"] = None) -> List[Hook]:
    """The hooks of a standard run, in order.

    The order matters: the NaN guard first (a bad step is never saved); the
    checkpoint before the evaluation (a crash or kill during an evaluation
    costs nothing); then evaluation, best tracking, best-model saving and
    early stopping, each reading what the one before put in the storage (the weight
    average, when on, updates before the checkpoint so ``iter_N`` holds both);
    VisualDL after them (it logs their results); signals last.

    Args:
        val_dataset: evaluate on it every ``save_interval`` (None: no evaluation, and so no
            best model and no early stopping).
        infer_options: how the evaluation infers (multi-scale / flip, sliding windows).
        save_interval: iterations between checkpoints (and evaluations).
        log_iters: iterations between log lines (and VisualDL training scalars).
        keep_checkpoint_max: newest ``iter_N`` checkpoints kept.
        early_stop: stop when the validation metric stops improving (needs ``val_dataset``).
        use_vdl: write VisualDL logs to ``vdl_dir`` (see :mod:`.visualdl_hook`).
        vdl_samples: validation images drawn in VisualDL at each evaluation.
        vdl_hparams: the run's settings, recorded with its final metrics (``add_hparams``).
        vdl_bands: image bands drawn as red, green, blue (or one as grey) in those samples.
        handle_signals: SIGINT / SIGTERM save a checkpoint and stop.
        ema: keep a moving average of the weights and evaluate / keep it as ``best_model``
            (:mod:`.ema`); None: the trained weights.

    Raises:
        ValueError: ``early_stop`` without ``val_dataset``, or ``use_vdl`` without ``vdl_dir``.
    """
    hooks: List[Hook] = [NaNGuardHook(), LoggerHook(log_iters)]
    if ema is not None:
        from .ema import EMAHook

        hooks.append(EMAHook(ema))
    hooks.append(CheckpointHook(save_interval, keep_checkpoint_max))
    if early_stop is not None and val_dataset is None:
        raise ValueError("early stopping watches a validation metric: it needs evaluation "
                         "(--do_eval and a val_dataset)")
    if val_dataset is not None:
        hooks += [EvalHook(save_interval, val_dataset, infer_options), BestTrackerHook(), BestModelSaverHook()]
        if early_stop is not None:
            hooks.append(EarlyStopHook(early_stop))
    if use_vdl:
        if not vdl_dir:
            raise ValueError("use_vdl needs vdl_dir (the folder for the VisualDL logs)")
        from .visualdl_hook import VisualDLHook

        hooks.append(VisualDLHook(vdl_dir, log_iters, val_dataset=val_dataset, num_samples=vdl_samples,
                                  hparams=vdl_hparams, bands=vdl_bands))
    if handle_signals:
        hooks.append(SignalHook())
    return hooks
