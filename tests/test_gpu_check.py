"""scripts/gpu_check.sh: argument handling, and a clear refusal where it cannot run.

The check itself needs a CUDA machine with Paddle's GPU build; here (CPU-only
Paddle) it must refuse with one message that says why and what to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    # The test's own environment, as if activated (the script then skips set-up).
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def test_help():
    proc = _run("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: bash scripts/gpu_check.sh")
    for option in ("--models", "--iters", "--out", "--skip-train", "--skip-tests"):
        assert option in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unknown argument '--bogus'"),
    (["--iters", "0"], "--iters must be a positive integer, got '0'"),
    (["--iters", "ten"], "--iters must be a positive integer, got 'ten'"),
    (["--iters"], "--iters needs a value"),
    (["--models", "pspnet segformer"],
     "unknown model 'segformer' in --models (allowed: pspnet danet psanet pointrend)"),
    (["--models", ""], "--models needs at least one model"),
    (["--out", ""], "--out needs a directory"),
])
def test_bad_arguments_are_one_clear_error(args, message):
    proc = _run(*args)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"gpu_check: {message}"
    assert "Usage:" in proc.stderr and proc.stdout == ""


@pytest.mark.skipif(__import__("paddle").is_compiled_with_cuda(), reason="Paddle has CUDA here")
def test_refuses_on_cpu_only_paddle(tmp_path):
    proc = _run("--models", "psanet", "--iters", "3", "--out", str(tmp_path / "out"))
    assert proc.returncode == 3, proc.stderr
    assert "gpu_check: cannot run here: Paddle" in proc.stderr
    assert "is a CPU-only build" in proc.stderr
    assert "README.md, section GPU" in proc.stderr and "paddlepaddle-gpu" in proc.stderr
    assert "PASS" not in proc.stdout and not (tmp_path / "out").exists()  # nothing ran
