"""Export a trained model for deployment: Paddle Inference (default) or ONNX.

    python tools/export.py --config C --model_path P --save_dir output/inference_model
    python tools/export.py --config C --model_path P --save_dir output/onnx_model --format onnx

Paddle: ``model.json`` + ``model.pdiparams`` + ``deploy.yaml`` (for
deploy/python/infer.py). ONNX (needs ``pip install -e .[onnx]``): the same
plus ``model.onnx`` converted by paddle2onnx from the saved Paddle model (for
deploy/python/infer_onnx.py). The input is ``[None, C, None, None]`` unless
``--input_shape`` fixes it.

PSANet: ``--psa_impl op`` traces the compiled ``psa_mask`` custom op (deploy.yaml
records it; infer.py registers it), ``--psa_impl fused`` the compiled fused
``psa_attention`` op (no [hw, hw] map at any input size; recorded the same way),
``--psa_impl paddle`` the pure-Paddle PSA mask (needs nothing but Paddle); default: the
config's ``model.psa_impl``, else ``$PADDLESEG_EXT_PSA_IMPL``, else ``op`` where it is built.
ONNX always uses the pure-Paddle path, since paddle2onnx cannot convert a custom op. Other
models ignore it.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_ext.cvlibs import Config, SegBuilder  # noqa: E402
from paddleseg_ext.core.export import (MissingDependencyError, check_onnx, export,  # noqa: E402
                                       export_onnx, require)
from paddleseg_ext.utils.cli import run_cli  # noqa: E402
from paddleseg_ext.checkpoints.weights import load_model_weights  # noqa: E402
from paddleseg_ext.utils.infer_options import WINDOW_KEYS, InferOptions  # noqa: E402
from paddleseg_ext.utils.logger import get_logger  # noqa: E402
from paddleseg_ext.utils.runtime import setup_device, tool_policy  # noqa: E402
from paddleseg_ext.utils.visualize_outputs import deploy_picture_keys  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Export a segmentation model for deployment")
    p.add_argument("--config", required=True)
    p.add_argument("--model_path", help="weights (.pdparams or checkpoint folder); random if omitted")
    p.add_argument("--save_dir", default="output/inference_model")
    p.add_argument("--input_shape", nargs=4, type=int, help="N C H W (-1 for dynamic)")
    p.add_argument("--output_op", default="argmax", choices=["argmax", "softmax", "none"])
    p.add_argument("--format", default="paddle", choices=["paddle", "onnx"],
                   help="paddle: Paddle Inference model; onnx: also model.onnx via paddle2onnx")
    p.add_argument("--opset", type=int, default=11, help="minimum ONNX opset (raised when an op needs it)")
    p.add_argument("--psa_impl", choices=["op", "fused", "paddle"],
                   help="PSANet: trace the compiled psa_mask op, the fused psa_attention op or "
                        "the pure-Paddle PSA mask")
    p.add_argument("--no_check", action="store_true", help="ONNX: skip the onnxruntime check against Paddle")
    p.add_argument("--opts", nargs="+", default=[])
    args = p.parse_args(argv)
    log = get_logger()
    if args.format == "onnx":
        if args.psa_impl in ("op", "fused"):
            p.error(f"--format onnx cannot use --psa_impl {args.psa_impl}: paddle2onnx cannot convert "
                    "a compiled custom op; ONNX export uses the pure-Paddle PSA mask (--psa_impl paddle)")
        require("paddle2onnx", "ONNX export (--format onnx)")  # fail before anything heavy
    setup_device("cpu")
    cfg = Config(args.config, opts=list(args.opts))
    builder = SegBuilder(cfg)
    policy = tool_policy("onnx" if args.format == "onnx" else "export", builder,
                         psa_impl=args.psa_impl)
    model = builder.model
    if args.model_path:
        load_model_weights(model, args.model_path)
    val_cfg = (cfg.dic.get("val_dataset") or {}).get("transforms", [])
    # What a class map means, for readers of the export (the service's /metadata, the deploy
    # pictures' legends and no-data): names that do not match the classes are left out.
    extra = {"num_classes": builder.num_classes, **deploy_picture_keys(cfg.dic)}
    if len(extra.get("class_names") or []) not in (0, builder.num_classes):
        del extra["class_names"]
    # The config's inference window, for the deploy runners' --scene (as tools/predict.py's).
    extra.update(InferOptions.from_config(cfg.test_config, cfg.origin("test_config")).to_config(WINDOW_KEYS))
    if args.format == "paddle":
        return export(model, args.save_dir, val_cfg, args.input_shape, args.output_op,
                      builder.img_channels, extra=extra, policy=policy)
    deploy = export_onnx(model, args.save_dir, val_cfg, args.input_shape, args.output_op, builder.img_channels,
                         opset=args.opset, extra=extra, policy=policy)
    if not args.no_check:
        shape = [s if s and s > 0 else d for s, d in zip(args.input_shape or [-1] * 4,
                                                          (1, builder.img_channels, 64, 64))]
        try:
            stats = check_onnx(args.save_dir, model, shape, args.output_op)
            log.info("[EXPORT] onnxruntime vs Paddle on a random %s input: max |diff| %.2e, argmax "
                     "agreement %.4f", "x".join(map(str, shape)), stats["max_abs_diff"],
                     stats["argmax_agreement"])
        except MissingDependencyError as e:
            log.warning("[EXPORT] skipped the onnxruntime check: %s", e)
    return deploy


if __name__ == "__main__":
    sys.exit(run_cli(main))
