"""Weights files are read through the restricted unpickler (issue 16, part 5).

A crafted pickle (``__reduce__`` -> ``os.system`` / ``builtins.eval`` / ...)
handed to any reader the toolkit has (``load_weights_file``,
``load_pretrained``, ``load_model_weights``, ``load_checkpoint``) is refused
with the file and the refused global named, and its marker file never
appears. Everything ``paddle.save`` and the toolkit write still loads, equal
to what ``paddle.load`` / ``pickle.load`` return.
"""

import os
import pickle
import random
import subprocess

import numpy as np
import paddle
import pytest

from paddleseg_ext.checkpoints.restricted_pickle import UnsafeWeightsError, WeightsFileError
from paddleseg_ext.checkpoints.safe_load import (load_optimizer_file, load_paddle_file,
                                                 load_rng_file, load_weights_file)
from paddleseg_ext.checkpoints.training import load_checkpoint, save_checkpoint
from paddleseg_ext.checkpoints.weights import load_model_weights
from paddleseg_ext.utils.pretrained import load_pretrained


class _Exploit:
    """Unpickling this runs ``func(arg)`` in a naive loader."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _marker_cmd(marker):
    return f"touch {marker}"


def _payloads(marker):
    """(description, object to pickle, name the refusal must mention)."""
    return [
        ("os.system", _Exploit(os.system, _marker_cmd(marker)), "system"),
        ("builtins.exec", _Exploit(exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
        ("builtins.eval", _Exploit(eval, f"open({str(marker)!r}, 'w').close()"), "eval"),
        ("nested in a state dict",
         {"conv.weight": np.ones((2, 2), np.float32), "evil": [_Exploit(os.system, _marker_cmd(marker))]},
         "system"),
        ("subprocess.Popen", _Exploit(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
    ]


def _small_model():
    paddle.seed(0)
    return paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4))


@pytest.mark.parametrize("case", range(5), ids=[p[0] for p in _payloads("m")])
def test_crafted_pdparams_is_refused_and_nothing_runs(tmp_path, case):
    marker = tmp_path / "PWNED"
    desc, payload, refused = _payloads(marker)[case]
    path = tmp_path / "evil.pdparams"
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=4)
    for reader in (load_weights_file, lambda p: load_pretrained(_small_model(), p),
                   lambda p: load_model_weights(_small_model(), p)):
        with pytest.raises(UnsafeWeightsError) as e:
            reader(str(path))
        msg = str(e.value)
        assert str(path) in msg and refused in msg, msg
        assert not marker.exists(), f"{desc}: the payload ran"


# the optimizer has not stepped, so its state is empty and Paddle's save warns about it
@pytest.mark.filterwarnings("ignore:The input state dict is empty")
@pytest.mark.parametrize("victim", ["model.pdparams", "model.pdopt", "rng.pkl"])
def test_crafted_file_in_a_checkpoint_is_refused(tmp_path, victim):
    model = _small_model()
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    ckpt = save_checkpoint(str(tmp_path), "iter_1", model, opt, {"iter": 1})
    marker = tmp_path / "PWNED"
    path = os.path.join(ckpt, victim)
    with open(path, "wb") as f:
        pickle.dump(_Exploit(os.system, _marker_cmd(marker)), f, protocol=4)
    # keep the checkpoint "complete" (state.json records each file's size)
    import json
    state_file = os.path.join(ckpt, "state.json")
    state = json.load(open(state_file))
    state["_files"][victim] = os.path.getsize(path)
    json.dump(state, open(state_file, "w"))
    with pytest.raises(UnsafeWeightsError) as e:
        load_checkpoint(ckpt, _small_model(), paddle.optimizer.Momentum(
            0.1, parameters=_small_model().parameters()))
    assert path in str(e.value) and "system" in str(e.value)
    assert not marker.exists()


def test_eval_stand_in_accepts_only_paddles_dense_tensor_form(tmp_path):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)

    class DenseTensorLike:  # what paddle's reduce_DenseTensor writes
        def __reduce__(self):
            return (eval, ("data", {"data": arr}))

    path = tmp_path / "dense.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"w": DenseTensorLike()}, f, protocol=4)
    out = load_weights_file(str(path))
    np.testing.assert_array_equal(out["w"], arr)

    class Sneaky:
        def __reduce__(self):
            return (eval, ("data", {"data": arr, "x": 1}))

    with open(path, "wb") as f:
        pickle.dump(Sneaky(), f, protocol=4)
    with pytest.raises(UnsafeWeightsError, match="eval"):
        load_paddle_file(str(path))


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_paddle_save_state_dict_loads_like_paddle_load(tmp_path, protocol):
    model = _small_model()
    path = str(tmp_path / f"m{protocol}.pdparams")
    paddle.save(model.state_dict(), path, protocol=protocol)
    ours = load_weights_file(path)
    ref = paddle.load(path)
    assert list(ours) == list(ref)  # name table dropped, order kept
    for k in ref:
        assert isinstance(ours[k], np.ndarray)
        np.testing.assert_array_equal(ours[k], ref[k].numpy())


def test_nested_tensors_and_raw_tensor(tmp_path):
    path = str(tmp_path / "nested.pdparams")
    obj = {"a": {"b": paddle.ones([2])}, "c": [paddle.full([1], 3.0)], "n": 5}
    paddle.save(obj, path)
    out = load_paddle_file(path)
    np.testing.assert_array_equal(out["a"]["b"], np.ones(2, np.float32))
    np.testing.assert_array_equal(out["c"][0], np.full(1, 3.0, np.float32))
    assert out["n"] == 5
    paddle.save(paddle.arange(4, dtype="int64"), path)
    np.testing.assert_array_equal(load_paddle_file(path), np.arange(4))


def test_split_big_tensor_is_joined_like_paddle_load(tmp_path):
    # paddle.save with protocol 2/3 splits arrays over 1 GiB into key@@.i slices; the same
    # bookkeeping at a small size (too big to write in a test for real).
    full = np.arange(10, dtype=np.float32).reshape(2, 5)
    flat = full.ravel()
    obj = {"w@@.0": flat[:4], "w@@.1": flat[4:8], "w@@.2": flat[8:], "b": np.ones(3, np.float32),
           "UnpackBigParamInfor@@": {"w": {"OriginShape": (2, 5),
                                            "slices": ["w@@.0", "w@@.1", "w@@.2"]}}}
    path = str(tmp_path / "split.pdparams")
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    ours = load_weights_file(path)
    ref = paddle.load(path)
    assert sorted(ours) == sorted(ref) == ["b", "w"]
    np.testing.assert_array_equal(ours["w"], full)
    np.testing.assert_array_equal(ref["w"].numpy(), full)


@pytest.mark.parametrize("opt_name", ["Momentum", "AdamW", "SGD"])
def test_checkpoint_roundtrip_is_exact(tmp_path, opt_name):
    """Model, optimizer accumulators, LR-scheduler state and RNG all come back."""
    model = _small_model()
    sched = paddle.optimizer.lr.PolynomialDecay(0.01, 100)
    opt = getattr(paddle.optimizer, opt_name)(learning_rate=sched, parameters=model.parameters())
    x = paddle.randn([2, 3, 8, 8])
    for _ in range(2):
        model(x).mean().backward()
        opt.step()
        opt.clear_grad()
        sched.step()
    random.seed(5)
    np.random.seed(5)
    paddle.seed(5)
    ckpt = save_checkpoint(str(tmp_path), "iter_2", model, opt, {"iter": 2})
    expect = (random.random(), np.random.rand(), paddle.rand([1]).item())
    # the files themselves equal what Paddle's own loaders read
    for fname in ("model.pdparams", "model.pdopt"):
        ref = paddle.load(os.path.join(ckpt, fname))
        ours = load_paddle_file(os.path.join(ckpt, fname))
        assert sorted(ours) == sorted(ref)
        for k, v in ref.items():
            if isinstance(v, paddle.Tensor):
                np.testing.assert_array_equal(ours[k], v.numpy())
            else:
                assert ours[k] == v
    rng = load_rng_file(os.path.join(ckpt, "rng.pkl"))
    assert set(rng) == {"python", "numpy", "paddle"}
    assert isinstance(load_optimizer_file(os.path.join(ckpt, "model.pdopt"))["LR_Scheduler"], dict)

    model2 = _small_model()
    for p in model2.parameters():
        p.set_value(paddle.zeros_like(p))
    sched2 = paddle.optimizer.lr.PolynomialDecay(0.01, 100)
    opt2 = getattr(paddle.optimizer, opt_name)(learning_rate=sched2, parameters=model2.parameters())
    load_checkpoint(ckpt, model2, opt2)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    assert sched2.last_epoch == sched.last_epoch and sched2.last_lr == sched.last_lr
    assert (random.random(), np.random.rand(), paddle.rand([1]).item()) == expect
    # one more identical step from both gives identical weights (accumulators restored)
    for m, o in ((model, opt), (model2, opt2)):
        m(x).mean().backward()
        o.step()
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_truncated_empty_and_garbage_files(tmp_path):
    model = _small_model()
    path = str(tmp_path / "m.pdparams")
    paddle.save(model.state_dict(), path)
    data = open(path, "rb").read()
    cut = str(tmp_path / "cut.pdparams")
    open(cut, "wb").write(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match="truncated") as e:
        load_weights_file(cut)
    assert cut in str(e.value)
    with pytest.raises(ValueError, match="cannot be read"):  # load_model_weights' wording
        load_model_weights(_small_model(), cut)
    empty = str(tmp_path / "empty.pdparams")
    open(empty, "wb").close()
    with pytest.raises(WeightsFileError, match="empty"):
        load_weights_file(empty)
    junk = str(tmp_path / "junk.pdparams")
    open(junk, "wb").write(b"this is not a pickle at all")
    with pytest.raises(WeightsFileError, match=r"junk\.pdparams"):
        load_weights_file(junk)
    with pytest.raises(FileNotFoundError):
        load_weights_file(str(tmp_path / "nope.pdparams"))
    listing = str(tmp_path / "list.pdparams")
    paddle.save([1, 2], listing)
    with pytest.raises(WeightsFileError, match="not a state dict"):
        load_weights_file(listing)


def test_no_reader_in_the_toolkit_calls_paddle_load_or_pickle_load():
    """Every weights read goes through safe_load (a new paddle.load would bypass it)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    offenders = []
    for top in ("paddleseg_ext", "tools", "deploy"):
        for dirpath, _, files in os.walk(os.path.join(repo, top)):
            for fname in files:
                if fname.endswith(".py"):
                    src = open(os.path.join(dirpath, fname), encoding="utf-8").read()
                    for bad in ("paddle.load(", "pickle.load(", "pickle.loads(", "torch.load("):
                        if bad in src:
                            offenders.append(f"{os.path.relpath(os.path.join(dirpath, fname), repo)}: {bad}")
    assert not offenders, offenders
