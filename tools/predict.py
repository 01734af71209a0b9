"""Predict images and save colour maps and overlays.

    python tools/predict.py --config C --model_path P --image_path (file|dir|list.txt) --save_dir D
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_ext.cvlibs import Config, SegBuilder  # noqa: E402
from paddleseg_ext.utils.cli import run_cli  # noqa: E402
from paddleseg_ext.core import predict  # noqa: E402
from paddleseg_ext.transforms import Compose  # noqa: E402
from paddleseg_ext.checkpoints.weights import load_model_weights  # noqa: E402
from paddleseg_ext.runtime import use_policy  # noqa: E402
from paddleseg_ext.utils.infer_options import add_infer_args, infer_kwargs  # noqa: E402
from paddleseg_ext.utils.runtime import setup_device, tool_policy  # noqa: E402
from paddleseg_ext.utils.visualize_outputs import add_picture_args, picture_options  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Predict with a segmentation model")
    p.add_argument("--config", required=True)
    p.add_argument("--model_path", required=True)
    p.add_argument("--image_path", required=True, help="image file, folder or list file")
    p.add_argument("--save_dir", default="output/result")
    p.add_argument("--custom_color", nargs="+", type=int, help="r g b triples for classes 0, 1, ...")
    p.add_argument("--overlay_bands", nargs="+", type=int,
                   help="bands under the overlay: 3 (as R G B) or 1 (grey), percentile-stretched; "
                        "default: the picture for 8-bit RGB, else bands 0 1 2")
    add_picture_args(p)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--num_threads", type=int)
    p.add_argument("--opts", nargs="+", default=[])
    add_infer_args(p)
    args = p.parse_args(argv)
    if not os.path.exists(args.image_path):
        raise FileNotFoundError(f"--image_path not found: {args.image_path}")
    setup_device(args.device, args.num_threads)
    cfg = Config(args.config, opts=args.opts)
    builder = SegBuilder(cfg)
    cfg.section("model")
    builder.validate(parts=("model",))
    kw = infer_kwargs(args, cfg.test_config)
    transforms = Compose(builder.val_transforms, img_channels=builder.img_channels)
    model = builder.model
    load_model_weights(model, args.model_path)
    kw["aug_pred"] = kw.pop("aug_eval", False)
    policy = tool_policy("infer", builder, fold_bn=args.fold_bn, psa_impl=args.psa_impl)
    with use_policy(policy):
        return predict(model, transforms, args.image_path, args.save_dir, custom_color=args.custom_color,
                       overlay_bands=args.overlay_bands, **picture_options(args, cfg.dic), **kw)


if __name__ == "__main__":
    sys.exit(run_cli(main))
