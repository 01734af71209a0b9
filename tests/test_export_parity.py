"""Export parity: dygraph == Paddle Inference == onnxruntime, for every model.

Each model (quick-start config: ResNet18_vd, random weights fixed by a seed)
is exported once per module with a dynamic input ``[None, 3, None, None]``
and run at two input sizes (one odd, one with batch 2):

* Paddle Inference logits == dygraph eval logits,
* onnxruntime logits == dygraph logits and == Paddle Inference,
each within the model's float32 rounding budget (tests/tolerance.py: its depth, fan-in and
Winograd on the dygraph side), and the same class wherever the reference's top two logits
are further apart than that budget.

PSANet is exported twice: with the compiled ``psa_mask`` op (Paddle
Inference; the op keeps a dynamic output shape, unlike the failure in Paddle
issue #42068) and with the pure-Paddle PSA mask (ONNX). Both paths agree.
"""

import json
import os
import sys

import numpy as np
import paddle
import pytest

# Registers the models even where models/__init__.py does not import them.
import paddleseg_ext.models.danet  # noqa: F401
import paddleseg_ext.models.pointrend  # noqa: F401
import paddleseg_ext.models.psanet  # noqa: F401
from paddleseg_ext.core.export import export, export_onnx
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.models.layers import PSAModule
from paddleseg_ext.runtime import ExecutionPolicy, prepare
import tolerance as tol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "deploy", "python"))

CONFIGS = {
    "pspnet": "configs/quick_start/pspnet_resnet18_os8_landcover_64x64_400.yml",
    "danet": "configs/quick_start/danet_resnet18_os8_landcover_64x64_400.yml",
    "psanet": "configs/quick_start/psanet_resnet18_os8_landcover_64x64_400.yml",
    "pointrend": "configs/quick_start/pointrend_resnet18_landcover_64x64_400.yml",
}
SIZES = [(1, 3, 64, 96), (2, 3, 37, 51)]  # dynamic batch; odd height and width
SEED = 2024


def _onnx_available():
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError:
        return False
    return True


HAS_ONNX = _onnx_available()
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="paddle2onnx/onnxruntime not installed (pip install -e .[onnx])")


def _op_available():
    from paddleseg_ext.ops import is_compiled_op_available

    try:
        return is_compiled_op_available(build=True)
    except Exception:  # noqa: BLE001
        return False


def build(name, opts=()):
    paddle.seed(SEED)
    cfg = Config(os.path.join(ROOT, CONFIGS[name]), opts=list(opts))
    model = SegBuilder(cfg).model
    model.eval()
    return cfg, model


def inputs():
    rng = np.random.RandomState(SEED)
    return [rng.rand(*s).astype("float32") for s in SIZES]


def dygraph(model, xs, psa_impl="auto"):
    """Eval logits of ``model`` prepared for inference as tools/val.py runs it."""
    net = prepare(model, ExecutionPolicy(target="infer", psa_impl=psa_impl))
    with paddle.no_grad():
        return [net(paddle.to_tensor(x))[0].numpy() for x in xs]


def paddle_inference(save_dir, xs):
    from infer import DeployConfig, Predictor

    pred = Predictor(DeployConfig(os.path.join(save_dir, "deploy.yaml")), "cpu", cpu_threads=1)
    return [pred.run(x) for x in xs]


def onnxruntime_run(save_dir, xs):
    from infer import DeployConfig
    from infer_onnx import OnnxPredictor

    pred = OnnxPredictor(DeployConfig(os.path.join(save_dir, "deploy.yaml"), "onnx"), "cpu", cpu_threads=1)
    return [pred.run(x) for x in xs]


