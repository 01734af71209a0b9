"""TIPC: the train_infer_python.txt files, the shell helpers, and the PSPNet lite chain."""

import os
import re
import subprocess
import sys

import pytest

from paddleseg_ext.cvlibs import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIPC = os.path.join(ROOT, "test_tipc")
MODELS = ["pspnet", "danet", "psanet", "pointrend"]
MODES = ["lite_train_lite_infer", "lite_train_whole_infer", "whole_infer", "whole_train_whole_infer"]
SECTIONS = ["train_params", "eval_params", "export_params", "infer_params"]


def parse(path):
    """``{section: {key: value}}`` (first occurrence of a key wins, as in common_func.sh)."""
    out, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\r\n")
            m = re.fullmatch(r"=+(\w+)=+", line)
            if m:
                cur = out.setdefault(m.group(1), {})
                continue
            if cur is not None and ":" in line:
                key, value = line.split(":", 1)
                cur.setdefault(key, value)
    return out


def mode_value(value, mode):
    items = value.split("|")
    per_mode = {i.split("=", 1)[0]: i.split("=", 1)[1] for i in items if i.split("=", 1)[0] in MODES}
    if not per_mode:
        return value
    return per_mode.get(mode, "null")


def bash(script, env=None, timeout=60):
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("model", MODELS)
def test_train_infer_python_txt_parses_and_names_existing_configs(model):
    path = os.path.join(TIPC, "configs", model, "train_infer_python.txt")
    cfg = parse(path)
    assert all(s in cfg for s in SECTIONS), f"{path}: sections {list(cfg)}"
    train, export, infer = cfg["train_params"], cfg["export_params"], cfg["infer_params"]
    assert train["model_name"] == model and train["trainer"] == "norm"
    commands = [train["norm_train"], cfg["eval_params"]["eval"], export["norm_export"], infer["infer_export"]]
    configs = set()
    for cmd in commands:
        script, *args = cmd.split()
        assert os.path.isfile(os.path.join(ROOT, script)), f"{path}: {script} does not exist"
        configs.add(args[args.index("--config") + 1])
    assert len(configs) == 1, f"{path}: train/eval/export use different configs {configs}"
    config = configs.pop()
    assert os.path.isfile(os.path.join(ROOT, config)), f"{path}: {config} does not exist"
    dic = Config(os.path.join(ROOT, config)).dic
    assert dic["model"]["backbone"]["type"] == "ResNet18_vd"
    assert os.path.isfile(os.path.join(ROOT, infer["inference"]))
    assert infer["--enable_mkldnn"].split("|") == ["True", "False"]
    assert infer["--cpu_threads"].split("|") == ["1", "2"]
    for mode in MODES:
        assert mode_value(infer["--image_path"], mode).startswith("test_tipc/data/"), mode
        assert mode_value(train["dataset_root"], mode).startswith("test_tipc/data/"), mode
        if mode != "whole_infer":
            assert int(mode_value(train["--iters"], mode)) > 0, mode
            assert int(mode_value(train["--save_interval"], mode)) <= int(mode_value(train["--iters"], mode))
    for mode in ("lite_train_lite_infer", "lite_train_whole_infer"):  # quick on a CPU
        assert int(mode_value(train["--iters"], mode)) <= 50
    if model == "psanet":  # the chain exports and deploys the compiled PSA op
        assert "--psa_impl op" in export["norm_export"]


