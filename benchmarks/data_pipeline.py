"""Data pipeline: decode + Cityscapes train transforms, ours vs PaddleSeg 2.8's.

What is measured, in images per second on synthetic Cityscapes-sized data
(2048x1024 RGB PNGs with 19-class + 255 trainId label PNGs, written to the
scratch directory in the real ``leftImg8bit``/``gtFine`` layout):

* ``decode``: read image + label from file and emit a CHW float32 image and an
  HW int64 label, with each project's ``Compose`` and no transforms;
* ``decode + train transforms``, single process: each project's own
  ``Cityscapes`` dataset, ``dataset[i]``. Ours is built by ``SegBuilder`` from
  ``configs/_base_/cityscapes.yml`` (what ``tools/train.py`` builds); PaddleSeg's
  gets :func:`paddleseg_peer.train_transforms` (its shipped Cityscapes list);
* the same with a ``paddle.io.DataLoader`` of ``ctx.threads`` workers, each
  side's loader set up as its trainer sets it up: ours exactly as
  ``Trainer.loader`` (``SeededDataset``, ``train_collate``, shared memory where
  ``/dev/shm`` has room),
  PaddleSeg's as its ``core/train.py`` (default collate, shared memory, its
  ``worker_init_fn``), plus a per-sample seeding wrapper.

Why: the issue's target is ours >= 1.5x PaddleSeg's images/s; training on a
CPU-bound box is limited by this pipeline as soon as the model is small.

Fairness: both sides do the same work. Every sample is seeded (python and
numpy RNGs) right before it is loaded, each side with its own seeds, picked so
that both draw the *same* ResizeStepScaling factor for sample k, cycling
through all seven factors 0.5..2.0 (the factor decides most of the cost: 2.0
resizes to 4096x2048; one shared seed would give the two projects different
factors). Outputs are brought to the same form (contiguous CHW
float32 image, int64 label) inside the timed region. Single-process timings
interleave ours and PaddleSeg's in rounds (:func:`common.interleaved_medians`);
loader timings alternate whole loaders, fresh workers each round, timing a
fixed number of batches after a warm-up that absorbs worker start-up.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from common import ROOT, Context, Section, interleaved_medians, ratio

BASE_CONFIG = "configs/_base_/cityscapes.yml"
# ResizeStepScaling(0.5, 2.0, 0.25): the seven factors both pipelines draw from.
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
COLUMNS = ["pipeline", "mode", "ours img/s", "PaddleSeg img/s", "ours / PaddleSeg"]
CITY = "benchcity"
SEED = 2024


@dataclasses.dataclass
class Plan:
    """Sizes and counts of one run.

    Attributes:
        size: synthetic image ``(width, height)``.
        crop: RandomPaddingCrop ``(width, height)``.
        images: distinct image/label files written.
        per_call: samples per timed single-process call (a multiple of 7
            visits every scale factor equally often).
        batch_size: loader batch size.
        loader_warmup: batches consumed before the loader clock starts.
        loader_batches: batches timed per loader round.
        loader_rounds: loader rounds per side (median reported).
    """

    size: Tuple[int, int]
    crop: Tuple[int, int]
    images: int
    per_call: int
    batch_size: int
    loader_warmup: int
    loader_batches: int
    loader_rounds: int


def make_plan(ctx: Context) -> Plan:
    if ctx.quick:
        return Plan(size=(256, 128), crop=(128, 64), images=3, per_call=7, batch_size=2,
                    loader_warmup=2, loader_batches=7, loader_rounds=2)
    return Plan(size=(2048, 1024), crop=(1024, 512), images=4, per_call=7, batch_size=2,
                loader_warmup=2, loader_batches=14, loader_rounds=3)


# --------------------------------------------------------------------------- #
# Synthetic Cityscapes
# --------------------------------------------------------------------------- #
def _smooth_field(rng: np.random.Generator, w: int, h: int, cells: Tuple[int, int],
                  channels: int, interp: int) -> np.ndarray:
    import cv2

    grid = rng.uniform(0.0, 1.0, (cells[1], cells[0], channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=interp)
    return out.reshape(h, w, channels)


def synth_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """An HxWx3 uint8 street-scene-like image: smooth sky-to-road gradient,
    flat-ish "objects" with texture, sensor noise.

    Pure noise would not compress and smooth gradients alone would compress
    far better than photos; this mix gives PNGs of about the size of real
    Cityscapes frames (about 2.2 MB at 2048x1024), so decode cost is realistic.
    """
    import cv2

    img = 40.0 + 170.0 * _smooth_field(rng, w, h, (12, 6), 3, cv2.INTER_CUBIC)
    img *= np.linspace(1.1, 0.7, h, dtype=np.float32)[:, None, None]  # bright sky, darker road
    for _ in range(60):  # buildings, cars, signs: blocks with a shaded interior
        bw, bh = int(rng.integers(w // 40, w // 5)), int(rng.integers(h // 30, h // 4))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        colour = rng.uniform(20, 235, 3).astype(np.float32)
        shade = np.linspace(0.85, 1.15, bw, dtype=np.float32)[None, :, None]
        img[y:y + bh, x:x + bw] = colour * shade
    img += 18.0 * (_smooth_field(rng, w, h, (w // 8, h // 8), 3, cv2.INTER_LINEAR) - 0.5)
    img += rng.normal(0.0, 1.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def synth_label(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """An HxW uint8 trainId map: class regions in [0, 19), void (255) blobs and
    the ego-vehicle strip at the bottom, like ``*_gtFine_labelTrainIds.png``."""
    import cv2

    coarse = rng.integers(0, 19, (6, 12)).astype(np.uint8)
    label = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST)
    for _ in range(250):
        bw, bh = int(rng.integers(w // 60, w // 6)), int(rng.integers(h // 40, h // 5))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        label[y:y + bh, x:x + bw] = 255 if rng.uniform() < 0.15 else int(rng.integers(0, 19))
    label[int(h * 0.92):] = 255
    return label


def write_cityscapes(root: Path, count: int, size: Tuple[int, int], seed: int = SEED
                     ) -> List[Tuple[Path, Path]]:
    """Write ``count`` image/label pairs in the Cityscapes train layout under ``root``."""
    import cv2

    rng = np.random.default_rng(seed)
    img_dir = root / "leftImg8bit" / "train" / CITY
    lab_dir = root / "gtFine" / "train" / CITY
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    w, h = size
    for i in range(count):
        stem = f"{CITY}_{i:06d}_000019"
        img_path = img_dir / f"{stem}_leftImg8bit.png"
        lab_path = lab_dir / f"{stem}_gtFine_labelTrainIds.png"
        # zlib level 6 (libpng's default, what most tools write), not OpenCV's faster level 1.
        cv2.imwrite(str(img_path), synth_image(rng, w, h), [cv2.IMWRITE_PNG_COMPRESSION, 6])
        cv2.imwrite(str(lab_path), synth_label(rng, w, h), [cv2.IMWRITE_PNG_COMPRESSION, 6])
        pairs.append((img_path, lab_path))
    return pairs


# --------------------------------------------------------------------------- #
# The two pipelines
# --------------------------------------------------------------------------- #
def build_ours(root: Path, crop: Tuple[int, int]) -> Any:
    """Our Cityscapes train dataset, built from the base config like tools/train.py does."""
    from paddleseg_ext.cvlibs import Config, SegBuilder

    path = str(ROOT / BASE_CONFIG)
    transforms = Config(path).dic["train_dataset"]["transforms"]
    i = next(k for k, t in enumerate(transforms) if t.get("type") == "RandomPaddingCrop")
    opts = [f"train_dataset.dataset_root={root}",
            f"train_dataset.transforms.{i}.crop_size=[{crop[0]}, {crop[1]}]"]
    return SegBuilder(Config(path, opts=opts)).train_dataset


def build_peer(root: Path, crop: Tuple[int, int]) -> Any:
    """PaddleSeg's Cityscapes train dataset with its shipped Cityscapes transforms."""
    import paddleseg_peer

    paddleseg_peer.load()
    from paddleseg.datasets import Cityscapes

    # Its Cityscapes wraps the list in its own Compose (which rejects a Compose).
    transforms = paddleseg_peer.train_transforms(crop).transforms
    return Cityscapes(transforms=transforms, dataset_root=str(root), mode="train")


