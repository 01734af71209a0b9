"""Deployment: tools/export.py, deploy.yaml, deploy/python/infer.py and infer_onnx.py.

Exports are made once per module (a tiny PSPNet on a synthetic dataset; the
quick-start PSANet for the custom-op records). The command-line tools run
in-process through their ``main(argv)`` except one subprocess run of
infer.py that checks what a user sees on the terminal.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
import yaml

import paddleseg_ext.models.psanet  # noqa: F401  (registers PSANet)
from paddleseg_ext.core.export import MissingDependencyError, export_onnx
from paddleseg_ext.cvlibs import Config, SegBuilder
from tiny_config import write_tiny_config
import tolerance as tol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy", "python")
sys.path.insert(0, DEPLOY)
PSANET_CFG = os.path.join(ROOT, "configs", "quick_start", "psanet_resnet18_os8_landcover_64x64_400.yml")

import infer  # noqa: E402
import infer_onnx  # noqa: E402


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


export_tool = _load_tool("export")


def _has(module):
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


HAS_ONNX = _has("paddle2onnx") and _has("onnxruntime")
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="paddle2onnx/onnxruntime not installed (pip install -e .[onnx])")


def _write_images(folder, sizes):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    for i, (w, h) in enumerate(sizes):
        cv2.imwrite(os.path.join(folder, f"img{i}.png"), (rng.rand(h, w, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny PSPNet config, its Paddle export and (if available) its ONNX export."""
    tmp = tmp_path_factory.mktemp("deploy")
    cfg_path, root = write_tiny_config(tmp, size=(40, 24))
    paddle.seed(0)
    weights = str(tmp / "weights.pdparams")  # one set of random weights for both exports
    paddle.save(SegBuilder(Config(cfg_path)).model.state_dict(), weights)
    export_tool.main(["--config", cfg_path, "--model_path", weights, "--save_dir", str(tmp / "paddle")])
    onnx_dir = None
    if HAS_ONNX:
        export_tool.main(["--config", cfg_path, "--model_path", weights, "--save_dir", str(tmp / "onnx"),
                          "--format", "onnx"])
        onnx_dir = str(tmp / "onnx")
    images = str(tmp / "images")
    _write_images(images, [(40, 24), (40, 24), (40, 24)])
    with open(os.path.join(images, "notes.txt"), "w") as f:
        f.write("not an image")
    with open(os.path.join(images, "broken.png"), "w") as f:
        f.write("not a png either")
    return {"tmp": tmp, "cfg": cfg_path, "paddle": str(tmp / "paddle"), "onnx": onnx_dir, "images": images}


@pytest.fixture(scope="module")
def psanet_exports(tmp_path_factory):
    """The quick-start PSANet exported with the compiled op and with the pure-Paddle mask."""
    from paddleseg_ext.ops import is_compiled_op_available

    tmp = tmp_path_factory.mktemp("psanet")
    out = {}
    impls = ["paddle"] + (["op"] if is_compiled_op_available(build=True) else [])
    paddle.seed(0)
    weights = str(tmp / "weights.pdparams")
    paddle.save(SegBuilder(Config(PSANET_CFG, opts=["model.psa_impl=paddle"])).model.state_dict(), weights)
    for impl in impls:
        export_tool.main(["--config", PSANET_CFG, "--model_path", weights, "--save_dir", str(tmp / impl),
                          "--psa_impl", impl])
        out[impl] = str(tmp / impl)
    return out


def _deploy(folder):
    with open(os.path.join(folder, "deploy.yaml")) as f:
        return yaml.safe_load(f)["Deploy"]


# ------------------------------------------------------------------ deploy.yaml


def test_deploy_yaml_contents(tiny):
    d = _deploy(tiny["paddle"])
    assert d["model"] == "model.json" and d["params"] == "model.pdiparams"
    assert os.path.isfile(os.path.join(tiny["paddle"], d["model"]))
    assert d["transforms"] == [{"type": "Normalize"}]
    assert d["input_shape"] == [-1, 3, -1, -1]
    assert d["output_op"] == "argmax" and d["output_dtype"] == "int32"
    assert d["custom_ops"] == [] and "custom_op_libs" not in d and "onnx" not in d


