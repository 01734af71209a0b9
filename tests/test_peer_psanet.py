"""PSANet_paddle's own model vs ours: converted checkpoints give the same logits.

Runs only in the benchmark environment with the peer's source at hand::

    bash benchmarks/setup_bench_env.sh
    git clone https://github.com/justld/PSANet_paddle /tmp/PSANet_paddle
    PSANET_PADDLE_ROOT=/tmp/PSANet_paddle .venv-bench/bin/python -m pytest \
        tests/test_peer_psanet.py -q -p no:cacheprovider

The peer's ``paddleseg/models/psanet.py`` is read from that checkout (none of
its code is in this repository) and run on PaddleSeg 2.8 with our
``psa_mask`` for its compiled op; :func:`test_peer_op_equals_ours` compiles
the peer's ``psamask.cc`` and checks that the two ops agree. In the toolkit's
``.venv`` (no PaddleSeg) every test here is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import paddle
import pytest

import psanet_paddle_case as C
import tolerance as tol

_HAVE_PADDLESEG = importlib.util.find_spec("paddleseg") is not None
_ROOT = os.environ.get(C.PEER_ENV, "")
pytestmark = [
    pytest.mark.skipif(not _HAVE_PADDLESEG, reason="needs PaddleSeg 2.8 (the benchmark "
                       "environment: bash benchmarks/setup_bench_env.sh, .venv-bench)"),
    pytest.mark.skipif(not _ROOT, reason=f"needs ${C.PEER_ENV}: a checkout of "
                       "https://github.com/justld/PSANet_paddle (its model file is not "
                       "committed here)"),
]

_R18 = dict(backbone="ResNet18_vd", num_classes=4, shrink_factor=2, normalization_factor=1.0,
            psa_softmax=True, use_psa=True)
#: Odd masks only (the peer asserts them). Windows smaller than the map, so
#: border clipping is exercised: 48x64 gives a 6x8 stage-4 map (3x4 shrunk).
CASES = {
    "collect": dict(_R18, psa_type=0, mask_h=3, mask_w=5),
    "distribute": dict(_R18, psa_type=1, mask_h=5, mask_w=3, shrink_factor=1),
    "bi-direction": dict(_R18, psa_type=2, mask_h=5, mask_w=7),
    "bi-direction, mean, no softmax, no shrink": dict(
        _R18, psa_type=2, mask_h=7, mask_w=5, shrink_factor=1, normalization_factor=None,
        psa_softmax=False),
    "no PSA": dict(_R18, psa_type=2, mask_h=5, mask_w=5, use_psa=False),
    "recipe (R50, 19 classes, 59x59)": dict(C.RECIPE),
}
SIZES = ((33, 41), (48, 64))  # 33x41: not a multiple of 8


def _budget(model, want, winograd=True):
    """Our network's rounding budget (tests/tolerance.py): ours runs CPU 3x3 convs as
    Winograd, the peer as conv2d."""
    att = max(((h + 7) // 8) * ((w + 7) // 8) for h, w in SIZES)
    return tol.network_bound(model, want, winograd=winograd, attention_fan_in=att)


def _peer_checkpoint(case, seed, tmp_path):
    """The peer's model with seeded weights/BN stats, saved and read back."""
    peer = C.build_peer(case)
    state = C.seeded_state(C.peer_shapes(peer), seed)
    missing, unexpected = peer.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    assert not missing and not unexpected
    path = str(tmp_path / "psanet_paddle.pdparams")
    paddle.save(peer.state_dict(), path)
    return peer, paddle.load(path)


@pytest.mark.parametrize("name", list(CASES))
def test_converted_checkpoint_gives_the_peers_logits(name, tmp_path):
    from paddleseg_ext.checkpoints.adapters import psanet_paddle as adapter

    case = CASES[name]
    peer, loaded = _peer_checkpoint(case, seed=7, tmp_path=tmp_path)
    ours = C.build_ours(case)
    assert adapter.detect(list(loaded), ours)
    conv = adapter.convert(loaded, ours)
    assert conv.unplaced == [] and set(conv.state) == set(ours.state_dict())
    assert len(conv.state) == len(loaded)
    missing, unexpected = ours.set_state_dict(conv.state)
    assert not missing and not unexpected
    for i, size in enumerate(SIZES):
        x = paddle.to_tensor(C.seeded_input(size, 100 + i))
        with paddle.no_grad():
            want = peer(x)[0].numpy()
            got = ours(x)[0].numpy()
        diff = float(np.abs(got - want).max())
        print(f"{name} {size}: max abs diff {diff:.3g} at logit scale "
              f"{float(np.abs(want).max()):.3g}")
        assert got.shape == want.shape == (1, case["num_classes"], *size)
        assert diff <= _budget(ours, want), f"{name} {size}: max abs diff {diff}"


def test_bidirection_needs_the_peers_concat_order(tmp_path):
    from paddleseg_ext.checkpoints.adapters import psanet_paddle as adapter

    case = CASES["bi-direction"]
    peer, loaded = _peer_checkpoint(case, seed=7, tmp_path=tmp_path)
    ours = C.build_ours(case, concat_order="collect_first")
    with pytest.raises(ValueError, match="psa_concat_order"):
        adapter.convert(loaded, ours)
    # What the refusal prevents: the same tensors in the authors' order differ.
    state = {adapter._rename(k): v for k, v in loaded.items()}
    ours.set_state_dict(state)
    x = paddle.to_tensor(C.seeded_input(SIZES[0], 100))
    with paddle.no_grad():
        diff = float(np.abs(ours(x)[0].numpy() - peer(x)[0].numpy()).max())
    print(f"collect_first with the peer's tensors: max abs diff {diff:.3g}")
    assert diff > 1e-2


