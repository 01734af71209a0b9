"""Bad configs, through the user-facing path: ``tools/train.py`` run as a command.

Every case runs ``run_cli(train.cli, argv)`` in-process (what ``python
tools/train.py ...`` does) and checks the exit status and the one-paragraph
``error: ...`` on stderr. Nothing heavy is built before a config error: the
model constructor is booby-trapped for the config cases.
"""

import functools
import io
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from paddleseg_ext.cvlibs import ConfigError
from paddleseg_ext.utils.cli import run_cli
from paddleseg_ext.utils.logger import get_logger
from paddleseg_ext.models.pspnet import PSPNet
from tiny_config import load_tool, write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Configure the toolkit log now (at collection), on a stream that lives for the whole session,
# not on the stdout capture of whichever test would log first.
get_logger()


train_tool = load_tool("train")


def cli(capsys, *argv, tool=None):
    """Run a tool as the command line does; return (exit status, stderr, stdout with the log)."""
    capsys.readouterr()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)  # the toolkit log of this run
    get_logger().addHandler(handler)
    try:
        code = run_cli(tool or train_tool.cli, [str(a) for a in argv])
    finally:
        get_logger().removeHandler(handler)
    out, err = capsys.readouterr()
    return code, err, out + buf.getvalue()


@pytest.fixture()
def no_model(monkeypatch):
    """Config errors must surface before the model is built."""
    @functools.wraps(PSPNet.__init__)  # keeps the signature the builder checks against
    def boom(self, *a, **k):
        raise AssertionError("the model was built before the config error was found")
    monkeypatch.setattr(PSPNet, "__init__", boom)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cfg")
    path, root = write_tiny_config(tmp, iters=2)
    return tmp, path, root


def child(tmp, name, text, base="tiny.yml"):
    """A config inheriting ``base`` (in tmp) that adds ``text``."""
    p = tmp / name
    p.write_text(f"_base_: {base}\n" + textwrap.dedent(text))
    return str(p)


def assert_user_error(code, err, *needles, status=2):
    assert code == status, err
    err = err[err.index("error: "):] if "error: " in err else err  # (after any progress bar)
    assert err.startswith("error: "), err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in err, f"{n!r} not in:\n{err}"


# --------------------------------------------------------------------------- #
# Unknown keys, with the file they came from through _base_ and the valid keys
# --------------------------------------------------------------------------- #
def test_unknown_top_level_key_names_the_base_file(tiny, capsys, no_model):
    tmp, path, _ = tiny
    (tmp / "typo_base.yml").write_text(open(path).read() + "iter: 10\n")
    cfg = child(tmp, "c1.yml", "batch_size: 2\n", base="typo_base.yml")
    code, err, _ = cli(capsys, "--config", cfg)
    assert_user_error(code, err, "Unknown top-level key 'iter'", "typo_base.yml", "Did you mean: iters")


def test_unknown_model_argument_names_file_and_valid_keys(tiny, capsys, no_model):
    tmp, path, _ = tiny
    (tmp / "model_base.yml").write_text(open(path).read().replace("bin_sizes:", "bin_size:"))
    cfg = child(tmp, "c2.yml", "iters: 3\n", base="model_base.yml")
    code, err, _ = cli(capsys, "--config", cfg)
    assert_user_error(code, err, "Unknown argument 'bin_size' for PSPNet", "model_base.yml",
                      "Did you mean: bin_sizes", "Valid arguments: num_classes, backbone")


def test_unknown_backbone_and_transform_arguments(tiny, capsys, no_model):
    _, path, _ = tiny
    code, err, _ = cli(capsys, "--config", path, "--opts", "model.backbone.outputstride=8")
    assert_user_error(code, err, "Unknown argument 'outputstride' for ResNet18_vd",
                      "Did you mean: output_stride")
    code, err, _ = cli(capsys, "--config", path, "--opts", "train_dataset.transforms.1.crop_sise=[8, 8]")
    assert_user_error(code, err, "Unknown argument 'crop_sise' for RandomPaddingCrop",
                      "train_dataset.transforms.1.crop_sise", "Did you mean: crop_size")


def test_unknown_keys_in_loss_and_test_config(tiny, capsys, no_model):
    tmp, _, _ = tiny
    cfg = child(tmp, "c3.yml", "loss: {coeff: [1, 0.4]}\n")
    code, err, _ = cli(capsys, "--config", cfg)
    assert_user_error(code, err, "Unknown key 'loss.coeff'", "c3.yml", "Did you mean: coef")
    cfg = child(tmp, "c4.yml", "test_config: {is_slid: true}\n")
    code, err, _ = cli(capsys, "--config", cfg)
    assert_user_error(code, err, "Unknown key 'test_config.is_slid'", "c4.yml", "Did you mean: is_slide",
                      "Valid keys: aug_eval")


