"""Evaluation: confusion matrix at label resolution, optional aug / slide inference."""

from __future__ import annotations

import time
from typing import Any, Dict, Sequence

import numpy as np
import paddle
from tqdm import tqdm

from ..utils.logger import get_logger
from ..utils.metrics import ConfusionMatrix, format_table
from .infer import aug_inference, inference


def _single_collate(batch):
    return batch[0]


def predict_logits(model: paddle.nn.Layer, img: paddle.Tensor, trans_info, aug_eval: bool = False,
                   scales: Any = 1.0, flip_horizontal: bool = False, flip_vertical: bool = False,
                   is_slide: bool = False, crop_size: Any = None, stride: Any = None) -> paddle.Tensor:
    """Logits (or averaged probabilities with ``aug_eval``) at original resolution."""
    if aug_eval:
        return aug_inference(model, img, trans_info, scales, flip_horizontal, flip_vertical,
                             is_slide, crop_size, stride)
    return inference(model, img, trans_info, is_slide, crop_size, stride)


def evaluate(model: paddle.nn.Layer, eval_dataset, aug_eval: bool = False,
             scales: Sequence[float] | float = 1.0, flip_horizontal: bool = False,
             flip_vertical: bool = False, is_slide: bool = False, crop_size: Any = None,
             stride: Any = None, num_workers: int = 0, print_detail: bool = True,
             progress: bool = True) -> Dict[str, Any]:
    """Evaluate ``model`` on ``eval_dataset`` (val mode: labels at original size).

    Returns:
        The metrics dict of :func:`~paddleseg_ext.utils.metrics.metrics_from_confusion`
        plus ``images`` and ``seconds``.
    """
    log = get_logger()
    if len(eval_dataset) == 0:
        raise ValueError("The evaluation dataset is empty")
    was_training = model.training
    model.eval()
    num_classes = eval_dataset.num_classes
    cm = ConfusionMatrix(num_classes, eval_dataset.ignore_index)
    loader = paddle.io.DataLoader(eval_dataset, batch_size=1, shuffle=False, num_workers=num_workers,
                                  collate_fn=_single_collate, return_list=True)
    nranks = paddle.distributed.get_world_size()
    rank = paddle.distributed.get_rank()
    if print_detail:
        mode = ("aug (scales %s, flip h=%s v=%s)" % (scales, flip_horizontal, flip_vertical)
                if aug_eval else "plain") + (f", slide crop {crop_size} stride {stride}" if is_slide else "")
        log.info("[EVAL] %d images, %s inference", len(eval_dataset), mode)
    start = time.time()
    with paddle.no_grad():
        for i, data in enumerate(tqdm(loader, total=len(eval_dataset), disable=not progress or rank != 0,
                                      desc="[EVAL]", unit="img", leave=False)):
            if nranks > 1 and i % nranks != rank:
                continue
            img = paddle.to_tensor(data["img"][None])
            try:
                logit = predict_logits(model, img, data.get("trans_info", []), aug_eval, scales,
                                       flip_horizontal, flip_vertical, is_slide, crop_size, stride)
            except MemoryError as e:
                raise MemoryError(f"Out of memory evaluating {data.get('img_path')} of shape "
                                  f"{list(img.shape)}: try --is_slide --crop_size W H --stride W H") from e
            pred = paddle.argmax(logit, axis=1).numpy()[0]
            label = np.asarray(data["label"])
            if pred.shape != label.shape:
                raise ValueError(f"Prediction {pred.shape} and label {label.shape} differ for "
                                 f"{data.get('img_path')}: the val transforms did not record how to "
                                 "undo them (trans_info)")
            cm.update(pred, label)
    if nranks > 1:
        mat = paddle.to_tensor(cm.mat)
        paddle.distributed.all_reduce(mat)
        cm.mat = mat.numpy()
    metrics = cm.compute()
    metrics["images"] = len(eval_dataset)
    metrics["seconds"] = time.time() - start
    if print_detail:
        log.info("[EVAL] #Images: %d mIoU: %.4f Acc: %.4f Kappa: %.4f Dice: %.4f (%.1fs)",
                 len(eval_dataset), metrics["mIoU"], metrics["Acc"], metrics["Kappa"],
                 metrics["mDice"], metrics["seconds"])
        log.info("[EVAL] per class:\n%s", format_table(metrics, getattr(eval_dataset, "class_names", None)))
    if was_training:
        model.train()
    return metrics

