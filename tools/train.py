"""Train a segmentation model from a config.

    python tools/train.py --config configs/quick_start/pspnet_resnet18_os8_landcover_64x64_400.yml \
        --do_eval --use_vdl --save_dir output/quickstart

Multi-device: ``python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py ...``.

Errors in the config or the data print ``error: <message>`` and exit with
status 2 (``PADDLESEG_EXT_DEBUG=1`` shows the traceback). SIGINT / SIGTERM
save a checkpoint and exit with 130 / 143 (continue with
``--resume_model auto``). Early stopping (``early_stop:`` in the config or
``--early_stop_patience N``, with ``--do_eval``) ends the run when the
validation metric has not improved for N evaluations, keeps ``best_model``,
logs the reason and exits with 0 (see ``paddleseg_ext/core/early_stop.py``
for resuming such a run).
"""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_ext.cvlibs import Config, ConfigError, SegBuilder  # noqa: E402
from paddleseg_ext.utils.cli import run_cli  # noqa: E402
from paddleseg_ext.core import Trainer, TrainSettings, default_hooks  # noqa: E402
from paddleseg_ext.core.early_stop import EARLY_STOP_METRICS, early_stopping_from  # noqa: E402
from paddleseg_ext.core.ema import weight_averaging_from  # noqa: E402
from paddleseg_ext.core.predict import check_overlay_bands  # noqa: E402
from paddleseg_ext.utils.infer_options import InferOptions  # noqa: E402
from paddleseg_ext.utils.logger import get_logger  # noqa: E402
from paddleseg_ext.runtime import prepare, use_policy  # noqa: E402
from paddleseg_ext.utils.runtime import seed_everything, setup_device, tool_policy  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train a segmentation model")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--iters", type=int, help="override iters")
    p.add_argument("--batch_size", type=int, help="override batch_size (per device)")
    p.add_argument("--learning_rate", type=float, help="override lr_scheduler.learning_rate")
    p.add_argument("--save_dir", default="output")
    p.add_argument("--save_interval", type=int, default=1000)
    p.add_argument("--log_iters", type=int, default=10)
    p.add_argument("--do_eval", action="store_true", help="evaluate every save_interval, keep best_model")
    p.add_argument("--use_vdl", action="store_true", help="log to VisualDL in save_dir/vdl_log")
    p.add_argument("--vdl_samples", type=int, default=4,
                   help="validation images drawn (image | label | prediction) in VisualDL at each evaluation")
    p.add_argument("--vdl_bands", nargs="+", type=int,
                   help="image bands drawn as red green blue (or one as grey) in those pictures "
                        "(default 0 1 2)")
    p.add_argument("--keep_checkpoint_max", type=int, default=5)
    p.add_argument("--resume_model", help="checkpoint folder, or 'auto' for the newest in save_dir")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--amp_level", default="O1", choices=["O1", "O2"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--num_threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--nan_policy", default="stop", choices=["stop", "skip"])
    p.add_argument("--early_stop_patience", type=int,
                   help="stop after this many evaluations without improvement (needs --do_eval; "
                        "0: off; default: the config's early_stop block, else off)")
    p.add_argument("--early_stop_metric", choices=list(EARLY_STOP_METRICS),
                   help="validation metric early stopping watches (default mIoU; loss: lower is better)")
    p.add_argument("--early_stop_min_delta", type=float,
                   help="an evaluation improves when it beats the best by more than this (default 0)")
    p.add_argument("--ema_decay", type=float,
                   help="evaluate and keep as best_model a moving average of the weights with this decay "
                        "in (0, 1), e.g. 0.99 (0: off; default: the config's ema block, else off)")
    p.add_argument("--opts", nargs="+", default=[], help="key.sub=value overrides")
    args = p.parse_args(argv)
    for name in ("iters", "batch_size", "save_interval", "log_iters"):
        val = getattr(args, name)
        if val is not None and val <= 0:
            p.error(f"--{name} must be a positive integer, got {val}")
    if args.vdl_samples < 0:
        p.error(f"--vdl_samples must be >= 0, got {args.vdl_samples}")
    if args.early_stop_patience is not None and args.early_stop_patience < 0:
        p.error(f"--early_stop_patience must be >= 0 (0: off), got {args.early_stop_patience}")
    if args.num_workers < 0:
        p.error(f"--num_workers must be >= 0, got {args.num_workers}")
    if args.learning_rate is not None and not args.learning_rate > 0:
        p.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    return args


