"""Deterministic, resumable training batches.

Every sample's random augmentation is seeded from ``(seed, epoch, index)``, and
the order of each epoch is a permutation seeded from ``(seed, epoch)``. So the
batches of iteration ``k`` are a pure function of ``(seed, k)``: the same with
0 or 8 workers, and the same after a resume from a checkpoint taken at any
iteration (``train 2N == train N, resume, train N``).
"""

from __future__ import annotations

import builtins
import json
import os
import random
import signal
import time
import traceback
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import paddle


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample of one epoch (``index=-1``: the epoch's order)."""
    return int(np.random.SeedSequence([seed, epoch, index + 1]).generate_state(1)[0])


ERROR_KEY = "__error__"


class LoaderTraceback(Exception):
    """The traceback of an exception raised while loading data (shown as its cause)."""


def pack_error(e: BaseException) -> Dict[str, str]:
    """An exception as plain data that crosses the loader thread / worker -> main queue."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return {"type": type(e).__name__, "message": str(e), "traceback": tb}


def encode_error(e: BaseException) -> np.ndarray:
    """:func:`pack_error` as a uint8 array (an array always crosses Paddle's loader queue)."""
    return np.frombuffer(json.dumps(pack_error(e)).encode("utf-8"), np.uint8).copy()


def decode_error(arr: Any) -> Dict[str, str]:
    data = np.asarray(arr.numpy() if hasattr(arr, "numpy") else arr).astype(np.uint8)
    return json.loads(bytes(data.ravel()).decode("utf-8"))


def unpack_error(info: Dict[str, str]) -> Exception:
    """Rebuild a packed exception: the same builtin type (ConfigError -> ConfigError), same message.

    Paddle's own hand-over of a loader exception is unreliable: with workers
    the main thread gets ``SystemError: Blocking queue is killed`` (the message
    lost) or hangs; without workers (``num_workers=0``) the loader thread dies
    and the main thread waits forever. Errors are therefore returned as data
    and raised again here, in the main thread.
    """
    from ..cvlibs.errors import ConfigError

    name, msg = info.get("type", "RuntimeError"), info.get("message", "")
    cls = ConfigError if name == "ConfigError" else getattr(builtins, name, None)
    err: Exception = RuntimeError(f"{name}: {msg}")
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            err = cls(msg)
        except Exception:
            pass
    if info.get("traceback"):
        err.__cause__ = LoaderTraceback("\n" + info["traceback"])
    return err


class CatchErrors(paddle.io.Dataset):
    """Wraps a dataset for a DataLoader: an exception becomes ``{'__error__': ...}``
    (raise it in the main thread with :func:`raise_if_error`)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Any) -> Dict[str, Any]:
        try:
            return self.dataset[item]
        except Exception as e:
            return {ERROR_KEY: encode_error(e)}


def raise_if_error(sample: Any) -> None:
    """Raise the error a :class:`CatchErrors` sample carries (no-op for a normal sample)."""
    if isinstance(sample, dict) and ERROR_KEY in sample:
        raise unpack_error(decode_error(sample[ERROR_KEY]))


def remove_own_shared_memory(pid: Optional[int] = None, shm_dir: Optional[str] = None) -> int:
    """Unlink the shared-memory batches process ``pid`` (default: this one) created.

    Paddle names them ``paddle_<creator pid>_<n>_<random>``; the trainer unlinks each
    one once it has it. Batches still queued when the trainer is killed would otherwise
    stay in ``/dev/shm`` (RAM) until reboot, tens of MiB per kill. Returns how many.
    """
    prefix = f"paddle_{os.getpid() if pid is None else pid}_"
    shm_dir = SHM_DIR if shm_dir is None else shm_dir
    removed = 0
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(shm_dir, name))
                removed += 1
            except OSError:  # already unlinked by the trainer
                pass
    return removed


def _die_with_parent(trainer_pid: Optional[int] = None, poll: float = 0.2) -> None:
    """Exit this loader worker soon after its trainer dies, removing the batches it left
    in shared memory (a kill -9 of the trainer otherwise leaves the workers blocked
    forever and their queued batches in ``/dev/shm``).

    A daemon thread watches the parent pid rather than ``PR_SET_PDEATHSIG`` with
    SIGKILL: a SIGKILL cannot clean up, and a Python signal handler would wait for the
    main thread to leave C code; the thread runs whenever the main thread releases the
    GIL, which the loader's blocking waits and OpenCV do. ``trainer_pid`` (the
    trainer's ``os.getpid()``) also catches a trainer that died before the worker
    started; without it the current parent is taken to be the trainer.
    """
    import threading

    parent = os.getppid() if trainer_pid is None else trainer_pid

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        remove_own_shared_memory()
        os._exit(0)

    threading.Thread(target=watch, name="die-with-trainer", daemon=True).start()


def ignore_signals_in_worker(worker_id: int, trainer_pid: Optional[int] = None) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGINT and die with the trainer.

    Ctrl-C reaches the whole process group; without this the workers die at
    once and the main process cannot finish its step and save. (SIGTERM is
    left alone: Python's multiprocessing stops workers with it at exit. If a
    SIGTERM to the whole group kills the workers, the trainer sees its own
    stop request and saves anyway.) If the trainer is killed (SIGKILL), the
    workers remove their queued shared-memory batches and exit instead of
    lingering. Pass ``trainer_pid`` with ``functools.partial``, as the trainer does.
    """
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # pragma: no cover - not the main thread
        pass
    _die_with_parent(trainer_pid)


class SeededDataset(CatchErrors):
    """Wraps a dataset: item ``(index, seed)`` seeds python/numpy RNGs, then loads.

    An exception is returned as ``{'__error__': ...}`` (see :class:`CatchErrors`)
    and turned into an error batch by :func:`train_collate`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]) -> Dict[str, Any]:
        index, seed = item
        random.seed(seed)
        np.random.seed(seed)
        return super().__getitem__(index)


class ResumableBatchSampler(paddle.io.BatchSampler):
    """Yields lists of ``(index, seed)`` for iterations ``start_iter+1 ... iters``.

    Each rank takes every ``world``-th index of the epoch permutation. Batches
    never straddle epochs; the last short batch of an epoch is dropped.

    Args:
        num_samples: dataset length.
        batch_size: per-rank batch size.
        iters: last iteration (inclusive).
        seed: run seed.
        start_iter: iterations already done (resume).
        rank, world: distributed position.
    """

    def __init__(self, num_samples: int, batch_size: int, iters: int, seed: int, start_iter: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.num_samples, self.batch_size, self.iters = num_samples, batch_size, iters
        self.seed, self.start_iter, self.rank, self.world = seed, start_iter, rank, world
        self.per_epoch = (num_samples // world) // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"The training set has {num_samples} samples, fewer than one batch of "
                             f"{batch_size} per device on {world} device(s): lower batch_size")

    def epoch_batches(self, epoch: int) -> List[List[Tuple[int, int]]]:
        perm = np.random.RandomState(sample_seed(self.seed, epoch, -1)).permutation(self.num_samples)
        mine = perm[self.rank::self.world]
        return [[(int(i), sample_seed(self.seed, epoch, int(i))) for i in mine[b * self.batch_size:(b + 1) * self.batch_size]]
                for b in range(self.per_epoch)]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        it = self.start_iter
        epoch, pos = divmod(it, self.per_epoch)
        while it < self.iters:
            batches = self.epoch_batches(epoch)
            for b in batches[pos:]:
                if it >= self.iters:
                    return
                it += 1
                yield b
            epoch, pos = epoch + 1, 0

    def __len__(self) -> int:
        return max(self.iters - self.start_iter, 0)


SHM_ENV = "PADDLESEG_EXT_SHARED_MEMORY"
SHM_DIR = "/dev/shm"
# Batches in flight are about 2 per worker plus the loader's queue: tens of MiB
# for Cityscapes crops. 1 GiB leaves room for large crops and batches, and
# keeps containers with Docker's 64 MiB default on the pipe.
SHM_MIN_FREE = 1 << 30


def shared_memory_choice(num_workers: int, shm_dir: str = SHM_DIR,
                         min_free: int = SHM_MIN_FREE) -> Tuple[bool, str]:
    """Whether worker batches should travel through shared memory, and why.

    Shared memory spares the main process a pickle round trip and a copy per
    batch (our 2-worker Cityscapes loader: 1.09x images/s, docs/benchmarks.md),
    but a worker writing past a full ``/dev/shm`` dies with a bus error. So
    it is used only with workers, where ``shm_dir`` exists with at least
    ``min_free`` bytes free, and unless ``$PADDLESEG_EXT_SHARED_MEMORY`` is ``0``.

    Returns:
        ``(use_it, reason)``; ``reason`` is empty when shared memory is used.
    """
    if num_workers <= 0:
        return False, "no workers"
    from ..runtime.policy import current_policy

    if not current_policy().shared_memory:
        return False, f"{SHM_ENV} is off (the execution policy's shared_memory)"
    try:
        st = os.statvfs(shm_dir)
    except (OSError, AttributeError):  # no /dev/shm, or no statvfs (Windows)
        return False, f"{shm_dir} is not available"
    free = st.f_bavail * st.f_frsize
    if free < min_free:
        return False, (f"{shm_dir} has {free / 2 ** 20:.0f} MiB free (< {min_free / 2 ** 20:.0f} MiB; "
                       "with Docker, raise it with --shm-size)")
    return True, ""


def _stack_as(arrays: List[np.ndarray], dtype: Any) -> np.ndarray:
    """Stack equal-shape arrays into a new ``dtype`` array: one copy, cast on the way."""
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):  # checked: assignment would broadcast silently
        raise ValueError("shapes differ")
    out = np.empty((len(arrays),) + shape, dtype)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def _stack(batch: List[Dict[str, Any]]) -> Tuple[np.ndarray, np.ndarray]:
    labels = [b["label"] for b in batch]
    # uint8 labels stay uint8 (the dataset narrowed them where the classes fit):
    # 8x fewer bytes through the worker queue; the trainer casts to int64.
    label_dtype = np.uint8 if all(lab.dtype == np.uint8 for lab in labels) else np.int64
    try:
        return _stack_as([b["img"] for b in batch], np.float32), _stack_as(labels, label_dtype)
    except ValueError as e:
        shapes = [(b["img"].shape, b["label"].shape, b.get("img_path")) for b in batch]
        raise ValueError(f"Training samples in one batch differ in size ({shapes}); the train "
                         "transforms must end in a fixed size (e.g. RandomPaddingCrop)") from e


def train_collate(batch: List[Dict[str, Any]]) -> Tuple[np.ndarray, np.ndarray]:
    """Stack images (float32) and labels (uint8 if every sample's is, else int64);
    everything else is dropped for training.

    A failed sample (or a failed stack) gives an *error batch*: a 1-D image
    marker and the packed error as bytes in place of the labels;
    :func:`check_batch` raises it in the main thread.
    """
    errors = [b[ERROR_KEY] for b in batch if ERROR_KEY in b]
    if not errors:
        try:
            return _stack(batch)
        except Exception as e:
            errors = [encode_error(e)]
    return np.full((1,), -1.0, np.float32), errors[0].astype(np.int64)


def train_label(label: paddle.Tensor) -> paddle.Tensor:
    """A training label batch as the losses take it: int64 (the loader may send uint8)."""
    return label if label.dtype == paddle.int64 else label.astype("int64")


def check_batch(img: Any, label: Any) -> None:
    """Raise the error carried by an error batch of :func:`train_collate` (no-op otherwise)."""
    if len(img.shape) == 1:
        raise unpack_error(decode_error(label))
