"""The model graph in a real browser: tools/view_graph.py's export, served by Netron, loaded
in headless Chromium, shows the model's nodes, for all four models and both file formats."""

import importlib.util
import os

import pytest

from graph_browser import load_graph, missing
from paddleseg_ext.utils import graph_view
from tiny_config import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"pspnet": "configs/landcover6/pspnet_resnet18_os8_landcover6band_64x64_1000.yml",
           "danet": "configs/landcover6/danet_resnet18_os8_landcover6band_64x64_1050.yml",
           "psanet": "configs/landcover6/psanet_resnet18_os8_landcover6band_64x64_900.yml",
           "pointrend": "configs/landcover6/pointrend_resnet18_landcover6band_64x64_1500.yml"}
# an operator each model's graph must show, per format (ONNX names / Paddle 3 PIR names)
MARKERS = {"pspnet": ("AveragePool", "pool2d"), "danet": ("Softmax", "softmax"),
           "psanet": ("Gather", "gather"), "pointrend": ("GridSample", "grid_sample")}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(missing()), reason=missing() or "-")]


def show(path):
    address = graph_view.serve(path, port=0)
    try:
        return load_graph(f"http://{address[0]}:{address[1]}/")
    finally:
        graph_view.stop(address)


@pytest.mark.parametrize("model", sorted(CONFIGS))
def test_the_graph_page_shows_the_model(model, tmp_path):
    onnx = importlib.util.find_spec("paddle2onnx") is not None
    view = load_tool("view_graph")
    out = str(tmp_path / model)
    view.main(["--config", os.path.join(ROOT, CONFIGS[model]), "--save_dir", out, "--no_serve",
               "--format", "onnx" if onnx else "paddle"])
    nodes, names = show(graph_view.graph_file(out, "paddle"))  # Paddle 3's model.json
    assert nodes > 50 and "conv2d" in names and MARKERS[model][1] in names, (nodes, sorted(set(names)))
    if onnx:
        nodes, names = show(graph_view.graph_file(out, "onnx"))
        assert nodes > 50 and "Conv" in names and MARKERS[model][0] in names, (nodes, sorted(set(names)))


def test_a_missing_export_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no model.onnx \(export it with tools/export.py --format onnx"):
        graph_view.graph_file(str(tmp_path), "onnx")
