"""SIGKILL at random moments -- some of them in the middle of a checkpoint save -- five
times, each followed by ``--resume_model auto``: the run still ends with a complete,
loadable model at the final iteration, and no kill ever costs more than the save
interval (here 1 iteration)."""

import os
import random
import re
import signal
import subprocess
import sys
import time

import paddle
import pytest

from paddleseg_ext.checkpoints import training as ckpt
from tiny_config import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITERS = 14
KILLS = 5


def _iter_of(path):
    return int(os.path.basename(path).split("_")[1]) if path else 0


def _start(cfg, out, log_path, workers=0):
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR", PYTHONUNBUFFERED="1")
    env.pop("PADDLESEG_EXT_DEBUG", None)
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "tools/train.py", "--config", cfg, "--save_dir", out, "--save_interval", "1",
         "--keep_checkpoint_max", "2", "--resume_model", "auto", "--log_iters", "1", "--device", "cpu",
         "--num_threads", "1", "--num_workers", str(workers)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _children(pid):
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(c) for c in f.read().split()]
    return kids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _shm_names():
    try:
        return os.listdir("/dev/shm")
    except OSError:
        return []


def _wait(proc, cond, timeout=120, poll=0.005):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise AssertionError("timeout")


@pytest.mark.slow
def test_sigkill_five_times_then_finish(tmp_path):
    cfg, _ = write_tiny_config(tmp_path, iters=ITERS)
    out = str(tmp_path / "out")
    rng = random.Random(2024)
    latest_before = 0
    mid_save_kills = 0
    for k in range(KILLS):
        log_path = str(tmp_path / f"run{k}.log")
        proc = _start(cfg, out, log_path, workers=2 if k % 2 == 0 else 0)
        text = lambda: open(log_path).read()  # noqa: E731
        # wait until this run is training (past start-up), then pick the moment
        if not _wait(proc, lambda: re.search(r"iter: \d+/", text())):
            raise AssertionError(f"run {k} ended before training:\n{text()[-3000:]}")
        if k % 2 == 1:  # kill exactly while a checkpoint is being written
            tmp_seen = _wait(proc, lambda: os.path.isdir(out) and any(
                n.startswith(".iter_") and n.endswith(".tmp") for n in os.listdir(out)), poll=0.001)
            mid_save_kills += bool(tmp_seen)
        else:
            time.sleep(rng.uniform(0.0, 1.5))
        assert proc.poll() is None, f"run {k} finished before it was killed:\n{text()[-3000:]}"
        children = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        if k % 2 == 0:  # the loader workers die with the trainer instead of lingering
            assert len(children) == 2, children
            end = time.time() + 10
            while any(_alive(c) for c in children) and time.time() < end:
                time.sleep(0.05)
            assert not any(_alive(c) for c in children), children
            # ... and remove the batches they had queued in shared memory (RAM until reboot)
            left = [n for n in _shm_names() if any(n.startswith(f"paddle_{c}_") for c in children)]
            assert not left, left
        proc.log.close()
        assert proc.returncode == -signal.SIGKILL
        logged = [int(m) for m in re.findall(r"iter: (\d+)/", text())]
        # what --resume_model auto will see: complete checkpoints only, each one loadable
        complete = ckpt.list_checkpoints(out)
        # A kill before the first save completes leaves nothing to resume (and loses at
        # most that one iteration); once anything was saved there is always a checkpoint.
        assert complete or (latest_before == 0 and max(logged, default=0) <= 1), \
            f"no complete checkpoint after kill {k}:\n{text()[-2000:]}"
        for path in complete:  # readable, not half-written
            assert ckpt.is_complete(path)
            assert len(paddle.load(os.path.join(path, "model.pdparams"))) > 0
        latest = _iter_of(complete[-1]) if complete else 0
        # never more than the save interval lost: the last finished step was saved or being saved
        assert latest >= max(logged) - 1 >= latest_before - 1, (k, latest, logged, latest_before)
        if k:
            assert f"resumed from {os.path.join(out, f'iter_{latest_before}')} at iter {latest_before}" \
                in text() or latest_before == 0, text()[-2000:]
        latest_before = latest
    assert mid_save_kills >= 1  # at least one kill landed inside a save

    log_path = str(tmp_path / "final.log")
    proc = _start(cfg, out, log_path)
    proc.wait(timeout=300)
    proc.log.close()
    text = open(log_path).read()
    assert proc.returncode == 0, text[-3000:]
    assert f"resumed from {os.path.join(out, f'iter_{latest_before}')}" in text and f"iter: {ITERS}/{ITERS}" in text
    final = os.path.join(out, f"iter_{ITERS}")
    assert ckpt.latest_checkpoint(out) == final and ckpt.is_complete(final)
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # interrupted saves were tidied up

    # the final model loads into a freshly built network
    from paddleseg_ext.cvlibs import Config, SegBuilder
    b = SegBuilder(Config(cfg))
    state = ckpt.load_checkpoint(final, b.model, b.optimizer)
    assert state["iter"] == ITERS
