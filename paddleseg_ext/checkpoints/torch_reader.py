"""Read PyTorch checkpoint files into NumPy, without PyTorch and without running them.

``torch.save`` writes one of two layouts (learned from PyTorch's
``torch/serialization.py`` and ``torch/_utils.py``):

* **zip** (default since PyTorch 1.6): a zip archive whose entries share one
  top folder ``<name>/``: ``data.pkl`` is the pickled object, in which every
  storage is a persistent id ``("storage", <torch.XStorage>, key, location,
  numel)``; the storage bytes are the entry ``<name>/data/<key>``;
  ``<name>/byteorder`` (newer files) says ``little`` or ``big``.
* **legacy** (``_use_new_zipfile_serialization=False``, and before 1.6):
  five things back to back: the pickled magic number ``0x1950a86a20f9469cfc6c``,
  the protocol version ``1001``, a ``sys_info`` dict (``little_endian``, ...),
  the pickled object (persistent ids ``("storage", <torch.XStorage>, key,
  location, numel, view_metadata)``), the pickled list of storage keys, and
  then for each key in that order an int64 element count followed by the raw
  storage bytes.

A tensor inside the object is ``torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, requires_grad, hooks[, metadata])`` (a parameter wraps one
in ``_rebuild_parameter``). Here those names map to local stand-ins through the
restricted unpickler: a tensor becomes a NumPy view of its storage (offset and
strides honoured, bounds checked, then copied), nothing else from the file can
run. ``bfloat16`` (which NumPy lacks) is widened to ``float32`` exactly.

Training checkpoints written by mmengine (``Runner.save_checkpoint``) also
pickle ``message_hub`` log buffers (``mmengine.logging.history_buffer.HistoryBuffer``).
Those classes, named one by one in :data:`SET_ASIDE`, are rebuilt as inert
:class:`SetAside` placeholders: their arguments and state are dropped, no
code of theirs is imported or run. A ``HistoryBuffer`` pickles its statistics
methods as ``getattr(HistoryBuffer, 'min')``; ``getattr`` is admitted only on a
placeholder (giving another placeholder), never on anything else. Any other
global is still refused.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .restricted_pickle import UnsafeWeightsError, WeightsFileError, map_nested, restricted_load

__all__ = ["load_torch_checkpoint", "is_torch_checkpoint", "LEGACY_MAGIC", "SET_ASIDE",
           "SetAside"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch.<Name>Storage -> NumPy dtype of its elements ("bfloat16" handled apart).
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


#: Non-weight classes of training checkpoints that are read as inert placeholders.
SET_ASIDE = (("mmengine.logging.history_buffer", "HistoryBuffer"),)


class SetAside:
    """An object of a :data:`SET_ASIDE` class, left unbuilt: only its name is kept."""

    qualname = "?"

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def __setstate__(self, _state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<set aside: {self.qualname}>"


def _set_aside_class(module: str, name: str) -> type:
    return type(name, (SetAside,), {"qualname": f"{module}.{name}"})


def _getattr_of_set_aside(obj: Any, name: Any, *_default: Any) -> Any:
    """``getattr`` as a pickle may name it: only on a placeholder, giving a placeholder."""
    is_placeholder = isinstance(obj, SetAside) or (isinstance(obj, type)
                                                  and issubclass(obj, SetAside))
    if not is_placeholder or not isinstance(name, str):
        raise UnsafeWeightsError(f"refused getattr({type(obj).__name__}, {str(name)[:40]!r}): "
                                 "getattr is admitted only on a set-aside training object")
    return _set_aside_class(obj.qualname, name)()


class _StorageType:
    """Stand-in for ``torch.XStorage`` as the pickle names it: only its dtype matters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _Storage:
    """One storage: a dtype, an element count, and its bytes once they are read."""

    def __init__(self, stype: _StorageType, numel: int, source: str) -> None:
        if not isinstance(numel, int) or numel < 0:
            raise WeightsFileError(f"{source}: storage with an invalid size {numel!r}")
        self.stype = stype
        self.numel = numel
        self.data: Optional[np.ndarray] = None

    def fill(self, raw: bytes, big_endian: bool, source: str, key: str) -> None:
        want = self.numel * self.stype.itemsize
        if len(raw) != want:
            raise WeightsFileError(f"{source}: storage {key!r} holds {len(raw)} bytes, expected "
                                   f"{want} ({self.numel} x {self.stype.name}); the file is "
                                   "truncated or damaged")
        if self.stype.dtype == "bfloat16":
            # bfloat16 is the top half of a float32: widen exactly.
            bits = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2").astype(np.uint32)
            self.data = (bits << 16).view(np.float32)
        else:
            dt = np.dtype(self.stype.dtype).newbyteorder(">" if big_endian else "<")
            self.data = np.frombuffer(raw, dtype=dt).astype(self.stype.dtype, copy=False)


