"""The execution policy: how models and ops run, chosen once, in one place.

A model computes its paper's function; *how* it runs on this machine (Winograd 3x3
convolutions, row strips under a memory budget, the fused PSA attention, the compiled or
the pure-Paddle PSA mask, folded BatchNorm, the forms an exporter needs) is a separate
choice. A tool builds one :class:`ExecutionPolicy` at start-up from its flags, the config and
the environment, installs it for the run (:func:`use_policy`), and applies it to its model
with :func:`paddleseg_ext.runtime.prepare`. Layers and ops ask :func:`current_policy`; they
never read the environment.

This module is the one place the package reads its environment variables (the import-time
MKL dispatch of :mod:`paddleseg_ext.utils.mkl_dispatch` aside, which must run before
anything calls MKL). A bad value is one error at start-up that names the variable.

Environment variables (each a default that a tool's flag or config overrides):

=================================  ========================================================
``PADDLESEG_EXT_PSA_IMPL``         ``auto`` | ``op`` | ``paddle`` | ``fused``: PSANet's PSA
``PADDLESEG_EXT_WINOGRAD``         ``0`` runs CPU 3x3 convolutions as ``conv2d``
``PADDLESEG_EXT_CONV_BUDGET_MB``   im2col budget of inference convolutions (``0``: no strips)
``PADDLESEG_EXT_OP_NO_BUILD``      ``1``: never compile an op (use a cached build or fall back)
``PADDLESEG_EXT_OP_CACHE``         where compiled ops are cached
``PADDLESEG_EXT_OP_THREADS``       threads of the compiled ops' CPU kernels
``PADDLESEG_EXT_SHARED_MEMORY``    ``0``: loader workers send batches through a pipe
``PADDLESEG_EXT_WEIGHTS_CACHE``    where converted pretrained weights are cached
``CPU_NUM_THREADS``                threads of Paddle's CPU kernels
=================================  ========================================================

The pattern is timm's ``layers/config.py`` (the environment read once, consulted where a
layer is built) and detectron2's explicit module conversions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Iterator, List, Mapping, Optional

__all__ = ["ExecutionPolicy", "TARGETS", "PSA_IMPLS", "ENV", "current_policy", "use_policy",
           "policy_from_environment", "child_environment"]

#: What a prepared model is for: a training step, inference in dygraph, a traced program for
#: Paddle Inference, a traced program for paddle2onnx.
TARGETS = ("train", "infer", "export", "onnx")
#: PSANet's point-wise spatial attention: ``op`` the compiled PSA mask, ``paddle`` the
#: pure-Paddle mask, ``fused`` the fused attention op without the ``[HW, HW]`` map, ``auto``
#: the compiled mask where it is built, else pure Paddle.
PSA_IMPLS = ("auto", "op", "paddle", "fused")

ENV = {
    "psa_impl": "PADDLESEG_EXT_PSA_IMPL",
    "winograd": "PADDLESEG_EXT_WINOGRAD",
    "conv_budget": "PADDLESEG_EXT_CONV_BUDGET_MB",
    "no_build": "PADDLESEG_EXT_OP_NO_BUILD",
    "op_cache": "PADDLESEG_EXT_OP_CACHE",
    "op_threads": "PADDLESEG_EXT_OP_THREADS",
    "shared_memory": "PADDLESEG_EXT_SHARED_MEMORY",
    "weights_cache": "PADDLESEG_EXT_WEIGHTS_CACHE",
    "threads": "CPU_NUM_THREADS",
}
#: The compiled ops' kernels read their thread count from this variable (custom_ops/common);
#: :func:`use_policy` sets it to the policy's ``op_threads``.
OP_THREADS_KERNEL_ENV = ENV["op_threads"]
#: The variable's older name, still read (by the policy and the kernels).
_OP_THREADS_OLD_ENV = "PSA_MASK_NUM_THREADS"

_MIB = 2 ** 20
_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class ExecutionPolicy:
    """How models and ops run for one tool run. Frozen: change it with :meth:`replace`.

    Attributes:
        target: ``train`` | ``infer`` | ``export`` | ``onnx`` (which rewrites apply).
        psa_impl: PSANet's attention implementation (:data:`PSA_IMPLS`).
        winograd: CPU 3x3 "same" convolutions with at least 64 channels as Winograd
            F(2x2, 3x3) in dygraph (train and infer).
        conv_budget_bytes: im2col buffer above which an inference convolution runs in row
            strips (``0``: never).
        fold_bn: fold BatchNorm into the convolutions of an inference model.
        build_ops: whether a missing compiled op may be compiled (at a tool's start, by
            :func:`paddleseg_ext.runtime.build_ops`; never inside a forward).
        threads: Paddle's CPU kernel threads (None: every core).
        op_threads: the compiled ops' CPU threads (None: as ``threads``).
        fused_min_positions: ``fused`` PSA runs the unfused compiled path on maps of at most
            this many positions, where that is faster on the CPU (docs/benchmarks.md).
        op_cache: where compiled ops are cached (None: ``$XDG_CACHE_HOME/paddleseg_ext/ops``).
        weights_cache: where converted pretrained weights are cached (None: default).
        shared_memory: loader workers may pass batches through ``/dev/shm``.
    """

    target: str = "train"
    psa_impl: str = "auto"
    winograd: bool = True
    conv_budget_bytes: int = 512 * _MIB
    fold_bn: bool = True
    build_ops: bool = True
    threads: Optional[int] = None
    op_threads: Optional[int] = None
    fused_min_positions: int = 16384
    op_cache: Optional[str] = None
    weights_cache: Optional[str] = None
    shared_memory: bool = True

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"execution policy: target must be one of {list(TARGETS)}, "
                             f"got {self.target!r}")
        if not isinstance(self.psa_impl, str) or self.psa_impl not in PSA_IMPLS:
            raise ValueError(f"execution policy: psa_impl must be one of {list(PSA_IMPLS)}, "
                             f"got {self.psa_impl!r}")
        for name in ("winograd", "fold_bn", "build_ops", "shared_memory"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"execution policy: {name} must be True or False, "
                                 f"got {getattr(self, name)!r}")
        for name in ("conv_budget_bytes", "fused_min_positions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"execution policy: {name} must be an int >= 0, got {v!r}")
        for name in ("threads", "op_threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"execution policy: {name} must be a positive int or None, "
                                 f"got {v!r}")

    def replace(self, **changes) -> "ExecutionPolicy":
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def op_cache_dir(self) -> Path:
        """Root of the compiled ops' per-user cache."""
        if self.op_cache:
            return Path(self.op_cache).expanduser().resolve()
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        return Path(base).expanduser().resolve() / "paddleseg_ext" / "ops"

    def weights_cache_dir(self) -> str:
        """Where converted pretrained weights are cached."""
        return self.weights_cache or os.path.join(os.path.expanduser("~"), ".cache",
                                                  "paddleseg_ext", "weights")

    def describe(self) -> str:
        """One log line: the choices that change how the model runs."""
        budget = f"{self.conv_budget_bytes / _MIB:g} MiB" if self.conv_budget_bytes else "off"
        return (f"target={self.target} psa_impl={self.psa_impl} winograd={self.winograd} "
                f"conv_budget={budget} fold_bn={self.fold_bn} build_ops={self.build_ops}")


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise ValueError(f"${name} must be 0 or 1, got {environ[name]!r}")