def assert_close(got, ref, model, what, winograd=True):
    """Within ``model``'s rounding budget; dygraph runs 3x3 convs as Winograd F(2x2, 3x3)
    (``winograd``), the exported programs as conv2d."""
    for g, r, shape in zip(got, ref, SIZES):
        assert g.shape == r.shape == (shape[0], 7, shape[2], shape[3]), (what, g.shape, r.shape)
        # PSANet's and DANet's attention sums over the os8 feature map.
        att = ((shape[2] + 7) // 8) * ((shape[3] + 7) // 8)
        bound = tol.network_bound(model, r, winograd=winograd, attention_fan_in=att)
        tol.assert_close(g, r, bound, f"{what} at {shape}")
        tol.assert_argmax_agrees(g, r, bound, what=f"{what} at {shape}")


class Exported:
    """One model's exports and reference outputs, made once per module."""

    def __init__(self, name, tmp):
        self.name = name
        self.xs = inputs()
        self.psa_impl = "auto"
        if name == "psanet":
            self.psa_impl = "op" if _op_available() else "paddle"
        policy = ExecutionPolicy(psa_impl=self.psa_impl)
        self.cfg, self.model = build(name)
        self.ref = dygraph(self.model, self.xs, self.psa_impl)
        transforms = self.cfg.dic["val_dataset"]["transforms"]
        # The plain Paddle export; DANet and PointRend need no ONNX rewrites, so their
        # ONNX export's Paddle model is the same program and serves for both.
        self.paddle_dir = str(tmp / "paddle")
        if name in ("pspnet", "psanet"):
            self.deploy = export(self.model, self.paddle_dir, transforms, output_op="none",
                                 policy=policy)
        self.onnx_dir = str(tmp / "onnx")
        self.onnx_deploy = None
        if HAS_ONNX:
            self.onnx_deploy = export_onnx(self.model, self.onnx_dir, transforms, output_op="none",
                                           policy=policy)
        if name not in ("pspnet", "psanet"):
            if not HAS_ONNX:
                self.deploy = export(self.model, self.paddle_dir, transforms, output_op="none",
                                     policy=policy)
            else:
                self.paddle_dir, self.deploy = self.onnx_dir, self.onnx_deploy


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = Exported(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(CONFIGS))
def test_paddle_inference_matches_dygraph(exported, name):
    e = exported(name)
    assert e.deploy["Deploy"]["input_shape"] == [-1, 3, -1, -1]
    assert_close(paddle_inference(e.paddle_dir, e.xs), e.ref, e.model, f"{name}: Paddle Inference vs dygraph")


@needs_onnx
@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnxruntime_matches_dygraph_and_paddle_inference(exported, name):
    e = exported(name)
    info = e.onnx_deploy["Deploy"]["onnx"]
    assert info["model"] == "model.onnx" and info["opset"] >= 11
    assert e.onnx_deploy["Deploy"]["custom_ops"] == []  # ONNX never carries a custom op
    got = onnxruntime_run(e.onnx_dir, e.xs)
    assert_close(got, e.ref, e.model, f"{name}: onnxruntime vs dygraph")
    assert_close(got, paddle_inference(e.onnx_dir, e.xs), e.model,
                 f"{name}: onnxruntime vs Paddle Inference", winograd=False)


@needs_onnx
def test_onnx_rewrites_are_recorded_and_undone(exported):
    psp = exported("pspnet")
    pools = sum(type(layer) is paddle.nn.AdaptiveAvgPool2D for layer in psp.model.sublayers())
    assert pools == len(psp.model.psp_module.stages) > 0  # one per pyramid bin
    assert f"onnx_pool: {pools}" in psp.onnx_deploy["Deploy"]["onnx"]["rewrites"]
    # the model itself is unchanged after the ONNX export
    assert sum(type(layer) is paddle.nn.AdaptiveAvgPool2D for layer in psp.model.sublayers()) == pools
    psa = exported("psanet")
    assert "psa: 1" in psa.onnx_deploy["Deploy"]["onnx"]["rewrites"]
    assert type(psa.model.psa) is PSAModule


def _psa_ops(model_json):
    with open(model_json) as f:
        prog = json.load(f)
    found = []

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("#", "")).endswith(".psa_mask"):
                found.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(prog)
    return found


def test_psanet_custom_op_export_keeps_dynamic_shape(exported):
    e = exported("psanet")
    if e.psa_impl != "op":
        pytest.skip("the compiled psa_mask op could not be built here (pure-Paddle path tested instead)")
    assert e.deploy["Deploy"]["custom_ops"] == ["psa_mask"]
    ops = _psa_ops(os.path.join(e.paddle_dir, "model.json"))
    assert len(ops) == 2  # collect + distribute (bi-direction)
    for op in ops:
        dims = op["O"][0]["TT"]["D"][1]
        assert dims == [-1, -1, -1, -1], f"psa_mask output shape was fixed at export: {dims}"
    # ... and the deployed program follows the input size (two sizes, batch 1 and 2)
    assert_close(paddle_inference(e.paddle_dir, e.xs), e.ref, e.model, "psanet (op): Paddle Inference")


def test_psanet_op_and_pure_paddle_paths_agree(exported):
    e = exported("psanet")
    if e.psa_impl != "op":
        pytest.skip("the compiled psa_mask op could not be built here")
    ref_pure = dygraph(e.model, e.xs, "paddle")
    assert_close(ref_pure, e.ref, e.model, "psanet dygraph: pure Paddle vs op", winograd=False)
    # the op-based Paddle Inference model agrees with the pure-Paddle dygraph model
    assert_close(paddle_inference(e.paddle_dir, e.xs), ref_pure, e.model, "psanet: PI (op) vs dygraph (paddle)")
