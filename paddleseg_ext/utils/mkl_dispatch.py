"""Make Paddle's MKL use its AVX2 kernels on AMD processors.

Paddle's CPU wheels do their GEMMs (every ``conv2d`` and ``matmul``) in the
MKL they ship (``libmklml_intel.so``). That MKL picks its code path from the
CPU vendor, and on AMD processors it falls back to a generic path even when
the CPU has AVX2 and FMA. ``MKL_DEBUG_CPU_TYPE=5`` tells this MKL to use its
AVX2 path. Measured on the 2-core AMD EPYC development machine (Paddle 3.3.1,
2 threads): ``paddle.matmul`` 1024x4608 @ 4608x2048 went from 34 to 130
GFLOP/s and a 3x3 ``conv2d`` 512->1024 channels from 24 to 96 GFLOP/s
(``benchmarks/run.py --sections mkl``). The results are those of MKL's AVX2
kernels, the same ones it runs on Intel processors.

MKL reads the variable on its first call, so :func:`apply` has to run before
anything calls into MKL; importing ``paddleseg_ext`` runs it (importing
``paddle`` alone does not call MKL). It changes nothing when

* the processor is not an AMD one with both ``avx2`` and ``fma`` flags (an
  Intel CPU already gets MKL's best path; forcing AVX2 there could *lower*
  it from AVX-512),
* ``MKL_DEBUG_CPU_TYPE`` is already set (the user's choice wins), or
* ``PADDLESEG_EXT_MKL_DISPATCH=0`` is set (opt out).
"""

from __future__ import annotations

import os
import platform
from typing import Mapping, MutableMapping, Optional

ENV = "MKL_DEBUG_CPU_TYPE"
AVX2 = "5"
OPT_OUT = "PADDLESEG_EXT_MKL_DISPATCH"

#: True when :func:`apply` set the variable in this process (so benchmark
#: children can be started without it, to measure plain Paddle).
applied = False


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read(1 << 16)  # the first processor's block is enough
    except OSError:
        return ""


def wants_avx2_path(cpuinfo: str, machine: Optional[str] = None) -> bool:
    """True for an x86-64 AMD processor whose flags include ``avx2`` and ``fma``.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (its first processor block).
        machine: ``platform.machine()``; read when None.
    """
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in ("x86_64", "amd64"):
        return False
    vendor, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and vendor is None:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if vendor is not None and flags:
            break
    return vendor == "AuthenticAMD" and {"avx2", "fma"} <= flags


def apply(environ: Optional[MutableMapping[str, str]] = None,
          cpuinfo: Optional[str] = None, machine: Optional[str] = None) -> bool:
    """Set ``MKL_DEBUG_CPU_TYPE=5`` where it helps and nobody chose otherwise.

    Args:
        environ: the environment to change (``os.environ`` when None).
        cpuinfo: ``/proc/cpuinfo`` text (read when None).
        machine: ``platform.machine()`` (read when None).

    Returns:
        True when the variable was set by this call.
    """
    global applied
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    if env.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if ENV in env:
        return False
    if not wants_avx2_path(_cpuinfo() if cpuinfo is None else cpuinfo, machine):
        return False
    env[ENV] = AVX2
    if environ is None:
        applied = True
    return True


def plain_environment(environ: Optional[Mapping[str, str]] = None) -> dict:
    """A copy of the environment without the variable if :func:`apply` set it
    (what a process that never imported ``paddleseg_ext`` would see)."""
    env = dict(os.environ if environ is None else environ)
    if applied:
        env.pop(ENV, None)
    return env