def run_hparams(args, cfg):
    """The settings VisualDL's hyper-parameter page compares runs by."""
    model = cfg.dic.get("model") or {}
    return {"config": os.path.basename(args.config), "model": model.get("type", "?"),
            "backbone": (model.get("backbone") or {}).get("type", "-"), "iters": cfg.iters,
            "batch_size": cfg.batch_size, "optimizer": (cfg.dic.get("optimizer") or {}).get("type", "?"),
            "learning_rate": (cfg.dic.get("lr_scheduler") or {}).get("learning_rate", "?"), "seed": args.seed,
            "ema_decay": ((cfg.dic.get("ema") or {}).get("decay", 0) if args.ema_decay is None else args.ema_decay)}


def main(argv=None):
    args = parse_args(argv)
    log = get_logger()
    setup_device(args.device, args.num_threads)
    import paddle

    if paddle.distributed.get_world_size() > 1:
        paddle.distributed.init_parallel_env()
    seed_everything(args.seed)
    cfg = Config(args.config, learning_rate=args.learning_rate, batch_size=args.batch_size,
                 iters=args.iters, opts=args.opts)
    builder = SegBuilder(cfg)
    if cfg.dic.get("train_dataset") is None:
        raise ConfigError(f"train_dataset is missing from {args.config} (and its _base_ files)")
    if args.do_eval and cfg.dic.get("val_dataset") is None:
        raise ConfigError(f"--do_eval needs a val_dataset in {args.config} (and its _base_ files)")
    for key in ("model", "loss", "optimizer", "lr_scheduler"):
        cfg.section(key)  # required: an error naming the file when missing
    builder.validate()  # every config mistake, before anything heavy is built
    early_stop = early_stopping_from(cfg.section("early_stop", required=False), cfg.origin("early_stop"),
                                     patience=args.early_stop_patience, metric=args.early_stop_metric,
                                     min_delta=args.early_stop_min_delta)
    ema = weight_averaging_from(cfg.section("ema", required=False), cfg.origin("ema"), decay=args.ema_decay)
    if early_stop is not None and not args.do_eval:
        raise ConfigError(f"early stopping ({early_stop.metric}, patience {early_stop.patience}) watches the "
                          "validation metric: add --do_eval, or turn it off with --early_stop_patience 0")
    cfg.iters  # noqa: B018  (required)
    train_ds = builder.train_dataset  # data errors (missing files, empty lists) before the model
    val_ds = builder.val_dataset if args.do_eval else None
    policy = tool_policy("train", builder)
    model = prepare(builder.model, policy)  # in place: the forms share the model's parameters
    builder.check_outputs_match_losses(model)
    infer_options = InferOptions.from_config(cfg.test_config, cfg.origin("test_config"))
    log.info("[TRAIN] %s: %s on %s (%d samples), %d iters, batch %d", args.config, type(model).__name__,
             type(train_ds).__name__, len(train_ds), cfg.iters, cfg.batch_size)
    settings = TrainSettings(iters=cfg.iters, batch_size=cfg.batch_size, save_dir=args.save_dir,
                             num_workers=args.num_workers, seed=args.seed, nan_policy=args.nan_policy,
                             precision=args.precision, amp_level=args.amp_level)
    hooks = default_hooks(val_dataset=val_ds, infer_options=infer_options, save_interval=args.save_interval,
                          log_iters=args.log_iters, keep_checkpoint_max=args.keep_checkpoint_max,
                          early_stop=early_stop, use_vdl=args.use_vdl, vdl_dir=os.path.join(args.save_dir, "vdl_log"),
                          vdl_samples=args.vdl_samples, vdl_hparams=run_hparams(args, cfg),
                          vdl_bands=check_overlay_bands(args.vdl_bands, builder.img_channels), ema=ema)
    trainer = Trainer(model, builder.optimizer, builder.loss, train_ds, settings, hooks)
    with use_policy(policy):
        result = trainer.train(args.resume_model)
    if result.get("stopped_by"):
        log.warning("[TRAIN] stopped by %s at iter %d/%d", result["stopped_by"], result["iter"], cfg.iters)
        return result
    how = f"stopped early at iter {result['iter']}/{cfg.iters}" if result.get("early_stop") else \
        f"done at iter {result['iter']}"
    log.info("[TRAIN] %s; best mIoU %.4f at iter %d; checkpoints in %s", how,
             result["best"]["mIoU"], result["best"]["iter"], args.save_dir)
    return result


def cli(argv=None):
    """``main`` as a command: exit status 128 + signal number when a signal stopped training."""
    result = main(argv)
    stopped = (result or {}).get("stopped_by")
    return 128 + int(getattr(signal, stopped)) if stopped else 0


if __name__ == "__main__":
    sys.exit(run_cli(cli))