def test_committed_fixtures_are_the_peers():
    """The main suite's facts (key/shape lists, golden logits) still match the peer."""
    import json

    recipe = json.loads((C.FIXTURES / "recipe_r50_cityscapes_keys.json").read_text())
    assert [list(x) for x in recipe["shapes"]] == [list(x) for x in
                                                   C.peer_shapes(C.build_peer(C.RECIPE))]
    golden = json.loads((C.FIXTURES / "golden_r18.json").read_text())
    peer = C.build_peer(C.GOLDEN)
    shapes = C.peer_shapes(peer)
    assert [list(x) for x in golden["shapes"]] == [list(x) for x in shapes]
    peer.set_state_dict({k: paddle.to_tensor(v)
                         for k, v in C.seeded_state(shapes, C.GOLDEN_SEED).items()})
    logits = np.load(C.FIXTURES / "golden_r18_logits.npz")
    for i, size in enumerate(C.GOLDEN_SIZES):
        x = paddle.to_tensor(C.seeded_input(size, C.GOLDEN_SEED + 1 + i))
        with paddle.no_grad():
            want = peer(x)[0].numpy()
        # The fixture was written on another machine: the peer's own rounding budget.
        tol.assert_close(logits[f"{size[0]}x{size[1]}"], want, _budget(peer, want, winograd=False),
                         f"golden logits {size}")


# Paddle 3 removed the ``paddle::Tensor(PlaceType, shape)`` constructor the
# peer's op uses for its outputs (it compiles, then fails to resolve the
# symbol at the first call); ``paddle::empty`` allocates the same
# uninitialised CPU tensor, and the peer's kernels zero-fill their outputs.
_OP_FIXES = (
    ("paddle::Tensor(paddle::PlaceType::kCPU, std::vector<int64_t>{num_, feature_H_ * "
     "feature_W_, feature_H_, feature_W_})",
     "paddle::empty(std::vector<int64_t>{num_, feature_H_ * feature_W_, feature_H_, "
     "feature_W_}, x.dtype(), paddle::CPUPlace())"),
    ("paddle::Tensor(paddle::PlaceType::kCPU, x.shape())",
     "paddle::empty(x.shape(), x.dtype(), paddle::CPUPlace())"),
)


@pytest.fixture(scope="module")
def peer_op(tmp_path_factory):
    """The peer's compiled CPU ``psamask`` op (its psamask.cc, with :data:`_OP_FIXES`)."""
    from paddle.utils.cpp_extension import load

    src = (C.peer_root() / "paddleseg" / "models" / "ops" / "psamask.cc").read_text()
    for old, new in _OP_FIXES:
        if old not in src:
            pytest.skip(f"the peer's psamask.cc changed: no {old!r} to fix for Paddle 3")
        src = src.replace(old, new)
    build = tmp_path_factory.mktemp("peer_psamask")
    (build / "psamask.cc").write_text(src)
    try:
        return load(name="psanet_paddle_psamask", sources=[str(build / "psamask.cc")],
                    build_directory=str(build)).psamask
    except Exception as e:  # a compiler problem here is not a failure of ours
        pytest.skip(f"the peer's psamask.cc does not compile here: {type(e).__name__}: {e}")


@pytest.mark.parametrize("h,w,mh,mw", [(5, 6, 3, 3), (4, 7, 5, 9), (3, 3, 7, 7), (6, 4, 1, 1),
                                       (2, 9, 3, 11)])
def test_peer_op_equals_ours(h, w, mh, mw, peer_op):
    """Our psa_mask is the peer's psamask: forward and backward, both types."""
    from paddleseg_ext.ops import psa_mask

    rng = np.random.default_rng(h * 100 + w)
    for psa_type in (0, 1):
        x_np = rng.normal(size=(2, mh * mw, h, w)).astype(np.float32)
        g_np = rng.normal(size=(2, h * w, h, w)).astype(np.float32)
        outs, grads = [], []
        for fn in (lambda t: peer_op(t, psa_type, 2, h, w, mh, mw, mh // 2, mw // 2),
                   lambda t: psa_mask(t, psa_type, (mh, mw))):
            x = paddle.to_tensor(x_np, stop_gradient=False)
            y = fn(x)
            (y * paddle.to_tensor(g_np)).sum().backward()
            outs.append(y.numpy())
            grads.append(x.grad.numpy())
        np.testing.assert_array_equal(outs[0], outs[1])
        np.testing.assert_array_equal(grads[0], grads[1])


def test_peer_model_with_its_own_op(peer_op, tmp_path, monkeypatch):
    """The bi-direction case once more, the peer running its own compiled op."""
    from paddleseg_ext.checkpoints.adapters import psanet_paddle as adapter

    calls = []

    def counted(*args):
        calls.append(args[1])
        return peer_op(*args)

    monkeypatch.setattr(C.load_peer_psanet(), "psa_mask_op", counted)
    case = CASES["bi-direction"]
    peer, loaded = _peer_checkpoint(case, seed=8, tmp_path=tmp_path)
    ours = C.build_ours(case)
    ours.set_state_dict(adapter.convert(loaded, ours).state)
    for i, size in enumerate(SIZES):
        x = paddle.to_tensor(C.seeded_input(size, 200 + i))
        with paddle.no_grad():
            want = peer(x)[0].numpy()
            diff = float(np.abs(ours(x)[0].numpy() - want).max())
        print(f"peer with its own op {size}: max abs diff {diff:.3g}")
        assert diff <= _budget(ours, want)
    assert calls == [0, 1] * len(SIZES)  # collect and distribute, per forward
