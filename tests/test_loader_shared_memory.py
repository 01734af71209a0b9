"""Training batches travel from the workers through shared memory where /dev/shm has room."""

import logging
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

from paddleseg_ext.core import Trainer
from paddleseg_ext.core import data as data_mod
from paddleseg_ext.core.data import SHM_ENV, SHM_MIN_FREE, shared_memory_choice
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.utils.logger import get_logger
from tiny_config import write_tiny_config


def fake_statvfs(free_bytes):
    return lambda path: SimpleNamespace(f_bavail=free_bytes // 4096, f_frsize=4096)


def test_choice_rules(monkeypatch, tmp_path):
    monkeypatch.delenv(SHM_ENV, raising=False)
    assert shared_memory_choice(0) == (False, "no workers")
    monkeypatch.setattr(data_mod.os, "statvfs", fake_statvfs(2 * SHM_MIN_FREE))
    assert shared_memory_choice(2) == (True, "")
    # Docker's default /dev/shm: 64 MiB, a bus error waiting to happen
    monkeypatch.setattr(data_mod.os, "statvfs", fake_statvfs(64 << 20))
    use, why = shared_memory_choice(2)
    assert not use and "64 MiB free" in why and "--shm-size" in why
    monkeypatch.undo()
    monkeypatch.delenv(SHM_ENV, raising=False)
    use, why = shared_memory_choice(2, shm_dir=str(tmp_path / "absent"))
    assert not use and "absent is not available" in why
    for off in ("0", "off", "False"):
        monkeypatch.setenv(SHM_ENV, off)
        assert shared_memory_choice(2) == (False, f"{SHM_ENV} is off (the execution policy's "
                                              "shared_memory)")


def first_batches(tmp_path, name, n=3):
    path, _ = write_tiny_config(tmp_path / name, iters=n)
    b = SegBuilder(Config(path))
    trainer = Trainer(b.model, b.optimizer, b.loss, b.train_dataset, n, 2, str(tmp_path / name / "out"),
                      num_workers=2, seed=5, handle_signals=False, save_interval=100)
    loader = trainer.loader()
    out = [(img.numpy().copy(), lab.numpy().copy()) for img, lab in loader]
    return loader.use_shared_memory, out


@pytest.mark.skipif(not shared_memory_choice(2)[0], reason="this machine's /dev/shm is too small")
class Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def messages():
    handler, log = Messages(), get_logger()
    log.addHandler(handler)
    yield handler.lines
    log.removeHandler(handler)


def test_shared_memory_batches_equal_pipe_batches(tmp_path, monkeypatch, messages):
    monkeypatch.delenv(SHM_ENV, raising=False)
    used, shm = first_batches(tmp_path, "shm")
    assert used
    assert not [m for m in messages if "shared memory" in m]
    monkeypatch.setenv(SHM_ENV, "0")
    used, pipe = first_batches(tmp_path, "pipe")
    assert not used
    assert [m for m in messages if m.endswith(f"not shared memory: {SHM_ENV} is off (the "
                                              "execution policy's shared_memory)")], messages
    assert len(shm) == len(pipe) == 3
    for (img_a, lab_a), (img_b, lab_b) in zip(shm, pipe):
        assert img_a.dtype == img_b.dtype == np.float32
        assert lab_a.dtype == lab_b.dtype == np.uint8  # labels stay narrow on either path
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(lab_a, lab_b)


def test_no_workers_no_message(tmp_path, messages):
    path, _ = write_tiny_config(tmp_path, iters=1)
    b = SegBuilder(Config(path))
    trainer = Trainer(b.model, b.optimizer, b.loss, b.train_dataset, 1, 2, str(tmp_path / "out"),
                      num_workers=0, seed=0, handle_signals=False)
    loader = trainer.loader()
    assert not loader.use_shared_memory and not [m for m in messages if "shared memory" in m]


def test_remove_own_shared_memory_only_touches_that_pid(tmp_path):
    for name in ("paddle_123_0_9", "paddle_123_7_1", "paddle_1234_0_5", "other_123_0"):
        (tmp_path / name).write_bytes(b"x")
    assert data_mod.remove_own_shared_memory(123, str(tmp_path)) == 2
    assert sorted(os.listdir(tmp_path)) == ["other_123_0", "paddle_1234_0_5"]
    assert data_mod.remove_own_shared_memory(5, str(tmp_path / "absent")) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_worker_whose_trainer_is_gone_cleans_up_and_exits(tmp_path, monkeypatch):
    """A worker told its trainer is a pid that is not its parent (the trainer died
    before the worker started) removes its shared-memory batches and exits."""
    monkeypatch.setattr(data_mod, "SHM_DIR", str(tmp_path))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the "worker"
        try:
            os.close(r)
            (tmp_path / f"paddle_{os.getpid()}_0_1").write_bytes(b"batch")
            os.write(w, b"ready")
            data_mod.ignore_signals_in_worker(0, trainer_pid=os.getppid() + 10 ** 6)
            time.sleep(30)  # the watchdog thread ends the process long before this
        finally:
            os._exit(3)
    os.close(w)
    assert os.read(r, 5) == b"ready"
    end = time.time() + 20
    while time.time() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the worker did not exit")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert not list(tmp_path.glob("paddle_*"))
