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