class _View:
    """A storage view (legacy ``view_metadata``): ``size`` elements from ``offset``."""

    def __init__(self, base: _Storage, offset: int, size: int) -> None:
        self.base, self.offset, self.size = base, offset, size


class _Tensor:
    """A tensor waiting for its storage bytes (legacy files put them after the pickle)."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any, source: str) -> None:
        if isinstance(storage, _View):
            offset = storage.offset + offset
            storage = storage.base
        if not isinstance(storage, _Storage):
            raise WeightsFileError(f"{source}: a tensor is built from {type(storage).__name__}, "
                                   "not from a storage")
        ok = (isinstance(offset, int) and offset >= 0
              and isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))
              and len(size) == len(stride)
              and all(isinstance(v, int) and v >= 0 for v in list(size) + list(stride)))
        if not ok:
            raise WeightsFileError(f"{source}: a tensor has an invalid layout (offset {offset!r}, "
                                   f"size {size!r}, stride {stride!r})")
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)
        if int(np.prod(self.size)) > 0:
            last = offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if last >= storage.numel:
                raise WeightsFileError(
                    f"{source}: a tensor of size {list(self.size)} (offset {offset}, stride "
                    f"{list(self.stride)}) reaches element {last} of a storage of {storage.numel}; "
                    "the file is damaged")

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None  # filled before resolution (internal invariant)
        if int(np.prod(self.size)) == 0:
            return np.zeros(self.size, dtype=data.dtype)
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                               strides=[s * item for s in self.stride],
                                               writeable=False)
        return np.array(view, order="C", copy=True)


def _stand_ins(source: str) -> Dict[Tuple[str, str], Any]:
    """``(module, name)`` -> local object for the torch globals a state dict names."""

    def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                          metadata=None):
        return _Tensor(storage, offset, size, stride, source)

    def rebuild_tensor(storage, offset, size, stride):
        return _Tensor(storage, offset, size, stride, source)

    def rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
        return data

    out: Dict[Tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    }
    for name in _STORAGE_DTYPES:
        out[("torch", name)] = _StorageType(name)
    for module, name in SET_ASIDE:
        out[(module, name)] = _set_aside_class(module, name)
    out[("builtins", "getattr")] = out[("__builtin__", "getattr")] = _getattr_of_set_aside
    return out


def _resolve(obj: Any) -> Any:
    """Replace every pending tensor in nested containers by its NumPy array."""

    def leaf(node: Any) -> Any:
        if isinstance(node, _Tensor):
            return node.to_numpy()
        if isinstance(node, _View):
            return node.base.data[node.offset:node.offset + node.size].copy()
        if isinstance(node, _Storage):
            return node.data.copy()
        return node

    return map_nested(obj, leaf)


class _StorageTable:
    """Persistent-id handler shared by both layouts: storages by key."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.storages: Dict[str, _Storage] = {}

    def __call__(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
            raise UnsafeWeightsError(
                f"{self.source}: refused persistent object {kind!r}: only tensor storages are "
                "allowed (a pickled nn.Module with source code is not a state dict)")
        if len(pid) not in (5, 6):
            raise WeightsFileError(f"{self.source}: malformed storage record {pid[:5]!r}")
        stype, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(stype, _StorageType):
            raise UnsafeWeightsError(f"{self.source}: storage {key!r} has unsupported type "
                                     f"{stype!r}; allowed: {', '.join(_STORAGE_DTYPES)}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(stype, numel, self.source)
        view = pid[5] if len(pid) == 6 else None
        if view is not None:
            _view_key, offset, size = view
            return _View(storage, int(offset), int(size))
        return storage


def _load_zip(path: str) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise WeightsFileError(f"{path}: not a readable zip archive ({e})") from e
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise WeightsFileError(f"{path}: a zip file without '<name>/data.pkl'; not a PyTorch "
                                   "checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        big = False
        if prefix + "byteorder" in names:
            big = zf.read(prefix + "byteorder").strip() == b"big"
        table = _StorageTable(path)
        try:
            with zf.open(pkl[0]) as f:
                obj = restricted_load(io.BytesIO(f.read()), path, extra=_stand_ins(path),
                                      persistent_load=table)
            for key, storage in table.storages.items():
                entry = f"{prefix}data/{key}"
                if entry not in names:
                    raise WeightsFileError(f"{path}: storage entry {entry!r} is missing")
                storage.fill(zf.read(entry), big, path, key)
        except (zipfile.BadZipFile, EOFError, OSError) as e:  # CRC errors, cut archives
            raise WeightsFileError(f"{path}: the archive is damaged ({e})") from e
    return _resolve(obj)


def _load_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        magic = restricted_load(f, path)
        if magic != LEGACY_MAGIC:
            raise WeightsFileError(f"{path}: not a PyTorch checkpoint (no legacy magic number "
                                   "and not a zip archive)")
        protocol = restricted_load(f, path)
        if protocol != LEGACY_PROTOCOL:
            raise WeightsFileError(f"{path}: unsupported legacy protocol version {protocol!r}")
        sys_info = restricted_load(f, path)
        big = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
        table = _StorageTable(path)
        obj = restricted_load(f, path, extra=_stand_ins(path), persistent_load=table)
        keys = restricted_load(f, path)
        if not isinstance(keys, list):
            raise WeightsFileError(f"{path}: the storage key list is a {type(keys).__name__}")
        for key in keys:
            storage = table.storages.get(str(key))
            if storage is None:
                raise WeightsFileError(f"{path}: storage {key!r} is listed but never used")
            head = f.read(8)
            if len(head) != 8:
                raise WeightsFileError(f"{path}: the file ends before storage {key!r} (truncated)")
            (numel,) = struct.unpack("<q" if not big else ">q", head)
            if numel != storage.numel:
                raise WeightsFileError(f"{path}: storage {key!r} records {numel} elements, the "
                                       f"pickle says {storage.numel}; the file is damaged")
            raw = f.read(numel * storage.stype.itemsize)
            storage.fill(raw, big, path, str(key))
        missing = [k for k, s in table.storages.items() if s.data is None]
        if missing:
            raise WeightsFileError(f"{path}: storages {missing[:5]} have no data")
    return _resolve(obj)


def _starts_with_legacy_magic(head: bytes) -> bool:
    """The first pickle is the int LEGACY_MAGIC: PROTO n, [FRAME], LONG1 of 10 bytes."""
    if len(head) < 2 or head[0] != 0x80:
        return False
    i = 2
    if head[i:i + 1] == b"\x95":  # protocol 4+ frame header
        i += 9
    return head[i:i + 2] == b"\x8a\x0a" and int.from_bytes(head[i + 2:i + 12], "little") == LEGACY_MAGIC


def is_torch_checkpoint(path: str) -> bool:
    """Cheap sniff (reads the first bytes only): a zip with ``<name>/data.pkl``, or a
    file that starts with the pickled legacy magic number."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith("/data.pkl") for n in zf.namelist())
        with open(path, "rb") as f:
            return _starts_with_legacy_magic(f.read(32))
    except (zipfile.BadZipFile, OSError):
        return False


def load_torch_checkpoint(path: str) -> Any:
    """Read a ``torch.save`` file (zip or legacy) into NumPy arrays and plain containers.

    Args:
        path: the ``.pth`` / ``.pt`` file.

    Returns:
        The saved object with every tensor as a ``np.ndarray`` (a state dict
        comes back as an ``OrderedDict[str, np.ndarray]``; nested containers
        keep their shape). ``bfloat16`` tensors come back as ``float32``.

    Raises:
        FileNotFoundError: no such file.
        UnsafeWeightsError: the file names anything but tensors, storages and
            containers (nothing of it was run).
        WeightsFileError: truncated, damaged, or not a PyTorch checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        raise WeightsFileError(f"{path}: a zip archive without its directory: the file is "
                               "truncated or damaged")
    return _load_legacy(path)