def test_export_options_are_recorded(tiny):
    out = tiny["tmp"] / "fixed"
    export_tool.main(["--config", tiny["cfg"], "--save_dir", str(out), "--input_shape", "1", "3", "24", "40",
                      "--output_op", "softmax"])
    d = _deploy(out)
    assert d["input_shape"] == [1, 3, 24, 40]
    assert d["output_op"] == "softmax" and d["output_dtype"] == "float32"
    pred = infer.Predictor(infer.DeployConfig(str(out / "deploy.yaml")), cpu_threads=1)
    prob = pred.run(np.random.rand(1, 3, 24, 40).astype("float32"))
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)


def test_psa_impl_is_a_policy_choice_other_models_ignore(tiny):
    out = tiny["tmp"] / "psa_impl_ignored"
    export_tool.main(["--config", tiny["cfg"], "--save_dir", str(out), "--psa_impl", "op"])
    assert _deploy(str(out))["custom_ops"] == []
    with pytest.raises(SystemExit):  # argparse: not one of the implementations
        export_tool.main(["--config", tiny["cfg"], "--save_dir", str(out), "--psa_impl", "cuda"])


def test_psanet_records_the_custom_op_only_when_it_uses_it(psanet_exports):
    pure = _deploy(psanet_exports["paddle"])
    assert pure["custom_ops"] == [] and "custom_op_libs" not in pure
    if "op" not in psanet_exports:
        pytest.skip("the compiled psa_mask op could not be built here")
    with_op = _deploy(psanet_exports["op"])
    assert with_op["custom_ops"] == ["psa_mask"]
    lib = with_op["custom_op_libs"]["psa_mask"]
    assert os.path.isfile(os.path.join(psanet_exports["op"], lib)) and lib.endswith(".so")
    assert with_op["paddle_version"] == paddle.__version__
    # both deploy with infer.py and give the same classes
    x = np.random.RandomState(1).rand(1, 3, 40, 56).astype("float32")
    outs = [infer.Predictor(infer.DeployConfig(psanet_exports[k]), cpu_threads=1).run(x) for k in ("op", "paddle")]
    assert outs[0].shape == (1, 40, 56)
    assert (outs[0] == outs[1]).mean() >= 0.999


def test_onnx_export_of_psanet_refuses_the_compiled_op():
    with pytest.raises(SystemExit):
        export_tool.main(["--config", PSANET_CFG, "--save_dir", "unused", "--format", "onnx", "--psa_impl", "op"])


# ------------------------------------------------------------------ infer.py


def test_infer_cli_folder_batch_benchmark(tiny):
    """What a user sees: non-image and broken files skipped with warnings, --batch_size 2, --benchmark."""
    save = tiny["tmp"] / "pred_cli"
    log = tiny["tmp"] / "bench.jsonl"
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR")
    proc = subprocess.run([sys.executable, os.path.join(DEPLOY, "infer.py"), "--config",
                           os.path.join(tiny["paddle"], "deploy.yaml"), "--image_path", tiny["images"],
                           "--save_dir", str(save), "--batch_size", "2", "--benchmark", "--cpu_threads", "1",
                           "--save_log_path", str(log)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]  # the broken image: all others done, then a non-zero exit
    assert "skipping 1 non-image file(s)" in out and "notes.txt" in out
    assert "skipping" in out and "broken.png" in out
    assert "3 image(s)" in out and "1 skipped" in out
    assert re.search(r"^error: 1 image\(s\) could not be read and were skipped .*broken\.png$", proc.stderr, re.M)
    assert "Traceback" not in out
    assert "preprocess" in out and "inference" in out and "postprocess" in out and "images/s" in out
    assert "batch 2" in out
    assert sorted(os.listdir(save)) == ["img0.png", "img1.png", "img2.png"]
    pred = cv2.imread(str(save / "img0.png"), cv2.IMREAD_UNCHANGED)
    assert pred.shape[:2] == (24, 40)
    stats = json.loads(log.read_text().splitlines()[-1])
    assert stats["images"] == 3 and stats["batch_size"] == 2 and stats["inference_ms"] > 0


def test_unreadable_images_in_a_list_are_skipped_and_fail_the_run(tiny, tmp_path):
    """A list naming a missing and an empty image: one line each, the rest predicted, exit 2."""
    imgs = sorted(f for f in os.listdir(tiny["images"]) if f.startswith("img"))
    (tmp_path / "empty.png").write_bytes(b"")
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join([os.path.join(tiny["images"], imgs[0]), "missing.png", "empty.png",
                               os.path.join(tiny["images"], imgs[1])]) + "\n")
    save = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(DEPLOY, "infer.py"), "--config", tiny["paddle"],
                           "--image_path", str(lst), "--save_dir", str(save), "--cpu_threads", "1"],
                          cwd=ROOT, env=dict(os.environ, OPENCV_LOG_LEVEL="ERROR"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(os.listdir(save)) == 2  # both readable images were predicted
    skips = [line for line in proc.stdout.splitlines() if "skipping" in line]  # the log goes to stdout
    assert len(skips) == 2 and any("missing.png" in s for s in skips) and any("empty.png" in s for s in skips)
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 image(s)") and "missing.png" in last and "empty.png" in last
    preds = infer.main(["--config", tiny["paddle"], "--image_path", str(lst), "--save_dir", str(save)])
    assert len(preds) == 2 and sorted(os.path.basename(p) for p, _ in preds.skipped) == ["empty.png", "missing.png"]


@pytest.mark.parametrize("tool, argv, code, message", [
    ("export", ["--config", "no/such.yml"], 2, "no/such.yml"),
    ("infer", ["--config", "no/such/deploy.yaml", "--image_path", "."], 2, "deploy.yaml not found"),
    ("infer_onnx", ["--config", "no/such/deploy.yaml", "--image_path", "."], 2, "deploy.yaml not found"),
])
def test_deploy_tools_use_the_one_paragraph_error_form(tool, argv, code, message, tmp_path):
    script = os.path.join(ROOT, "tools", "export.py") if tool == "export" else os.path.join(DEPLOY, f"{tool}.py")
    proc = subprocess.run([sys.executable, script, *argv], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, OPENCV_LOG_LEVEL="ERROR"), timeout=300)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith("error: ") and message in lines[-2], proc.stderr
    assert lines[-1] == "(set PADDLESEG_EXT_DEBUG=1 to see the traceback)"
    assert "Traceback" not in proc.stderr


