"""A new user's first hour: the READMEs' commands, quiet tools, the set-up's GPU index, TIPC's python check.

The full run of every README block is ``python3 scripts/check_readme.py`` (after the quick
start; minutes). Here: the blocks name files that exist and no placeholders, each tool's
``--help`` and a tiny real run print no third-party warning, the set-up forwards
``PADDLE_INDEX_URL`` to pip, the TIPC chain stops with one line when its python lacks
paddle, and the README table writer.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from tiny_config import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import check_readme  # noqa: E402
import readme_table  # noqa: E402

TOOLS = ["tools/train.py", "tools/val.py", "tools/predict.py", "tools/export.py", "tools/pixel_baseline.py",
         "tools/launch.py", "deploy/python/infer.py", "deploy/python/infer_onnx.py", "deploy/python/infer_openvino.py",
         "deploy/python/serve.py", "deploy/python/quantize_onnx.py", "benchmarks/serve_load.py", "benchmarks/int8.py",
         "tools/view_graph.py"]
#: Paths a runnable block may name before they exist: what the quick start and the blocks make.
MADE_BY_RUNS = ("output/", "data/landcover", "test_tipc/data/", ".venv", ".venv-bench")


def _user_env():
    """A user's shell: nothing the test harness sets that would hide a message."""
    env = check_readme.new_shell_env()
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    return env


def test_every_bash_block_is_runnable_or_tagged():
    blocks = check_readme.all_blocks()
    assert {b.path for b in blocks} == set(check_readme.READMES)
    runnable = [b for b in blocks if b.tag is None]
    assert len(runnable) >= 4
    assert {b.tag for b in blocks} <= {None, "setup", "gpu", "long"}
    for b in runnable:
        words = shlex.split(b.text.replace("\\\n", " "), comments=True)
        for i, w in enumerate(words):
            if re.match(r"^(configs|tools|scripts|deploy|test_tipc|benchmarks)/", w):
                assert os.path.exists(os.path.join(ROOT, w)), f"{b.path}:{b.line} names {w}, which does not exist"
            if w in ("--config", "--model_path", "--image_path"):
                value = words[i + 1]
                assert (value.startswith("$") or value.startswith(MADE_BY_RUNS)
                        or os.path.exists(os.path.join(ROOT, value))), \
                    f"{b.path}:{b.line}: {w} {value} is a placeholder, not a path"
    assert "source .venv/bin/activate" in runnable[0].text  # a new shell needs the environment first


def test_block_extraction_and_tags(tmp_path):
    (tmp_path / "R.md").write_text("x\n\n<!-- readme-check: long (an hour) -->\n```bash\nslow\n```\n"
                                   "```bash\nfast 1\nfast 2\n```\n```text\ntool [--opt]\n```\n")
    blocks = check_readme.extract_blocks("R.md", str(tmp_path))
    assert [(b.tag, b.text) for b in blocks] == [("long", "slow"), (None, "fast 1\nfast 2")]
    (tmp_path / "Bad.md").write_text("```bash\nnever closed\n")
    with pytest.raises(ValueError, match="not closed"):
        check_readme.extract_blocks("Bad.md", str(tmp_path))


def test_noise_patterns():
    noisy = ["/x/site-packages/paddle/utils/cpp_extension/extension_utils.py:712: UserWarning: No ccache found.",
             "W1202 00:59:30.813625 10993 eager_utils.cc:3584] Paddle static graph(PIR) not support input out",
             "[2026-12-02 00:57:07,185] [    INFO] extension_utils.py:1604 - using custom operator only",
             "Traceback (most recent call last):"]
    quiet = ["2026-12-02 01:02:29 INFO [EXPORT] saved model.json", "[DEPLOY] 2 image(s) -> out",
             "/home/me/train.py:3: UserWarning: the user's own warning"]
    assert check_readme.noise_lines("\n".join(noisy + quiet)) == noisy


