"""PaddleSeg 2.8 checkpoints give PaddleSeg's logits here (benchmark environment only).

PaddleSeg never enters the toolkit's ``.venv``, so in the main suite every
test here is skipped with the reason. To run them:

    bash benchmarks/setup_bench_env.sh
    .venv-bench/bin/python -m pytest tests/test_peer_checkpoints.py -q -p no:cacheprovider

The main suite guards the same conversions without PaddleSeg from the
committed key/shape lists (``tests/test_checkpoint_adapters.py``); the last
test here checks that those lists are still PaddleSeg's.
"""

import json
import os
import sys

import pytest

pytest.importorskip("paddleseg", reason="PaddleSeg 2.8 is installed only in the benchmark "
                    "environment: bash benchmarks/setup_bench_env.sh && .venv-bench/bin/python "
                    "-m pytest tests/test_peer_checkpoints.py")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import paddleseg_peer  # noqa: E402
import peer_checkpoints as pc  # noqa: E402
import tolerance as tol

paddleseg_peer.load()



@pytest.mark.slow
@pytest.mark.parametrize("backbone", pc.BACKBONES)
@pytest.mark.parametrize("name", pc.MODELS)
def test_paddleseg_checkpoint_gives_paddleseg_logits(name, backbone, tmp_path, caplog):
    caplog.set_level("INFO", logger="paddleseg_ext")
    rows = pc.compare(name, backbone, tmp_path)
    assert [size for size, _, _ in rows] == list(pc.SIZES)
    # Ours runs CPU 3x3 convs as Winograd, PaddleSeg as conv2d: our network's rounding budget.
    depth, fan_in = tol.network_shape(pc.our_model(name, backbone), attention_fan_in=max(
        ((h + 7) // 8) * ((w + 7) // 8) for h, w in pc.SIZES))
    for size, diff, scale in rows:
        assert scale > 0.1, f"{name} {backbone} {size}: logits too small to mean anything ({scale})"
        budget = tol.bound(max(1.0, scale), fan_in, depth, winograd=True)
        assert diff <= budget, f"{name} {backbone} {size}: max abs diff {diff} > {budget:.3g} (logit scale {scale})"
    lines = [r.getMessage() for r in caplog.records if "detected PaddleSeg 2.x" in r.getMessage()]
    assert len(lines) == 1 and f"PaddleSeg 2.x {name} checkpoint" in lines[0]


@pytest.mark.parametrize("backbone", pc.BACKBONES)
@pytest.mark.parametrize("name", pc.MODELS)
def test_committed_key_lists_are_paddleseg_s(name, backbone):
    path = pc.FIXTURES / f"{name.lower()}_{backbone.lower()}.json"
    doc = json.loads(path.read_text())
    assert doc["keys"] == pc.key_shapes(name, backbone), \
        f"{path} is stale: rerun .venv-bench/bin/python benchmarks/peer_checkpoints.py --fixtures"