def test_unknown_types_list_close_matches(tiny, capsys, no_model):
    _, path, _ = tiny
    for opt, needle in (("model.type=PSPnet", "Unknown models type 'PSPnet'"),
                        ("loss.types.0.type=CrossEntropy", "Did you mean: CrossEntropyLoss"),
                        ("train_dataset.transforms.0.type=RandomHorizontalFlipp", "RandomHorizontalFlip"),
                        ("optimizer.type=sdg", "Unknown optimizers type 'sdg'")):
        code, err, _ = cli(capsys, "--config", path, "--opts", opt)
        assert_user_error(code, err, needle)


def test_opts_errors(tiny, capsys, no_model):
    _, path, _ = tiny
    code, err, _ = cli(capsys, "--config", path, "--opts", "traindataset.mode=val")
    assert_user_error(code, err, "no key 'traindataset'", "Nearest keys: train_dataset")
    code, err, _ = cli(capsys, "--config", path, "--opts", "iters")
    assert_user_error(code, err, "must look like key.sub=value")
    code, err, _ = cli(capsys, "--config", path, "--opts", "train_dataset.transforms.9.prob=1")
    assert_user_error(code, err, "'9' is not a valid index")


# --------------------------------------------------------------------------- #
# Wrong value types
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("text,needles", [
    ("iters: abc\n", ["'iters'", "must be a positive integer, got 'abc'"]),
    ("batch_size: 0\n", ["'batch_size'", "must be a positive integer, got 0"]),
    ("batch_size: 2.5\n", ["must be a positive integer, got 2.5"]),
    ("train_dataset: just_a_string\n", ["'train_dataset'", "must be a mapping"]),
    ("model: {pp_out_channels: abc}\n", ["model.pp_out_channels",
                                         "PSPNet: pp_out_channels must be a positive int, got 'abc'"]),
    ("model: {pp_out_channels: 1e3}\n", ["must be a positive int, got '1e3'", "write 1.0e-4"]),
    ("model: {enable_auxiliary_loss: 'false'}\n", ["enable_auxiliary_loss must be True or False"]),
    ("model: {enable_auxiliary_loss: 1}\n", ["enable_auxiliary_loss must be True or False, got 1"]),
    ("model: {bin_sizes: abc}\n", ["bin_sizes must be a non-empty list of positive ints"]),
    ("lr_scheduler: {learning_rate: 1e-3}\n", ["'learning_rate' must be a finite number, got '1e-3'",
                                               "write 1.0e-4"]),
    ("lr_scheduler: {learning_rate: -0.1}\n", ["PolynomialDecay", "learning_rate must be > 0"]),
    ("lr_scheduler: {learning_rate: .nan}\n", ["'learning_rate' must be a finite number, got nan"]),
    ("optimizer: {momentum: [0.9]}\n", ["'momentum' must be a finite number"]),
    ("loss: {coef: [1, abc]}\n", ["loss.coef", "must be a list of numbers"]),
    ("loss: {types: CrossEntropyLoss}\n", ["loss.types and loss.coef", "non-empty lists"]),
    ("train_dataset: {num_classes: three}\n", ["'num_classes' must be an integer"]),
    ("train_dataset: {transforms: Normalize}\n", ["train_dataset.transforms", "must be a list"]),
    ("train_dataset: {transforms: [Normalize]}\n", ["train_dataset.transforms.0", "'type' key"]),
    ("train_dataset: {invalid_label: drop}\n", ["invalid_label must be one of ['error', 'ignore']"]),
    ("test_config: {scales: abc}\n", ["test_config.scales", "positive number"]),
    ("test_config: {is_slide: true}\n", ["test_config.is_slide is true",
                                         "needs test_config.crop_size and test_config.stride"]),
    ("test_config: {crop_size: [0, 8]}\n", ["test_config.crop_size", "positive int"]),
])
def test_wrong_value_types(tiny, capsys, no_model, text, needles):
    tmp, _, _ = tiny
    cfg = child(tmp, "types.yml", text)
    code, err, _ = cli(capsys, "--config", cfg)
    assert_user_error(code, err, *needles)


