"""Predict images and save colour maps and overlays.

    python tools/predict.py --config C --model_path P --image_path (file|dir|list.txt) --save_dir D

With ``--scene`` every image is a scene (a GeoTIFF of any size): predicted
window by window (``--crop_size``, ``--stride``, ``--batch_size``) and written
as ``D/<name>.tif`` with the input's CRS, geotransform and no-data
(docs/multiband.md). Under ``python -m paddle.distributed.launch`` each
process takes its share of the scenes; complete outputs are skipped.
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
from paddleseg_ext.scene import add_scene_args  # noqa: E402
from paddleseg_ext.utils.infer_options import InferOptions, add_infer_args  # noqa: E402
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
    add_scene_args(p, overlay_bands=False)
    args = p.parse_args(argv)
    if not os.path.exists(args.image_path):
        raise FileNotFoundError(f"--image_path not found: {args.image_path}")
    setup_device(args.device, args.num_threads)
    cfg = Config(args.config, opts=args.opts)
    builder = SegBuilder(cfg)
    cfg.section("model")
    builder.validate(parts=("model",))
    options = InferOptions.from_args(args, cfg.test_config, cfg.origin("test_config"))
    transforms = Compose(builder.val_transforms, img_channels=builder.img_channels)
    model = builder.model
    load_model_weights(model, args.model_path)
    policy = tool_policy("infer", builder, fold_bn=args.fold_bn, psa_impl=args.psa_impl)
    with use_policy(policy):
        if args.scene:
            return predict_scene_files(args, model, transforms, options)
        return predict(model, transforms, args.image_path, args.save_dir, options, custom_color=args.custom_color,
                       overlay_bands=args.overlay_bands, **picture_options(args, cfg.dic))


def predict_scene_files(args, model, transforms, options):
    """``--scene``: every image as a windowed GeoTIFF scene, through the inference copy of
    ``model`` that the current execution policy prepares (as for images); exit status 2 if
    any failed."""
    from paddleseg_ext.core.predict import get_image_list
    from paddleseg_ext.runtime import current_policy, prepare
    from paddleseg_ext.scene import dygraph_predict_fn, predict_scenes, scene_kwargs
    from paddleseg_ext.utils.visualize import get_color_map_list

    images, base = get_image_list(args.image_path)
    fn = dygraph_predict_fn(prepare(model, current_policy().replace(target="infer")))
    report = predict_scenes(images, base, args.save_dir, fn, transforms, "logits", options,
                            cmap=get_color_map_list(256, args.custom_color), **scene_kwargs(args))
    return report.exit_status()


if __name__ == "__main__":
    sys.exit(run_cli(main))
