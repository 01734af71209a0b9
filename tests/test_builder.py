import glob
import os

import paddle
import pytest

from paddleseg_ext.cvlibs import Config, ConfigError, SegBuilder
from tiny_config import NUM_CLASSES, write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_builds_every_part(tmp_path):
    path, _ = write_tiny_config(tmp_path)
    b = SegBuilder(Config(path))
    assert b.model.num_classes == NUM_CLASSES  # synced from the dataset
    assert len(b.loss["types"]) == 2 and b.loss["coef"] == [1.0, 0.4]  # one type broadcast
    assert b.loss["types"][0].ignore_index == 255
    assert isinstance(b.optimizer, paddle.optimizer.Momentum)
    assert isinstance(b.lr_scheduler, paddle.optimizer.lr.LRScheduler)
    assert len(b.train_dataset) == 6 and len(b.val_dataset) == 2
    assert [type(t).__name__ for t in b.val_transforms] == ["Normalize"]
    b.check_outputs_match_losses()


def test_val_parts_do_not_need_training_sections(tmp_path):
    path, _ = write_tiny_config(tmp_path)
    cfg = Config(path)
    for key in ("optimizer", "lr_scheduler", "loss", "train_dataset"):
        del cfg.dic[key]
    b = SegBuilder(cfg)
    assert b.model.num_classes == NUM_CLASSES and len(b.val_transforms) == 1


def test_logits_count_mismatch_is_a_build_time_error(tmp_path):
    path, _ = write_tiny_config(tmp_path)
    b = SegBuilder(Config(path, opts=["loss.coef=[1]"]))
    with pytest.raises(ConfigError, match=r"PSPNet returns 2 logits in training \('seg', 'aux'\) but loss "
                                          r"has 1 types/coef"):
        b.check_outputs_match_losses()


def test_num_classes_disagreement(tmp_path):
    path, _ = write_tiny_config(tmp_path)
    with pytest.raises(ConfigError, match=r"model.num_classes \(5.*disagrees with the dataset's num_classes \(3\)"):
        SegBuilder(Config(path, opts=["model.num_classes=5"])).model
    with pytest.raises(ConfigError, match=r"train_dataset.num_classes \(3.*!= val_dataset.num_classes \(4"):
        SegBuilder(Config(path, opts=["val_dataset.num_classes=4"])).model


def test_ignore_index_disagreement(tmp_path):
    path, _ = write_tiny_config(tmp_path)
    with pytest.raises(ConfigError, match=r"ignore_index \(0\) != the dataset's ignore_index \(255\)"):
        SegBuilder(Config(path, opts=["loss.types.0.ignore_index=0"])).loss


def test_unknown_type_and_argument_messages(tmp_path):
    path, _ = write_tiny_config(tmp_path)
    with pytest.raises(ConfigError, match=r"Unknown models type 'PSPnet'.*Did you mean: PSPNet"):
        SegBuilder(Config(path, opts=["model.type=PSPnet"])).model
    with pytest.raises(ConfigError, match=r"Unknown component type 'ResNet18vd'.*ResNet18_vd"):
        SegBuilder(Config(path, opts=["model.backbone.type=ResNet18vd"])).model
    with pytest.raises(ConfigError, match=r"Unknown argument 'bin_size' for PSPNet \(at model.bin_size in "
                                          r"--opts\).*Did you mean: bin_sizes"):
        SegBuilder(Config(path, opts=["model.bin_size=[1]"])).model
    typo = tmp_path / "typo.yml"
    typo.write_text(open(path).read().replace("bin_sizes:", "bin_size:"))
    with pytest.raises(ConfigError, match=r"Unknown argument 'bin_size' for PSPNet \(at model.bin_size in "
                                          r".*typo.yml\).*Valid arguments: num_classes, backbone"):
        SegBuilder(Config(str(typo))).model
    with pytest.raises(ConfigError, match=r"Unknown lr_schedulers type 'Poly'"):
        SegBuilder(Config(path, opts=["lr_scheduler.type=Poly"])).lr_scheduler