def test_shell_parser_agrees_with_python_parser():
    path = "test_tipc/configs/pspnet/train_infer_python.txt"
    script = f"""
        source test_tipc/common_func.sh
        f={path}
        echo "name=$(func_section_value $f train_params model_name)"
        echo "iters=$(func_mode_value "$(func_section_value $f train_params --iters)" lite_train_lite_infer)"
        echo "iters_wi=$(func_mode_value "$(func_section_value $f train_params --iters)" whole_infer)"
        echo "mkldnn=$(func_section_value $f infer_params --enable_mkldnn)"
        echo "export=$(func_section_value $f export_params norm_export)"
        echo "missing=[$(func_section_value $f infer_params no_such_key)]"
        echo "plain=$(func_mode_value 'True|False' whole_infer)"
        echo "lw=$(func_mode_value 'lite_train_whole_infer=a|whole_infer=b' whole_infer)"
        echo "set=[$(func_set_params --iters null)][$(func_set_params --iters 5)]"
        echo "key=$(func_parser_key 'a:b:c')"
        echo "value=$(func_parser_value 'a:b:c')"
    """
    proc = bash(script)
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    py = parse(os.path.join(ROOT, path))
    assert got["name"] == "pspnet"
    assert got["iters"] == mode_value(py["train_params"]["--iters"], "lite_train_lite_infer") == "20"
    assert got["iters_wi"] == "null"
    assert got["mkldnn"] == "True|False"
    assert got["export"] == py["export_params"]["norm_export"]
    assert got["missing"] == "[]"
    assert got["plain"] == "True|False"
    assert got["lw"] == "b"  # 'lite_train_whole_infer=' must not match whole_infer
    assert got["set"] == "[][--iters 5]"
    assert got["key"] == "a" and got["value"] == "b:c"


def test_scripts_reject_bad_usage():
    for script in ("prepare.sh", "test_train_inference_python.sh"):
        proc = bash(f"bash test_tipc/{script} test_tipc/configs/pspnet/train_infer_python.txt no_such_mode")
        assert proc.returncode == 2 and "unknown mode" in proc.stderr, (script, proc.stderr)
        proc = bash(f"bash test_tipc/{script}")
        assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.mark.slow
def test_a_failed_step_is_logged_and_fails_the_chain(tmp_path):
    """whole_infer with an export that cannot work: 'Run failed' lines and a non-zero exit."""
    src = os.path.join(TIPC, "configs", "pspnet", "train_infer_python.txt")
    text = open(src).read()
    text = text.replace("model_name:pspnet", "model_name:broken")
    text = re.sub(r"infer_export:tools/export.py --config \S+", "infer_export:tools/export.py --config nowhere.yml",
                  text)
    text = text.replace("--enable_mkldnn:True|False", "--enable_mkldnn:False").replace(
        "--cpu_threads:1|2", "--cpu_threads:1")
    cfg = tmp_path / "broken.txt"
    cfg.write_text(text)
    prep = bash(f"bash test_tipc/prepare.sh {cfg} whole_infer", timeout=300)  # data, as on a fresh clone
    assert prep.returncode == 0, prep.stderr
    proc = bash(f"bash test_tipc/test_train_inference_python.sh {cfg} whole_infer",
                env={"TIPC_OUTPUT_DIR": str(tmp_path / "out")}, timeout=300)
    log = tmp_path / "out" / "broken" / "whole_infer" / "results_python.log"
    assert proc.returncode != 0
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("Run failed with command") for line in lines), lines


@pytest.mark.slow
def test_pspnet_lite_chain(tmp_path):
    cfg = "test_tipc/configs/pspnet/train_infer_python.txt"
    env = {"TIPC_OUTPUT_DIR": str(tmp_path), "OPENCV_LOG_LEVEL": "ERROR",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    prep = bash(f"bash test_tipc/prepare.sh {cfg} lite_train_lite_infer", env=env, timeout=600)
    assert prep.returncode == 0, prep.stdout[-2000:] + prep.stderr[-2000:]
    proc = bash(f"bash test_tipc/test_train_inference_python.sh {cfg} lite_train_lite_infer", env=env, timeout=900)
    log = tmp_path / "pspnet" / "lite_train_lite_infer" / "results_python.log"
    assert log.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = log.read_text().splitlines()
    assert proc.returncode == 0, "\n".join(lines) + proc.stdout[-3000:]
    # train, eval, export, then inference with MKLDNN on/off x threads 1/2
    assert len(lines) == 7 and all(line.startswith("Run successfully with command") for line in lines), lines
    assert sum("deploy/python/infer.py" in line for line in lines) == 4
    assert (tmp_path / "pspnet" / "lite_train_lite_infer" / "inference_model" / "deploy.yaml").is_file()
    assert "images/s" in (tmp_path / "pspnet" / "lite_train_lite_infer" /
                          "python_infer_cpu_usemkldnn_True_threads_2_precision_fp32_batchsize_1.log").read_text()