def test_bad_command_line_values(tiny, capsys, no_model):
    _, path, _ = tiny
    for argv, needle in ((["--save_interval", "0"], "--save_interval must be a positive integer, got 0"),
                         (["--num_workers", "-1"], "--num_workers must be >= 0"),
                         (["--learning_rate", "nan"], "--learning_rate must be > 0"),
                         (["--iters", "abc"], "argument --iters: invalid int value: 'abc'")):
        with pytest.raises(SystemExit) as exc:  # argparse: usage + message, status 2
            cli(capsys, "--config", path, *argv)
        assert exc.value.code == 2
        assert needle in capsys.readouterr().err


def test_wrong_type_from_opts_names_opts(tiny, capsys, no_model):
    _, path, _ = tiny
    code, err, _ = cli(capsys, "--config", path, "--opts", "iters=abc")
    assert_user_error(code, err, "'iters' in --opts must be a positive integer, got 'abc'")
    code, err, _ = cli(capsys, "--config", path, "--opts", "model.dropout=[1]")
    assert_user_error(code, err, "model.dropout in --opts", "dropout must be in [0, 1), got [1]")


# --------------------------------------------------------------------------- #
# Files: _base_ cycles, missing files, empty / broken YAML
# --------------------------------------------------------------------------- #
def test_base_cycle_and_missing_base(tmp_path, capsys, no_model):
    (tmp_path / "a.yml").write_text("_base_: b.yml\niters: 1\n")
    (tmp_path / "b.yml").write_text("_base_: a.yml\n")
    code, err, _ = cli(capsys, "--config", tmp_path / "a.yml")
    assert_user_error(code, err, "_base_ cycle", "a.yml -> ", "b.yml")
    (tmp_path / "m.yml").write_text("_base_: ../nowhere/gone.yml\n")
    code, err, _ = cli(capsys, "--config", tmp_path / "m.yml")
    assert_user_error(code, err, "Base config '../nowhere/gone.yml' named in", "m.yml", "not found")
    (tmp_path / "n.yml").write_text("_base_: 5\n")
    code, err, _ = cli(capsys, "--config", tmp_path / "n.yml")
    assert_user_error(code, err, "_base_ must be a path or a list of paths")
    code, err, _ = cli(capsys, "--config", tmp_path / "no_such.yml")
    assert_user_error(code, err, "Config file not found", "no_such.yml")


def test_empty_broken_and_non_utf8_yaml(tmp_path, capsys, no_model):
    (tmp_path / "empty.yml").write_text("# only a comment\n")
    code, err, _ = cli(capsys, "--config", tmp_path / "empty.yml")
    assert_user_error(code, err, "empty.yml is empty")
    (tmp_path / "bad.yml").write_text("iters: 10\nmodel:\n  type: PSPNet\n   backbone: x\n")
    code, err, _ = cli(capsys, "--config", tmp_path / "bad.yml")
    assert_user_error(code, err, "YAML syntax error in", "bad.yml at line 4")
    (tmp_path / "bracket.yml").write_text("iters: 10\nmodel: {type: [\n")
    code, err, _ = cli(capsys, "--config", tmp_path / "bracket.yml")
    assert_user_error(code, err, "YAML syntax error", "bracket.yml at line 3")
    (tmp_path / "latin1.yml").write_bytes("iters: 10  # caf\xe9\n".encode("latin-1"))
    code, err, _ = cli(capsys, "--config", tmp_path / "latin1.yml")
    assert_user_error(code, err, "latin1.yml is not UTF-8 text")
    (tmp_path / "list.yml").write_text("- iters: 1\n")
    code, err, _ = cli(capsys, "--config", tmp_path / "list.yml")
    assert_user_error(code, err, "must hold a mapping at the top level, got list")


def test_duplicate_yaml_key_warns_with_lines(tmp_path):
    p = tmp_path / "dup.yml"
    p.write_text("iters: 10\nbatch_size: 2\niters: 20\n")
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    get_logger().addHandler(handler)
    try:
        from paddleseg_ext.cvlibs import Config
        cfg = Config(str(p))
    finally:
        get_logger().removeHandler(handler)
    assert cfg.iters == 20
    assert f"Duplicate key 'iters' in {p} at line 3 (first at line 1): the last one wins" in buf.getvalue()


def test_missing_sections(tiny, capsys, no_model):
    tmp, path, _ = tiny
    text = open(path).read()
    nomodel = tmp / "nomodel.yml"
    nomodel.write_text(text[:text.index("model:")])
    code, err, _ = cli(capsys, "--config", nomodel)
    assert_user_error(code, err, "'model' is missing from", "nomodel.yml")
    noval = tmp / "noval.yml"
    noval.write_text(text[:text.index("val_dataset:")] + text[text.index("optimizer:"):])
    code, err, _ = cli(capsys, "--config", noval, "--do_eval")
    assert_user_error(code, err, "--do_eval needs a val_dataset")