def test_constructor_errors_keep_their_type_and_say_where(tmp_path):
    path, _ = write_tiny_config(tmp_path)
    # A rule the backbone declares is checked before building, at the key that set it.
    with pytest.raises(ConfigError, match=r"ResNet18_vd \(at model.backbone.output_stride in --opts\): "
                                          r"ResNet_vd: output_stride must be one of 8, 16, 32, got 4"):
        SegBuilder(Config(path, opts=["model.backbone.output_stride=4"])).model
    # A check only the constructor can make (multi_grid against the depth's block count).
    with pytest.raises(ValueError, match=r"ResNet18_vd \(at model.backbone in .*tiny.yml\): "
                                         r"multi_grid must have 2 entries"):
        SegBuilder(Config(path, opts=["model.backbone.multi_grid=[1, 2, 4]"])).model
    # Paddle checks some arguments with assert: still the config's mistake, said where
    with pytest.raises(ConfigError, match=r"PolynomialDecay \(at lr_scheduler in .*tiny.yml\):.*'power' must be "
                                          r"greater than 0"):
        SegBuilder(Config(path, opts=["lr_scheduler.type=PolynomialDecay", "lr_scheduler.power=0"])).lr_scheduler


def test_missing_dataset_file_names_path(tmp_path):
    path, _ = write_tiny_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        SegBuilder(Config(path, opts=[f"train_dataset.train_path={tmp_path}/nowhere.txt"])).train_dataset


def test_paddleseg_style_config_builds_unchanged(tmp_path):
    """The seed's PSANet-style config format: every non-model part builds."""
    _, root = write_tiny_config(tmp_path)
    text = f"""
batch_size: 8
iters: 80000
train_dataset:
  type: Dataset
  dataset_root: {root}
  train_path: {root}/train.txt
  num_classes: 3
  mode: train
  transforms:
    - type: ResizeStepScaling
      min_scale_factor: 0.5
      max_scale_factor: 2.0
      scale_step_size: 0.25
    - type: RandomPaddingCrop
      crop_size: [1024, 512]
    - type: RandomHorizontalFlip
    - type: RandomDistort
      brightness_range: 0.4
      contrast_range: 0.4
      saturation_range: 0.4
    - type: Normalize
val_dataset:
  type: Dataset
  dataset_root: {root}
  val_path: {root}/val.txt
  num_classes: 3
  mode: val
  transforms:
    - type: Normalize
optimizer:
  type: sgd
  momentum: 0.9
  weight_decay: 4.0e-5
lr_scheduler:
  type: PolynomialDecay
  learning_rate: 0.01
  end_lr: 0
  power: 0.9
loss:
  types:
    - type: CrossEntropyLoss
  coef: [1, 0.4]
"""
    p = tmp_path / "seed_style.yml"
    p.write_text(text)
    b = SegBuilder(Config(str(p)))
    assert len(b.train_dataset) > 0 and len(b.val_dataset) > 0
    assert b.loss["coef"] == [1.0, 0.4] and len(b.loss["types"]) == 2
    sched = b.lr_scheduler
    assert sched.last_lr == pytest.approx(0.01)
    for _ in range(40000):
        sched.step()
    assert sched.last_lr == pytest.approx(0.01 * 0.5 ** 0.9, rel=1e-4)


def test_warmup_schedule(tmp_path):
    path, _ = write_tiny_config(tmp_path, iters=100)
    b = SegBuilder(Config(path, opts=["lr_scheduler.warmup_iters=10", "lr_scheduler.warmup_start_lr=0.001"]))
    s = b.lr_scheduler
    lrs = []
    for _ in range(12):
        lrs.append(s.last_lr)
        s.step()
    assert lrs[0] == pytest.approx(0.001) and lrs[10] == pytest.approx(0.01)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))


@pytest.mark.parametrize("path", sorted(
    p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yml"), recursive=True)
    if os.sep + "_base_" + os.sep not in p))
def test_every_shipped_config_validates(path):
    """Names, argument names and argument rules of every recipe, without building anything."""
    SegBuilder(Config(path)).validate()