def _positive(environ: Mapping[str, str], name: str) -> Optional[int]:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${name} must be a positive integer, got {environ[name]!r}")
    return value


def policy_from_environment(environ: Optional[Mapping[str, str]] = None,
                            **overrides) -> ExecutionPolicy:
    """The policy the environment asks for, with ``overrides`` (a tool's flags) on top.

    Raises:
        ValueError: a variable holds a value it cannot take; the message names it.
    """
    env = os.environ if environ is None else environ
    fields = {}
    raw = env.get(ENV["psa_impl"], "").strip().lower()
    if raw:
        if raw not in PSA_IMPLS:
            raise ValueError(f"${ENV['psa_impl']} must be one of {list(PSA_IMPLS)}, "
                             f"got {env[ENV['psa_impl']]!r}")
        fields["psa_impl"] = raw
    fields["winograd"] = _flag(env, ENV["winograd"], True)
    raw = env.get(ENV["conv_budget"], "").strip()
    if raw:
        try:
            mib = float(raw)
        except ValueError:
            mib = -1.0
        if not mib >= 0:
            raise ValueError(f"${ENV['conv_budget']} must be a number of MiB >= 0, got {raw!r}")
        fields["conv_budget_bytes"] = int(mib * _MIB)
    fields["build_ops"] = not _flag(env, ENV["no_build"], False)
    fields["threads"] = _positive(env, ENV["threads"])
    fields["op_threads"] = _positive(env, ENV["op_threads"]) or _positive(env, _OP_THREADS_OLD_ENV)
    fields["op_cache"] = env.get(ENV["op_cache"]) or None
    fields["weights_cache"] = env.get(ENV["weights_cache"]) or None
    fields["shared_memory"] = _flag(env, ENV["shared_memory"], True)
    fields.update(overrides)
    return ExecutionPolicy(**fields)


_installed: List[ExecutionPolicy] = []
_default: Optional[tuple] = None  # (the variables' values, the policy they gave)


def current_policy() -> ExecutionPolicy:
    """The policy installed by :func:`use_policy`, else the environment's.

    Without an installed policy (library use, tests) the environment is consulted on each
    call, so a changed variable takes effect; the policy is rebuilt only when one changed.
    """
    global _default
    if _installed:
        return _installed[-1]
    key = tuple(os.environ.get(name) for name in (*ENV.values(), _OP_THREADS_OLD_ENV))
    if _default is None or _default[0] != key:
        _default = (key, policy_from_environment())
    return _default[1]


@contextlib.contextmanager
def use_policy(policy: ExecutionPolicy) -> Iterator[ExecutionPolicy]:
    """Install ``policy`` for the duration of the block (nested blocks stack).

    The compiled ops' thread count follows it: their kernels read it from the process
    environment, which is set here and restored on exit.
    """
    if not isinstance(policy, ExecutionPolicy):
        raise TypeError(f"use_policy takes an ExecutionPolicy, got {type(policy).__name__}")
    previous = os.environ.get(OP_THREADS_KERNEL_ENV)
    threads = policy.op_threads or policy.threads
    if threads:
        os.environ[OP_THREADS_KERNEL_ENV] = str(threads)
    _installed.append(policy)
    try:
        yield policy
    finally:
        _installed.pop()
        if threads:
            if previous is None:
                os.environ.pop(OP_THREADS_KERNEL_ENV, None)
            else:
                os.environ[OP_THREADS_KERNEL_ENV] = previous


def child_environment(**extra: str) -> dict:
    """The process environment with ``extra`` on top, for a child process the package starts
    (paddle2onnx runs in one: it aborts its process on an op it cannot convert)."""
    return dict(os.environ, **extra)
