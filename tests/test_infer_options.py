"""The test-time inference options: one object from the command line, a config's
``test_config`` and an export's deploy.yaml, with one set of rules and messages."""

import argparse
import os
import sys

import numpy as np
import pytest
import yaml

from paddleseg_ext.cvlibs import Config, ConfigError
from paddleseg_ext.cvlibs.config import TEST_CONFIG_KEYS
from paddleseg_ext.scene import predict_scenes
from paddleseg_ext.utils.cli import run_cli
from paddleseg_ext.utils.infer_options import INFER_KEYS, WINDOW_KEYS, InferOptions, add_infer_args
from tiny_config import load_tool, write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "deploy", "python"))
import infer  # noqa: E402

TEST_CONFIG = "test_config: {aug_eval: true, scales: [0.75, 1.0], flip_horizontal: true, is_slide: true, " \
              "crop_size: [24, 16], stride: 8}\n"
FLAGS = ["--aug_eval", "--scales", "0.75", "1.0", "--flip_horizontal", "--is_slide", "--crop_size", "24", "16",
         "--stride", "8", "8"]
EXPECTED = InferOptions(aug_eval=True, scales=(0.75, 1.0), flip_horizontal=True, is_slide=True, crop_size=(24, 16),
                        stride=(8, 8))


def parse(argv):
    p = argparse.ArgumentParser()
    add_infer_args(p)
    return p.parse_args(argv)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("infer_options")
    path, _ = write_tiny_config(tmp, size=(40, 24), extra=TEST_CONFIG)
    return tmp, path


def test_command_line_config_and_deploy_yaml_agree(tiny):
    tmp, path = tiny
    cfg = Config(path)
    from_config = InferOptions.from_config(cfg.test_config, cfg.origin("test_config"))
    from_flags = InferOptions.from_args(parse(FLAGS), {}, "")
    assert from_config == from_flags == EXPECTED
    assert InferOptions.from_args(parse([]), cfg.test_config, path) == EXPECTED  # nothing given: the config
    # tools/export.py writes the config's window into deploy.yaml; the deploy runners read it back.
    load_tool("export").main(["--config", path, "--save_dir", str(tmp / "export")])
    with open(tmp / "export" / "deploy.yaml") as f:
        section = yaml.safe_load(f)["Deploy"]
    assert section["crop_size"] == [24, 16] and section["stride"] == [8, 8]
    assert not (set(INFER_KEYS) - set(WINDOW_KEYS)) & set(section)  # the deploy runners run none of the rest
    deployed = infer.DeployConfig(str(tmp / "export")).infer_options
    window = {k: getattr(EXPECTED, k) for k in WINDOW_KEYS}
    assert deployed == InferOptions(**window) == InferOptions.from_deploy(section, "d.yaml", parse([]))


def test_deploy_scene_runs_in_the_exported_window(tiny, monkeypatch):
    tmp, path = tiny
    export_dir = tmp / "export"
    if not (export_dir / "deploy.yaml").is_file():
        load_tool("export").main(["--config", path, "--save_dir", str(export_dir)])
    image = Config(path).dic["val_dataset"]["dataset_root"] + "/val.txt"
    seen = []
    monkeypatch.setattr("paddleseg_ext.scene.predict_scenes", lambda *a, **kw: seen.append(a[6]))
    argv = ["--config", str(export_dir), "--image_path", image, "--save_dir", str(tmp / "scenes"), "--scene"]
    infer.main(argv)
    infer.main(argv + ["--stride", "12", "10"])
    assert [(o.crop_size, o.stride) for o in seen] == [((24, 16), (8, 8)), ((24, 16), (12, 10))]


def test_command_line_wins_key_by_key():
    test_config = yaml.safe_load(TEST_CONFIG)["test_config"]
    got = InferOptions.from_args(parse(["--crop_size", "32", "32", "--flip_vertical"]), test_config, "c.yml")
    assert got.crop_size == (32, 32) and got.flip_vertical and got.stride == (8, 8) and got.scales == (0.75, 1.0)
    deploy_args = argparse.Namespace(crop_size=[48, 40], stride=None)
    got = InferOptions.from_deploy({"crop_size": [24, 16], "stride": [8, 8]}, "d.yaml", deploy_args)
    assert (got.crop_size, got.stride) == ((48, 40), (8, 8))


def test_defaults_round_trip_and_keys():
    assert InferOptions.from_config(None, "c.yml") == InferOptions.from_args(parse([]), {}, "c.yml") == InferOptions()
    assert InferOptions().describe() == "plain"
    assert InferOptions.from_config(EXPECTED.to_config(), "c.yml") == EXPECTED
    assert InferOptions(scales=0.5, crop_size=24).scales == (0.5,)
    assert InferOptions(crop_size=24).crop_size == (24, 24)
    assert set(TEST_CONFIG_KEYS) == set(INFER_KEYS) | {"nodata"}  # the config's keys are these and nodata


