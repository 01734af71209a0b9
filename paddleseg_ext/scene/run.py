"""Many scenes: shard over processes, skip finished ones, report what failed.

Run under Paddle's launcher (``python -m paddle.distributed.launch
--nproc_per_node N tool.py ...``) each process takes a disjoint share of the
sorted scene list (every N-th scene from its rank); without the launcher one
process takes them all. A scene whose class GeoTIFF exists is complete (the
writer renames it into place last) and is skipped, so an interrupted run
re-run with the same arguments finishes only the rest.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core.predict import check_overlay_bands
from ..cvlibs.errors import ConfigError
from ..utils.infer_options import InferOptions
from ..utils.logger import get_logger
from .blend import PredictFn, check_options, predict_scene
from .raster import PROB_DTYPES, overlay_path, prob_path

DEFAULT_WINDOW = (512, 512)


def add_scene_args(p: argparse.ArgumentParser, batch_size: bool = True, overlay_bands: bool = True) -> None:
    """The scene options of predict.py, infer.py and infer_onnx.py (``batch_size``,
    ``overlay_bands``: add those options too; False where the tool has its own)."""
    g = p.add_argument_group("scenes (large / georeferenced rasters)")
    g.add_argument("--scene", action="store_true",
                   help="predict each image as a scene: read and predicted window by window (--crop_size, "
                        "--stride), written as a class GeoTIFF <save_dir>/<name>.tif with the input's CRS, "
                        "geotransform and no-data; memory set by the window and batch, not the scene")
    g.add_argument("--scene_probs", choices=PROB_DTYPES,
                   help="with --scene: also write <name>_prob.tif, one band per class")
    g.add_argument("--scene_block", type=int, default=4,
                   help="with --scene: grid cells per side of a blended block (memory vs. recomputed windows)")
    g.add_argument("--scene_overlay", action="store_true",
                   help="with --scene: also write <name>_overlay.tif, the class colours over --overlay_bands "
                        "(stretched alike over the whole scene), alpha 0 on no-data")
    if batch_size:
        g.add_argument("--batch_size", type=int, default=1, help="with --scene: windows per batch")
    if overlay_bands:
        g.add_argument("--overlay_bands", nargs="+", type=int,
                       help="with --scene_overlay: 3 bands shown as R G B, or 1 as grey; default 0 1 2")


def rank_and_world() -> Tuple[int, int]:
    """This process's rank and the number of processes (Paddle's launcher sets them; else 0, 1)."""
    import paddle.distributed as dist

    return dist.get_rank(), max(dist.get_world_size(), 1)


def shard(paths: Sequence[str], rank: int, world: int) -> List[str]:
    """This process's share of ``paths``: every ``world``-th from ``rank``."""
    return list(paths)[rank::max(world, 1)]


def scene_logger() -> logging.Logger:
    """The toolkit logger's child that every rank prints with: each process reports its own scenes."""
    get_logger()  # its handler and format
    log = logging.getLogger("paddleseg_ext.scene")
    log.setLevel(logging.INFO)
    return log


@dataclass
class SceneReport:
    """What a run did: written, skipped (already complete) and failed ``(path, reason)``."""

    written: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)

    def exit_status(self) -> int:
        """0, or 2 after a run in which scenes failed (named on stderr)."""
        if not self.failed:
            return 0
        shown = ", ".join(p for p, _ in self.failed[:5]) + \
            (f" and {len(self.failed) - 5} more" if len(self.failed) > 5 else "")
        print(f"error: {len(self.failed)} scene(s) failed (reasons above): {shown}", file=sys.stderr)
        return 2


def scene_output(path: str, base: Optional[str], save_dir: str) -> str:
    from ..core.predict import output_stem

    return os.path.join(save_dir, output_stem(path, base) + ".tif")


