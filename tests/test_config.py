import textwrap

import pytest

from paddleseg_ext.cvlibs import Config, ConfigError
from paddleseg_ext.cvlibs.config import apply_opts, merge_dicts


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_merge_rules():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    child = {"a": {"y": [3], "z": 2}, "c": 3}
    assert merge_dicts(base, child) == {"a": {"x": 1, "y": [3], "z": 2}, "b": 1, "c": 3}
    assert merge_dicts(base, {"a": {"_inherited_": False, "z": 5}}) == {"a": {"z": 5}, "b": 1}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}  # inputs untouched


def test_inherited_false_in_a_base_replaces_what_earlier_bases_set(tmp_path):
    # a schedule base that swaps SGD for AdamW must drop SGD's momentum, also when it is
    # the second of two bases (the marker used to be consumed inside its own file)
    write(tmp_path / "recipe.yml", """
        optimizer: {type: sgd, momentum: 0.9, weight_decay: 4.0e-5}
        loss: {types: [{type: CrossEntropyLoss}], coef: [1, 0.4]}
    """)
    write(tmp_path / "adamw.yml", """
        optimizer: {_inherited_: false, type: AdamW, weight_decay: 0.01}
    """)
    mid = write(tmp_path / "mid.yml", """
        _base_: [recipe.yml, adamw.yml]
        optimizer: {epsilon: 1.0e-7}
    """)
    assert Config(mid).dic["optimizer"] == {"type": "AdamW", "weight_decay": 0.01, "epsilon": 1.0e-7}
    # one level further up, the combined dict still replaces an earlier sibling's
    write(tmp_path / "other.yml", "optimizer: {type: sgd, momentum: 0.5, nesterov: true}\n")
    top = write(tmp_path / "top.yml", "_base_: [other.yml, mid.yml]\n")
    cfg = Config(top)
    assert cfg.dic["optimizer"] == {"type": "AdamW", "weight_decay": 0.01, "epsilon": 1.0e-7}
    assert "_inherited_" not in repr(cfg.dic)


def test_base_chain_relative_paths_and_origins(tmp_path):
    write(tmp_path / "_base_/data.yml", """
        batch_size: 4
        iters: 100
        train_dataset: {type: Dataset, num_classes: 3, transforms: [{type: Normalize}]}
    """)
    write(tmp_path / "_base_/sched.yml", """
        iters: 200
        lr_scheduler: {type: PolynomialDecay, learning_rate: 0.01}
    """)
    child = write(tmp_path / "m/child.yml", """
        _base_: ['../_base_/data.yml', '../_base_/sched.yml']
        batch_size: 2
        train_dataset: {num_classes: 5}
    """)
    cfg = Config(child)
    assert cfg.batch_size == 2 and cfg.iters == 200
    assert cfg.dic["train_dataset"] == {"type": "Dataset", "num_classes": 5,
                                        "transforms": [{"type": "Normalize"}]}
    assert cfg.origin("train_dataset.num_classes").endswith("child.yml")
    assert cfg.origin("train_dataset.transforms").endswith("data.yml")
    assert cfg.origin("lr_scheduler.learning_rate").endswith("sched.yml")


def test_string_base_and_cli_overrides(tmp_path):
    write(tmp_path / "base.yml", "iters: 10\nbatch_size: 2\nlr_scheduler: {type: X, learning_rate: 0.1}\n")
    child = write(tmp_path / "c.yml", "_base_: base.yml\n")
    cfg = Config(child, learning_rate=0.5, batch_size=8, iters=3)
    assert (cfg.iters, cfg.batch_size, cfg.dic["lr_scheduler"]["learning_rate"]) == (3, 8, 0.5)


def test_opts_literal_parsing_and_list_index():
    dic = {"model": {"type": "M", "bins": [1, 2]}, "train_dataset": {"transforms": [{"type": "T", "p": 1}]},
           "iters": 5}
    out = apply_opts(dic, ["model.bins=[1, 3, 6]", "iters=7", "train_dataset.transforms.0.p=0.5",
                           "model.align_corners=true", "model.name=abc"])
    assert out["model"]["bins"] == [1, 3, 6] and out["iters"] == 7
    assert out["train_dataset"]["transforms"][0]["p"] == 0.5
    assert out["model"]["align_corners"] is True and out["model"]["name"] == "abc"


def test_opts_missing_key_names_nearest():
    dic = {"train_dataset": {"dataset_root": "x", "mode": "train"}}
    with pytest.raises(ConfigError, match="no key 'traindataset'.*Nearest keys: train_dataset"):
        apply_opts(dic, ["traindataset.mode=val"])
    with pytest.raises(ConfigError, match="not a valid index"):
        apply_opts({"a": [1]}, ["a.3=1"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        apply_opts(dic, ["iters"])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yml"):
        Config(str(tmp_path / "nope.yml"))
    empty = write(tmp_path / "empty.yml", "\n")
    with pytest.raises(ConfigError, match="is empty"):
        Config(empty)
    bad = write(tmp_path / "bad.yml", "iters: 10\nmodel: {type: [\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error in .*bad.yml at line \d+"):
        Config(bad)
    missing_base = write(tmp_path / "mb.yml", "_base_: ../gone.yml\n")
    with pytest.raises(FileNotFoundError, match="gone.yml"):
        Config(missing_base)
    scalar = write(tmp_path / "scalar.yml", "just a string\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        Config(scalar)


def test_base_cycle(tmp_path):
    write(tmp_path / "a.yml", "_base_: b.yml\niters: 1\n")
    write(tmp_path / "b.yml", "_base_: a.yml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        Config(str(tmp_path / "a.yml"))


def test_top_level_typos_and_types(tmp_path):
    typo = write(tmp_path / "t.yml", "iter: 10\n")
    with pytest.raises(ConfigError, match="Unknown top-level key 'iter'.*Did you mean: iters"):
        Config(typo)
    wrong = write(tmp_path / "w.yml", "iters: abc\n")
    with pytest.raises(ConfigError, match="'iters' .* must be a positive integer, got 'abc'"):
        Config(wrong)
    noiters = write(tmp_path / "n.yml", "batch_size: 2\n")
    with pytest.raises(ConfigError, match="'iters' is not set"):
        Config(noiters).iters
