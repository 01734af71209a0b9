"""Faults during a run never lose more than the last save interval.

NaN / Inf losses, SIGINT / SIGTERM (real signals to a real ``tools/train.py``
process), kills and failures in the middle of a checkpoint save, damaged
checkpoints, exact resume across processes, and out-of-memory errors in
evaluation, prediction and training.
"""

import importlib.util
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

import numpy as np
import paddle
import pytest

from paddleseg_ext.core import Trainer
from paddleseg_ext.core.hooks import NonFiniteLossError
from paddleseg_ext.core.infer import is_out_of_memory
from paddleseg_ext.core.val import evaluate
from paddleseg_ext.cvlibs import Config, SegBuilder, manager
from paddleseg_ext.utils.cli import run_cli
from paddleseg_ext.models.losses.cross_entropy_loss import CrossEntropyLoss
from paddleseg_ext.models.pspnet import PSPNet
from paddleseg_ext.checkpoints import training as ckpt
from paddleseg_ext.utils.logger import get_logger
from paddleseg_ext.utils.runtime import seed_everything
from tiny_config import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Configure the toolkit log now (at collection), on a stream that lives for the whole session,
# not on the stdout capture of whichever test would log first.
get_logger()
FAST = ["--device", "cpu", "--num_threads", "1", "--log_iters", "1"]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


train_tool, val_tool, pred_tool = load_tool("train"), load_tool("val"), load_tool("predict")


def cli(capsys, tool, *argv):
    """Run a tool as the command line does; return (exit status, stderr, stdout + log)."""
    capsys.readouterr()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    get_logger().addHandler(handler)
    try:
        code = run_cli(tool, [str(a) for a in argv])
    finally:
        get_logger().removeHandler(handler)
    out, err = capsys.readouterr()
    return code, err, out + buf.getvalue()


def error_line(err):
    assert "Traceback" not in err, err
    assert "error: " in err, err
    return err[err.index("error: "):]


@manager.LOSSES.register(name="TestNaNOnCalls")
class NaNOnCalls(paddle.nn.Layer):
    """Cross entropy that returns NaN on the given call numbers (1-based): one call per step."""

    def __init__(self, nan_calls: Sequence[int] = (), ignore_index: int = 255) -> None:
        super().__init__()
        self.ce = CrossEntropyLoss(ignore_index=ignore_index)
        self.nan_calls, self.calls = set(nan_calls), 0

    def forward(self, logit, label):
        self.calls += 1
        loss = self.ce(logit, label)
        return loss * float("nan") if self.calls in self.nan_calls else loss


@pytest.fixture()
def tiny(tmp_path):
    cfg, root = write_tiny_config(tmp_path, iters=6)
    return cfg, root, str(tmp_path / "out")


def weights_of(path):
    return {k: np.asarray(v) for k, v in paddle.load(os.path.join(path, "model.pdparams")).items()}


# --------------------------------------------------------------------------- #
# NaN / Inf
# --------------------------------------------------------------------------- #
def test_nan_stops_with_iteration_and_term_then_resumes(tiny, capsys):
    cfg, _, out = tiny
    code, err, log = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", out, "--save_interval", "2",
                         *FAST, "--opts", "loss.types.0.type=TestNaNOnCalls", "loss.types.0.nan_calls=[5]")
    assert code == 1
    msg = error_line(err)
    assert "non-finite loss at iter 5: loss_seg=nan, loss_aux=nan" in msg
    assert f"the last good checkpoint is {os.path.join(out, 'iter_4')}" in msg and "--resume_model auto" in msg
    assert ckpt.latest_checkpoint(out) == os.path.join(out, "iter_4")
    assert all(np.isfinite(v).all() for v in weights_of(os.path.join(out, "iter_4")).values())
    # fixed (the normal loss again): resume from the last good checkpoint and finish
    code, err, log = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", out, "--save_interval", "2",
                         "--resume_model", "auto", *FAST)
    assert code == 0, err
    assert f"resumed from {os.path.join(out, 'iter_4')} at iter 4" in log and "iter: 6/6" in log


def test_nan_policy_skip_through_the_cli(tiny, capsys):
    cfg, _, out = tiny
    code, err, log = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", out, "--save_interval", "100",
                         "--iters", "3", "--nan_policy", "skip", *FAST,
                         "--opts", "loss.types.0.type=TestNaNOnCalls", "loss.types.0.nan_calls=[2]")
    assert code == 0, err
    assert "non-finite loss at iter 2: loss_seg=nan" in log and "step skipped (nan_policy=skip)" in log
    assert "iter: 3/3" in log
    assert all(np.isfinite(v).all() for v in weights_of(os.path.join(out, "iter_3")).values())


