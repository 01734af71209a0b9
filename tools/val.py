"""Evaluate a trained model.

    python tools/val.py --config C --model_path output/best_model/model.pdparams \
        [--aug_eval --scales 0.75 1.0 1.25 --flip_horizontal] [--is_slide --crop_size W H --stride W H]
        [--no_fold_bn]

Settings not given on the command line are read from the config's ``test_config``.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_ext.cvlibs import Config, ConfigError, SegBuilder  # noqa: E402
from paddleseg_ext.utils.cli import run_cli  # noqa: E402
from paddleseg_ext.core import evaluate  # noqa: E402
from paddleseg_ext.checkpoints.weights import load_model_weights  # noqa: E402
from paddleseg_ext.runtime import PSA_IMPLS, use_policy  # noqa: E402
from paddleseg_ext.utils.runtime import setup_device, tool_policy  # noqa: E402


def add_infer_args(p):
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


def infer_kwargs(args, test_config):
    """Command line first, then test_config, then defaults."""
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


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a segmentation model")
    p.add_argument("--config", required=True)
    p.add_argument("--model_path", required=True, help=".pdparams file or checkpoint folder")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--num_threads", type=int)
    p.add_argument("--save_json", help="write the metrics to this JSON file")
    p.add_argument("--opts", nargs="+", default=[])
    add_infer_args(p)
    args = p.parse_args(argv)
    setup_device(args.device, args.num_threads)
    cfg = Config(args.config, opts=args.opts)
    builder = SegBuilder(cfg)
    if cfg.dic.get("val_dataset") is None:
        raise ConfigError(f"val_dataset is missing from {args.config} (and its _base_ files)")
    cfg.section("model")
    builder.validate(parts=("model", "val_dataset"))
    kwargs = infer_kwargs(args, cfg.test_config)
    ds = builder.val_dataset
    model = builder.model
    load_model_weights(model, args.model_path)
    policy = tool_policy("infer", builder, fold_bn=args.fold_bn, psa_impl=args.psa_impl)
    with use_policy(policy):
        metrics = evaluate(model, ds, num_workers=args.num_workers, **kwargs)
    if args.save_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.save_json)), exist_ok=True)
        with open(args.save_json, "w") as f:
            json.dump(dict(metrics, class_names=getattr(ds, "class_names", None)), f, indent=1)
    return metrics


if __name__ == "__main__":
    sys.exit(run_cli(main))
