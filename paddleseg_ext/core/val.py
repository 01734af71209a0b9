"""Evaluation: confusion matrix at label resolution, optional aug / slide inference."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import numpy as np
import paddle
from tqdm import tqdm

from ..runtime import ExecutionPolicy, current_policy, prepare
from ..utils.infer_options import InferOptions
from ..utils.logger import get_logger
from ..utils.metrics import ConfusionMatrix, format_table
from ..cvlibs.errors import clean_exception
from .data import CatchErrors, raise_if_error
from .infer import is_out_of_memory, predict_logits


class EvalInterrupted(Exception):
    """Evaluation stopped early because ``should_stop()`` returned True."""


def out_of_memory_error(e: BaseException, what: str, path: Any, shape: Any, options: InferOptions) -> MemoryError:
    """A MemoryError naming the image and what to do about it."""
    if options.is_slide:
        hint = (f"sliding-window inference with crop_size {list(options.crop_size)} still does not fit: "
                "use a smaller --crop_size / --stride (test_config crop_size, stride)")
    else:
        hint = ("use sliding-window inference: --is_slide --crop_size W H --stride W H on the command "
                "line, or test_config: {is_slide: true, crop_size: [W, H], stride: [W, H]} in the "
                "config (e.g. crop_size = the training crop, stride = 2/3 of it)")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return MemoryError(f"Out of memory {what} {path} (input shape {list(shape)}): {hint}. "
                       f"[{first[:200]}]")


def _single_collate(batch):
    return batch[0]


def evaluate(model: paddle.nn.Layer, eval_dataset, options: Optional[InferOptions] = None,
             num_workers: int = 0, print_detail: bool = True,
             progress: bool = True, should_stop: Optional[Callable[[], bool]] = None,
             fold_bn: Optional[bool] = None, policy: Optional[ExecutionPolicy] = None,
             loss_fn: Optional[Callable[[paddle.Tensor, paddle.Tensor], paddle.Tensor]] = None,
             on_image: Optional[Callable[[int, Dict[str, Any], np.ndarray], None]] = None) -> Dict[str, Any]:
    """Evaluate ``model`` on ``eval_dataset`` (val mode: labels at original size).

    ``options`` says how each image is inferred (multi-scale / flip, sliding windows;
    default: one plain forward pass). The images run through a copy of ``model``
    prepared for inference by the execution policy (:func:`paddleseg_ext.runtime.prepare`:
    folded batch norms, Winograd and strip convolutions, ...): the same logits within
    float rounding; ``model`` itself is not modified. ``fold_bn`` overrides the policy's choice of BatchNorm folding.

    An out-of-memory error names the image and suggests sliding-window
    inference. ``should_stop`` is polled between images; when it returns True
    the evaluation raises :class:`EvalInterrupted` (used on SIGINT/SIGTERM
    during training).

    ``loss_fn(logits [1, C, H, W], label [1, H, W] int64)`` (training's loss of the main
    output) adds ``loss``: its mean over the images, at label resolution; not with
    ``options.aug_eval``, whose output is averaged probabilities, not logits. ``on_image(index,
    data, pred)`` sees every image's sample dict and ``H x W`` prediction (e.g. to draw
    some of them).

    Returns:
        The metrics dict of :func:`~paddleseg_ext.utils.metrics.metrics_from_confusion`
        plus ``images``, ``seconds``, ``confusion`` (the ``num_classes x num_classes``
        matrix as nested lists, rows = label, columns = prediction) and ``loss`` when
        ``loss_fn`` is given.
    """
    log = get_logger()
    options = options or InferOptions()
    if len(eval_dataset) == 0:
        raise ValueError("The evaluation dataset is empty")
    was_training = model.training
    model.eval()
    policy = (policy or current_policy()).replace(target="infer")
    if fold_bn is not None:
        policy = policy.replace(fold_bn=fold_bn)
    net = prepare(model, policy)
    num_classes = eval_dataset.num_classes
    cm = ConfusionMatrix(num_classes, eval_dataset.ignore_index)
    loader = paddle.io.DataLoader(CatchErrors(eval_dataset), batch_size=1, shuffle=False, num_workers=num_workers,
                                  collate_fn=_single_collate, return_list=True)
    nranks = paddle.distributed.get_world_size()
    rank = paddle.distributed.get_rank()
    if print_detail:
        mode = options.describe()
        if net.applied_rewrites:
            mode += f", rewrites {', '.join(net.applied_rewrites)}"
        log.info("[EVAL] %d images, %s inference", len(eval_dataset), mode)
    start = time.time()
    loss_sum, loss_n = 0.0, 0
    it = iter(tqdm(loader, total=len(eval_dataset), disable=not progress or rank != 0,
                   desc="[EVAL]", unit="img", leave=False))
    with paddle.no_grad():
        for i in range(len(eval_dataset)):
            if should_stop is not None and should_stop():
                if was_training:
                    model.train()
                raise EvalInterrupted(f"evaluation stopped after {i} of {len(eval_dataset)} images")
            try:
                data = next(it)
                raise_if_error(data)
            except StopIteration:
                raise RuntimeError(f"the evaluation data loader stopped after {i} of "
                                   f"{len(eval_dataset)} images") from None
            except Exception as e:
                clean = clean_exception(e)
                if clean is e:
                    raise
                raise clean from e
            if nranks > 1 and i % nranks != rank:
                continue
            img = data["img"]  # the loader already made it a tensor; to_tensor would copy (and warn)
            img = (img if isinstance(img, paddle.Tensor) else paddle.to_tensor(img)).unsqueeze(0)
            try:
                logit = predict_logits(net, img, data.get("trans_info", []), options)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                raise out_of_memory_error(e, "evaluating", data.get("img_path"), img.shape, options) from e
            pred = paddle.argmax(logit, axis=1).numpy()[0]
            label = np.asarray(data["label"])
            if pred.shape != label.shape:
                raise ValueError(f"Prediction {pred.shape} and label {label.shape} differ for "
                                 f"{data.get('img_path')}: the val transforms did not record how to "
                                 "undo them (trans_info)")
            cm.update(pred, label)
            if loss_fn is not None and not options.aug_eval:
                label_t = paddle.to_tensor(label.astype(np.int64)[None])
                loss_sum += float(loss_fn(logit, label_t))
                loss_n += 1
            if on_image is not None:
                on_image(i, data, pred)
    if nranks > 1:
        mat = paddle.to_tensor(cm.mat)
        paddle.distributed.all_reduce(mat)
        cm.mat = mat.numpy()
        if loss_n:
            sums = paddle.to_tensor([loss_sum, float(loss_n)], dtype="float64")
            paddle.distributed.all_reduce(sums)
            loss_sum, loss_n = (float(v) for v in sums.numpy())
    metrics = cm.compute()
    metrics["confusion"] = cm.mat.tolist()
    if loss_n:
        metrics["loss"] = loss_sum / loss_n
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

