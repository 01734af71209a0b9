"""A restricted unpickler: weights files are data, never code.

``pickle`` runs whatever callable a file names (``__reduce__`` ->
``os.system``), so ``paddle.load`` / ``pickle.load`` / ``torch.load`` on a file
from the internet executes that file. This module unpickles with an
allow-list of the globals a weights file legitimately needs and refuses every
other one, before anything is called, with an error that names the file and
the refused ``module.name``.

What the allow-list admits (all of it checked against what Paddle 3.3.1 and
this toolkit write; see ``tests/test_safe_load.py``):

* containers: ``collections.OrderedDict`` and the builtins ``dict``, ``list``,
  ``tuple``, ``set``, ``frozenset``, ``slice``, ``complex``, ``bytearray``, ``bytes``;
* NumPy arrays, dtypes and scalars (``numpy[._]core.multiarray._reconstruct``,
  ``...scalar``, ``numpy.ndarray``, ``numpy.dtype`` and the dtype classes
  NumPy >= 1.25 pickles);
* ``_codecs.encode`` only for ``latin1`` (how protocol 2 spells ``bytes``);
* Paddle's RNG state (``paddle.base.libpaddle.GeneratorState``, rebuilt by
  pickle's NEWOBJ + ``__setstate__`` from plain numbers), which the toolkit's
  ``rng.pkl`` holds;
* ``builtins.eval`` replaced by a stand-in that evaluates nothing: Paddle
  pickles a raw ``DenseTensor`` as ``eval('data', {'data': array})``, and the
  stand-in accepts exactly that shape of call and returns the array.

Readers of other formats (``torch_reader``) pass extra entries that map a
``(module, name)`` to a local stand-in, so a PyTorch file's
``torch._utils._rebuild_tensor_v2`` is served by our own code and PyTorch is
never imported.
"""

from __future__ import annotations

import builtins
import collections
import io
import pickle
from typing import Any, Callable, Dict, IO, Mapping, Optional, Tuple

__all__ = ["UnsafeWeightsError", "WeightsFileError", "RestrictedUnpickler",
           "restricted_load", "restricted_loads", "safe_globals", "map_nested"]

Global = Tuple[str, str]


class WeightsFileError(ValueError):
    """A weights file cannot be read: truncated, damaged or not the expected format."""


