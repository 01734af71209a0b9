"""Iteration-based training: a small loop, a step, and hooks around them.

Hooks (``paddleseg_ext.core.hooks``) do everything that is not the step:
logging, VisualDL, checkpoints, evaluation, the NaN guard, signals.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import paddle

from ..cvlibs.errors import clean_exception
from ..checkpoints import training as ckpt
from ..utils.logger import get_logger
from .data import (ResumableBatchSampler, SeededDataset, check_batch, ignore_signals_in_worker,
                   shared_memory_choice, train_collate, train_label)
from .hooks import (CheckpointHook, EvalHook, Hook, LoggerHook, NaNGuardHook, NonFiniteLossError,
                    SignalHook, VisualDLHook)
from .infer import is_out_of_memory

__all__ = ["Trainer", "compute_losses", "NonFiniteLossError"]


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


class Trainer:
    """Trains a segmentation model for a fixed number of iterations.

    Args:
        model: the network; ``forward`` returns a list of logits in training.
        optimizer: a Paddle optimizer whose LR is an ``LRScheduler`` (stepped per iteration).
        losses: ``{'types': [...], 'coef': [...]}`` from the builder.
        train_dataset: yields dicts with ``img`` (CHW) and ``label`` (HW).
        iters: total iterations.
        batch_size: per-device batch size.
        save_dir: output folder (checkpoints, ``best_model``, VisualDL logs).
        val_dataset: evaluated every ``save_interval`` when ``do_eval``.
        seed: seeds order and augmentation (see :mod:`.data`).
        nan_policy: ``'stop'`` (raise, keeping the last checkpoint) or ``'skip'`` the step.
        precision: ``'fp32'`` or ``'fp16'`` (AMP; GPU only).
        eval_kwargs: passed to :func:`~paddleseg_ext.core.val.evaluate` (aug / slide settings).
    """

    def __init__(self, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
                 losses: Dict[str, List[Any]], train_dataset: Any, iters: int, batch_size: int,
                 save_dir: str = "output", val_dataset: Any = None, save_interval: int = 1000,
                 log_iters: int = 10, keep_checkpoint_max: int = 5, num_workers: int = 0,
                 use_vdl: bool = False, do_eval: bool = False, seed: int = 0,
                 nan_policy: str = "stop", precision: str = "fp32", amp_level: str = "O1",
                 eval_kwargs: Optional[Dict[str, Any]] = None, handle_signals: bool = True,
                 extra_hooks: Sequence[Hook] = ()) -> None:
        if nan_policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be 'stop' or 'skip', got {nan_policy!r}")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        self.log = get_logger()
        self.model, self.optimizer, self.losses = model, optimizer, losses
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.iters, self.batch_size, self.save_dir = iters, batch_size, save_dir
        self.num_workers, self.seed, self.nan_policy = num_workers, seed, nan_policy
        self.use_amp = precision == "fp16" and paddle.is_compiled_with_cuda()
        if precision == "fp16" and not self.use_amp:
            self.log.warning("[TRAIN] fp16 needs a CUDA build of Paddle; training in fp32")
        self.amp_level = amp_level
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if self.use_amp else None
        self.rank = paddle.distributed.get_rank()
        self.world = paddle.distributed.get_world_size()
        self.iter = 0
        self.best = {"mIoU": -1.0, "iter": -1}
        self.stop_requested: Optional[str] = None
        self.last_saved_iter = -1
        self.net = paddle.DataParallel(model) if self.world > 1 else model
        # Order matters: the NaN guard first (a bad step is never saved); the checkpoint before
        # the evaluation (a crash or kill during eval costs nothing); VisualDL after the
        # evaluation (it logs its metrics); signals last.
        self.hooks: List[Hook] = [NaNGuardHook(), LoggerHook(log_iters),
                                  CheckpointHook(save_interval, keep_checkpoint_max)]
        if do_eval and val_dataset is not None:
            self.hooks.append(EvalHook(save_interval, eval_kwargs or {}))
        if use_vdl and self.rank == 0:
            self.hooks.append(VisualDLHook(os.path.join(save_dir, "vdl_log"), log_iters))
        if handle_signals:
            self.hooks.append(SignalHook())
        self.hooks.extend(extra_hooks)

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
        return {"iter": self.iter, "best": self.best, "seed": self.seed,
                "lr_scheduler": sched.state_dict() if sched is not None else None}

    def save(self, name: Optional[str] = None) -> str:
        """Save ``iter_N`` (or ``name``); refuses to save non-finite weights."""
        bad = [n for n, p in self.model.named_parameters() if not bool(paddle.isfinite(p).all())]
        if bad:
            last = ckpt.latest_checkpoint(self.save_dir)
            raise NonFiniteLossError(
                f"[TRAIN] parameters became NaN/Inf by iter {self.iter} (e.g. {bad[:3]}); not saved. The "
                f"last good checkpoint is {last or 'none'}. Lower the learning rate, then resume with "
                "--resume_model auto")
        path = ckpt.save_checkpoint(self.save_dir, name or f"iter_{self.iter}", self.model,
                                    self.optimizer, self.state())
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
        self.best = state.get("best", self.best)
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
        """Run to ``iters``; returns ``{'iter', 'best', 'last_losses', 'stopped_by'}``.

        ``stopped_by`` is the signal name when SIGINT/SIGTERM stopped the run
        early (after saving), else None. An error while loading data saves the
        state reached so far before it is raised.
        """
        if self.rank == 0:
            for what in ckpt.recover(self.save_dir):
                self.log.warning("[TRAIN] checkpoint clean-up after an interrupted run: %s", what)
        if resume_model:
            self.resume(resume_model)
        self.model.train()
        self.call("before_train")
        self.last: Dict[str, float] = {}
        batches = None
        try:
            batches = iter(self.loader())
            reader_start = time.time()
            while self.iter < self.iters:
                try:
                    img, label = next(batches)
                    check_batch(img, label)
                    label = train_label(label)
                except StopIteration:
                    break
                except Exception as e:
                    if self.stop_requested:  # e.g. SIGTERM to the process group killed the workers
                        self._save_on_stop()
                        break
                    raise self._data_error(e) from e
                self.reader_cost = time.time() - reader_start
                step_start = time.time()
                self.iter += 1
                self.last = self.run_step(img, label)
                self.batch_cost = time.time() - step_start + self.reader_cost
                self.call("after_step")
                if self.stop_requested:
                    break
                reader_start = time.time()
        finally:
            _shutdown(batches)
            self.call("after_train")
        return {"iter": self.iter, "best": self.best, "last_losses": self.last,
                "stopped_by": self.stop_requested}

    def _save_on_stop(self) -> None:
        if self.rank == 0 and self.iter > 0 and self.last_saved_iter != self.iter:
            path = self.save()
            self.log.warning("[TRAIN] %s received at iter %d: saved %s; continue with --resume_model auto",
                             self.stop_requested, self.iter, path)

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
        self.step_ok = finite
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

