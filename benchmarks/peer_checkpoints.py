"""PaddleSeg 2.8 checkpoints loaded through this toolkit: exact logits, key/shape lists.

Runs only in the benchmark environment (PaddleSeg installed):

    bash benchmarks/setup_bench_env.sh
    .venv-bench/bin/python benchmarks/peer_checkpoints.py            # logits table
    .venv-bench/bin/python benchmarks/peer_checkpoints.py --fixtures  # rewrite tests/fixtures/paddleseg/
    .venv-bench/bin/python benchmarks/peer_checkpoints.py --recipes DIR  # PaddleSeg's own recipe files
    .venv-bench/bin/python -m pytest tests/test_peer_checkpoints.py -q -p no:cacheprovider

For each model (PSPNet, DANet, PointRend at PaddleSeg's output stride 8) on
ResNet18_vd and ResNet50_vd, PaddleSeg's own model is built with random
weights and random BatchNorm statistics, saved with
``paddle.save(model.state_dict())``, loaded into ours (built from the
PaddleSeg recipe in ``configs/<model>/paddleseg/``) through
``load_model_weights`` (what ``--model_path`` uses), and both models' eval
logits are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

MODELS = ("PSPNet", "DANet", "PointRend")
BACKBONES = ("ResNet18_vd", "ResNet50_vd")
#: Our recipe for each PaddleSeg checkpoint family (the model zoo's).
RECIPES = {
    "PSPNet": "configs/pspnet/paddleseg/pspnet_resnet50_os8_cityscapes_1024x512_80k.yml",
    "DANet": "configs/danet/paddleseg/danet_resnet50_os8_cityscapes_1024x512_80k.yml",
    "PointRend": "configs/pointrend/paddleseg/pointrend_resnet50_os8_cityscapes_1024x512_80k.yml",
}
FIXTURES = ROOT / "tests" / "fixtures" / "paddleseg"
SIZES = ((64, 96), (67, 93))  # (H, W); the second is not a multiple of 8
NUM_CLASSES = 19


def peer_model(name: str, backbone: str, num_classes: int = NUM_CLASSES) -> Any:
    """PaddleSeg's model as its Cityscapes recipe builds it (PointRend at output stride 8)."""
    import paddleseg_peer

    return paddleseg_peer.build_model(name, backbone, num_classes, pointrend_output_stride=8)[0]


def randomize(model: Any, seed: int, num_classes: int = NUM_CLASSES) -> None:
    """Random weights and random BatchNorm statistics, at scales that keep activations O(1).

    Every tensor is drawn: conv weights (He-scaled normal), biases, BN
    affine and BN running mean / variance, and DANet's attention scales
    (``gamma``, 0 at init), so no conversion rule can pass by accident on an
    all-zero or all-one tensor. BN scales in [0.25, 0.75] keep activations
    (and so logits) at a few units through 50 layers; larger ones blow the
    logits up to 1e2 and more, where float32 rounding alone is above 1e-5.
    """
    import numpy as np
    import paddle

    rng = np.random.default_rng(seed)
    paddle.seed(seed)
    for key, value in model.state_dict().items():
        shape = list(value.shape)
        if key.endswith("_variance"):
            new = rng.uniform(0.5, 2.0, shape)
        elif key.endswith("_mean") or key.endswith("bias"):
            new = rng.normal(0.0, 0.02 if shape[0] == num_classes else 0.2, shape)
        elif key.endswith("gamma") or (len(shape) == 1 and key.endswith("weight")):
            new = rng.uniform(0.25, 0.75, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            new = rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape)
        value.set_value(new.astype(str(value.dtype).split(".")[-1]))


def our_model(name: str, backbone: str, num_classes: int = NUM_CLASSES) -> Any:
    """Our model from the PaddleSeg recipe of ``name``, random init, no downloads."""
    from paddleseg_ext.cvlibs import Config, SegBuilder

    opts = [f"model.backbone.type={backbone}", "model.backbone.pretrained=null",
            f"model.num_classes={num_classes}"]
    if backbone in ("ResNet18_vd", "ResNet34_vd"):  # two blocks in the last stage
        opts.append("model.backbone.multi_grid=[1,1]")
    return SegBuilder(Config(str(ROOT / RECIPES[name]), opts=opts)).model


