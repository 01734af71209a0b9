"""Predict one scene window by window and write it block by block.

The predict function is the one interface every runner offers (dygraph
model, Paddle Inference, onnxruntime): ``predict_fn(batch)`` takes
``[N, C, h, w]`` float32 (the val transforms applied) and returns

- ``output="logits"`` or ``"probs"``: ``[N, K, h, w]`` scores. Overlapping
  windows are averaged, exactly as
  :func:`paddleseg_ext.core.infer.slide_inference` averages them (same
  windows, added in the same order, divided by the same counts);
- ``output="classes"``: ``[N, h, w]`` class ids (a model exported with
  ``output_op: argmax``). Class ids cannot be averaged, so each pixel takes
  the class of the window whose centre part holds it (overlaps split in
  the middle).

Memory: a block (``block_cells`` grid cells per side) is blended at a time;
the windows it shares with the next block are kept, the rest dropped, so
the peak is set by the window, the batch and ``block_cells``, not by the scene.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .overlay import SceneOverlay
from .raster import NODATA_CLASS, PROB_DTYPES, SceneReader, SceneWriter, box_text, gdal_env, model_pixels
from .windows import Box, WindowPlan

OUTPUTS = ("logits", "probs", "classes")
PredictFn = Callable[[np.ndarray], np.ndarray]


def softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def window_input(reader: SceneReader, box: Box, transforms: Any) -> np.ndarray:
    """One window through the reader and the val transforms: ``[C, h, w]`` float32.

    The pixels get exactly the conversion :func:`read_image` gives a TIFF
    (bands in stored order, uint16 scaled to 0..255), then the transforms.

    Raises:
        ValueError: the transforms change the window's size (scene inference
            needs size-keeping val transforms, e.g. ``Normalize``).
    """
    img = model_pixels(reader.read(box), transforms, reader.path)
    data = transforms({"img": img, "trans_info": [], "gt_fields": []})
    out = data["img"]
    if out.shape[1:] != (box[2], box[3]) or data.get("trans_info"):
        raise ValueError(f"scene inference needs val transforms that keep the image size (such as "
                         f"Normalize); {transforms!r} turned the {box[2]}x{box[3]} {box_text(box)} of "
                         f"{reader.path} into {out.shape[1]}x{out.shape[2]} ({data.get('trans_info')})")
    return out


class _Windows:
    """Window outputs computed in batches and kept while a later block still needs them."""

    def __init__(self, reader: SceneReader, plan: WindowPlan, transforms: Any, predict_fn: PredictFn,
                 output: str, batch_size: int) -> None:
        self.reader, self.plan, self.transforms = reader, plan, transforms
        self.predict_fn, self.output, self.batch_size = predict_fn, output, batch_size
        self.cache: Dict[Tuple[int, int], np.ndarray] = {}

    def get(self, keys: Sequence[Tuple[int, int]]) -> Dict[Tuple[int, int], np.ndarray]:
        todo = [k for k in keys if k not in self.cache]
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            boxes = [self.plan.window(*k) for k in chunk]
            batch = np.stack([window_input(self.reader, b, self.transforms) for b in boxes])
            out = np.asarray(self.predict_fn(batch))
            self._check(out, batch)
            for k, o in zip(chunk, out):
                self.cache[k] = o
        return {k: self.cache[k] for k in keys}

    def keep_only(self, keys: Sequence[Tuple[int, int]]) -> None:
        wanted = set(keys)
        for k in [k for k in self.cache if k not in wanted]:
            del self.cache[k]

    def _check(self, out: np.ndarray, batch: np.ndarray) -> None:
        n, _, h, w = batch.shape
        ok = out.shape[0] == n and out.shape[-2:] == (h, w) and out.ndim == (3 if self.output == "classes" else 4)
        if not ok:
            want = f"[{n}, {h}, {w}]" if self.output == "classes" else f"[{n}, K, {h}, {w}]"
            raise ValueError(f"the predict function returned shape {list(out.shape)} for a batch "
                             f"{list(batch.shape)}; output={self.output!r} needs {want}")


def _blend(block: Box, plan: WindowPlan, outs: Dict[Tuple[int, int], np.ndarray]) -> np.ndarray:
    """``[K, h, w]`` mean of the window scores over ``block`` (slide_inference's sum / count)."""
    y, x, h, w = block
    acc: Optional[np.ndarray] = None
    for (r, c), o in outs.items():  # raster order: the order slide_inference adds windows in
        wy, wx, wh, ww = plan.window(r, c)
        y0, y1, x0, x1 = max(wy, y), min(wy + wh, y + h), max(wx, x), min(wx + ww, x + w)
        if acc is None:
            acc = np.zeros((o.shape[0], h, w), np.float32)
        acc[:, y0 - y:y1 - y, x0 - x:x1 - x] += o[:, y0 - wy:y1 - wy, x0 - wx:x1 - wx]
    return acc / plan.count(block)[None]


def _centre_classes(block: Box, plan: WindowPlan, outs: Dict[Tuple[int, int], np.ndarray]) -> np.ndarray:
    """``[h, w]`` classes, each pixel from the window whose centre part holds it."""
    y, x, h, w = block
    own_r, own_c = plan.rows.owner(y, y + h), plan.cols.owner(x, x + w)
    out = np.zeros((h, w), np.int64)
    for (r, c), o in outs.items():
        rows, cols = np.nonzero(own_r == r)[0], np.nonzero(own_c == c)[0]
        if rows.size and cols.size:
            wy, wx = plan.window(r, c)[:2]
            out[np.ix_(rows, cols)] = o[np.ix_(rows + y - wy, cols + x - wx)]
    return out


def check_options(output: str, batch_size: int, block_cells: int, window: Sequence[int],
                  stride: Optional[Sequence[int]], probs: Optional[str] = None
                  ) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Validated ``(window, stride)``; ``stride`` defaults to three quarters of the window."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if probs not in (None,) + PROB_DTYPES:
        raise ValueError(f"probabilities must be one of {', '.join(PROB_DTYPES)}, got {probs!r}")
    if probs and output == "classes":
        raise ValueError("class probabilities need a model that outputs scores; this one outputs class ids "
                         "(export it with --output_op softmax or none)")
    if batch_size < 1 or block_cells < 1:
        raise ValueError(f"batch_size and block_cells must be >= 1, got {batch_size}, {block_cells}")
    win = (int(window[0]), int(window[1]))
    step = (int(stride[0]), int(stride[1])) if stride else (max(win[0] * 3 // 4, 1), max(win[1] * 3 // 4, 1))
    if min(win + step) < 1:
        raise ValueError(f"window {win} and stride {step} must be positive")
    if step[0] > win[0] or step[1] > win[1]:
        raise ValueError(f"stride {step} is larger than the window {win} (w, h): pixels between windows "
                         f"would get no prediction; use a stride <= the window")
    return win, step


def iter_blocks(reader: SceneReader, plan: WindowPlan, predict_fn: PredictFn, transforms: Any,
                output: str = "logits", batch_size: int = 1
                ) -> Iterator[Tuple[Box, np.ndarray, Optional[np.ndarray]]]:
    """Blend the scene block by block, in raster order.

    Yields:
        ``(block, classes [h, w] int64, scores [K, h, w] float32 or None)``:
        the mean of the window scores (``output`` logits / probs), or None
        for class-id models (centre crops).
    """
    blocks = list(plan.blocks())
    needs = plan.windows_owning if output == "classes" else plan.windows_over
    wins = _Windows(reader, plan, transforms, predict_fn, output, batch_size)
    for i, block in enumerate(blocks):
        outs = wins.get(needs(block))
        if output == "classes":
            yield block, _centre_classes(block, plan, outs), None
        else:
            scores = _blend(block, plan, outs)
            yield block, scores.argmax(axis=0), scores
        if i + 1 < len(blocks):
            wins.keep_only(needs(blocks[i + 1]))


def predict_scene(path: str, out_path: str, predict_fn: PredictFn, transforms: Any, output: str = "logits",
                  window: Sequence[int] = (512, 512), stride: Optional[Sequence[int]] = None,
                  batch_size: int = 1, block_cells: int = 4, cmap: Optional[Sequence[int]] = None,
                  probs: Optional[str] = None, progress: bool = True, overlay: bool = False,
                  overlay_bands: Optional[Sequence[int]] = None) -> str:
    """Predict the scene ``path`` and write ``out_path`` (class GeoTIFF; see :class:`SceneWriter`).

    Args:
        path: the input raster.
        out_path: the class GeoTIFF to write (``*_prob.tif`` beside it with ``probs``).
        predict_fn: batch -> scores or classes (module docstring).
        transforms: the val transforms (a ``Compose``: ``img_channels``, ``to_rgb``).
        output: ``logits``, ``probs`` or ``classes``: what ``predict_fn`` returns.
        window, stride: ``(w, h)`` of the sliding window; ``stride`` defaults
            to three quarters of the window.
        batch_size: windows per ``predict_fn`` call.
        block_cells: grid cells per side of a written block.
        cmap: flat RGB palette of the colour table.
        probs: also write class probabilities, ``uint8`` or ``float16``.
        progress: show a progress bar (pixels written).
        overlay: also write ``*_overlay.tif``, the class colours over
            ``overlay_bands`` (see :class:`SceneOverlay`).
        overlay_bands: 3 bands shown as RGB or 1 as grey; default 0, 1, 2 (0 with fewer bands).

    Returns:
        ``out_path``, written only when the whole scene is done.

    Raises:
        ValueError: a bad option, an unreadable scene or window, the wrong
            band count (messages name the file and window).
    """
    from ..utils.visualize import get_color_map_list

    window, stride = check_options(output, batch_size, block_cells, window, stride, probs)
    cmap = cmap or get_color_map_list(256)
    with gdal_env(), SceneReader(path, getattr(transforms, "img_channels", 3)) as reader:
        plan = WindowPlan(reader.height, reader.width, window, stride, block_cells)
        look = SceneOverlay.of(reader, transforms, overlay_bands, cmap) if overlay else None
        writer: Optional[SceneWriter] = None
        bar = tqdm(total=reader.height * reader.width, unit="px", unit_scale=True, disable=not progress,
                   desc=f"[SCENE] {os.path.basename(path)}", dynamic_ncols=True, mininterval=1.0)
        try:
            for block, classes, scores in iter_blocks(reader, plan, predict_fn, transforms, output, batch_size):
                if writer is None:
                    k = 0 if scores is None else scores.shape[0]
                    if k > NODATA_CLASS:
                        raise ValueError(f"the model has {k} classes; a uint8 class map holds at most "
                                         f"{NODATA_CLASS} (0..{NODATA_CLASS - 1}; {NODATA_CLASS} is no-data)")
                    writer = SceneWriter(out_path, reader.profile, cmap, probs, k, overlay)
                prob = None
                if probs:
                    prob = softmax(scores) if output == "logits" else scores
                rgb = None if look is None else look.render(model_pixels(reader.read(block), transforms, path),
                                                            classes)
                writer.write(block, classes, reader.valid(block), prob, rgb)
                bar.update(block[2] * block[3])
            writer.commit()
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        finally:
            bar.close()
    return out_path