class UnsafeWeightsError(WeightsFileError):
    """A weights file names a global outside the allow-list (possibly malicious)."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol 2 pickles ``bytes`` as ``_codecs.encode(str, 'latin1')``; no other codec is needed.
    if encoding not in ("latin1", "latin-1", "iso-8859-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode is admitted only for latin1 text, got "
                                     f"encoding {encoding!r}")
    return text.encode("latin1")


def _paddle_dense_tensor(expr: Any, namespace: Any = None, *_: Any) -> Any:
    # Paddle's reduce_DenseTensor writes (eval, ('data', {'data': ndarray})): return the array
    # without evaluating anything; any other expression is refused.
    import numpy as np

    if expr == "data" and isinstance(namespace, dict) and set(namespace) == {"data"} \
            and isinstance(namespace["data"], np.ndarray):
        return namespace["data"]
    raise UnsafeWeightsError(f"refused builtins.eval({str(expr)[:60]!r}, ...): only Paddle's "
                             "DenseTensor form eval('data', {'data': array}) is accepted")


def _numpy_globals() -> Dict[Global, Any]:
    import numpy as np

    out: Dict[Global, Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        # NumPy 1.x pickles under numpy.core, NumPy 2.x under numpy._core; both name the
        # same two reconstructors.
        out[(mod, "_reconstruct")] = np.ndarray.__reduce__(np.zeros(1))[0]
        out[(mod, "scalar")] = np.float32(0).__reduce__()[0]
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    # NumPy >= 1.25 pickles a dtype as its class (numpy.dtypes.Float32DType ...).
    dtypes_mod = getattr(np, "dtypes", None)
    if dtypes_mod is not None:
        for name in dir(dtypes_mod):
            cls = getattr(dtypes_mod, name)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                out[("numpy.dtypes", name)] = cls
    # (np.random.get_state(), what rng.pkl holds, is a plain tuple: no numpy.random globals.)
    return out


def _paddle_globals() -> Dict[Global, Any]:
    """Paddle's RNG state object (``paddle.get_rng_state()``), pickled by pybind11 as
    NEWOBJ of the class + ``__setstate__`` with plain numbers."""
    try:
        from paddle.base import libpaddle
    except ImportError:  # pragma: no cover - paddle is a dependency of the toolkit
        return {}
    out: Dict[Global, Any] = {}
    cls = getattr(libpaddle, "GeneratorState", None)
    if cls is not None:
        for mod in ("paddle.base.libpaddle", "paddle.fluid.libpaddle", "paddle.fluid.core_avx"):
            out[(mod, "GeneratorState")] = cls
    return out


def _base_globals() -> Dict[Global, Any]:
    out: Dict[Global, Any] = {("collections", "OrderedDict"): collections.OrderedDict,
                              ("_codecs", "encode"): _latin1_encode,
                              ("builtins", "eval"): _paddle_dense_tensor}
    for name in ("dict", "list", "tuple", "set", "frozenset", "slice", "complex", "bytearray",
                 "bytes"):
        out[("builtins", name)] = out[("__builtin__", name)] = getattr(builtins, name)
    return out


_SAFE: Optional[Dict[Global, Any]] = None


def safe_globals() -> Dict[Global, Any]:
    """The allow-list: ``(module, name) -> object`` served to the unpickler."""
    global _SAFE
    if _SAFE is None:
        _SAFE = {**_base_globals(), **_numpy_globals(), **_paddle_globals()}
    return _SAFE


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves globals only through an allow-list.

    Args:
        file: binary file object positioned at a pickle.
        source: what to call the file in errors (normally its path).
        extra: additional ``(module, name) -> object`` entries (stand-ins for
            another framework's reconstructors).
        persistent_load: handler for persistent ids (PyTorch storages); without
            one a persistent id is an error.

    Raises (from ``load``):
        UnsafeWeightsError: the pickle names a global outside the allow-list.
    """

    def __init__(self, file: IO[bytes], source: str,
                 extra: Optional[Mapping[Global, Any]] = None,
                 persistent_load: Optional[Callable[[Any], Any]] = None) -> None:
        super().__init__(file)
        self.source = source
        self.allowed: Dict[Global, Any] = dict(safe_globals())
        if extra:
            self.allowed.update(extra)
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self.allowed:
            return self.allowed[key]
        raise UnsafeWeightsError(
            f"{self.source}: refused to load '{module}.{name}': a weights file may only hold "
            "tensors, NumPy arrays and plain containers, and this global is not on the "
            "allow-list (nothing from the file was run). If the file is trusted and really "
            "needs it, convert it where it was made into a plain state dict")

    def persistent_load(self, pid: Any) -> Any:  # noqa: D401 - pickle hook
        if self._persistent is None:
            raise UnsafeWeightsError(f"{self.source}: the pickle refers to external objects "
                                     f"(persistent id {str(pid)[:80]!r}); not a weights file")
        return self._persistent(pid)


def restricted_load(file: IO[bytes], source: str, **kwargs: Any) -> Any:
    """Unpickle one object from ``file`` through :class:`RestrictedUnpickler`.

    Damage (truncation, garbage, a wrong opcode) becomes :class:`WeightsFileError`
    naming ``source``; a refused global stays :class:`UnsafeWeightsError`.
    """
    try:
        return RestrictedUnpickler(file, source, **kwargs).load()
    except WeightsFileError as e:
        if source not in str(e):
            raise type(e)(f"{source}: {e}") from e
        raise
    except EOFError as e:
        raise WeightsFileError(f"{source}: the file ends in the middle of its data (truncated "
                               "download or interrupted copy?)") from e
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, MemoryError, OverflowError, UnicodeDecodeError) as e:
        raise WeightsFileError(f"{source}: cannot be read as a weights file "
                               f"({type(e).__name__}: {e}); it is damaged or in another format") from e


def map_nested(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` top-down through dicts (type kept), lists and tuples.

    ``fn(node)`` returning ``node`` itself means "not a leaf of interest: recurse";
    anything else replaces the node.
    """
    new = fn(obj)
    if new is not obj:
        return new
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = map_nested(v, fn)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_nested(v, fn) for v in obj) if type(obj) in (list, tuple) else obj
    return obj


def restricted_loads(data: bytes, source: str, **kwargs: Any) -> Any:
    """:func:`restricted_load` from a bytes object."""
    return restricted_load(io.BytesIO(data), source, **kwargs)