def compare(name: str, backbone: str, workdir: Path, seed: int = 0) -> List[Tuple[Tuple[int, int], float, float]]:
    """``[(size, max abs diff, max abs logit)]`` of peer vs ours after loading the peer's file."""
    import numpy as np
    import paddle

    from paddleseg_ext.checkpoints.weights import load_model_weights

    peer = peer_model(name, backbone)
    randomize(peer, seed)
    path = workdir / f"paddleseg_{name}_{backbone}.pdparams"
    paddle.save(peer.state_dict(), str(path))
    ours = our_model(name, backbone)
    load_model_weights(ours, str(path))
    peer.eval()
    ours.eval()
    rows = []
    rng = np.random.default_rng(seed + 1)
    with paddle.no_grad():
        for h, w in SIZES:
            x = paddle.to_tensor(rng.normal(0, 1, (1, 3, h, w)).astype("float32"))
            a, b = peer(x)[0].numpy(), ours(x)[0].numpy()
            if a.shape != b.shape:
                raise AssertionError(f"{name} {backbone} {h}x{w}: shapes {a.shape} vs {b.shape}")
            rows.append(((h, w), float(np.abs(a - b).max()), float(np.abs(a).max())))
    return rows


def key_shapes(name: str, backbone: str) -> Dict[str, List[int]]:
    """PaddleSeg's state-dict keys and shapes for ``name`` on ``backbone``."""
    return {k: [int(s) for s in v.shape] for k, v in peer_model(name, backbone).state_dict().items()}


def write_fixtures() -> List[Path]:
    """One JSON per (model, backbone): PaddleSeg 2.8's key -> shape list (19 classes)."""
    import paddleseg

    FIXTURES.mkdir(parents=True, exist_ok=True)
    written = []
    for name in MODELS:
        for backbone in BACKBONES:
            path = FIXTURES / f"{name.lower()}_{backbone.lower()}.json"
            doc = {"peer": f"PaddleSeg {paddleseg.__version__}", "model": name, "backbone": backbone,
                   "num_classes": NUM_CLASSES, "recipe": RECIPES[name],
                   "made_by": "benchmarks/peer_checkpoints.py --fixtures",
                   "keys": key_shapes(name, backbone)}
            path.write_text(json.dumps(doc, indent=0) + "\n")
            written.append(path)
    return written


def check_recipes(root: Path) -> List[str]:
    """Build every PaddleSeg PSPNet / DANet / PointRend recipe under ``root/configs`` both ways.

    ``root`` is a PaddleSeg checkout (its ``configs/`` with ``_base_``). Each
    file, unchanged, is built by PaddleSeg's own builder and by ours; a
    state dict with PaddleSeg's key names and shapes must convert into ours
    with every tensor placed and every key filled (random values, no
    forward: ResNet101 recipes are included). Returns one line per file.
    """
    import numpy as np
    from paddleseg.cvlibs import Config as PeerConfig
    from paddleseg.cvlibs import SegBuilder as PeerBuilder

    from paddleseg_ext.checkpoints.adapters import to_native
    from paddleseg_ext.cvlibs import Config, SegBuilder

    lines = []
    for path in sorted(p for m in ("pspnet", "danet", "pointrend")
                       for p in (root / "configs" / m).glob("*.yml")):
        peer_cfg = PeerConfig(str(path))
        peer_cfg.dic["model"]["backbone"]["pretrained"] = None  # no download
        peer = PeerBuilder(peer_cfg).model
        ours = SegBuilder(Config(str(path), opts=["model.backbone.pretrained=null"])).model
        rng = np.random.default_rng(0)
        state = {k: rng.normal(0, 1, v.shape).astype("float32") for k, v in peer.state_dict().items()}
        native, conv = to_native(state, ours, source=path.name)  # raises if it does not fit
        lines.append(f"{path.name}: {type(peer).__name__}, {len(state)} PaddleSeg tensors -> "
                     f"{len(native)} of ours ({conv.summary()})")
        del peer, ours, state, native
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fixtures", action="store_true", help="rewrite tests/fixtures/paddleseg/*.json")
    p.add_argument("--recipes", type=Path, help="a PaddleSeg checkout: build its recipe files both ways")
    args = p.parse_args()
    import tempfile

    import paddleseg_peer
    paddleseg_peer.load()
    if args.recipes:
        for line in check_recipes(args.recipes):
            print(line, flush=True)
        return
    if args.fixtures:
        for path in write_fixtures():
            print("wrote", path.relative_to(ROOT))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print("| model | backbone | input HxW | max abs diff | max abs logit |")
        print("|---|---|---|---|---|")
        for name in MODELS:
            for backbone in BACKBONES:
                for (h, w), diff, scale in compare(name, backbone, Path(tmp)):
                    print(f"| {name} | {backbone} | {h}x{w} | {diff:.2e} | {scale:.3g} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