def test_non_finite_weights_are_never_saved(tiny):
    cfg, _, out = tiny
    seed_everything(0)
    b = SegBuilder(Config(cfg))
    t = Trainer(b.model, b.optimizer, b.loss, b.train_dataset, 4, 2, out, save_interval=2, handle_signals=False)

    class Poison:
        def before_train(self, t):
            pass

        def after_step(self, t):
            if t.iter == 4:
                p = t.model.parameters()[0]
                p.set_value(paddle.full(p.shape, float("inf"), p.dtype))

        def after_train(self, t):
            pass

    t.hooks.insert(0, Poison())
    with pytest.raises(NonFiniteLossError, match=r"parameters became NaN/Inf by iter 4 .*not saved.*"
                                                 r"last good checkpoint is .*iter_2"):
        t.train()
    assert ckpt.latest_checkpoint(out).endswith("iter_2")


# --------------------------------------------------------------------------- #
# Signals to a real process; exact resume across processes (with 2 loader workers)
# --------------------------------------------------------------------------- #
def _start(cfg, save_dir, *extra, log_path):
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR", PYTHONUNBUFFERED="1")
    env.pop("PADDLESEG_EXT_DEBUG", None)
    f = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "tools/train.py", "--config", cfg, "--save_dir", save_dir,
                             *FAST, *extra], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group, like a terminal job
    proc.log_file = f
    return proc


def _wait_for(proc, log_path, text, timeout=240):
    end = time.time() + timeout
    while time.time() < end:
        if text in open(log_path).read():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before '{text}':\n"
                                 + open(log_path).read()[-3000:])
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timeout waiting for '{text}':\n" + open(log_path).read()[-3000:])


def _finish(proc, log_path, timeout=240):
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.log_file.close()
    return proc.returncode, open(log_path).read()


def test_signals_save_and_exit_then_resume_exactly(tmp_path, capsys):
    """Real processes: SIGINT to the whole process group (as Ctrl-C does) of a run with 2
    loader workers, and SIGTERM to a run without workers. Each saves and exits 130 / 143;
    the SIGINT run resumed in another process ends bit-identical to an uninterrupted run
    (weights, optimizer, LR; so the data order too)."""
    iters = 6
    cfg, _ = write_tiny_config(tmp_path, iters=iters)
    logs = {k: str(tmp_path / f"{k}.log") for k in ("straight", "sigint", "sigterm")}
    dirs = {k: str(tmp_path / k) for k in logs}
    workers = ["--num_workers", "2", "--save_interval", "100"]
    procs = {"straight": _start(cfg, dirs["straight"], *workers, log_path=logs["straight"]),
             "sigint": _start(cfg, dirs["sigint"], *workers, log_path=logs["sigint"]),
             "sigterm": _start(cfg, dirs["sigterm"], "--iters", "200", "--save_interval", "1000",
                               log_path=logs["sigterm"])}
    _wait_for(procs["sigint"], logs["sigint"], "iter: 2/6")
    os.killpg(procs["sigint"].pid, signal.SIGINT)  # main process and its loader workers
    _wait_for(procs["sigterm"], logs["sigterm"], "iter: 2/200")
    procs["sigterm"].send_signal(signal.SIGTERM)
    results = {k: _finish(p, logs[k]) for k, p in procs.items()}

    code, log = results["sigterm"]
    assert code == 128 + signal.SIGTERM, log[-3000:]
    assert "Traceback" not in log
    n = int(log.split("SIGTERM received at iter ")[1].split(":")[0])
    saved = os.path.join(dirs["sigterm"], f"iter_{n}")
    assert f"saved {saved}; continue with --resume_model {saved}" in log and ckpt.is_complete(saved)

    code, log = results["sigint"]
    assert code == 128 + signal.SIGINT, log[-3000:]
    assert "Traceback" not in log and "DataLoader" not in log, log[-3000:]
    n = int(log.split("SIGINT received at iter ")[1].split(":")[0])
    assert 2 <= n < iters, log[-3000:]
    assert ckpt.latest_checkpoint(dirs["sigint"]) == os.path.join(dirs["sigint"], f"iter_{n}")
    assert results["straight"][0] == 0, results["straight"][1][-3000:]

    # resume the SIGINT run in another process (this one) with 2 workers: identical to straight
    code, err, out = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", dirs["sigint"], *FAST,
                         *workers, "--resume_model", os.path.join(dirs["sigint"], f"iter_{n}"))
    assert code == 0, err
    assert f"resumed from {os.path.join(dirs['sigint'], f'iter_{n}')} at iter {n}" in out
    a = os.path.join(dirs["straight"], f"iter_{iters}")
    b = os.path.join(dirs["sigint"], f"iter_{iters}")
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    oa, ob = paddle.load(os.path.join(a, "model.pdopt")), paddle.load(os.path.join(b, "model.pdopt"))
    for k in oa:
        if hasattr(oa[k], "shape"):
            np.testing.assert_array_equal(np.asarray(oa[k]), np.asarray(ob[k]), err_msg=k)
    sa, sb = (json.load(open(os.path.join(p, "state.json"))) for p in (a, b))
    assert sa["lr_scheduler"] == sb["lr_scheduler"] and sa["iter"] == sb["iter"] == iters


