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

paddleseg_peer.load()

TOL = 1e-5  # fp32, max abs over all logits


@pytest.mark.slow
@pytest.mark.parametrize("backbone", pc.BACKBONES)
@pytest.mark.parametrize("name", pc.MODELS)
def test_paddleseg_checkpoint_gives_paddleseg_logits(name, backbone, tmp_path, caplog):
    caplog.set_level("INFO", logger="paddleseg_ext")
    rows = pc.compare(name, backbone, tmp_path)
    assert [size for size, _, _ in rows] == list(pc.SIZES)
    for size, diff, scale in rows:
        assert scale > 0.1, f"{name} {backbone} {size}: logits too small to mean anything ({scale})"
        assert diff <= TOL, f"{name} {backbone} {size}: max abs diff {diff} (logit scale {scale})"
    lines = [r.getMessage() for r in caplog.records if "detected PaddleSeg 2.x" in r.getMessage()]
    assert len(lines) == 1 and f"PaddleSeg 2.x {name} checkpoint" in lines[0]


@pytest.mark.parametrize("backbone", pc.BACKBONES)
@pytest.mark.parametrize("name", pc.MODELS)
def test_committed_key_lists_are_paddleseg_s(name, backbone):
    path = pc.FIXTURES / f"{name.lower()}_{backbone.lower()}.json"
    doc = json.loads(path.read_text())
    assert doc["keys"] == pc.key_shapes(name, backbone), \
        f"{path} is stale: rerun .venv-bench/bin/python benchmarks/peer_checkpoints.py --fixtures"