@pytest.mark.parametrize("tool", TOOLS)
def test_help_prints_no_third_party_warning(tool):
    proc = subprocess.run([sys.executable, tool, "--help"], cwd=ROOT, env=_user_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")
    assert proc.stderr == "" and not check_readme.noise_lines(proc.stdout)


@pytest.mark.slow
def test_a_tiny_real_run_prints_no_third_party_warning(tmp_path):
    """train -> val (plain and aug) -> predict -> export -> Paddle Inference, as a user runs them."""
    cfg, root = write_tiny_config(tmp_path, iters=2, size=(32, 32))
    out, val = str(tmp_path / "out"), os.path.join(root, "val.txt")
    steps = [
        ["tools/train.py", "--config", cfg, "--save_dir", out, "--do_eval", "--save_interval", "2"],
        ["tools/val.py", "--config", cfg, "--model_path", out + "/best_model", "--aug_eval", "--flip_horizontal"],
        ["tools/predict.py", "--config", cfg, "--model_path", out + "/best_model", "--image_path", val,
         "--save_dir", str(tmp_path / "pred")],
        ["tools/export.py", "--config", cfg, "--model_path", out + "/best_model", "--save_dir", str(tmp_path / "exp"),
         "--output_op", "softmax"],  # softmax is what triggers Paddle's PIR "out tensor" line
        ["deploy/python/infer.py", "--config", str(tmp_path / "exp"), "--image_path", val,
         "--save_dir", str(tmp_path / "dep"), "--cpu_threads", "1"],
    ]
    for argv in steps:
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=_user_env(), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{argv[0]}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        noise = check_readme.noise_lines(proc.stdout + proc.stderr)
        assert not noise, f"{argv[0]} printed: {noise}"
        assert not re.search(r"Warning:", proc.stderr), f"{argv[0]}:\n{proc.stderr}"


def test_tipc_stops_at_once_when_its_python_lacks_paddle(tmp_path):
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # -S: no site-packages
    (shim / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}{os.pathsep}/usr/bin{os.pathsep}/bin", TIPC_OUTPUT_DIR=str(tmp_path / "o"))
    cfg = "test_tipc/configs/pspnet/train_infer_python.txt"
    for script in ("test_tipc/prepare.sh", "test_tipc/test_train_inference_python.sh"):
        proc = subprocess.run(["bash", script, cfg, "lite_train_lite_infer"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert len(lines) == 1, lines
        assert "cannot import paddle and paddleseg_ext" in lines[0] and "No module named" in lines[0]
        assert "source .venv/bin/activate" in lines[0]
    assert not (tmp_path / "o").exists()  # stopped before any step


def _fake_venv(tmp_path):
    """A venv whose python records each call and succeeds: the set-up's pip calls, without pip."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    (venv / "bin" / "python").write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n")
    (venv / "bin" / "python").chmod(0o755)
    return venv, calls


@pytest.mark.parametrize("index", ["https://www.paddlepaddle.org.cn/packages/stable/cu126/", None])
def test_setup_forwards_the_paddle_index_to_pip(tmp_path, index):
    venv, calls = _fake_venv(tmp_path)
    env = dict(os.environ, PADDLESEG_EXT_VENV=str(venv), PADDLE_PKG="paddlepaddle-gpu==3.3.1")
    env.pop("PADDLE_INDEX_URL", None)
    if index:
        env["PADDLE_INDEX_URL"] = index
    proc = subprocess.run(["bash", "scripts/setup_env.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pips = [line for line in calls.read_text().splitlines() if line.startswith("-m pip install")]
    paddle_line = next(line for line in pips if "paddlepaddle-gpu==3.3.1" in line)
    if index:
        assert paddle_line.endswith(f"paddlepaddle-gpu==3.3.1 --extra-index-url {index}")
        assert index in proc.stdout
    assert sum("--extra-index-url" in line for line in pips) == (1 if index else 0)  # Paddle only
    assert any("-r" in line.split() and "requirements.txt" in line for line in pips)
    assert "-m paddleseg_ext.ops.build" in calls.read_text()
    assert "source " in proc.stdout and "bin/activate" in proc.stdout


def test_readme_table_replaces_only_its_block(tmp_path):
    md = tmp_path / "R.md"
    md.write_text("intro\n<!-- BEGIN t -->\nold | table\n<!-- END t -->\nafter\n")
    body = tmp_path / "b.md"
    body.write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert readme_table.main([str(md), "t", str(body), "--command", "bash x.sh", "--commit", "abc123"]) == 0
    text = md.read_text()
    assert text.startswith("intro\n<!-- BEGIN t -->\n| a | b |\n") and text.endswith("<!-- END t -->\nafter\n")
    assert "old" not in text and "Written by `bash x.sh` on commit abc123" in text
    md.write_text("no markers\n")
    assert readme_table.main([str(md), "t", str(body), "--command", "x"]) == 2
    assert md.read_text() == "no markers\n"
    with pytest.raises(ValueError, match="1 begin and 0 end"):
        readme_table.replace_block("<!-- BEGIN t -->\n", "t", "x")


@pytest.mark.parametrize("scene", ["landcover6", "roads"])
def test_readme_has_the_learning_check_blocks(scene):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    name = f"learning_check_{scene}"
    block = readme_table.replace_block(text, name, "X")  # exactly one pair of markers
    assert block != text
    begin, end = readme_table.markers(name)
    inside = text[text.index(begin):text.index(end)]
    assert re.search(r"Written by `bash scripts/learning_check\.sh[^`]*` on commit \w+", inside)  # not hand-copied
    assert "per-pixel, data priors" in inside and "per-pixel, uniform priors" in inside
    with open(os.path.join(ROOT, "scripts", "learning_check.sh"), encoding="utf-8") as f:
        assert scene in f.read()  # the script still runs the scene it wrote the table for


def test_learning_table_has_a_column_per_model_and_baseline(tmp_path):
    import json
    import learning_table

    def metrics(iou):
        return {"class_IoU": iou, "mIoU": sum(iou) / len(iou), "Acc": 0.9, "Kappa": 0.5,
                "class_names": ["background", "road"]}

    for m, iou in (("pspnet", [0.9, 0.3]), ("pointrend", [0.95, 0.4])):
        (tmp_path / m).mkdir()
        (tmp_path / m / "val.json").write_text(json.dumps(metrics(iou)))
        (tmp_path / m / "train_seconds").write_text("123\n")
    (tmp_path / "baseline_data.json").write_text(json.dumps(metrics([0.96, 0.0])))
    (tmp_path / "baseline_uniform.json").write_text(json.dumps(metrics([0.5, 0.04])))
    lines = learning_table.table(str(tmp_path), "2 cores", ["pspnet", "pointrend"]).splitlines()
    assert lines[0] == ("| class IoU | PSPNet | PointRend | per-pixel, data priors | "
                        "per-pixel, uniform priors |")
    assert "| road | 0.300 | 0.400 | 0.000 | 0.040 |" in lines
    assert "| **mIoU** | 0.600 | 0.675 | 0.480 | 0.270 |" in lines
    assert lines[-1] == "| train time (s, 2 cores) | 123 | 123 | - | - |"
    assert all(line.count("|") == 6 for line in lines)
    (tmp_path / "baseline_data.json").unlink()
    (tmp_path / "baseline_uniform.json").unlink()
    with pytest.raises(SystemExit, match="baseline"):
        learning_table.table(str(tmp_path), "2 cores", ["pspnet"])


def test_demo_scripts_share_one_data_preparation(tmp_path):
    for script in ("quickstart.sh", "learning_check.sh", "pretrained_check.sh"):
        with open(os.path.join(ROOT, "scripts", script), encoding="utf-8") as f:
            text = f.read()
        assert "demo_data.sh" in text and "prepare_demo_data" in text, script
        assert "prepare_landcover.py" not in text and "prepare_roads.py" not in text, script
    helper = os.path.join(ROOT, "scripts", "demo_data.sh")
    run = subprocess.run(["bash", "-c", f'source "{helper}"; prepare_demo_data data/nowhere'],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert "no demo data preparation known for 'data/nowhere'" in run.stderr
    assert "data/landcover6, data/roads, data/landcover" in run.stderr
    # config_value reads the merged config (bases included) in one start-up
    cfg = os.path.join(ROOT, "configs", "roads", "pointrend_resnet18_roads_128x128_840.yml")
    run = subprocess.run(["bash", "-c", f'source "{helper}"; config_value "{cfg}" '
                          "\"d['val_dataset']['dataset_root'], d['iters'], d['model']['type']\""],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep
                              + os.environ["PATH"]})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["data/roads", "840", "PointRend"]


def test_readme_has_the_six_band_pretrained_check_block():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    begin, end = readme_table.markers("pretrained_check_landcover6")
    inside = text[text.index(begin):text.index(end)]
    assert re.search(r"Written by `bash scripts/pretrained_check\.sh configs/landcover6/"
                     r"pointrend_efficientnet_lite0_[^`]*` on commit \w+", inside)
    assert "| **mIoU** |" in inside
