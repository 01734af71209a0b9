"""Export a trained model for Paddle Inference (static graph + deploy.yaml).

    python tools/export.py --config C --model_path P --save_dir output/inference_model
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_ext.cvlibs import Config, SegBuilder  # noqa: E402
from paddleseg_ext.core import export  # noqa: E402
from paddleseg_ext.utils.checkpoint import load_model_weights  # noqa: E402
from paddleseg_ext.utils.runtime import setup_device  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Export a segmentation model")
    p.add_argument("--config", required=True)
    p.add_argument("--model_path", help="weights (.pdparams or checkpoint folder); random if omitted")
    p.add_argument("--save_dir", default="output/inference_model")
    p.add_argument("--input_shape", nargs=4, type=int, help="N C H W (-1 for dynamic)")
    p.add_argument("--output_op", default="argmax", choices=["argmax", "softmax", "none"])
    p.add_argument("--opts", nargs="+", default=[])
    args = p.parse_args(argv)
    setup_device("cpu")
    cfg = Config(args.config, opts=args.opts)
    builder = SegBuilder(cfg)
    model = builder.model
    if args.model_path:
        load_model_weights(model, args.model_path)
    val_cfg = (cfg.dic.get("val_dataset") or {}).get("transforms", [])
    return export(model, args.save_dir, val_cfg, args.input_shape, args.output_op, builder.img_channels)


if __name__ == "__main__":
    main()
