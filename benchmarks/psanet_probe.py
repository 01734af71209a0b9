"""Largest square image PSANet-R50 can infer: fused vs unfused PSA attention.

PSANet (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf),
the Cityscapes recipe (``configs/psanet/psanet_resnet50_os8_cityscapes_1024x512_80k.yml``:
R50-vd os8, 59x59 mask, bi-direction, shrink 2), random weights (nothing is
downloaded), eval mode, batch 1, ``paddle.no_grad()``, 2 threads. Each probe
is one forward pass at ``side x side`` in its own process, capped by a memory
cgroup (``--limit-gib``, default 16): cgroup v2 ``memory.max`` where the
unified hierarchy has the memory controller, else cgroup v1
``memory.limit_in_bytes``, else ``prlimit --as``. A probe passes when the
forward returns; the report gives the peak RSS (``VmHWM``), the time, and
how many convolutions ran in strips under the inference conv budget
(:mod:`paddleseg_ext.runtime.forms.conv`; ``$PADDLESEG_EXT_CONV_BUDGET_MB``
is passed to the child, ``0`` reproduces whole convolutions).

Usage (as root, late, when the machine is quiet)::

    python benchmarks/psanet_probe.py --impl op --sides 2816,3072
    python benchmarks/psanet_probe.py --impl fused --sides 4096,5632
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def child(impl: str, side: int, threads: int) -> dict:
    """One eval forward of PSANet-R50 at ``side x side``; peak RSS and time."""
    from common import set_threads

    set_threads(threads)
    import numpy as np
    import paddle

    import paddleseg_ext.models  # noqa: F401  (registers the models)
    from deployment import load_recipe
    from paddleseg_ext.cvlibs import SegBuilder

    from paddleseg_ext.runtime import policy_from_environment, prepare

    cfg = load_recipe("psanet", quick=False)
    policy = policy_from_environment(target="infer", psa_impl=impl)
    model = prepare(SegBuilder(cfg).model, policy)  # the inference forms tools/val.py runs
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, side, side))
                         .astype("float32"))
    t0 = time.perf_counter()
    with paddle.no_grad():
        out = model(x)[0]
        shape = list(out.shape)
        finite = bool(paddle.isfinite(out).all())
    seconds = time.perf_counter() - t0
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) / 1024.0 for line in f if line.startswith("VmHWM:"))
    from paddleseg_ext.runtime.forms.conv import strip_stats

    ran = type(model.psa).__name__ + (f" {model.psa.custom_ops}" if model.psa.custom_ops else "")
    return {"impl": impl, "ran": ran, "side": side, "seconds": seconds,
            "peak_rss_mb": hwm, "out_shape": shape, "finite": finite,
            "conv_budget_mb": policy.conv_budget_bytes / 2 ** 20, **strip_stats}


def _cgroup(limit_bytes: int, name: str) -> Optional[Path]:
    """A fresh memory cgroup with the limit set, or None where none can be made."""
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists() and "memory" in (v2 / "cgroup.controllers").read_text():
        group = v2 / name
        group.mkdir(exist_ok=True)
        (group / "memory.max").write_text(str(limit_bytes))
        (group / "memory.swap.max").write_text("0") if (group / "memory.swap.max").exists() else None
        return group
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists():
        group = v1 / name
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
        return group
    return None


def probe(impl: str, side: int, threads: int, limit_gib: float, timeout: float) -> dict:
    """Run one probe in a child process inside a memory cgroup; its result or the failure."""
    limit = int(limit_gib * 2 ** 30)
    name = f"psanet_probe_{os.getpid()}_{impl}_{side}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, str(side), str(threads)]
    group, how = None, "none"
    try:
        group = _cgroup(limit, name)
    except OSError:
        group = None
    if group is not None:
        how = f"cgroup {'v2 memory.max' if (group / 'memory.max').exists() else 'v1 memory.limit_in_bytes'}"
        procs = group / "cgroup.procs"
        # The child moves itself into the group before it imports anything.
        cmd = ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *cmd]
    elif shutil.which("prlimit"):
        how = "prlimit --as"
        cmd = ["prlimit", f"--as={limit}", *cmd]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=dict(os.environ, OPENCV_LOG_LEVEL="ERROR"))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode == 0 and lines:
            res = json.loads(lines[-1])
        else:
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
            why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            res = {"impl": impl, "side": side, "error": f"{why}: {tail[0][:200]}"}
    except subprocess.TimeoutExpired:
        res = {"impl": impl, "side": side, "error": f"timed out after {timeout:.0f} s"}
    res["wall_s"] = time.perf_counter() - t0
    res["limit"] = f"{limit_gib:g} GiB via {how}"
    if group is not None:
        for key in ("memory.peak", "memory.max_usage_in_bytes"):
            if (group / key).exists():
                res["cgroup_peak_mb"] = int((group / key).read_text()) / 2 ** 20
        events = group / "memory.events"
        if events.exists():
            res["oom_kills"] = events.read_text().split("oom_kill ")[-1].split()[0]
        try:
            group.rmdir()
        except OSError:
            pass
    return res


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impl", required=True, choices=["op", "paddle", "fused"])
    p.add_argument("--sides", required=True, help="comma-separated image sides, tried in order")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit-gib", type=float, default=16.0)
    p.add_argument("--timeout", type=float, default=3000.0)
    p.add_argument("--out", default=None, help="append JSON lines here")
    a = p.parse_args(argv)
    for side in (int(s) for s in a.sides.split(",")):
        res = probe(a.impl, side, a.threads, a.limit_gib, a.timeout)
        line = json.dumps(res)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import paddleseg_ext  # noqa: F401 - the package's MKL choice first

        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))), flush=True)
        sys.exit(0)
    sys.exit(main())