def our_decode(dataset: Any) -> Callable[[Any, Any], Dict[str, Any]]:
    """Decode only, ours: the dataset's ``Compose`` reader with no transforms."""
    from paddleseg_ext.transforms import Compose

    compose = Compose([], to_rgb=dataset.transforms.to_rgb, img_channels=dataset.img_channels)
    return lambda img, lab: compose({"img": img, "label": lab, "gt_fields": ["label"]})


def peer_decode() -> Callable[[Any, Any], Dict[str, Any]]:
    """Decode only, PaddleSeg: its ``Compose`` reader with no transforms."""
    from paddleseg.transforms import Compose

    compose = Compose([])
    return lambda img, lab: compose({"img": img, "label": lab, "gt_fields": ["label"],
                                     "trans_info": []})


def finish(sample: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """The network-ready pair both sides must end with: contiguous CHW float32, int64 label.

    A no-op for ours (its Compose already does this); PaddleSeg's Compose
    returns a transposed view and the uint8 label, which its trainer converts
    later, so that work is counted here.
    """
    img = np.ascontiguousarray(sample["img"], dtype=np.float32)
    label = sample["label"].astype(np.int64, copy=False)
    return img, label


def transform_list(dataset: Any) -> List[Any]:
    """The transform objects inside a dataset's Compose."""
    t = dataset.transforms
    return list(getattr(t, "transforms", t))


def describe(transforms: Sequence[Any]) -> str:
    """Our transforms as ``Name(arg=value, ...)`` (their own reprs)."""
    return ", ".join(repr(t) for t in transforms)


def _params(t: Any) -> Dict[str, Any]:
    """A transform's public attributes, in (w, h) / per-channel form for comparison."""
    params = {k: v for k, v in vars(t).items() if not k.startswith("_")}
    if type(t).__module__.startswith("paddleseg.") and "crop_size" in params:
        params["crop_size"] = tuple(reversed(params["crop_size"]))  # PaddleSeg keeps (h, w)
    for key in ("mean", "std"):  # PaddleSeg's Normalize broadcasts one value to all channels
        if key in params and np.size(params[key]) == 1:
            params[key] = [float(np.ravel(params[key])[0])] * 3
    return params


def _same_value(a: Any, b: Any) -> bool:
    """Equal as numbers (int 18 == float 18.0, tuple == list) or else as objects."""
    try:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return x.shape == y.shape and bool(np.allclose(x, y))
    except (TypeError, ValueError):
        return a == b


def compare_transforms(ours: Sequence[Any], peer: Sequence[Any]) -> List[str]:
    """Differences between the two lists: order, names, shared parameters' values."""
    names = [type(t).__name__ for t in ours], [type(t).__name__ for t in peer]
    if names[0] != names[1]:
        return [f"transform lists differ: ours {names[0]}, PaddleSeg {names[1]}"]
    diffs = []
    for a, b in zip(ours, peer):
        pa, pb = _params(a), _params(b)
        for key in sorted(set(pa) & set(pb)):
            va, vb = pa[key], pb[key]
            if not _same_value(va, vb):
                diffs.append(f"{type(a).__name__}.{key}: ours {va!r}, PaddleSeg {vb!r}")
    return diffs


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def _drawn_scale(step_scaling: Any, seed: int) -> float:
    """The factor a seeded ResizeStepScaling draws, read off an 8x8 probe image."""
    _seed_all(seed)
    out = step_scaling({"img": np.zeros((8, 8, 3), np.float32), "gt_fields": [],
                        "trans_info": []})
    return out["img"].shape[1] / 8.0


def scheduled_seeds(count: int, first_transform: Any, base: int = SEED) -> Optional[List[int]]:
    """Per-sample seeds under which a pipeline draws factor ``SCALES[k % 7]`` for sample ``k``.

    The two projects turn a seed into a factor differently (with one seed
    they never agree), so each side gets its own seeds for the same factor
    schedule. Nothing draws random numbers before ResizeStepScaling (decode is
    deterministic), so probing that transform alone predicts what the whole
    pipeline draws. Returns None when the pipeline does not start with
    ResizeStepScaling.
    """
    if type(first_transform).__name__ != "ResizeStepScaling":
        return None
    seeds, candidate = [], base
    for k in range(count):
        want = SCALES[k % len(SCALES)]
        for candidate in range(candidate + 1, candidate + 10_000):
            if abs(_drawn_scale(first_transform, candidate) - want) < 1e-6:
                break
        else:  # the transform never draws this factor: its settings are not the ones expected
            return None
        seeds.append(candidate)
    return seeds


# --------------------------------------------------------------------------- #
# Single process
# --------------------------------------------------------------------------- #
def sample_loop(get: Callable[[int], Dict[str, Any]], n_files: int, seeds: Sequence[int]
                ) -> Callable[[], None]:
    """One timed call: load ``len(seeds)`` seeded samples, cycling over the files."""
    def call() -> None:
        for k, seed in enumerate(seeds):
            _seed_all(seed)
            finish(get(k % n_files))
    return call


# --------------------------------------------------------------------------- #
# Loaders
# --------------------------------------------------------------------------- #
class SeededItems:
    """Makes PaddleSeg's dataset take ``(index, seed)`` items like our ``SeededDataset``
    (the only addition on its side: seeding, so both sides draw the same scales)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]) -> Dict[str, Any]:
        index, seed = item
        _seed_all(seed)
        return self.dataset[index]


def fixed_batches(batches: List[List[Tuple[int, int]]]) -> Any:
    """A ``paddle.io.BatchSampler`` yielding the given ``(index, seed)`` batches."""
    import paddle

    class _Fixed(paddle.io.BatchSampler):
        def __init__(self) -> None:  # no super().__init__: no dataset/sampler behind it
            self.batch_size = len(batches[0])
            self.drop_last = True

        def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
            return iter(batches)

        def __len__(self) -> int:
            return len(batches)

    return _Fixed()


def our_loader(dataset: Any, batches: List[List[Tuple[int, int]]], workers: int,
               shared_memory: Optional[bool] = None) -> Any:
    """Our training loader, set up as ``Trainer.loader`` sets it up (``shared_memory``:
    force the worker-to-trainer transfer; default, the trainer's choice)."""
    import paddle

    from paddleseg_ext.core.data import (SeededDataset, ignore_signals_in_worker,
                                         shared_memory_choice, train_collate)

    return paddle.io.DataLoader(SeededDataset(dataset), batch_sampler=fixed_batches(batches),
                                num_workers=workers, collate_fn=train_collate, return_list=True,
                                use_shared_memory=(shared_memory_choice(workers)[0]
                                                   if shared_memory is None else shared_memory),
                                worker_init_fn=(functools.partial(ignore_signals_in_worker,
                                                                  trainer_pid=os.getpid())
                                                if workers else None))


def peer_loader(dataset: Any, batches: List[List[Tuple[int, int]]], workers: int) -> Any:
    """PaddleSeg's training loader, set up as its ``core/train.py`` sets it up."""
    import paddle
    from paddleseg.utils import worker_init_fn

    return paddle.io.DataLoader(SeededItems(dataset), batch_sampler=fixed_batches(batches),
                                num_workers=workers, return_list=True,
                                worker_init_fn=worker_init_fn)


def loader_rate(make: Callable[[], Any], warmup: int, images: int) -> float:
    """Images/s of one fresh loader over the batches after the first ``warmup``."""
    import paddle

    loader = make()
    it = iter(loader)
    try:
        for _ in range(warmup):
            next(it)
        start = time.perf_counter()
        for batch in it:
            # Both trainers cast the label batch to int64 on arrival (ours in
            # Trainer.train, PaddleSeg's in core/train.py): counted for both.
            label = batch[1] if isinstance(batch, (list, tuple)) else batch["label"]
            if label.dtype != paddle.int64:
                label.astype("int64")
        elapsed = time.perf_counter() - start
    finally:
        del it, loader
    return images / elapsed


# --------------------------------------------------------------------------- #
# Section
# --------------------------------------------------------------------------- #
def _row(pipeline: str, mode: str, ours: float, peer: Optional[float]) -> Dict[str, Any]:
    return {"pipeline": pipeline, "mode": mode, "ours img/s": ours,
            "PaddleSeg img/s": peer, "ours / PaddleSeg": ratio(ours, peer)}


def run(ctx: Context) -> Section:
    import paddleseg_peer

    from paddleseg_ext.core.data import shared_memory_choice

    plan = make_plan(ctx)
    section = Section("data", "Data pipeline: decode + Cityscapes train transforms, images/s "
                      f"(ours vs PaddleSeg {paddleseg_peer.PADDLESEG_VERSION})", COLUMNS)
    root = ctx.workdir / "cityscapes_synth"
    w, h = plan.size
    ctx.log(f"[data] writing {plan.images} synthetic {w}x{h} image/label PNG pairs")
    pairs = write_cityscapes(root, plan.images, plan.size)
    img_mb = statistics.mean(p[0].stat().st_size for p in pairs) / 2 ** 20
    lab_kb = statistics.mean(p[1].stat().st_size for p in pairs) / 2 ** 10

    ours = build_ours(root, plan.crop)
    peer, why_not = None, None
    try:
        peer = build_peer(root, plan.crop)
    except paddleseg_peer.PeerUnavailable as e:
        why_not = str(e)
    files = [(str(a), str(b)) for a, b in ours.file_list]
    if peer is not None and [tuple(map(str, p)) for p in peer.file_list] != files:
        raise RuntimeError("ours and PaddleSeg's Cityscapes list the files in different orders")

    datasets = {"ours": ours} if peer is None else {"ours": ours, "peer": peer}
    n_seeds = max(plan.per_call, (plan.loader_warmup + plan.loader_batches) * plan.batch_size)
    seeds = {k: scheduled_seeds(n_seeds, transform_list(ds)[0]) for k, ds in datasets.items()}
    matched = all(v is not None for v in seeds.values())
    if not matched:
        seeds = {k: [SEED + i for i in range(n_seeds)] for k in datasets}

    def single_process(gets: Dict[str, Callable[[int], Dict[str, Any]]]) -> Dict[str, float]:
        fns = {k: sample_loop(get, len(files), seeds[k][:plan.per_call]) for k, get in gets.items()}
        ms = interleaved_medians(fns, ctx.warmup, ctx.repeats)
        return {k: plan.per_call * 1e3 / v for k, v in ms.items()}

    # -- decode only, single process (deterministic: the seeds do not matter)
    ctx.log("[data] decode, single process")
    decoders = {"ours": our_decode(ours)}
    if peer is not None:
        decoders["peer"] = peer_decode()
    rate = single_process({k: (lambda i, d=d: d(*files[i])) for k, d in decoders.items()})
    section.rows.append(_row("decode (image + label)", "1 process", rate["ours"], rate.get("peer")))

    # -- decode + transforms, single process
    ctx.log("[data] decode + train transforms, single process")
    rate = single_process({k: ds.__getitem__ for k, ds in datasets.items()})
    section.rows.append(_row("decode + train transforms", "1 process", rate["ours"],
                             rate.get("peer")))

    # -- decode + transforms, DataLoader with workers
    bs = plan.batch_size
    n_batches = plan.loader_warmup + plan.loader_batches
    batches = {k: [[(i % len(files), seeds[k][i]) for i in range(b * bs, (b + 1) * bs)]
                   for b in range(n_batches)] for k in datasets}
    timed_images = plan.loader_batches * bs
    makers = {"ours": lambda: our_loader(ours, batches["ours"], ctx.threads)}
    if shared_memory_choice(ctx.threads)[0]:  # what the shared memory buys, same rounds
        makers["ours_pipe"] = lambda: our_loader(ours, batches["ours"], ctx.threads, False)
    if peer is not None:
        makers["peer"] = lambda: peer_loader(peer, batches["peer"], ctx.threads)
    ctx.log(f"[data] DataLoader, {ctx.threads} workers")
    rates: Dict[str, List[float]] = {k: [] for k in makers}
    for r in range(plan.loader_rounds):
        # Alternate who goes first so a slow spell does not always land on one side.
        for name in (list(makers) if r % 2 == 0 else list(reversed(makers))):
            rates[name].append(loader_rate(makers[name], plan.loader_warmup, timed_images))
    rate = {k: statistics.median(v) for k, v in rates.items()}
    section.rows.append(_row("decode + train transforms",
                             f"DataLoader, {ctx.threads} workers, batch {bs}",
                             rate["ours"], rate.get("peer")))
    if "ours_pipe" in rate:
        section.rows.append(_row("decode + train transforms",
                                 f"DataLoader, {ctx.threads} workers, batch {bs}, ours through "
                                 "a pipe instead of shared memory", rate["ours_pipe"], rate.get("peer")))

    # -- notes
    section.notes.append(
        f"{plan.images} synthetic Cityscapes-layout {w}x{h} RGB PNGs (mean {img_mb:.2f} MiB; "
        f"smooth gradients + textured blocks + noise, zlib level 6) with uint8 trainId label "
        f"PNGs (mean {lab_kb:.0f} KiB; classes 0..18 and 255), seeded; crop "
        f"{plan.crop[0]}x{plan.crop[1]}; threads {ctx.threads}.")
    section.notes.append(
        f"Single process: {plan.per_call} samples per call, median of {ctx.repeats} interleaved "
        f"rounds after {ctx.warmup} warm-up. DataLoader: {ctx.threads} workers, batch {bs}, "
        f"{plan.loader_batches} batches ({timed_images} images) timed after {plan.loader_warmup} "
        f"warm-up batches, fresh loader per round, median of {plan.loader_rounds} rounds per side.")
    section.notes.append(
        "Every sample is seeded before loading" + (
            "; each side's seeds are picked so that both draw the same ResizeStepScaling "
            f"factor for sample k, cycling through {', '.join(map(str, SCALES))} (the factor "
            "sets most of the cost; flips, crop positions and distortions stay random)."
            if matched else
            " (scale factors not matched: a pipeline does not start with ResizeStepScaling)."))
    shm, why_not = shared_memory_choice(ctx.threads)
    section.notes.append(f"Ours: SegBuilder({BASE_CONFIG}).train_dataset (Cityscapes), "
                         f"transforms {describe(transform_list(ours))}; loader as Trainer.loader "
                         f"(SeededDataset, train_collate, use_shared_memory={shm}"
                         + (f": {why_not}" if why_not else "") + ").")
    if peer is not None:
        diffs = compare_transforms(transform_list(ours), transform_list(peer))
        section.notes.append(
            "PaddleSeg: paddleseg.datasets.Cityscapes with paddleseg_peer.train_transforms, the "
            "list PaddleSeg ships for Cityscapes (its configs/_base_/cityscapes.yml); loader as "
            "its "
            "core/train.py (default collate, shared memory, its worker_init_fn) over a wrapper "
            "that seeds each sample. " + (
                "Transform lists: same transforms in the same order with the same parameter "
                "values (ours adds no steps)." if not diffs else
                "Transform lists DIFFER: " + "; ".join(diffs) + "."))
        section.notes.append(
            "Same work on both sides: decode image + label from file, the transforms above, "
            "output a contiguous CHW float32 image + int64 label (PaddleSeg's transposed view and "
            "uint8 label are converted inside the timed region; its trainer casts the label "
            "later). Differences that are part of each pipeline and counted: ours checks label "
            "values on decode and after the transforms (invalid_label), works in float32 "
            "throughout; PaddleSeg's RandomDistort round-trips through uint8 PIL images.")
    else:
        section.notes.append(f"PaddleSeg rows skipped: {why_not}")
    section.notes.append("Rows are measured one after the other; on a shared machine compare the "
                         "ratio within a row, not absolute img/s across rows.")
    return section