def test_batches_of_mixed_sizes_run_image_by_image(tiny):
    folder = str(tiny["tmp"] / "mixed")
    _write_images(folder, [(40, 24), (33, 17), (40, 24)])
    preds = infer.main(["--config", tiny["paddle"], "--image_path", folder, "--save_dir",
                        str(tiny["tmp"] / "mixed_out"), "--batch_size", "2", "--cpu_threads", "1"])
    assert [p.shape for _, p in preds] == [(24, 40), (17, 33), (24, 40)]


def test_batch_size_two_equals_one(tiny):
    cfg = infer.DeployConfig(os.path.join(tiny["paddle"], "deploy.yaml"))
    pred = infer.Predictor(cfg, cpu_threads=1)
    paths = sorted(os.path.join(tiny["images"], f) for f in os.listdir(tiny["images"]) if f.startswith("img"))
    one = pred.predict(paths, 1)
    two = pred.predict(paths, 2)
    for (p1, a), (p2, b) in zip(one, two):
        assert p1 == p2 and np.array_equal(a, b)


def test_mkldnn_works_and_agrees(tiny):
    cfg = infer.DeployConfig(os.path.join(tiny["paddle"], "deploy.yaml"))
    x = np.random.RandomState(3).rand(2, 3, 24, 40).astype("float32")
    plain = infer.Predictor(cfg, cpu_threads=1).run(x)
    fast = infer.Predictor(cfg, cpu_threads=2, enable_mkldnn=True).run(x)  # Paddle issue #79749 worked around
    assert (plain == fast).mean() >= 0.999


def test_missing_deploy_yaml_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "deploy.yaml"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        infer.main(["--config", str(missing), "--image_path", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "deploy.yaml"))):
        infer.DeployConfig(str(tmp_path))  # a folder without deploy.yaml
    bad = tmp_path / "bad.yaml"
    bad.write_text("Other: {}\n")
    with pytest.raises(ValueError, match="no 'Deploy' section"):
        infer.DeployConfig(str(bad))


def test_deploy_yaml_naming_a_missing_model_file(tiny, tmp_path):
    d = _deploy(tiny["paddle"])
    d["model"] = "gone.json"
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump({"Deploy": d}))
    with pytest.raises(FileNotFoundError, match="gone.json"):
        infer.DeployConfig(str(tmp_path / "deploy.yaml"))


