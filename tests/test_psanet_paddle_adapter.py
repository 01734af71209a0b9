"""PSANet_paddle checkpoints convert exactly (main suite, without the peer).

Guards facts taken from the peer's own model (``tests/fixtures/psanet_paddle``,
written by its ``regenerate.py`` in the benchmark environment and re-checked
there by ``tests/test_peer_psanet.py``): the key/shape list of the published
R50 Cityscapes model, and the peer's eval logits for a small seeded R18 case
whose weights :func:`psanet_paddle_case.seeded_state` rebuilds here.
"""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

import psanet_paddle_case as C
import tolerance as tol
from paddleseg_ext.checkpoints.adapters import psanet_paddle as adapter
from paddleseg_ext.checkpoints.adapters.base import registered_adapters
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.models.layers.psa_block import PSAModule

RECIPE = C.ROOT / "configs" / "psanet" / "psanet_resnet50_os8_cityscapes_1024x512_80k.yml"


def _budget(model, want):
    """Our network's rounding budget against the peer's logits (tests/tolerance.py): the
    fixture was written by the peer (conv2d) on another machine, ours runs Winograd."""
    att = max(((h + 7) // 8) * ((w + 7) // 8) for h, w in C.GOLDEN_SIZES)
    return tol.network_bound(model, want, attention_fan_in=att)


@pytest.fixture(scope="module")
def golden_state():
    return C.seeded_state(C.read_shapes("golden_r18.json"), C.GOLDEN_SEED)


def _golden_logits(model):
    logits = np.load(C.FIXTURES / "golden_r18_logits.npz")
    for i, size in enumerate(C.GOLDEN_SIZES):
        x = paddle.to_tensor(C.seeded_input(size, C.GOLDEN_SEED + 1 + i))
        with paddle.no_grad():
            yield size, model(x)[0].numpy(), logits[f"{size[0]}x{size[1]}"]


def test_fixture_records_the_case_this_module_rebuilds():
    golden = json.loads((C.FIXTURES / "golden_r18.json").read_text())
    assert golden["case"] == C.GOLDEN and golden["weights_seed"] == C.GOLDEN_SEED
    assert [tuple(s) for s in golden["sizes"]] == list(C.GOLDEN_SIZES)
    assert golden["input_seeds"] == [C.GOLDEN_SEED + 1 + i for i in range(len(C.GOLDEN_SIZES))]


def test_golden_case_gives_the_peers_logits(golden_state):
    model = C.build_ours(C.GOLDEN)
    keys = list(golden_state)
    assert adapter.detect(keys, model)
    conv = adapter.convert(golden_state, model)
    assert conv.layout == adapter.LAYOUT and conv.unplaced == [] and conv.folded == []
    assert set(conv.state) == set(model.state_dict()) and len(conv.state) == len(keys)
    assert conv.renamed == 12  # psa.reduce_layer (5), head.conv_bn_relu (5), head.conv (2)
    missing, unexpected = model.set_state_dict(conv.state)
    assert not missing and not unexpected
    for size, got, want in _golden_logits(model):
        assert got.shape == want.shape == (1, C.GOLDEN["num_classes"], *size)
        assert np.abs(want).max() > 0.3  # a real signal, not near-zero logits
        tol.assert_close(got, want, _budget(model, want), str(size))


def test_authors_concat_order_would_differ_and_is_refused(golden_state):
    model = C.build_ours(C.GOLDEN, concat_order="collect_first")
    with pytest.raises(ValueError, match=r"PSANet_paddle PSANet.*psa_concat_order: "
                                         r"distribute_first"):
        adapter.convert(golden_state, model)
    # Loaded anyway (renamed by hand), the logits are not the peer's.
    model.set_state_dict({adapter._rename(k): v for k, v in golden_state.items()})
    size, got, want = next(_golden_logits(model))
    assert np.abs(got - want).max() > 1e-2


def test_recipe_builds_the_published_models_layout():
    model = SegBuilder(Config(str(RECIPE), opts=["model.backbone.pretrained=null"])).model
    assert model.psa.concat_order == "distribute_first"
    shapes = C.read_shapes("recipe_r50_cityscapes_keys.json")
    state = {k: np.zeros(s, np.float32) for k, s in shapes}
    assert adapter.detect(list(state), model)
    conv = adapter.convert(state, model)
    assert conv.unplaced == [] and conv.renamed == 12
    own = model.state_dict()
    assert set(conv.state) == set(own) and len(conv.state) == len(shapes)
    assert all(list(conv.state[k].shape) == list(own[k].shape) for k in own)


def test_wrong_num_classes_is_one_clear_error(golden_state):
    model = C.build_ours(dict(C.GOLDEN, num_classes=5))
    with pytest.raises(ValueError) as err:
        adapter.convert(golden_state, model)
    msg = str(err.value)
    assert msg.startswith("PSANet_paddle PSANet checkpoint does not fit this PSANet")
    assert "3 classes, the model num_classes=5" in msg
    assert "head.conv.weight [3, 512, 1, 1] -> cls.weight expects [5, 512, 1, 1]" in msg


@pytest.mark.parametrize("change", [dict(backbone="ResNet50_vd"), dict(psa_type=0),
                                    dict(mask_h=7)])
def test_wrong_architecture_is_one_clear_error(golden_state, change):
    model = C.build_ours(dict(C.GOLDEN, **change))
    with pytest.raises(ValueError, match=r"^PSANet_paddle PSANet checkpoint does not fit"):
        adapter.convert(golden_state, model)


def test_keys_without_a_place_are_reported_not_dropped(golden_state):
    model = C.build_ours(dict(C.GOLDEN, use_psa=False))
    keep = {k: v for k, v in golden_state.items() if not k.startswith(("psa.", "head.conv_bn"))}
    extra = dict(keep, **{"psa.proj._conv.weight": golden_state["psa.proj._conv.weight"]})
    conv = adapter.convert(extra, model)
    assert conv.unplaced == ["psa.proj._conv.weight"]
    assert "psa.proj._conv.weight" not in conv.state


def test_detect_needs_the_peers_head_and_our_psanet(golden_state):
    ours = C.build_ours(C.GOLDEN)
    assert not adapter.detect(list(ours.state_dict()), ours)  # native layout
    assert not adapter.detect(list(golden_state), paddle.nn.Conv2D(3, 3, 1))
    assert any(a.name == "psanet_paddle.psanet" and a.detect is adapter.detect
               for a in registered_adapters())


def _has_framework():
    from paddleseg_ext.checkpoints import adapters

    return hasattr(adapters, "to_native")


@pytest.mark.skipif(not _has_framework(), reason="the adapter framework (to_native in "
                    "paddleseg_ext.checkpoints.adapters, branch h16a) is not merged here")
def test_load_model_weights_converts_a_saved_peer_checkpoint(golden_state, tmp_path):
    from paddleseg_ext.checkpoints.weights import load_model_weights

    path = str(tmp_path / "psanet_paddle.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in golden_state.items()}, path)
    model = C.build_ours(C.GOLDEN)
    load_model_weights(model, path)
    for size, got, want in _golden_logits(model):
        tol.assert_close(got, want, _budget(model, want), str(size))
    with pytest.raises(ValueError, match="PSANet_paddle"):
        load_model_weights(C.build_ours(dict(C.GOLDEN, num_classes=5)), path)


def test_concat_order_is_a_permutation_of_the_projection_input():
    """distribute_first == collect_first with proj's two input halves swapped."""
    paddle.seed(3)
    a = PSAModule(16, 8, "bi-direction", (3, 3), 1)
    b = PSAModule(16, 8, "bi-direction", (3, 3), 1, concat_order="distribute_first")
    state = {k: v.numpy() for k, v in a.state_dict().items()}
    w = state["proj._conv.weight"]
    state["proj._conv.weight"] = np.concatenate([w[:, 8:], w[:, :8]], axis=1)
    b.set_state_dict(state)
    a.eval(), b.eval()
    x = paddle.randn([1, 16, 5, 6])
    want = a(x).numpy()
    tol.assert_close(b(x).numpy(), want, tol.network_bound(a, want, winograd=False, attention_fan_in=30),
                     "permuted projection input")
    assert "concat_order=distribute_first" in b.extra_repr()


@pytest.mark.parametrize("value", ["distribute", "", None, 1])
def test_bad_concat_order_names_the_key(value):
    with pytest.raises(ValueError, match=r"PSANet: psa_concat_order must be one of "
                                         r"'collect_first', 'distribute_first'"):
        C.build_ours(C.GOLDEN, concat_order=value)
