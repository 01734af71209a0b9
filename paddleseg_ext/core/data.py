"""Deterministic, resumable training batches.

Every sample's random augmentation is seeded from ``(seed, epoch, index)``, and
the order of each epoch is a permutation seeded from ``(seed, epoch)``. So the
batches of iteration ``k`` are a pure function of ``(seed, k)``: the same with
0 or 8 workers, and the same after a resume from a checkpoint taken at any
iteration (``train 2N == train N, resume, train N``).
"""

from __future__ import annotations

import random
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import paddle


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample of one epoch (``index=-1``: the epoch's order)."""
    return int(np.random.SeedSequence([seed, epoch, index + 1]).generate_state(1)[0])


class SeededDataset(paddle.io.Dataset):
    """Wraps a dataset: item ``(index, seed)`` seeds python/numpy RNGs, then loads."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]) -> Dict[str, Any]:
        index, seed = item
        random.seed(seed)
        np.random.seed(seed)
        return self.dataset[index]


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


def train_collate(batch: List[Dict[str, Any]]) -> Tuple[np.ndarray, np.ndarray]:
    """Stack images and labels; everything else is dropped for training."""
    try:
        imgs = np.stack([b["img"] for b in batch]).astype("float32")
        labels = np.stack([b["label"] for b in batch]).astype("int64")
    except ValueError as e:
        shapes = [(b["img"].shape, b["label"].shape, b.get("img_path")) for b in batch]
        raise ValueError(f"Training samples in one batch differ in size ({shapes}); the train "
                         "transforms must end in a fixed size (e.g. RandomPaddingCrop)") from e
    return imgs, labels