def test_second_signal_stops_at_once(tiny):
    cfg, _, out = tiny
    seed_everything(0)
    b = SegBuilder(Config(cfg))
    t = Trainer(b.model, b.optimizer, b.loss, b.train_dataset, 6, 2, out, save_interval=100,
                handle_signals=True)

    class Twice:
        def before_train(self, t):
            pass

        def after_step(self, t):
            if t.iter == 2:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)  # impatient: the second one interrupts

        def after_train(self, t):
            pass

    t.hooks.insert(0, Twice())
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="second signal"):
        t.train()
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_signal_during_evaluation_stops_the_eval_and_saves(tiny, monkeypatch):
    cfg, _, out = tiny
    seed_everything(0)
    b = SegBuilder(Config(cfg))
    t = Trainer(b.model, b.optimizer, b.loss, b.train_dataset, 6, 2, out, val_dataset=b.val_dataset,
                save_interval=2, do_eval=True, handle_signals=True)
    real = PSPNet.forward

    def forward(self, x):
        if not self.training:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the evaluation
        return real(self, x)

    monkeypatch.setattr(PSPNet, "forward", forward)
    result = t.train()
    assert result["stopped_by"] == "SIGTERM" and result["iter"] == 2
    assert ckpt.latest_checkpoint(out).endswith("iter_2")
    assert not os.path.exists(os.path.join(out, "best_model"))  # the interrupted eval counts for nothing
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# --------------------------------------------------------------------------- #
# Kills and failures during a checkpoint save; damaged checkpoints
# --------------------------------------------------------------------------- #
class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (no except / cleanup code)."""


def _tiny_state(value):
    model = paddle.nn.Linear(4, 3)
    for p in model.parameters():
        p.set_value(paddle.full(p.shape, float(value), p.dtype))
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    model(paddle.ones([2, 4])).sum().backward()
    opt.step()
    opt.clear_grad()
    return model, opt


def _save(save_dir, name, value):
    model, opt = _tiny_state(value)
    return ckpt.save_checkpoint(save_dir, name, model, opt, {"iter": int(name.split("_")[-1])
                                                             if name.startswith("iter_") else 0})


def _loaded_value(path):
    model, opt = _tiny_state(0)
    ckpt.load_checkpoint(path, model, opt)
    return float(model.weight.numpy().ravel()[0])


@pytest.mark.parametrize("point", ["model_file", "before_state_json", "replace_aside", "replace_in",
                                   "remove_old", "prune"])
def test_kill_at_every_point_of_a_save(tmp_path, monkeypatch, point):
    save_dir = str(tmp_path)
    _save(save_dir, "iter_2", 2.0)
    _save(save_dir, "iter_4", 4.0)
    _save(save_dir, "best_model", 1.0)
    v2, v4 = _loaded_value(os.path.join(save_dir, "iter_2")), _loaded_value(os.path.join(save_dir, "iter_4"))
    real_replace, real_save, real_rmtree = os.replace, paddle.save, ckpt.shutil.rmtree
    calls = {"replace": 0}

    if point == "model_file":  # half of model.pdparams written
        def save(obj, path, *a, **k):
            real_save(obj, path, *a, **k)
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
            raise Killed
        monkeypatch.setattr(ckpt.paddle, "save", save)
    elif point == "before_state_json":
        def dump(*a, **k):
            raise Killed
        monkeypatch.setattr(ckpt.json, "dump", dump)
    elif point in ("replace_aside", "replace_in"):  # best_model exists: it is renamed aside first
        def replace(src, dst):
            calls["replace"] += 1
            if point == "replace_aside" and calls["replace"] == 1:
                raise Killed
            real_replace(src, dst)
            if point == "replace_in" and calls["replace"] == 1:
                raise Killed  # old one aside, new one not yet in place
        monkeypatch.setattr(ckpt.os, "replace", replace)
    elif point == "remove_old":
        def rmtree(path, *a, **k):
            if path.endswith(".best_model.old") and os.path.isdir(path):
                os.remove(os.path.join(path, "model.pdparams"))  # half deleted
                raise Killed
            return real_rmtree(path, *a, **k)
        monkeypatch.setattr(ckpt.shutil, "rmtree", rmtree)
    elif point == "prune":
        def rmtree(path, *a, **k):
            if path.endswith(".iter_2.del") and os.path.isdir(path):
                os.remove(os.path.join(path, "model.pdopt"))  # half deleted
                raise Killed
            return real_rmtree(path, *a, **k)
        monkeypatch.setattr(ckpt.shutil, "rmtree", rmtree)

    with pytest.raises(Killed):
        if point == "prune":
            ckpt.prune_checkpoints(save_dir, keep=1)
        elif point in ("replace_aside", "replace_in", "remove_old"):
            _save(save_dir, "best_model", 9.0)
        else:
            _save(save_dir, "iter_6", 6.0)
    monkeypatch.undo()

    # what --resume_model auto sees right after the kill: a complete checkpoint, never a half one
    latest = ckpt.latest_checkpoint(save_dir)
    assert latest == os.path.join(save_dir, "iter_4")
    assert _loaded_value(latest) == v4
    if point != "prune":
        assert _loaded_value(os.path.join(save_dir, "iter_2")) == v2
    # the next run tidies up: no temporary folders, best_model present and complete
    ckpt.recover(save_dir)
    names = sorted(os.listdir(save_dir))
    assert not [n for n in names if n.startswith(".")], names
    assert ckpt.is_complete(os.path.join(save_dir, "best_model"))
    best = _loaded_value(os.path.join(save_dir, "best_model"))
    assert best == (_tiny_value(9.0) if point in ("replace_in", "remove_old") else _tiny_value(1.0))
    assert names == (["best_model", "iter_4"] if point == "prune" else ["best_model", "iter_2", "iter_4"])


def _tiny_value(v):
    model, _ = _tiny_state(v)
    return float(model.weight.numpy().ravel()[0])


def test_damaged_checkpoints_are_skipped_by_auto(tmp_path, capsys):
    save_dir = str(tmp_path)
    _save(save_dir, "iter_2", 2.0)
    _save(save_dir, "iter_4", 4.0)
    _save(save_dir, "iter_6", 6.0)
    # iter_6: truncated (size differs from state.json) -> not complete at all
    p6 = os.path.join(save_dir, "iter_6", "model.pdopt")
    open(p6, "r+b").truncate(100)
    assert ckpt.latest_checkpoint(save_dir).endswith("iter_4")
    # iter_4: same size but garbage -> complete-looking, unreadable
    p4 = os.path.join(save_dir, "iter_4", "model.pdparams")
    size = os.path.getsize(p4)
    open(p4, "wb").write(b"\x00" * size)
    model, opt = _tiny_state(0)
    t = Trainer(model, opt, {"types": [], "coef": []}, [], 10, 1, save_dir, handle_signals=False)
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    get_logger().addHandler(handler)
    try:
        t.resume("auto")
    finally:
        get_logger().removeHandler(handler)
    assert t.iter == 2 and "skipping " + os.path.join(save_dir, "iter_4") in buf.getvalue()
    with pytest.raises(ValueError, match=r"iter_4 cannot be read .*damaged"):
        t.resume(os.path.join(save_dir, "iter_4"))
    with pytest.raises(ValueError, match=r"iter_6 is incomplete"):
        t.resume(os.path.join(save_dir, "iter_6"))
    with pytest.raises(FileNotFoundError, match=r"--resume_model .*iter_9: no such checkpoint folder"):
        t.resume(os.path.join(save_dir, "iter_9"))


def test_failed_save_disk_full_keeps_the_previous_checkpoint(tiny, capsys, monkeypatch):
    cfg, _, out = tiny
    real = ckpt._fsync_file
    saves = {"n": 0}

    def fsync(path):
        if path.endswith("model.pdparams"):
            saves["n"] += 1
            if saves["n"] == 2:
                raise OSError(28, "No space left on device")
        real(path)

    monkeypatch.setattr(ckpt, "_fsync_file", fsync)
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", out, "--save_interval", "2",
                       "--iters", "4", *FAST)
    assert code == 1
    assert f"could not save checkpoint {os.path.join(out, 'iter_4')}: No space left on device" in error_line(err)
    assert sorted(os.listdir(out)) == ["iter_2"] and ckpt.is_complete(os.path.join(out, "iter_2"))


# --------------------------------------------------------------------------- #
# Out of memory
# --------------------------------------------------------------------------- #
@pytest.fixture()
def weights(tiny):
    cfg, root, out = tiny
    seed_everything(0)
    model = SegBuilder(Config(cfg)).model
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.pdparams")
    paddle.save(model.state_dict(), path)
    return cfg, root, path


def _oom_above(monkeypatch, pixels, exc=MemoryError, training=None):
    """PSPNet raises ``exc`` (as Paddle's allocator does) for inputs larger than ``pixels``."""
    real = PSPNet.forward

    def forward(self, x):
        if x.shape[-1] * x.shape[-2] > pixels and (training is None or self.training == training):
            raise exc("(ResourceExhausted) Fail to alloc memory of 4398046511104 size, error code is 12.")
        return real(self, x)

    monkeypatch.setattr(PSPNet, "forward", forward)


def test_eval_out_of_memory_names_image_and_suggests_slide(weights, capsys, monkeypatch):
    cfg, root, path = weights
    _oom_above(monkeypatch, 16 * 16)
    code, err, _ = cli(capsys, val_tool.main, "--config", cfg, "--model_path", path, *FAST[:4])
    assert code == 1
    msg = error_line(err)
    assert f"Out of memory evaluating {os.path.join(root, 'images', 'val_0000.png')} (input shape " \
           "[1, 3, 32, 32])" in msg
    assert "--is_slide --crop_size W H --stride W H" in msg and "test_config" in msg
    # sliding windows that fit: evaluation works, from the command line ...
    code, err, out = cli(capsys, val_tool.main, "--config", cfg, "--model_path", path, *FAST[:4],
                         "--is_slide", "--crop_size", "16", "16", "--stride", "12", "12")
    assert code == 0, err
    assert "slide crop [16, 16] stride [12, 12]" in out and "mIoU" in out
    # ... or from test_config in the config
    text = open(cfg).read() + "test_config: {is_slide: true, crop_size: [16, 16], stride: [12, 12]}\n"
    open(cfg, "w").write(text)
    code, err, out = cli(capsys, val_tool.main, "--config", cfg, "--model_path", path, *FAST[:4])
    assert code == 0, err
    assert "slide crop [16, 16] stride [12, 12]" in out
    # windows that still do not fit: told to make them smaller
    code, err, _ = cli(capsys, val_tool.main, "--config", cfg, "--model_path", path, *FAST[:4],
                       "--crop_size", "24", "24", "--stride", "16", "16")
    assert code == 1 and "use a smaller --crop_size" in error_line(err)


def test_gpu_style_oom_errors_are_recognised(weights, monkeypatch):
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA error(2), out of memory."))
    assert is_out_of_memory(OSError("(External) CUDNN error(4), CUDNN_STATUS_ALLOC_FAILED."))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    cfg, _, path = weights
    _oom_above(monkeypatch, 16 * 16, exc=RuntimeError)
    b = SegBuilder(Config(cfg))
    with pytest.raises(MemoryError, match=r"Out of memory evaluating .*val_0000.png .*--is_slide"):
        evaluate(b.model, b.val_dataset, progress=False)


def test_predict_out_of_memory(weights, tmp_path, capsys, monkeypatch):
    cfg, root, path = weights
    _oom_above(monkeypatch, 16 * 16)
    code, err, _ = cli(capsys, pred_tool.main, "--config", cfg, "--model_path", path, *FAST[:4],
                       "--image_path", os.path.join(root, "images", "val_0001.png"), "--save_dir", tmp_path / "p")
    assert code == 1
    msg = error_line(err)
    assert "Out of memory predicting " + os.path.join(root, "images", "val_0001.png") in msg and "--is_slide" in msg


def test_oom_in_training_and_in_training_eval_keep_the_checkpoint(tiny, capsys, monkeypatch):
    cfg, _, out = tiny
    _oom_above(monkeypatch, 16 * 16, training=False)  # only the full-size evaluation fails
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", out, "--save_interval", "2",
                       "--do_eval", *FAST)
    assert code == 1 and "Out of memory evaluating" in error_line(err)
    assert ckpt.latest_checkpoint(out) == os.path.join(out, "iter_2")  # saved before the evaluation
    monkeypatch.undo()
    calls = {"n": 0}
    real = PSPNet.forward

    def forward(self, x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("(ResourceExhausted) Fail to alloc memory")
        return real(self, x)

    monkeypatch.setattr(PSPNet, "forward", forward)
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", out, "--save_interval", "2",
                       "--resume_model", "auto", *FAST)
    msg = error_line(err)
    assert code == 1 and "out of memory at iter 4 (batch of shape [2, 3, 32, 32]): lower batch_size" in msg
    assert f"The last checkpoint is {os.path.join(out, 'iter_2')}" in msg
