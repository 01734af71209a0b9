"""A tiny PSPNet config on a synthetic file-list dataset, for core / tool tests."""

import os
import textwrap

from synthetic import make_filelist_dataset

NUM_CLASSES = 3


def write_tiny_config(tmp_path, iters=4, batch_size=2, size=(32, 32), n_train=6, n_val=2,
                      extra="", aux=True):
    root = make_filelist_dataset(str(tmp_path / "data"), num_classes=NUM_CLASSES, n_train=n_train,
                                 n_val=n_val, size=size)
    coef = "[1, 0.4]" if aux else "[1]"
    text = textwrap.dedent(f"""
        batch_size: {batch_size}
        iters: {iters}
        train_dataset:
          type: Dataset
          dataset_root: {root}
          train_path: {os.path.join(root, 'train.txt')}
          num_classes: {NUM_CLASSES}
          mode: train
          transforms:
            - type: RandomHorizontalFlip
            - type: RandomPaddingCrop
              crop_size: [{size[0]}, {size[1]}]
            - type: Normalize
        val_dataset:
          type: Dataset
          dataset_root: {root}
          val_path: {os.path.join(root, 'val.txt')}
          num_classes: {NUM_CLASSES}
          mode: val
          transforms:
            - type: Normalize
        optimizer: {{type: sgd, momentum: 0.9, weight_decay: 4.0e-5}}
        lr_scheduler: {{type: PolynomialDecay, learning_rate: 0.01, end_lr: 0, power: 0.9}}
        loss:
          types: [{{type: CrossEntropyLoss}}]
          coef: {coef}
        model:
          type: PSPNet
          backbone: {{type: ResNet18_vd, output_stride: 8}}
          bin_sizes: [1, 2]
          pp_out_channels: 32
          enable_auxiliary_loss: {str(aux)}
        """) + textwrap.dedent(extra)
    path = tmp_path / "tiny.yml"
    path.write_text(text)
    return str(path), root


def tiny_trainer(builder, save_dir, iters=None, batch_size=None, *, do_eval=False, num_workers=0, seed=0,
                 nan_policy="stop", handle_signals=False, **hook_kw):
    """A Trainer over a built config, with the default hooks (signals off unless asked).

    ``hook_kw`` goes to ``default_hooks`` (save_interval, log_iters, keep_checkpoint_max, use_vdl,
    early_stop, ...); ``do_eval`` evaluates on the builder's val set.
    """
    from paddleseg_ext.core import Trainer, TrainSettings, default_hooks

    settings = TrainSettings(iters=builder.config.iters if iters is None else iters,
                             batch_size=builder.config.batch_size if batch_size is None else batch_size,
                             save_dir=str(save_dir), num_workers=num_workers, seed=seed, nan_policy=nan_policy)
    hooks = default_hooks(val_dataset=builder.val_dataset if do_eval else None,
                          handle_signals=handle_signals, **hook_kw)
    return Trainer(builder.model, builder.optimizer, builder.loss, builder.train_dataset, settings, hooks)


def load_tool(name):
    """A ``tools/<name>.py`` script as a module (its ``main`` / ``cli`` callable in-process)."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(root, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
