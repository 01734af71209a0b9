"""The inference flags of tools/val.py and tools/predict.py, and how they meet ``test_config``."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from ..cvlibs import ConfigError
from ..runtime import PSA_IMPLS

__all__ = ["add_infer_args", "infer_kwargs"]


def add_infer_args(p: argparse.ArgumentParser) -> None:
    """The inference flags tools/val.py and tools/predict.py share (each defaults to the
    config's ``test_config``; see :func:`infer_kwargs`)."""
    p.add_argument("--aug_eval", "--aug_pred", dest="aug", action="store_true", default=None,
                   help="multi-scale and flip inference")
    p.add_argument("--scales", nargs="+", type=float, help="scales for aug inference")
    p.add_argument("--flip_horizontal", action="store_true", default=None)
    p.add_argument("--flip_vertical", action="store_true", default=None)
    p.add_argument("--is_slide", action="store_true", default=None, help="sliding-window inference")
    p.add_argument("--crop_size", nargs=2, type=int, help="slide window (w h)")
    p.add_argument("--stride", nargs=2, type=int, help="slide stride (w h)")
    fold = p.add_mutually_exclusive_group()
    fold.add_argument("--fold_bn", dest="fold_bn", action="store_true", default=True,
                      help="run a copy of the model with each batch norm folded into its conv "
                           "(default: same logits within float rounding, one pass less per batch norm)")
    fold.add_argument("--no_fold_bn", dest="fold_bn", action="store_false",
                      help="run the model as trained, batch norms separate")
    p.add_argument("--psa_impl", choices=PSA_IMPLS,
                   help="PSANet's attention implementation (default: the config's model.psa_impl, "
                        "else $PADDLESEG_EXT_PSA_IMPL, else auto)")


def infer_kwargs(args: argparse.Namespace, test_config: Dict[str, Any]) -> Dict[str, Any]:
    """The inference settings: command line first, then ``test_config``, then the defaults.

    Raises:
        ConfigError: sliding windows without a window and stride, or a size that is not positive.
    """
    pick = {"aug_eval": args.aug, "scales": args.scales, "flip_horizontal": args.flip_horizontal,
            "flip_vertical": args.flip_vertical, "is_slide": args.is_slide, "crop_size": args.crop_size,
            "stride": args.stride}
    out = {}
    for k, v in pick.items():
        if v is not None:
            out[k] = v
        elif k in test_config:
            out[k] = test_config[k]
    if out.get("is_slide") and (out.get("crop_size") is None or out.get("stride") is None):
        raise ConfigError("sliding-window inference (--is_slide or test_config is_slide) needs "
                          "--crop_size W H and --stride W H (or test_config crop_size / stride)")
    if out.get("stride") is not None and min(out["stride"] if isinstance(out["stride"], (list, tuple))
                                             else [out["stride"]]) <= 0:
        raise ConfigError(f"--stride must be positive, got {out['stride']}")
    if out.get("crop_size") is not None and min(out["crop_size"] if isinstance(out["crop_size"], (list, tuple))
                                                else [out["crop_size"]]) <= 0:
        raise ConfigError(f"--crop_size must be positive, got {out['crop_size']}")
    if args.scales is not None and any(x <= 0 for x in args.scales):
        raise ConfigError(f"--scales must be positive, got {args.scales}")
    return out
