"""Prediction on image files: colour maps and overlays."""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle
from tqdm import tqdm

from ..runtime import ExecutionPolicy, current_policy, prepare
from ..transforms.loading import read_image
from ..utils.infer_options import InferOptions
from ..utils.logger import get_logger
from ..utils.visualize import STRETCH_PERCENTILES, get_color_map_list, stretch_bands
from ..utils.visualize_outputs import apply_nodata, save_color_map, write_legend, write_overlay
from .infer import is_out_of_memory, predict_logits
from .val import out_of_memory_error

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".npy")


def get_image_list(image_path: str, missing_ok: bool = False) -> Tuple[List[str], Optional[str]]:
    """Images from a file, a folder (recursive) or a list file (first column of each line).

    Args:
        missing_ok: keep images a list file names but that do not exist (the caller
            skips them while reading), instead of raising.

    Returns:
        The image paths and the folder they are relative to (for keeping
        sub-paths in the output), or None.
    Raises:
        FileNotFoundError: the path, or (without ``missing_ok``) a file a list names, does not exist.
        ValueError: no image was found.
    """
    log = get_logger()
    if not os.path.exists(image_path):
        raise FileNotFoundError(f"--image_path not found: {image_path}")
    if os.path.isdir(image_path):
        images, skipped = [], []
        for root, _, files in os.walk(image_path):
            for f in sorted(files):
                (images if f.lower().endswith(IMAGE_EXTS) else skipped).append(os.path.join(root, f))
        if skipped:
            log.warning("[PREDICT] skipping %d non-image file(s) in %s, e.g. %s", len(skipped),
                        image_path, skipped[0])
        base: Optional[str] = image_path
    elif image_path.lower().endswith(IMAGE_EXTS):
        images, base = [image_path], None
    else:
        images, base = [], os.path.dirname(os.path.abspath(image_path))
        with open(image_path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                p = line.split()[0]
                p = p if os.path.isabs(p) else os.path.join(base, p)
                if not os.path.isfile(p) and not missing_ok:
                    raise FileNotFoundError(f"{image_path} line {n}: image not found: {p}")
                images.append(p)
    if not images:
        raise ValueError(f"No image found in {image_path} (extensions: {', '.join(IMAGE_EXTS)})")
    return sorted(images), base


def output_stem(path: str, base: Optional[str]) -> str:
    """The name an image's outputs take: its path below ``base`` (the folder or list file
    :func:`get_image_list` read), without extension; the file name where it is not below."""
    rel = os.path.relpath(path, base) if base else os.path.basename(path)
    if rel.startswith(".."):
        rel = os.path.basename(path)
    return os.path.splitext(rel)[0]


def check_overlay_bands(bands: Optional[Sequence[int]], img_channels: int) -> Optional[List[int]]:
    """Validate ``overlay_bands`` (1 or 3 band indices below ``img_channels``), or None.

    Raises:
        ValueError: wrong count, a non-integer or an index out of range.
    """
    if bands is None:
        return None
    bands = list(bands) if isinstance(bands, (list, tuple)) else [bands]
    if len(bands) not in (1, 3) or not all(isinstance(b, int) and not isinstance(b, bool) for b in bands):
        raise ValueError(f"overlay_bands must be 1 (grey) or 3 (red, green, blue) band indices, got {bands!r}")
    bad = [b for b in bands if not 0 <= b < img_channels]
    if bad:
        raise ValueError(f"overlay_bands {bands}: band(s) {bad} out of range; the images have "
                         f"img_channels={img_channels} bands (0..{img_channels - 1})")
    return bands


def band_composite(img: np.ndarray, bands: Optional[Sequence[int]] = None,
                   percentiles: Tuple[float, float] = STRETCH_PERCENTILES,
                   limits: Optional[Sequence[Tuple[float, float]]] = None) -> np.ndarray:
    """An RGB uint8 picture of chosen bands of a multi-band image, for overlays.

    Each chosen band is stretched linearly from its low to its high percentile
    (2 % and 98 % by default, computed over the band's finite pixels) to
    0..255, the usual display stretch for 16-bit and reflectance imagery.

    Args:
        img: ``HxWxC`` image (any numeric type).
        bands: 3 band indices shown as red, green, blue, or 1 shown as grey;
            default ``[0, 1, 2]`` (``[0]`` for images with fewer than 3 bands).
        percentiles: stretch limits.
        limits: ``(low, high)`` per chosen band, used instead of the image's own
            percentiles (a scene stretched alike in every window).

    Returns:
        ``HxWx3`` uint8.
    """
    if img.ndim == 2:
        img = img[:, :, None]
    if bands is None:
        bands = [0, 1, 2] if img.shape[2] >= 3 else [0]
    return stretch_bands(img, check_overlay_bands(bands, img.shape[2]), percentiles, limits)


def _num_classes(model: paddle.nn.Layer, class_names: Optional[Sequence[str]]) -> int:
    return len(class_names) if class_names else int(getattr(model, "num_classes", 0) or 0)


def _read_raw(path: str, transforms: Any) -> Optional[np.ndarray]:
    try:
        return read_image(path, to_rgb=getattr(transforms, "to_rgb", True),
                          img_channels=getattr(transforms, "img_channels", 3))
    except (ValueError, OSError):
        return None


def _overlay_base(path: str, transforms: Any, overlay_bands: Optional[Sequence[int]],
                  raw: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """RGB uint8 picture under the overlay: the file's colours for 8-bit 3-channel
    pictures, else a percentile-stretched composite of ``overlay_bands`` of ``raw``
    (the image as read; read here when None)."""
    channels = getattr(transforms, "img_channels", 3)
    if overlay_bands is None and channels == 3 and not path.lower().endswith((".tif", ".tiff", ".npy")):
        pic = cv2.imread(path, cv2.IMREAD_COLOR)
        if pic is not None and pic.dtype == np.uint8:
            return cv2.cvtColor(pic, cv2.COLOR_BGR2RGB)
    img = raw if raw is not None else _read_raw(path, transforms)
    return None if img is None else band_composite(img, overlay_bands)


def predict(model: paddle.nn.Layer, transforms: Any, image_path: str, save_dir: str = "output/result",
            options: Optional[InferOptions] = None, custom_color: Optional[Sequence[int]] = None,
            weight: float = 0.6,
            overlay_bands: Optional[Sequence[int]] = None, fold_bn: Optional[bool] = None,
            policy: Optional[ExecutionPolicy] = None, class_names: Optional[Sequence[str]] = None,
            legend: bool = True, nodata: Optional[float] = None) -> List[str]:
    """Predict every image under ``image_path``; write colour maps and overlays.

    Args:
        model: a model with weights loaded.
        transforms: a ``Compose`` of the val transforms.
        image_path: file, folder or list file.
        save_dir: writes ``pseudo_color_prediction/<sub-path>.png`` (palette PNG)
            and ``added_prediction/<sub-path>.jpg`` (overlay).
        options: how each image is inferred (multi-scale / flip, sliding windows; default:
            one plain forward pass).
        overlay_bands: bands under the overlay (3 as RGB, or 1 as grey), each
            stretched between its 2nd and 98th percentile (see
            :func:`band_composite`); default: the picture itself for 8-bit
            3-channel images, else bands ``[0, 1, 2]`` (``[0]`` with fewer bands).
        fold_bn: override the policy's BatchNorm folding (the images run through a copy of
            ``model`` prepared for inference, :func:`paddleseg_ext.runtime.prepare`; same
            predictions within float rounding; ``model`` itself is not modified).
        policy: the execution policy (default: the current one).
        class_names: names for the legends (default ``class i``).
        legend: write ``pseudo_color_prediction/legend.png`` and draw a legend beside
            each overlay (see :mod:`~paddleseg_ext.utils.visualize_outputs`).
        nodata: pixels whose every band equals this value hold no data: they are left
            uncoloured (transparent in the colour map, the image in the overlay) and
            written as 255 in the colour map.

    Returns:
        Paths of the pseudo-colour PNGs written.

    Files that cannot be read as images (wrong format, truncated, unreadable)
    are skipped with a warning; if none could be read, ValueError. An
    out-of-memory error names the image and suggests sliding-window inference.
    """
    log = get_logger()
    options = options or InferOptions()
    overlay_bands = check_overlay_bands(overlay_bands, getattr(transforms, "img_channels", 3))
    images, base = get_image_list(image_path)
    model.eval()
    policy = (policy or current_policy()).replace(target="infer")
    if fold_bn is not None:
        policy = policy.replace(fold_bn=fold_bn)
    net = prepare(model, policy)
    cmap = get_color_map_list(256, custom_color)
    written: List[str] = []
    skipped: List[str] = []
    log.info("[PREDICT] %d image(s) -> %s", len(images), save_dir)
    with paddle.no_grad():
        for path in tqdm(images, desc="[PREDICT]", unit="img", leave=False):
            try:
                data = transforms({"img": path, "trans_info": [], "gt_fields": []})
            except (ValueError, OSError) as e:
                log.warning("[PREDICT] skipping %s: %s", path, e)
                skipped.append(f"{path} ({e})")
                continue
            img = paddle.to_tensor(data["img"][None])
            try:
                logit = predict_logits(net, img, data["trans_info"], options)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                raise out_of_memory_error(e, "predicting", path, img.shape, options) from e
            pred = paddle.argmax(logit, axis=1).numpy()[0].astype(np.uint8)
            raw = _read_raw(path, transforms) if nodata is not None else None
            pred = apply_nodata(pred, raw, nodata)
            name = output_stem(path, base)
            color_path = os.path.join(save_dir, "pseudo_color_prediction", name + ".png")
            added_path = os.path.join(save_dir, "added_prediction", name + ".jpg")
            os.makedirs(os.path.dirname(color_path), exist_ok=True)
            os.makedirs(os.path.dirname(added_path), exist_ok=True)
            save_color_map(pred, color_path, cmap)
            rgb = _overlay_base(path, transforms, overlay_bands, raw)
            if rgb is not None and rgb.shape[:2] == pred.shape:
                write_overlay(added_path, rgb, pred, cmap, class_names, weight, legend)
            written.append(color_path)
    if legend and written:
        write_legend(os.path.join(save_dir, "pseudo_color_prediction"), _num_classes(model, class_names), cmap,
                     class_names)
    if skipped:
        log.warning("[PREDICT] skipped %d file(s) that could not be read or transformed, e.g. %s",
                    len(skipped), skipped[0])
        if not written:
            raise ValueError(f"None of the {len(images)} file(s) in {image_path} could be read and "
                             f"transformed; the first: {skipped[0]}")
    log.info("[PREDICT] wrote %d colour maps to %s and overlays to %s", len(written),
             os.path.join(save_dir, "pseudo_color_prediction"), os.path.join(save_dir, "added_prediction"))
    return written
