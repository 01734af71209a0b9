"""mmsegmentation 1.2.2 checkpoints give mmsegmentation's logits here (peer environment only).

PyTorch and mmsegmentation never enter the toolkit's ``.venv``, so in the main
suite every test here is skipped with the reason. To run them:

    bash benchmarks/setup_peer_env.sh
    .venv-peers/bin/python -m pytest tests/test_peer_mmseg.py -q -p no:cacheprovider

mmseg's own model, built from its own config file with random weights and
random BatchNorm statistics, is saved as mmseg saves it (the model zoo's
``{'meta', 'state_dict'}`` in torch's legacy layout, and mmengine's
``save_checkpoint`` with a ``message_hub``), loaded into ours through
``load_model_weights`` with the recipe of the same name, and the eval logits
(mmseg's ``encode_decode``) are compared at two input sizes, one odd. The
main suite guards the same conversions from the committed key/shape lists and
golden logits (``tests/test_mmseg_adapter.py``); the last tests here check
that those are still mmseg's.
"""

import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("mmseg", reason="mmsegmentation 1.2.2 is installed only in the peer "
                    "environment: bash benchmarks/setup_peer_env.sh && .venv-peers/bin/python "
                    "-m pytest tests/test_peer_mmseg.py")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import mmseg_checkpoints as mc  # noqa: E402

#: The issue's criterion: max abs diff <= 1e-5 of the largest logit magnitude, float32.
RELATIVE = 1e-5


@pytest.mark.parametrize("style", ["mmcv1", "mmengine"])
@pytest.mark.parametrize("family", mc.NETWORKS)
def test_mmseg_checkpoint_gives_mmseg_logits(family, style, tmp_path, caplog):
    caplog.set_level("INFO", logger="paddleseg_ext")
    rows = mc.compare(family, tmp_path, style)
    assert [size for size, _, _ in rows] == list(mc.SIZES)
    for size, diff, scale in rows:
        assert scale > 0.1, f"{family} {size}: logits too small to mean anything ({scale})"
        assert diff <= RELATIVE * scale, \
            f"{family} {style} {size}: max abs diff {diff} > {RELATIVE} x {scale}"
    model = "DANet" if family.startswith("danet") else "PSPNet"
    lines = [r.getMessage() for r in caplog.records if "detected mmsegmentation" in r.getMessage()]
    assert len(lines) == 1 and f"mmsegmentation {model} checkpoint" in lines[0]
    assert "num_batches_tracked" in lines[0]
    left_out = "message_hub, meta" if style == "mmengine" else "meta"
    assert any(f"leaving out {left_out}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("family", mc.NETWORKS)
def test_committed_key_lists_are_mmsegs(family):
    path = mc.FIXTURES / f"{mc.fixture_name(family)}.json"
    doc = json.loads(path.read_text())
    assert doc["keys"] == mc.key_shapes(family), \
        f"{path} is stale: rerun .venv-peers/bin/python benchmarks/mmseg_checkpoints.py --fixtures"


@pytest.mark.parametrize("family,seed,size", mc.GOLDEN)
def test_committed_golden_logits_are_mmsegs(family, seed, size):
    want = mc.peer_logits(mc.randomized_peer(family, seed), mc.random_input(size, seed))
    got = np.load(mc.FIXTURES / f"{mc.fixture_name(family)}_golden_seed{seed}.npy")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.abs(want).max()))


@pytest.mark.parametrize("family", mc.FAMILIES)
def test_recipe_builds_the_peer_network(family):
    """Every recipe (40k and 80k schedules too) has the peer config's key/shape list."""
    ours = mc.our_model(family)
    peer_keys = mc.key_shapes(family)
    from paddleseg_ext.checkpoints.adapters import to_native

    native, conv = to_native(mc.random_state(peer_keys, 0), ours, source=family)
    assert not conv.unplaced and set(native) == set(ours.state_dict())