@pytest.mark.parametrize("key, value, words", [
    ("crop_size", [0, 8], "must be a positive int or a [width, height] pair of positive ints, got [0, 8]"),
    ("stride", [8, 8, 8], "must be a positive int or a [width, height] pair of positive ints, got [8, 8, 8]"),
    ("scales", [], "must be a positive number or a non-empty list of positive numbers, got []"),
    ("scales", [1.0, -0.5], "must be a positive number or a non-empty list of positive numbers"),
    ("aug_eval", 1, "must be True or False, got 1"),
    ("is_slide", "yes", "must be True or False, got 'yes'"),
])
def test_a_bad_value_is_one_message_naming_where(key, value, words):
    with pytest.raises(ConfigError) as config_error:
        InferOptions.from_config({key: value}, "c.yml")
    assert str(config_error.value).startswith(f"c.yml: test_config.{key} {words}")
    if key in WINDOW_KEYS:
        with pytest.raises(ConfigError, match=rf"^d\.yaml: Deploy\.{key} must be"):
            InferOptions.from_deploy({key: value}, "d.yaml")
    with pytest.raises(ValueError, match=rf"^InferOptions: {key} must be"):
        InferOptions(**{key: value})


@pytest.mark.parametrize("argv", [["--crop_size", "0", "8"], ["--stride", "-1", "4"], ["--scales", "0"]])
def test_a_bad_flag_names_the_flag(argv):
    with pytest.raises(ConfigError, match=rf"^command line: {argv[0]} must be a positive"):
        InferOptions.from_args(parse(argv), {}, "c.yml")


def test_sliding_windows_need_a_window_and_a_stride():
    with pytest.raises(ConfigError, match=r"^c\.yml: sliding-window inference \(test_config\.is_slide is true\) "
                                          r"needs test_config\.stride, \[width, height\] each$"):
        InferOptions.from_config({"is_slide": True, "crop_size": 24}, "c.yml")
    with pytest.raises(ConfigError, match=r"^command line: sliding-window inference \(--is_slide\) needs "
                                          r"--crop_size W H and --stride W H \(or test_config\.crop_size and "
                                          r"test_config\.stride\)"):
        InferOptions.from_args(parse(["--is_slide"]), {}, "c.yml")
    # the window may come from the config, the switch from the command line
    got = InferOptions.from_args(parse(["--is_slide"]), {"crop_size": 24, "stride": 16}, "c.yml")
    assert got.is_slide and got.crop_size == (24, 24) and got.stride == (16, 16)
    with pytest.raises(ValueError, match="InferOptions: is_slide needs crop_size and stride"):
        InferOptions(is_slide=True, crop_size=24)


def test_config_file_and_tool_report_the_same_words(tiny, tmp_path, capsys):
    _, path = tiny
    bad = tmp_path / "bad.yml"
    bad.write_text(f"_base_: {path}\ntest_config: {{crop_size: [0, 8]}}\n")
    with pytest.raises(ConfigError, match=r"bad\.yml: test_config\.crop_size must be a positive int"):
        Config(str(bad))
    code = run_cli(load_tool("val").main, ["--config", path, "--model_path", str(tmp_path / "none"),
                                           "--stride", "0", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "command line: --stride must be a positive int" in err and "Traceback" not in err


def test_scenes_refuse_multi_scale_inference(tmp_path):
    with pytest.raises(ConfigError, match="scenes are predicted window by window; multi-scale / flip"):
        predict_scenes([], None, str(tmp_path), lambda batch: batch, None, options=InferOptions(aug_eval=True))


def test_align_corners_resizes_the_logits_back_with_corners_aligned():
    """mmseg resizes the logits back to the image with its heads' align_corners (its 769x769
    recipes: True); ``test_config.align_corners`` / ``--align_corners`` do the same."""
    import paddle

    from paddleseg_ext.core.infer import predict_logits

    logits = paddle.to_tensor(np.random.default_rng(0).normal(size=(1, 2, 4, 6)).astype(np.float32))

    class Net(paddle.nn.Layer):
        def forward(self, im):
            return [logits]

    info = [("resize", (7, 11))]  # the image was 7x11 before the val transforms
    plain = predict_logits(Net(), logits, info, InferOptions.from_config({}, "c.yml")).numpy()
    aligned_opts = InferOptions.from_config({"align_corners": True, "is_slide": False}, "c.yml")
    assert aligned_opts == InferOptions.from_args(parse(["--align_corners"]), {}, "")
    assert "align_corners" in aligned_opts.describe()
    aligned = predict_logits(Net(), logits, info, aligned_opts).numpy()
    want = logits.numpy()
    # corners aligned, 4x6 -> 7x11: output (r, c) samples the input at (r / 2, c / 2), so every
    # other output pixel is an input logit; half-pixel centres sample elsewhere
    np.testing.assert_allclose(aligned[..., ::2, ::2], want, rtol=0, atol=1e-6)
    assert np.abs(plain[..., ::2, ::2] - want).max() > 1e-2
    with pytest.raises(ConfigError, match="align_corners must be True or False"):
        InferOptions.from_config({"align_corners": 1}, "c.yml")
