"""serve.py --runtime auto (deploy/python/serve_runtime.py): the fastest exact runtime, checked and reported.

The choice itself is timing (never asserted); what is tested is that only exact candidates can be
chosen, that the fastest of them by the reported figures is, that a runtime off by more than
float32 rounding (a perturbed candidate, standing in for bfloat16 or a wrong kernel) is refused
however fast it is, and that the bound is the one the graph's depth and fan-in give.
"""

import os
import sys
import time

import numpy as np
import pytest

from serve_helpers import ROOT, export_tiny

sys.path.insert(0, os.path.join(ROOT, "deploy", "python"))

import serve_runtime  # noqa: E402

pytest.importorskip("onnxruntime")
pytest.importorskip("paddle2onnx")


def _reference(x):
    """A stand-in network: 4 classes, logits of scale ~10 from a fixed mix of the bands."""
    w = np.linspace(-3.0, 3.0, 4 * x.shape[1]).reshape(4, x.shape[1]).astype(np.float32)
    return np.einsum("kc,nchw->nkhw", w, x)


PROBE = serve_runtime.probe_batch(3, 8, 2)
DEPTH, FAN_IN = 20, 1000


def _slow(run, ms):
    def timed(x):
        time.sleep(ms / 1e3)
        return run(x)
    return timed


def test_a_perturbed_runtime_is_never_picked_however_fast():
    bound = serve_runtime.rounding_bound(np.abs(_reference(PROBE)).max(), FAN_IN, DEPTH)
    rel = bound / np.abs(_reference(PROBE)).max()
    candidates = {
        # off by 1 % of the logits (bfloat16's order): far outside float32 rounding, and the fastest
        "perturbed": lambda: (lambda x: _reference(x) * 1.01),
        # off by a few float32 ulp: what a runtime summing in another order gives
        "rounding": lambda: _slow(lambda x: _reference(x) * (1 + 4 * 2.0 ** -24), 5),
        "slow exact": lambda: _slow(_reference, 30),
        "broken": lambda: (_ for _ in ()).throw(RuntimeError("cannot load the model")),
    }
    choice = serve_runtime.choose(_reference, candidates, PROBE, DEPTH, FAN_IN, runs=3)
    by = {c.runtime: c for c in choice.candidates}
    assert choice.runtime == "rounding"
    assert not by["perturbed"].exact and by["perturbed"].max_abs_diff > bound and by["perturbed"].ms is None
    assert by["rounding"].exact and by["rounding"].max_abs_diff <= bound and by["rounding"].argmax_agree == 1.0
    assert by["slow exact"].exact and by["slow exact"].ms > by["rounding"].ms
    assert by["broken"].error == "RuntimeError: cannot load the model" and not by["broken"].exact
    assert "perturbed not exact" in choice.reason and "broken failed" in choice.reason
    assert 1e-5 < rel < 1e-2  # the bound sits between float32 rounding and a real error


def test_no_exact_runtime_is_one_clear_error():
    with pytest.raises(RuntimeError, match=r"no runtime is exact on this export: a: max \|diff\| .* vs bound"):
        serve_runtime.choose(_reference, {"a": lambda: (lambda x: -_reference(x))}, PROBE, DEPTH, FAN_IN, runs=1)


def test_classes_are_compared_where_the_margin_decides():
    ref = _reference(PROBE)
    bound = serve_runtime.rounding_bound(np.abs(ref).max(), FAN_IN, DEPTH)
    classes = ref.argmax(axis=1).astype(np.int32)
    assert serve_runtime.compare(ref, classes, bound, "classes") == (True, None, 1.0)
    top2 = np.sort(ref, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    flipped = classes.copy()
    decided = np.argwhere(margin > 2 * bound)[0]
    flipped[tuple(decided)] = (flipped[tuple(decided)] + 1) % 4
    exact, _, agree = serve_runtime.compare(ref, flipped, bound, "classes")
    assert not exact and agree < 1.0
    # a pixel whose two best logits are within rounding may go either way
    tie = ref.copy()
    n, h, w = tuple(decided)
    best = tie[n, :, h, w].argmax()
    tie[n, (best + 1) % 4, h, w] = tie[n, best, h, w] - bound / 2
    other = tie.argmax(axis=1)
    other[n, h, w] = (best + 1) % 4
    assert serve_runtime.compare(tie, other, bound, "classes")[0]
    # probabilities: the softmax of the logits, within the same bound
    e = np.exp(ref - ref.max(axis=1, keepdims=True))
    probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    assert serve_runtime.compare(ref, probs, bound, "probs")[0]
    assert not serve_runtime.compare(ref, np.roll(probs, 1, axis=1), bound, "probs")[0]


def test_auto_on_an_export_picks_an_exact_runtime_and_derives_its_bound(tmp_path):
    import onnx

    import serve
    from infer import DeployConfig

    config = export_tiny(tmp_path, "auto", onnx=True)
    cfg = DeployConfig(config)
    choice = serve.pick_runtime(cfg, "auto", threads=1, side=32)
    exact = [c for c in choice.candidates if c.exact]
    assert exact and choice.runtime == min(exact, key=lambda c: c.ms).runtime
    assert {c.runtime for c in choice.candidates} == {"onnx", "openvino", "paddle", "paddle-mkldnn"}
    for c in choice.candidates:  # every installed runtime runs this export exactly
        if c.error is None:
            assert c.exact and c.argmax_agree == 1.0, c
    assert choice.probe == [1, 3, 32, 32]
    # the bound's terms come from the graph: the longest convolution sum and the accumulating depth
    model = onnx.load(cfg.onnx_file)
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:  # paddle2onnx stores weights as Constant nodes (and Identity copies)
        if n.op_type == "Constant":
            weights[n.output[0]] = tuple(n.attribute[0].t.dims)
        if n.op_type == "Identity" and n.input[0] in weights:
            weights[n.output[0]] = weights[n.input[0]]
    conv_fan_in = max(weights[n.input[1]][1] * weights[n.input[1]][2] * weights[n.input[1]][3]
                      for n in model.graph.node if n.op_type == "Conv")
    assert choice.fan_in == max(conv_fan_in, 32 * 32)  # or the probe's pixels, for a sum over positions
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert 1 <= choice.depth <= convs + sum(n.op_type in ("MatMul", "Gemm") for n in model.graph.node)
    logits, name = serve_runtime.logits_graph(cfg.onnx_file)
    assert name != model.graph.output[0].name and logits.graph.output[0].name == name
    # explicit runtimes are taken as given, and say so
    assert serve.pick_runtime(cfg, "onnx").reason == "--runtime onnx (given)"


def test_an_export_without_onnx_is_served_by_paddle_inference(tmp_path):
    import serve
    from infer import DeployConfig

    choice = serve.pick_runtime(DeployConfig(export_tiny(tmp_path, "p")), "auto")
    assert choice.runtime == "paddle" and "no ONNX model" in choice.reason and choice.candidates == []
