"""Iteration-based training: a small loop, a step, and hooks around them.

Hooks (``paddleseg_ext.core.hooks``) do everything that is not the step:
logging, VisualDL, checkpoints, evaluation, the NaN guard, signals.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import paddle

from ..cvlibs.errors import clean_exception
from ..cvlibs.validators import NON_NEGATIVE_INT, POSITIVE_INT, one_of, validated
from ..checkpoints import training as ckpt
from ..utils.logger import get_logger
from .data import (ResumableBatchSampler, SeededDataset, check_batch, ignore_signals_in_worker,
                   shared_memory_choice, train_collate, train_label)
from .hooks import Hook, NonFiniteLossError, default_hooks
from .infer import is_out_of_memory
from .storage import TrainStorage

__all__ = ["Trainer", "TrainSettings", "default_hooks", "compute_losses", "NonFiniteLossError"]


def _shutdown(batches: Any) -> None:
    """Stop the loader workers now (not at interpreter exit, where multiprocessing may
    wait on them)."""
    stop = getattr(batches, "_try_shutdown_all", None)
    if stop is not None:
        try:
            stop()
        except Exception:  # pragma: no cover - best effort
            pass


def compute_losses(logits: Sequence[Any], label: paddle.Tensor, losses: Dict[str, List[Any]],
                   names: Sequence[str]) -> Dict[str, paddle.Tensor]:
    """Weighted loss per model output, keyed ``loss_<output name>``, plus ``loss`` (the sum)."""
    if len(logits) != len(losses["types"]):
        raise ValueError(f"The model returned {len(logits)} logits but loss has "
                         f"{len(losses['types'])} types: give one loss coef per output {tuple(names)}")
    terms: Dict[str, paddle.Tensor] = {}
    for i, (logit, fn, coef) in enumerate(zip(logits, losses["types"], losses["coef"])):
        name = names[i] if i < len(names) else str(i)
        terms[f"loss_{name}"] = fn(logit, label) * coef
    terms["loss"] = paddle.add_n(list(terms.values()))
    return terms


@validated(iters=POSITIVE_INT, batch_size=POSITIVE_INT, num_workers=NON_NEGATIVE_INT,
           nan_policy=one_of("stop", "skip"), precision=one_of("fp32", "fp16"), amp_level=one_of("O1", "O2"))
@dataclass(frozen=True)
class TrainSettings:
    """How the loop runs (what the hooks do is their own arguments, see :func:`default_hooks`).

    Args:
        iters: total iterations.
        batch_size: per-device batch size.
        save_dir: output folder (checkpoints, ``best_model``, VisualDL logs).
        num_workers: data-loader worker processes (0: load in the training process).
        seed: seeds order and augmentation (see :mod:`.data`).
        nan_policy: ``'stop'`` (raise, keeping the last checkpoint) or ``'skip'`` the step.
        precision: ``'fp32'`` or ``'fp16'`` (AMP; GPU only).
        amp_level: AMP level, ``'O1'`` or ``'O2'``.

    Raises:
        ValueError: a value outside those choices (the rules of
            :mod:`paddleseg_ext.cvlibs.validators`, with their messages).
    """

    iters: int
    batch_size: int
    save_dir: str = "output"
    num_workers: int = 0
    seed: int = 0
    nan_policy: str = "stop"
    precision: str = "fp32"
    amp_level: str = "O1"


class Trainer:
    """Trains a segmentation model for a fixed number of iterations.

    detectron2's shape: a small loop and a step; everything else (logging,
    checkpoints, evaluation, best model, early stopping, VisualDL, the NaN
    guard, signals) is a hook, and hooks share values through
    ``self.storage`` (a :class:`~paddleseg_ext.core.storage.TrainStorage`).

    Args:
        model: the network; ``forward`` returns a list of logits in training.
        optimizer: a Paddle optimizer whose LR is an ``LRScheduler`` (stepped per iteration).
        losses: ``{'types': [...], 'coef': [...]}`` from the builder.
        train_dataset: yields dicts with ``img`` (CHW) and ``label`` (HW).
        settings: the loop's settings.
        hooks: run around each step, in order; None: ``default_hooks()`` (checkpoints, logging,
            NaN guard, signals; no evaluation).
    """

    def __init__(self, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
                 losses: Dict[str, List[Any]], train_dataset: Any, settings: TrainSettings,
                 hooks: Optional[Sequence[Hook]] = None) -> None:
        self.log = get_logger()
        self.model, self.optimizer, self.losses = model, optimizer, losses
        self.train_dataset = train_dataset
        self.iters, self.batch_size, self.save_dir = settings.iters, settings.batch_size, settings.save_dir
        self.num_workers, self.seed, self.nan_policy = settings.num_workers, settings.seed, settings.nan_policy
        self.use_amp = settings.precision == "fp16" and paddle.is_compiled_with_cuda()
        if settings.precision == "fp16" and not self.use_amp:
            self.log.warning("[TRAIN] fp16 needs a CUDA build of Paddle; training in fp32")
        self.amp_level = settings.amp_level
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if self.use_amp else None
        self.rank = paddle.distributed.get_rank()
        self.world = paddle.distributed.get_world_size()
        self.iter = 0
        self.storage = TrainStorage()
        self.last_saved_iter = -1
        self.net = paddle.DataParallel(model) if self.world > 1 else model
        self.hooks: List[Hook] = list(default_hooks() if hooks is None else hooks)

    @property
    def lr_scheduler(self):
        lr = self.optimizer._learning_rate
        return lr if isinstance(lr, paddle.optimizer.lr.LRScheduler) else None

    def output_names(self) -> List[str]:
        names = getattr(self.model, "output_names", None)
        return list(names) if names else [str(i) for i in range(len(self.losses["types"]))]

    # -- state -------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        sched = self.lr_scheduler
        hooks = {h.name: h.state_dict() for h in self.hooks if hasattr(h, "state_dict")}
        return {"iter": self.iter, "best": self.storage.best, "seed": self.seed,
                "lr_scheduler": sched.state_dict() if sched is not None else None, "hooks": hooks}

    def save(self, name: Optional[str] = None) -> str:
        """Save ``iter_N`` (or ``name``); refuses to save non-finite weights."""
        bad = [n for n, p in self.model.named_parameters() if not bool(paddle.isfinite(p).all())]
        if bad:
            last = ckpt.latest_checkpoint(self.save_dir)
            raise NonFiniteLossError(
                f"[TRAIN] parameters became NaN/Inf by iter {self.iter} (e.g. {bad[:3]}); not saved. The "
                f"last good checkpoint is {last or 'none'}. Lower the learning rate, then resume with "
                "--resume_model auto")
        extra = {h.name: h.tensors() for h in self.hooks if hasattr(h, "tensors")}
        path = ckpt.save_checkpoint(self.save_dir, name or f"iter_{self.iter}", self.model,
                                    self.optimizer, self.state(),
                                    extra={k: v for k, v in extra.items() if v is not None})
        if name is None:
            self.last_saved_iter = self.iter
        return path

    def resume(self, path: str) -> None:
        """Restore from a checkpoint folder, or ``'auto'``: the newest complete one in save_dir
        (a damaged one is skipped with a warning)."""
        if path == "auto":
            candidates = list(reversed(ckpt.list_checkpoints(self.save_dir)))
            if not candidates:
                self.log.info("[TRAIN] --resume_model auto: no checkpoint in %s, starting fresh", self.save_dir)
                return
            for i, path in enumerate(candidates):
                try:
                    state = ckpt.load_checkpoint(path, self.model, self.optimizer)
                    break
                except ValueError as e:
                    if i == len(candidates) - 1:
                        raise
                    self.log.warning("[TRAIN] skipping %s: %s", path, e)
        else:
            if not os.path.isdir(path):
                raise FileNotFoundError(f"--resume_model {path}: no such checkpoint folder (give an iter_N "
                                        f"folder, or 'auto' for the newest in --save_dir)")
            state = ckpt.load_checkpoint(path, self.model, self.optimizer)
        if not isinstance(state.get("iter"), int):
            raise ValueError(f"Checkpoint {path} has no iteration in its state.json; it is not a "
                             "training checkpoint (resume from an iter_N folder)")
        self.iter = int(state["iter"])
        self.storage.best = state.get("best", self.storage.best)
        self._adopt_saved_best()
        # checkpoints written before hooks kept state have no "hooks": each hook starts afresh
        for hook in self.hooks:
            if hasattr(hook, "load_state_dict"):
                hook.load_state_dict((state.get("hooks") or {}).get(hook.name))
            if hasattr(hook, "load_tensors"):
                hook.load_tensors(ckpt.load_extra(path, hook.name))
        if state.get("seed") is not None and state["seed"] != self.seed:
            self.log.warning("[TRAIN] resuming a run seeded %s with --seed %s: data order follows the "
                             "checkpoint's seed", state["seed"], self.seed)
            self.seed = int(state["seed"])
        sched = self.lr_scheduler
        if sched is not None and state.get("lr_scheduler") is not None:
            sched.set_state_dict(state["lr_scheduler"])
        self.log.info("[TRAIN] resumed from %s at iter %d", path, self.iter)
        if self.iter >= self.iters:
            self.log.warning("[TRAIN] the checkpoint is at iter %d, already >= iters %d: nothing to train",
                             self.iter, self.iters)

    def _adopt_saved_best(self) -> None:
        """``iter_N`` is saved before the evaluation at N, so its state misses that evaluation's
        best; ``best_model`` (saved after it) has it. Without this a resumed run would replace
        a better ``best_model`` with the first model it evaluates."""
        path = os.path.join(self.save_dir, "best_model", ckpt.COMPLETE_MARK)
        try:
            with open(path) as f:
                saved = json.load(f).get("best") or {}
        except (OSError, ValueError):
            return
        if (isinstance(saved.get("iter"), int) and saved["iter"] <= self.iter
                and float(saved.get("mIoU", -1.0)) > float(self.storage.best.get("mIoU", -1.0))):
            self.storage.best = {"mIoU": float(saved["mIoU"]), "iter": saved["iter"]}

    # -- loop ----------------------------------------------------------------
    def loader(self):
        sampler = ResumableBatchSampler(len(self.train_dataset), self.batch_size, self.iters, self.seed,
                                        self.iter, self.rank, self.world)
        use_shm, why_not = shared_memory_choice(self.num_workers)
        if self.num_workers and not use_shm:
            self.log.info("[TRAIN] data workers send batches through a pipe, not shared memory: %s",
                          why_not)
        return paddle.io.DataLoader(SeededDataset(self.train_dataset), batch_sampler=sampler,
                                    num_workers=self.num_workers, collate_fn=train_collate,
                                    return_list=True, use_shared_memory=use_shm,
                                    worker_init_fn=(functools.partial(ignore_signals_in_worker, trainer_pid=os.getpid())
                                                    if self.num_workers else None))

    def train(self, resume_model: Optional[str] = None) -> Dict[str, Any]:
        """Run to ``iters``; returns ``{'iter', 'best', 'last_losses', 'stopped_by', 'early_stop'}``.

        ``stopped_by`` is the signal name when SIGINT/SIGTERM stopped the run
        (after saving), else None; ``early_stop`` the reason when early
        stopping ended it, else None. An error while loading data saves the
        state reached so far before it is raised.
        """
        if self.rank == 0:
            for what in ckpt.recover(self.save_dir):
                self.log.warning("[TRAIN] checkpoint clean-up after an interrupted run: %s", what)
        if resume_model:
            self.resume(resume_model)
        self.model.train()
        self.call("before_train")
        s = self.storage
        batches = None
        try:
            batches = iter(self.loader())
            reader_start = time.time()
            while self.iter < self.iters and not s.stopping:
                try:
                    img, label = next(batches)
                    check_batch(img, label)
                    label = train_label(label)
                except StopIteration:
                    break
                except Exception as e:
                    if s.stop_signal:  # e.g. SIGTERM to the process group killed the workers
                        self._save_on_stop()
                        break
                    raise self._data_error(e) from e
                s.reader_cost = time.time() - reader_start
                step_start = time.time()
                self.iter += 1
                s.scalars = self.run_step(img, label)
                s.batch_cost = time.time() - step_start + s.reader_cost
                self.call("after_step")
                if s.stopping:
                    self._save_on_stop()
                    break
                reader_start = time.time()
        finally:
            _shutdown(batches)
            self.call("after_train")
        return {"iter": self.iter, "best": s.best, "last_losses": s.scalars,
                "stopped_by": s.stop_signal, "early_stop": s.early_stop}

    def _save_on_stop(self) -> None:
        """The one place a stopping run saves: after a signal (unless this iteration is saved
        already) and after early stopping (always: the checkpoint must record the stop, and this
        iteration's was written before the evaluation that decided it)."""
        s = self.storage
        if self.iter == 0:
            return
        path = os.path.join(self.save_dir, f"iter_{self.iter}")
        if self.rank == 0 and (self.last_saved_iter != self.iter or s.early_stop):
            path = self.save()
        if s.stop_signal:
            self.log.warning("[TRAIN] %s received at iter %d: saved %s; continue with --resume_model %s "
                             "(or --resume_model auto)", s.stop_signal, self.iter, path, path)
        else:
            self.log.info("[TRAIN] early stop at iter %d: %s. Saved %s; the model to use is %s",
                          self.iter, s.early_stop, path, os.path.join(self.save_dir, "best_model"))

    def _data_error(self, e: Exception) -> Exception:
        """Save the state reached (the failed batch changed nothing) and return a clean error."""
        e = clean_exception(e)
        saved = None
        if self.rank == 0 and self.iter > 0 and self.last_saved_iter != self.iter:
            try:
                saved = self.save()
            except Exception as save_err:  # keep the data error as the one reported
                self.log.error("[TRAIN] could not save after the data error: %s", save_err)
        where = saved or ckpt.latest_checkpoint(self.save_dir)
        note = (f" [while loading the batch of iter {self.iter + 1}; "
                + (f"saved {where}: fix the data, then continue with --resume_model auto]" if where
                   else "no checkpoint yet]"))
        try:
            return type(e)(f"{e}{note}")
        except Exception:
            return e

    def run_step(self, img: paddle.Tensor, label: paddle.Tensor) -> Dict[str, float]:
        try:
            return self._step(img, label)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            last = ckpt.latest_checkpoint(self.save_dir)
            raise MemoryError(
                f"[TRAIN] out of memory at iter {self.iter} (batch of shape {list(img.shape)}): lower "
                f"batch_size or the crop size (RandomPaddingCrop crop_size), or use precision fp16 on GPU. "
                f"The last checkpoint is {last or 'none'}; continue with --resume_model auto. "
                f"[{str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}]") from e

    def _step(self, img: paddle.Tensor, label: paddle.Tensor) -> Dict[str, float]:
        names = self.output_names()
        with paddle.amp.auto_cast(enable=self.use_amp, level=self.amp_level):
            logits = self.net(img)
            terms = compute_losses(logits, label, self.losses, names)
        values = {k: float(v) for k, v in terms.items()}
        finite = all(np.isfinite(v) for v in values.values())
        self.storage.step_ok = finite
        if finite:
            loss = terms["loss"]
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.minimize(self.optimizer, self.scaler.scale(loss))
            else:
                loss.backward()
                self.optimizer.step()
        self.optimizer.clear_grad()
        values["lr"] = float(self.optimizer.get_lr())  # the LR this step used
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        return values

    def call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self)