def test_unknown_custom_op_is_reported():
    with pytest.raises(ValueError, match="custom op 'warp_magic'"):
        infer.load_custom_ops(["warp_magic"])


# ------------------------------------------------------------------ ONNX


@needs_onnx
def test_onnx_cli_matches_paddle_inference(tiny):
    d = _deploy(tiny["onnx"])
    assert d["onnx"]["model"] == "model.onnx" and d["onnx"]["opset"] >= 11
    args = ["--image_path", tiny["images"], "--batch_size", "2", "--cpu_threads", "1"]
    onnx_preds = infer_onnx.main(["--config", tiny["onnx"], "--save_dir", str(tiny["tmp"] / "o1"), *args])
    pd_preds = infer.main(["--config", tiny["paddle"], "--save_dir", str(tiny["tmp"] / "o2"), *args])
    assert len(onnx_preds) == len(pd_preds) == 3
    for (_, a), (_, b) in zip(onnx_preds, pd_preds):
        assert (a == b).mean() >= 0.999
    assert sorted(os.listdir(tiny["tmp"] / "o1")) == ["img0.png", "img1.png", "img2.png"]


def test_infer_onnx_without_onnx_model_says_how_to_export(tiny):
    if not HAS_ONNX:
        pytest.skip("onnxruntime not installed")
    with pytest.raises(ValueError, match="--format onnx"):
        infer_onnx.main(["--config", tiny["paddle"], "--image_path", tiny["images"]])


def test_missing_onnxruntime_message(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(MissingDependencyError, match=r"onnxruntime.*pip install -e \.\[onnx\]"):
        infer_onnx.main(["--config", tiny["paddle"], "--image_path", tiny["images"]])


def test_missing_paddle2onnx_message(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)
    with pytest.raises(MissingDependencyError, match=r"paddle2onnx.*pip install -e \.\[onnx\]"):
        export_tool.main(["--config", tiny["cfg"], "--save_dir", str(tiny["tmp"] / "no"), "--format", "onnx"])
    assert not (tiny["tmp"] / "no").exists()  # nothing was written
    model = SegBuilder(Config(tiny["cfg"])).model
    with pytest.raises(MissingDependencyError, match="paddle2onnx"):
        export_onnx(model, str(tiny["tmp"] / "no"), [])


def test_missing_dependency_cli_exit_code(tiny, tmp_path):
    """The command line prints one clear line and exits 2 (simulated: a stub that fails to import)."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "onnxruntime.py").write_text("raise ImportError('No module named onnxruntime (simulated)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stub), ROOT]), OPENCV_LOG_LEVEL="ERROR")
    proc = subprocess.run([sys.executable, os.path.join(DEPLOY, "infer_onnx.py"), "--config", tiny["paddle"],
                           "--image_path", tiny["images"]], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "pip install -e .[onnx]" in proc.stderr and "Traceback" not in proc.stderr


@needs_onnx
def test_unconvertible_op_is_named(tiny):
    """paddle2onnx aborts on PSPNet's native adaptive pool with a dynamic input; the error names the op
    (export_onnx avoids it by swapping in MatmulAdaptiveAvgPool2D)."""
    from paddleseg_ext.core.export import ConversionError, convert_to_onnx

    with pytest.raises(ConversionError, match=r"pd_op\.pool2d"):
        convert_to_onnx(tiny["paddle"])
    assert not os.path.exists(os.path.join(tiny["paddle"], "model.onnx"))


def test_matmul_adaptive_pool_equals_paddle():
    from paddleseg_ext.runtime import ExecutionPolicy, prepare
    from paddleseg_ext.runtime.forms.onnx import MatmulAdaptiveAvgPool2D

    for bins in (1, 2, 3, 6, (2, 5)):
        for hw in ((8, 12), (7, 5), (1, 1), (13, 17)):
            x = paddle.randn([2, 4, *hw])
            want = paddle.nn.AdaptiveAvgPool2D(bins)(x).numpy()
            # A bin averages at most the whole map, in two matmuls.
            pool = prepare(paddle.nn.AdaptiveAvgPool2D(bins), ExecutionPolicy(target="onnx"))
            assert isinstance(pool, MatmulAdaptiveAvgPool2D)
            tol.assert_close(pool(x).numpy(), want,
                             tol.bound(max(1.0, np.abs(want).max()), hw[0] * hw[1], depth=2),
                             f"bins {bins} at {hw}")