def predict_scenes(paths: Sequence[str], base: Optional[str], save_dir: str, predict_fn: PredictFn,
                   transforms: Any, output: str = "logits", options: Optional[InferOptions] = None,
                   batch_size: int = 1, block_cells: int = 4,
                   cmap: Optional[Sequence[int]] = None, probs: Optional[str] = None,
                   tag: str = "[SCENE]", rank: Optional[int] = None, world: Optional[int] = None,
                   overlay: bool = False, overlay_bands: Optional[Sequence[int]] = None) -> SceneReport:
    """Predict this process's share of ``paths`` into ``save_dir`` (see :func:`predict_scene`).

    The window and stride are ``options.crop_size`` / ``options.stride`` (default
    :data:`DEFAULT_WINDOW`, stride 3/4 of the window); a scene is always predicted window
    by window, so ``is_slide`` changes nothing.

    A scene that cannot be read (file, band count, window) is reported and
    the run goes on; the report lists it.

    Raises:
        ConfigError: ``options.aug_eval`` (multi-scale / flip inference of a whole image).
        ValueError: a bad window, stride, batch or output (see :func:`check_options`).
    """
    log = scene_logger()
    options = options or InferOptions()
    if options.aug_eval:
        raise ConfigError("scenes are predicted window by window; multi-scale / flip inference (--aug_eval, "
                          "--aug_pred or test_config aug_eval) is not available with them")
    window, stride = check_options(output, batch_size, block_cells, options.crop_size or DEFAULT_WINDOW,
                                   options.stride, probs)
    if overlay:
        check_overlay_bands(overlay_bands, getattr(transforms, "img_channels", 3))
    if rank is None or world is None:
        rank, world = rank_and_world()
    mine = shard(sorted(paths), rank, world)
    report = SceneReport()
    tag = f"{tag} rank {rank}/{world}" if world > 1 else tag
    log.info("%s %d scene(s) for this process (of %d) -> %s; window %s, stride %s, batch %d", tag, len(mine),
             len(paths), save_dir, "x".join(map(str, window)),
             "x".join(map(str, stride)), batch_size)
    for path in mine:
        out = scene_output(path, base, save_dir)
        if os.path.isfile(out):
            report.skipped.append(path)
            log.info("%s skip %s: %s exists (complete)", tag, path, out)
            continue
        # A killed run leaves its temporary files; this scene is this process's alone to write.
        for final in (out, prob_path(out), overlay_path(out)):
            for stale in glob.glob(glob.escape(final) + ".*.part"):
                os.remove(stale)
        try:
            predict_scene(path, out, predict_fn, transforms, output, window, stride, batch_size, block_cells,
                          cmap, probs, overlay=overlay, overlay_bands=overlay_bands)
        except (ValueError, OSError, MemoryError) as e:
            report.failed.append((path, str(e)))
            log.warning("%s failed %s: %s", tag, path, e)
            continue
        report.written.append(out)
        log.info("%s wrote %s", tag, out)
    log.info("%s done: %d written, %d skipped (complete), %d failed", tag, len(report.written),
             len(report.skipped), len(report.failed))
    return report


def scene_kwargs(args: Any) -> Dict[str, Any]:
    """predict_scenes keyword arguments from the parsed ``add_scene_args`` options (the
    window and stride come with the :class:`InferOptions`)."""
    if getattr(args, "batch_size", 1) < 1 or args.scene_block < 1:
        raise ValueError(f"--batch_size and --scene_block must be >= 1, got "
                         f"{getattr(args, 'batch_size', 1)}, {args.scene_block}")
    return dict(batch_size=getattr(args, "batch_size", 1),
                block_cells=args.scene_block, probs=args.scene_probs, overlay=args.scene_overlay,
                overlay_bands=getattr(args, "overlay_bands", None))


def dygraph_predict_fn(model: Any) -> PredictFn:
    """The predict function of an eval-mode Paddle model: ``[N, C, h, w]`` -> logits ``[N, K, h, w]``."""
    import paddle

    from ..core.infer import inference

    model.eval()

    def run(batch: Any) -> Any:
        with paddle.no_grad():
            return inference(model, paddle.to_tensor(batch)).numpy()

    return run
