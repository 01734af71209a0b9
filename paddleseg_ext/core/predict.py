"""Prediction on image files: colour maps and overlays."""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle
from tqdm import tqdm

from ..utils.logger import get_logger
from ..utils.visualize import get_color_map_list, get_pseudo_color_map, overlay
from .infer import is_out_of_memory
from .val import out_of_memory_error, predict_logits

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


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


def _rel_name(path: str, base: Optional[str]) -> str:
    rel = os.path.relpath(path, base) if base else os.path.basename(path)
    if rel.startswith(".."):
        rel = os.path.basename(path)
    return os.path.splitext(rel)[0]


def predict(model: paddle.nn.Layer, transforms: Any, image_path: str, save_dir: str = "output/result",
            aug_pred: bool = False, scales: Sequence[float] | float = 1.0, flip_horizontal: bool = False,
            flip_vertical: bool = False, is_slide: bool = False, crop_size: Any = None, stride: Any = None,
            custom_color: Optional[Sequence[int]] = None, weight: float = 0.6) -> List[str]:
    """Predict every image under ``image_path``; write colour maps and overlays.

    Args:
        model: a model with weights loaded.
        transforms: a ``Compose`` of the val transforms.
        image_path: file, folder or list file.
        save_dir: writes ``pseudo_color_prediction/<sub-path>.png`` (palette PNG)
            and ``added_prediction/<sub-path>.jpg`` (overlay).

    Returns:
        Paths of the pseudo-colour PNGs written.

    Files that cannot be read as images (wrong format, truncated, unreadable)
    are skipped with a warning; if none could be read, ValueError. An
    out-of-memory error names the image and suggests sliding-window inference.
    """
    log = get_logger()
    images, base = get_image_list(image_path)
    model.eval()
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
                logit = predict_logits(model, img, data["trans_info"], aug_pred, scales, flip_horizontal,
                                       flip_vertical, is_slide, crop_size, stride)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                raise out_of_memory_error(e, "predicting", path, img.shape, is_slide, crop_size) from e
            pred = paddle.argmax(logit, axis=1).numpy()[0].astype(np.uint8)
            name = _rel_name(path, base)
            color_path = os.path.join(save_dir, "pseudo_color_prediction", name + ".png")
            added_path = os.path.join(save_dir, "added_prediction", name + ".jpg")
            os.makedirs(os.path.dirname(color_path), exist_ok=True)
            os.makedirs(os.path.dirname(added_path), exist_ok=True)
            get_pseudo_color_map(pred, cmap).save(color_path)
            raw = cv2.imread(path, cv2.IMREAD_COLOR)
            if raw is not None and raw.shape[:2] == pred.shape:
                rgb = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
                cv2.imwrite(added_path, cv2.cvtColor(overlay(rgb, pred, cmap, weight), cv2.COLOR_RGB2BGR))
            written.append(color_path)
    if skipped:
        log.warning("[PREDICT] skipped %d file(s) that could not be read or transformed, e.g. %s",
                    len(skipped), skipped[0])
        if not written:
            raise ValueError(f"None of the {len(images)} file(s) in {image_path} could be read and "
                             f"transformed; the first: {skipped[0]}")
    log.info("[PREDICT] wrote %d colour maps to %s and overlays to %s", len(written),
             os.path.join(save_dir, "pseudo_color_prediction"), os.path.join(save_dir, "added_prediction"))
    return written