# --------------------------------------------------------------------------- #
# Settings that must agree between dataset, model and loss
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("opts,needles", [
    (["model.num_classes=5"], ["model.num_classes (5", "disagrees with the dataset's num_classes (3)"]),
    (["val_dataset.num_classes=4"], ["train_dataset.num_classes (3", "!= val_dataset.num_classes (4"]),
    (["loss.types.0.ignore_index=0"], ["ignore_index (0) != the dataset's ignore_index (255)"]),
    (["loss.types.0.weight=[1, 1]"], ["loss.types.0.weight", "2 class weights but num_classes is 3"]),
    (["loss.coef=[1, 0.4, 0.2]"], ["PSPNet returns 2 logits in training", "loss has 3 types/coef"]),
    (["train_dataset.transforms.1.label_padding_value=254"],
     ["label_padding_value=254", "neither ignore_index=255 nor a class id"]),
    (["train_dataset.transforms.2.mean=[0.5, 0.5]", "train_dataset.transforms.2.std=[0.5, 0.5]"],
     ["Normalize has 2 mean/std values but img_channels=3"]),
    (["train_dataset.ignore_index=1"], ["ignore_index=1 collides with a class id"]),
])
def test_disagreements(tiny, capsys, opts, needles):
    _, path, _ = tiny
    code, err, _ = cli(capsys, "--config", path, "--opts", *opts)
    assert_user_error(code, err, *needles)


def test_logits_count_vs_loss_count(tiny, capsys):
    _, path, _ = tiny
    code, err, _ = cli(capsys, "--config", path, "--opts", "loss.coef=[1]")
    assert_user_error(code, err, "PSPNet returns 2 logits in training ('seg', 'aux')", "loss has 1 types/coef")


# --------------------------------------------------------------------------- #
# The CLI wrapper itself
# --------------------------------------------------------------------------- #
def test_debug_env_shows_the_traceback(tiny, monkeypatch, no_model):
    _, path, _ = tiny
    monkeypatch.setenv("PADDLESEG_EXT_DEBUG", "1")
    with pytest.raises(ConfigError, match="Unknown models type 'PSPnet'"):
        run_cli(train_tool.cli, ["--config", path, "--opts", "model.type=PSPnet"])


def test_interrupt_before_training_and_bugs_are_not_hidden(tiny, capsys, monkeypatch):
    _, path, _ = tiny

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_tool, "Config", interrupted)
    code, err, _ = cli(capsys, "--config", path)
    assert code == 130 and err.strip() == "error: interrupted"

    def bug(*a, **k):
        raise TypeError("a bug in the toolkit")

    monkeypatch.setattr(train_tool, "Config", bug)
    with pytest.raises(TypeError, match="a bug in the toolkit"):  # not dressed up as a user error
        run_cli(train_tool.cli, ["--config", path])


def test_val_and_predict_report_config_errors_too(tiny, capsys, no_model):
    tmp, path, _ = tiny
    val_tool, pred_tool = load_tool("val"), load_tool("predict")
    code, err, _ = cli(capsys, "--config", path, "--model_path", tmp / "none", "--opts", "model.bin_size=[1]",
                       tool=val_tool.main)
    assert_user_error(code, err, "Unknown argument 'bin_size' for PSPNet")
    code, err, _ = cli(capsys, "--config", path, "--model_path", tmp / "none", "--is_slide", tool=val_tool.main)
    assert_user_error(code, err, "needs --crop_size W H and --stride W H")
    code, err, _ = cli(capsys, "--config", path, "--model_path", tmp / "none", "--image_path",
                       tmp / "nothing_here", tool=pred_tool.main)
    assert_user_error(code, err, "--image_path not found")


def test_command_line_exit_status_and_stderr(tiny):
    """The real command: ``python tools/train.py`` with a bad config."""
    tmp, path, _ = tiny
    cfg = child(tmp, "cmd.yml", "model: {bin_size: [1]}\n")
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR")
    env.pop("PADDLESEG_EXT_DEBUG", None)
    proc = subprocess.run([sys.executable, "tools/train.py", "--config", cfg], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "error: Unknown argument 'bin_size' for PSPNet (at model.bin_size in " in proc.stderr
    assert "cmd.yml" in proc.stderr and "PADDLESEG_EXT_DEBUG=1" in proc.stderr
