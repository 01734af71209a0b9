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
from paddleseg_ext.runtime import use_policy  # noqa: E402
from paddleseg_ext.utils.infer_options import InferOptions, add_infer_args  # noqa: E402
from paddleseg_ext.utils.runtime import setup_device, tool_policy  # noqa: E402


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
    options = InferOptions.from_args(args, cfg.test_config, cfg.origin("test_config"))
    ds = builder.val_dataset
    model = builder.model
    load_model_weights(model, args.model_path)
    policy = tool_policy("infer", builder, fold_bn=args.fold_bn, psa_impl=args.psa_impl)
    with use_policy(policy):
        metrics = evaluate(model, ds, options, num_workers=args.num_workers)
    if args.save_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.save_json)), exist_ok=True)
        with open(args.save_json, "w") as f:
            json.dump(dict(metrics, class_names=getattr(ds, "class_names", None)), f, indent=1)
    return metrics


if __name__ == "__main__":
    sys.exit(run_cli(main))
