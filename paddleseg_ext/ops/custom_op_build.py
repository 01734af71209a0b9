"""Build, cache and load the package's compiled custom ops: one home for every op.

Each op is a :class:`CompiledOp`: its folder under ``custom_ops/`` (or
``paddleseg_ext/ops/csrc/<op>`` in an installed package), its C++ and CUDA
sources, the headers it includes (part of the build key) and its shared
library's name. Adding an op is one ``CompiledOp(...)`` line next to its
Python face.

A build goes to a per-user cache, ``$PADDLESEG_EXT_OP_CACHE`` or
``$XDG_CACHE_HOME/paddleseg_ext/ops`` (``~/.cache/paddleseg_ext/ops``), in a
folder keyed by a hash of the sources, headers, Paddle version and flags, so a
changed source means a rebuild and never a stale library. One process builds
at a time (a file lock); the others wait and reuse the result. A
``BUILD_OK.json`` marker, written last and atomically, says a build is
complete. Nothing is compiled at import time: only :meth:`CompiledOp.build`,
:meth:`CompiledOp.load_library` and :meth:`CompiledOp.get` (on first use of the
op) compile, and ``PADDLESEG_EXT_OP_NO_BUILD=1`` forbids even that.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional, Sequence, Tuple

import paddle

# Paddle's loader logs "using custom operator only" at INFO on every load whatever `verbose`
# says, through its own handler and the root logger's (two lines): drop that one message.
logging.getLogger("utils.cpp_extension").addFilter(lambda r: r.getMessage() != "using custom operator only")

__all__ = ["CompiledOp", "op_cache_dir", "registered_ops", "registered_op", "want_cuda", "CACHE_ENV",
           "NO_BUILD_ENV", "IMPL_ENV"]

CACHE_ENV = "PADDLESEG_EXT_OP_CACHE"
NO_BUILD_ENV = "PADDLESEG_EXT_OP_NO_BUILD"
#: Selects the PSA implementation (``op`` | ``paddle`` | ``auto``, and
#: ``fused`` for PSANet's layer); read by the ops' Python faces.
IMPL_ENV = "PADDLESEG_EXT_PSA_IMPL"
_BUILD_OK = "BUILD_OK.json"

CXX_FLAGS = ["-O3", "-pthread"]
LD_FLAGS = ["-pthread"]
CUDA_FLAGS = ["-O3"]

_REGISTERED: dict = {}

_CUSTOM_OPS_DIR = Path(__file__).resolve().parents[2] / "custom_ops"
_CSRC_DIR = Path(__file__).resolve().parent / "csrc"


def op_cache_dir() -> Path:
    """Root of the per-user build cache.

    ``$PADDLESEG_EXT_OP_CACHE`` if set, else
    ``$XDG_CACHE_HOME/paddleseg_ext/ops`` (``~/.cache/paddleseg_ext/ops``).
    """
    from paddleseg_ext.runtime.policy import current_policy

    return current_policy().op_cache_dir()


def registered_ops() -> list:
    """Every :class:`CompiledOp` defined so far (``python -m paddleseg_ext.ops.build`` builds them)."""
    return list(_REGISTERED.values())


def registered_op(name: str) -> Optional["CompiledOp"]:
    """The :class:`CompiledOp` registered under op name ``name``, or None."""
    import paddleseg_ext.ops  # noqa: F401 - defines the package's ops

    return _REGISTERED.get(name)


def want_cuda() -> bool:
    """Whether builds include the CUDA kernels (CUDA Paddle and nvcc on PATH)."""
    return bool(paddle.is_compiled_with_cuda()) and shutil.which("nvcc") is not None


def _no_build() -> bool:
    from paddleseg_ext.runtime.policy import current_policy

    return not current_policy().build_ops


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock: one process builds, the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class CompiledOp:
    """One compiled custom op: where its sources are, how to build and load it.

    Args:
        op_name: name the op registers under (``PD_BUILD_OP(<op_name>)``);
            saved programs refer to it by this name.
        folder: the op's folder name under ``custom_ops/``.
        cpu_sources: C++ file names in that folder.
        cuda_sources: CUDA file names, compiled when :func:`want_cuda`.
        headers: headers the sources include, as paths relative to
            ``custom_ops/`` (hashed into the build key; their folders are
            include directories).
        build_hint: how to get the op, appended to "unavailable" errors.

    The library is named ``paddleseg_ext_<op_name>`` so it never shadows a
    Python module. Per-process state (:attr:`state`): an op registers into
    Paddle's global registry at most once per process.
    """

    def __init__(self, op_name: str, folder: str, cpu_sources: Sequence[str],
                 cuda_sources: Sequence[str] = (), headers: Sequence[str] = (),
                 build_hint: str = "") -> None:
        self.op_name = op_name
        self.lib_name = f"paddleseg_ext_{op_name}"
        self.folder = folder
        self.cpu_sources = tuple(cpu_sources)
        self.cuda_sources = tuple(cuda_sources)
        self.headers = tuple(headers)
        self.build_hint = build_hint
        self.state = self.fresh_state()
        self.lock = threading.RLock()
        if op_name in _REGISTERED:
            raise ValueError(f"custom op {op_name!r} is defined twice")
        _REGISTERED[op_name] = self

    @staticmethod
    def fresh_state() -> dict:
        """Empty per-process state: nothing loaded, nothing failed."""
        return {
            "module": None,  # loaded op module
            "so_path": None,  # its shared library
            "error": None,  # a failed build: not retried in this process
            "reason": None,  # why the op is unavailable right now (for messages)
            "warned": False,  # the fallback warning was shown
        }

    # -- where things are ---------------------------------------------------
    def source_root(self) -> Path:
        """``custom_ops/`` of the repository (e.g. after ``pip install -e .``),
        else ``paddleseg_ext/ops/csrc`` for sources shipped inside a package."""
        if (_CUSTOM_OPS_DIR / self.folder / self.cpu_sources[0]).is_file():
            return _CUSTOM_OPS_DIR
        if (_CSRC_DIR / self.folder / self.cpu_sources[0]).is_file():
            return _CSRC_DIR
        return _CUSTOM_OPS_DIR

    def source_dir(self) -> Path:
        """Folder of the op's own sources."""
        return self.source_root() / self.folder

    def sources(self, with_cuda: bool) -> list:
        names = self.cpu_sources + (self.cuda_sources if with_cuda else ())
        return [self.source_dir() / name for name in names]

    def include_dirs(self) -> list:
        root = self.source_root()
        dirs = [self.source_dir()] + [(root / h).parent for h in self.headers]
        return list(dict.fromkeys(str(d) for d in dirs))

    def build_key(self, with_cuda: bool) -> str:
        """Hash of everything the binary depends on; a new key means a rebuild."""
        digest = hashlib.sha256()
        root = self.source_root()
        files = [f"{self.folder}/{n}" for n in self.cpu_sources + self.cuda_sources]
        for rel in files + list(self.headers):
            path = root / rel
            digest.update(rel.encode())
            digest.update(path.read_bytes() if path.exists() else b"<missing>")
        meta = {
            "paddle": paddle.__version__,
            "commit": getattr(paddle.version, "commit", ""),
            "cuda": with_cuda,
            "python": list(sys.version_info[:2]),
            "machine": platform.machine(),
            "flags": [CXX_FLAGS, LD_FLAGS, CUDA_FLAGS],
        }
        digest.update(json.dumps(meta, sort_keys=True).encode())
        kind = "cuda" if with_cuda else "cpu"
        return f"{self.op_name}-paddle{paddle.__version__}-{kind}-{digest.hexdigest()[:16]}"

    def build_dir(self, with_cuda: bool) -> Path:
        return op_cache_dir() / self.build_key(with_cuda)

    def so_path(self, build_dir: Path) -> Path:
        # Layout produced by paddle.utils.cpp_extension.load(build_directory=...).
        return build_dir / self.lib_name / f"{self.lib_name}.so"

    # -- build and load -------------------------------------------------------
    def import_built(self, so_path: Path) -> ModuleType:
        """Register the library's ops in this process and return its module."""
        from paddle.utils.cpp_extension.extension_utils import _import_module_from_library

        return _import_module_from_library(self.lib_name, str(so_path.parent), False)

    def load_or_build(self, allow_build: bool, verbose: bool = False) -> Tuple[ModuleType, Path]:
        """Load the cached library, building it first if needed and allowed."""
        with_cuda = want_cuda()
        build_dir = self.build_dir(with_cuda)
        so_path = self.so_path(build_dir)
        marker = build_dir / _BUILD_OK
        if marker.exists() and so_path.exists():
            return self.import_built(so_path), so_path
        if not allow_build:
            raise RuntimeError(f"no prebuilt library at {so_path}")
        for src in self.sources(with_cuda):
            if not src.exists():
                raise RuntimeError(f"op source {src} is missing")
        with _file_lock(build_dir.with_name(build_dir.name + ".lock")):
            # Another process may have finished the build while we waited.
            if marker.exists() and so_path.exists():
                return self.import_built(so_path), so_path
            from paddle.utils.cpp_extension import load

            build_dir.mkdir(parents=True, exist_ok=True)
            includes = [f"-I{d}" for d in self.include_dirs()]
            module = load(
                name=self.lib_name,
                sources=[str(s) for s in self.sources(with_cuda)],
                extra_cxx_cflags=CXX_FLAGS + includes,
                extra_cuda_cflags=CUDA_FLAGS + includes,
                extra_ldflags=list(LD_FLAGS),
                build_directory=str(build_dir),
                verbose=verbose,
            )
            if not so_path.exists():
                raise RuntimeError(f"build finished but {so_path} is missing")
            # Written last, atomically: its presence means the .so is complete.
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"so_path": str(so_path), "cuda": with_cuda}))
            os.replace(tmp, marker)
            return module, so_path

    def get(self, allow_build: bool = True) -> Optional[ModuleType]:
        """The loaded op module, or None (why: ``state['reason']``)."""
        with self.lock:
            state = self.state
            if state["module"] is not None:
                return state["module"]
            if state["error"] is not None:
                return None
            if allow_build and _no_build():
                allow_build = False
            try:
                module, so_path = self.load_or_build(allow_build)
            except Exception as exc:  # noqa: BLE001 - any failure means "fall back"
                state["reason"] = f"{type(exc).__name__}: {exc}"
                if allow_build:
                    state["error"] = state["reason"]
                elif _no_build():
                    state["reason"] += f" and building is disabled by {NO_BUILD_ENV}"
                return None
            state["module"], state["so_path"] = module, so_path
            return module

    def build(self, verbose: bool = False) -> Path:
        """Build (if not cached) and load the op; return the ``.so`` path.

        Raises:
            RuntimeError: If the build fails.
        """
        with self.lock:
            if self.state["so_path"] is not None:
                return self.state["so_path"]
            try:
                module, so_path = self.load_or_build(allow_build=True, verbose=verbose)
            except Exception as exc:
                raise RuntimeError(
                    f"{self.op_name}: building the compiled op failed: {exc}") from exc
            self.state.update(module=module, so_path=so_path, error=None, reason=None)
            return so_path

    def load_library(self, build: bool = True) -> Tuple[ModuleType, str]:
        """Register the op in this process; ``(module, so_path)``.

        Raises:
            RuntimeError: If the op can be neither loaded nor built.
        """
        module = self.get(allow_build=build)
        if module is None:
            reason = self.state["reason"] or "unknown reason"
            raise RuntimeError(
                f"{self.op_name}: the compiled op is not available ({reason}). {self.build_hint}")
        return module, str(self.state["so_path"])

    def available(self, build: bool = False) -> bool:
        """Whether the op is (or, with ``build``, can be) loaded in this process."""
        return self.get(allow_build=build) is not None

    def take_warning(self) -> bool:
        """True the first time it is called per process (show the fallback warning once)."""
        with self.lock:
            if self.state["warned"]:
                return False
            self.state["warned"] = True
            return True
