"""The command-line tools end to end, as a user runs them."""

import json
import os
import subprocess
import sys

import pytest

from tiny_config import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=600):
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR", CPU_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_train_val_predict_export_deploy(tmp_path):
    cfg, root = write_tiny_config(tmp_path, iters=4, size=(32, 32))
    out = tmp_path / "out"
    log = run("tools/train.py", "--config", cfg, "--save_dir", str(out), "--save_interval", "2",
              "--do_eval", "--use_vdl", "--log_iters", "1", "--device", "cpu")
    assert "[TRAIN] iter: 4/4" in log and "batch_cost" in log and "ETA" in log
    assert (out / "best_model" / "model.pdparams").exists() and (out / "iter_4" / "model.pdopt").exists()
    assert any(f.startswith("vdlrecords") for f in os.listdir(out / "vdl_log"))

    metrics_file = tmp_path / "m.json"
    log = run("tools/val.py", "--config", cfg, "--model_path", str(out / "iter_4" / "model.pdparams"),
              "--aug_eval", "--scales", "0.75", "1.0", "--flip_horizontal", "--save_json", str(metrics_file))
    m = json.loads(metrics_file.read_text())
    assert 0 <= m["mIoU"] <= 1 and "mIoU" in log and len(m["class_IoU"]) == 3

    run("tools/predict.py", "--config", cfg, "--model_path", str(out / "iter_4"),
        "--image_path", os.path.join(root, "val.txt"), "--save_dir", str(tmp_path / "pred"))
    assert len(os.listdir(tmp_path / "pred" / "pseudo_color_prediction")) >= 1

    run("tools/export.py", "--config", cfg, "--model_path", str(out / "iter_4"),
        "--save_dir", str(tmp_path / "exp"))
    log = run("deploy/python/infer.py", "--config", str(tmp_path / "exp" / "deploy.yaml"),
              "--image_path", os.path.join(root, "val.txt"), "--save_dir", str(tmp_path / "dep"),
              "--benchmark", "--cpu_threads", "1")
    assert "images/s" in log and len(os.listdir(tmp_path / "dep")) >= 1


@pytest.mark.slow
def test_resume_from_cli_and_bad_config_message(tmp_path):
    cfg, _ = write_tiny_config(tmp_path, iters=2)
    out = tmp_path / "out"
    run("tools/train.py", "--config", cfg, "--save_dir", str(out), "--save_interval", "1", "--device", "cpu")
    log = run("tools/train.py", "--config", cfg, "--save_dir", str(out), "--iters", "3",
              "--resume_model", "auto", "--device", "cpu", "--log_iters", "1")
    assert "resumed from" in log and "iter: 3/3" in log
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR")
    bad = subprocess.run([sys.executable, "tools/train.py", "--config", cfg, "--opts", "model.type=PSPnet"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Did you mean: PSPNet" in bad.stderr


@pytest.mark.slow
def test_two_process_cpu_training_keeps_ranks_identical(tmp_path):
    cfg, _ = write_tiny_config(tmp_path, iters=3, batch_size=1, n_train=4)
    out = tmp_path / "dist"
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR", CPU_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                           "--log_dir", str(tmp_path / "log"), os.path.join(ROOT, "tests", "dist_check.py"),
                           cfg, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    logs = ""
    if (tmp_path / "log").is_dir():
        for f in sorted(os.listdir(tmp_path / "log")):
            logs += open(tmp_path / "log" / f, errors="replace").read()[-2000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
    import numpy as np
    import paddle

    w0 = paddle.load(str(out / "rank0.pdparams"))
    w1 = paddle.load(str(out / "rank1.pdparams"))
    assert w0.keys() == w1.keys()
    changed = False
    init = paddle.load(str(out / "init0.pdparams"))
    for k in w0:
        if "_mean" in k or "_variance" in k:  # BN statistics are per rank on CPU (no SyncBN)
            continue
        np.testing.assert_allclose(w0[k].numpy(), w1[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
        changed |= not np.allclose(w0[k].numpy(), init[k].numpy())
    assert changed
