"""The authors' semseg checkpoints loaded through this toolkit: exact logits, key/shape lists.

Runs only in the peer environment (PyTorch) with a checkout of
https://github.com/hszhao/semseg whose path is in ``SEMSEG_ROOT``:

    bash benchmarks/setup_peer_env.sh
    SEMSEG_ROOT=/path/to/semseg .venv-peers/bin/python benchmarks/semseg_checkpoints.py
    SEMSEG_ROOT=... .venv-peers/bin/python benchmarks/semseg_checkpoints.py --fixtures
    SEMSEG_ROOT=... .venv-peers/bin/python -m pytest tests/test_peer_semseg.py -q -s -p no:cacheprovider

For each network, semseg's own ``PSPNet`` / ``PSANet`` (``model/pspnet.py``,
``model/psanet.py`` of the checkout) is built as its config file sets it, given
random weights and random BatchNorm statistics, wrapped in ``DataParallel`` as
``tool/train.py`` wraps it (keys ``module.``), saved as ``tool/train.py`` saves
(``torch.save({'epoch', 'state_dict', 'optimizer'})``, the optimizer with
momentum buffers), loaded into ours (built from the recipe of the same name in
``configs/<model>/semseg/``) through ``load_model_weights`` (what ``--model_path``
uses), and both models' eval logits are compared, in float32 and float64.

semseg's PSA mask is a C++ extension compiled on import (``lib/psa/src``);
:func:`psa_mask_stand_in` replaces it with PyTorch indexing written from the
op's documented semantics (semseg's ``lib/psa/src/cpu/psamask.cpp`` comments,
PSANet Sec. 3.3), and ``tests/test_peer_semseg.py`` checks it against this
toolkit's own ``psa_mask_reference``.

The torchvision part checks that a torchvision ResNet50 ImageNet file (random
weights, saved as torchvision publishes them: a plain state dict) initialises a
``stem: 7x7`` ResNet50_vd through ``pretrained:`` with every tensor placed, and
that its features equal torchvision's own model's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import eval_logits, recipe_model  # noqa: E402
from mmseg_checkpoints import compare_stage_features, random_input, random_state  # noqa: E402  (NumPy only)

FIXTURES = ROOT / "tests" / "fixtures" / "semseg"
#: semseg config name -> our recipe of the same name.
FAMILIES = {
    f"{ds}_{arch}{layers}": f"configs/{arch}/semseg/{ds}_{arch}{layers}.yml"
    for ds in ("ade20k", "voc2012", "cityscapes") for arch in ("pspnet", "psanet")
    for layers in (50, 101)
}
#: One family per network compared (the 101-layer ones differ only in stage 3's length).
NETWORKS = ("voc2012_pspnet50", "voc2012_psanet50")
#: (H, W) of the compared inputs. semseg asserts H, W = 1 mod 8, and its PSA module needs an
#: odd stage-4 map (its shrink/expand then returns to the same size): H, W = 1 mod 16.
SIZES = {"pspnet": ((57, 89), (73, 49)), "psanet": ((65, 97), (81, 49))}
#: The seeded small cases whose semseg logits are committed (network, seed, input size).
GOLDEN = (("voc2012_pspnet50", 7, (33, 41)), ("voc2012_psanet50", 8, (33, 49)))
#: torchvision's ResNet50 and the stem-7x7 backbone it initialises.
TORCHVISION_SIZES = ((64, 96), (67, 93))
#: The seeded small case whose torchvision stage-4 features are committed (seed, input size).
TORCHVISION_GOLDEN = (9, (45, 61))


def semseg_root() -> Path:
    """The semseg checkout named by ``SEMSEG_ROOT``."""
    root = os.environ.get("SEMSEG_ROOT", "")
    if not root or not (Path(root) / "model" / "psanet.py").is_file():
        raise FileNotFoundError(f"SEMSEG_ROOT={root!r} is not a checkout of "
                                "https://github.com/hszhao/semseg (no model/psanet.py)")
    return Path(root)


def fixture_name(family: str) -> str:
    return family.split("_", 1)[1]


def params(family: str) -> Dict[str, Any]:
    """semseg's constructor arguments for ``family``, from its config file's values."""
    ds, net = family.split("_")
    arch, layers = net[:6], int(net[6:])
    classes = {"ade20k": 150, "voc2012": 21, "cityscapes": 19}[ds]
    out: Dict[str, Any] = {"layers": layers, "classes": classes, "zoom_factor": 8,
                           "pretrained": False}
    if arch == "psanet":
        crop = 705 if ds == "cityscapes" else 465
        shrunk = (crop - 1) // (8 * 2) + 1  # semseg's default mask: 2 * shrunk - 1
        out.update(psa_type=2, compact=False, shrink_factor=2, mask_h=2 * shrunk - 1,
                   mask_w=2 * shrunk - 1, normalization_factor=1.0, psa_softmax=True)
    else:
        out.update(bins=(1, 2, 3, 6), use_ppm=True)
    return out


# ----------------------------------------------------------------- peer side
def psa_mask_stand_in(x: Any, psa_type: int = 0, mask_h: int | None = None,
                      mask_w: int | None = None) -> Any:
    """semseg's ``lib.psa.functional.psa_mask`` in PyTorch indexing (test-only stand-in).

    For every position ``(h, w)`` of the ``H x W`` map and every mask cell
    ``(i, j)`` that lands inside the map, at ``(h + i - mask_h // 2, w + j -
    mask_w // 2)`` = position ``q``: collect (type 0) writes channel ``i *
    mask_w + j`` of ``x`` at ``(h, w)`` to ``out[q, h, w]``; distribute (type 1)
    writes it to ``out[h * W + w, q]``. Every other entry of the
    ``[N, H*W, H, W]`` output is 0.
    """
    import torch

    n, c, fh, fw = x.shape
    if mask_h is None:
        mask_h, mask_w = 2 * fh - 1, 2 * fw - 1
    assert c == mask_h * mask_w and mask_h % 2 == 1 and mask_w % 2 == 1
    hh, ww, ii, jj = np.meshgrid(np.arange(fh), np.arange(fw), np.arange(mask_h),
                                 np.arange(mask_w), indexing="ij")
    th, tw = hh + ii - mask_h // 2, ww + jj - mask_w // 2
    ok = (th >= 0) & (th < fh) & (tw >= 0) & (tw < fw)
    pos = torch.from_numpy((hh * fw + ww)[ok])
    cell = torch.from_numpy((ii * mask_w + jj)[ok])
    target = torch.from_numpy((th * fw + tw)[ok])
    src = x.reshape(n, c, fh * fw)[:, cell, pos]
    out = x.new_zeros(n, fh * fw, fh * fw)
    if psa_type == 0:
        out[:, target, pos] = src
    else:
        out[:, pos, target] = src
    return out.reshape(n, fh * fw, fh, fw)


def _import_semseg() -> Tuple[Any, Any]:
    """semseg's ``model.pspnet`` and ``model.psanet`` modules, its PSA mask stood in for."""
    root = str(semseg_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    functional = types.ModuleType("lib.psa.functional")
    functional.psa_mask = psa_mask_stand_in
    functional.__doc__ = "Stand-in for semseg's compiled PSA mask (benchmarks/semseg_checkpoints.py)."
    for name in ("lib", "lib.psa"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["lib.psa.functional"] = functional
    sys.modules["lib.psa"].functional = functional
    import importlib

    return importlib.import_module("model.pspnet"), importlib.import_module("model.psanet")


def peer_model(family: str) -> Any:
    """semseg's network for ``family`` (training-mode construction, so ``aux`` exists, as
    in ``tool/train.py``), in eval mode."""
    pspnet, psanet = _import_semseg()
    kwargs = params(family)
    net = pspnet.PSPNet(**kwargs) if "pspnet" in family else psanet.PSANet(**kwargs)
    return net.eval()


def key_shapes(family: str) -> Dict[str, List[int]]:
    """The keys and shapes of semseg's checkpoint (``module.`` prefixed), in its order."""
    import torch

    wrapped = torch.nn.DataParallel(peer_model(family))
    return {k: list(v.shape) for k, v in wrapped.state_dict().items()}


def randomized_peer(family: str, seed: int) -> Any:
    """``DataParallel(semseg net)`` with seeded random weights and BN statistics, eval mode."""
    import torch

    wrapped = torch.nn.DataParallel(peer_model(family))
    state = random_state({k: list(v.shape) for k, v in wrapped.state_dict().items()}, seed)
    wrapped.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return wrapped.eval()


def save_like_semseg(wrapped: Any, path: Path, epoch: int = 100) -> None:
    """Save as semseg's ``tool/train.py``: ``{'epoch', 'state_dict', 'optimizer'}``.

    The optimizer is built as there (SGD, the backbone at ``base_lr`` and the new
    layers at 10x) and has taken one step on random gradients, so its state holds
    momentum buffers as a real file's does; the weights saved are the model's.
    """
    import torch

    net = wrapped.module
    state = {k: v.clone() for k, v in wrapped.state_dict().items()}
    old = [getattr(net, n) for n in ("layer0", "layer1", "layer2", "layer3", "layer4")]
    new = [m for n, m in net.named_children() if n not in
           ("layer0", "layer1", "layer2", "layer3", "layer4", "criterion")]
    groups = [{"params": [p for m in old for p in m.parameters()], "lr": 0.01},
              {"params": [p for m in new for p in m.parameters()], "lr": 0.1}]
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    opt.step()
    wrapped.load_state_dict(state)
    torch.save({"epoch": epoch, "state_dict": wrapped.state_dict(),
                "optimizer": opt.state_dict()}, str(path))


def peer_logits(wrapped: Any, x: np.ndarray) -> np.ndarray:
    import torch

    t = torch.from_numpy(x)
    with torch.no_grad():
        return wrapped.module.to(t.dtype)(t).numpy()


# ------------------------------------------------------------------ our side
def our_model(family: str) -> Any:
    return recipe_model(ROOT / FAMILIES[family])


def our_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """Our eval logits in the dtype of ``x`` (the model is cast to it)."""
    return eval_logits(model, x)


def compare(family: str, tmp: Path, seed: int = 0,
            dtype: str = "float32") -> List[Tuple[Tuple[int, int], float, float]]:
    """``[(size, max abs diff, max |peer logit|)]`` for a random checkpoint of ``family``."""
    from paddleseg_ext.checkpoints.weights import load_model_weights

    peer = randomized_peer(family, seed)
    path = tmp / f"{family}_train_epoch_100.pth"
    save_like_semseg(peer, path)
    ours = our_model(family)
    load_model_weights(ours, str(path))
    rows = []
    for i, size in enumerate(SIZES[family.split("_")[1][:6]]):
        x = random_input(size, seed + 100 + i).astype(dtype)
        want, got = peer_logits(peer, x), our_logits(ours, x)
        assert got.shape == want.shape, (got.shape, want.shape)
        rows.append((size, float(np.abs(got - want).max()), float(np.abs(want).max())))
    return rows


# ---------------------------------------------------------------- torchvision
def import_torchvision() -> Any:
    """torchvision, importable beside a CPU-only torch.

    PyPI's torchvision wheels are built against CUDA torch, so their compiled ops
    (``torchvision._C``: nms, roi_align ...) do not load beside the CPU build the
    peer environment uses, and ``torchvision._meta_registrations`` fails on import
    registering fake kernels for them. Its model definitions are plain PyTorch and
    use none of those ops, so that one module is replaced by an empty one.
    """
    import types

    try:
        import torchvision
    except RuntimeError:
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType(
            "torchvision._meta_registrations")
        import torchvision
    return torchvision


def torchvision_file(path: Path, seed: int = 0) -> Any:
    """torchvision's ResNet50 with seeded random weights and BN statistics, saved as its
    ImageNet files are (a plain state dict with ``fc``); returns the model in eval mode."""
    import torch

    torchvision = import_torchvision()

    net = torchvision.models.resnet50(weights=None)
    state = random_state({k: list(v.shape) for k, v in net.state_dict().items()}, seed)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    torch.save(net.state_dict(), str(path))
    return net.eval()


def torchvision_features(net: Any, x: np.ndarray) -> List[np.ndarray]:
    import torch

    with torch.no_grad():
        y = net.maxpool(net.relu(net.bn1(net.conv1(torch.from_numpy(x)))))
        out = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            y = layer(y)
            out.append(y.numpy())
    return out


def torchvision_key_shapes() -> Dict[str, List[int]]:
    net = import_torchvision().models.resnet50(weights=None)
    return {k: list(v.shape) for k, v in net.state_dict().items()}


def torchvision_golden() -> np.ndarray:
    """Stage-4 features of torchvision's ResNet50 with the seeded state of ``TORCHVISION_GOLDEN``."""
    import torch

    seed, size = TORCHVISION_GOLDEN
    net = import_torchvision().models.resnet50(weights=None)
    state = random_state(torchvision_key_shapes(), seed)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return torchvision_features(net.eval(), random_input(size, seed))[3]


def compare_torchvision(tmp: Path, seed: int = 0) -> List[Tuple[Tuple[int, int], int, float, float]]:
    """``[(size, stage, max abs diff, max |feature|)]``: torchvision's ResNet50 features
    vs a ``stem: 7x7`` ResNet50_vd (output stride 32) initialised from its file."""
    sys.path.insert(0, str(ROOT))
    path = tmp / "resnet50-random.pth"
    net = torchvision_file(path, seed)
    return compare_stage_features(path, lambda x: torchvision_features(net, x), TORCHVISION_SIZES, seed)


def write_fixtures() -> None:
    """Key/shape lists of every network and the golden logits of the seeded small cases."""
    import subprocess

    FIXTURES.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(["git", "-C", str(semseg_root()), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    for family in NETWORKS:
        doc = {"peer": f"hszhao/semseg at {head or 'its head'}", "config": family,
               "recipe": FAMILIES[family], "made_by": "benchmarks/semseg_checkpoints.py --fixtures",
               "keys": key_shapes(family)}
        (FIXTURES / f"{fixture_name(family)}.json").write_text(json.dumps(doc, indent=0) + "\n")
    for family, seed, size in GOLDEN:
        logits = peer_logits(randomized_peer(family, seed), random_input(size, seed))
        np.save(FIXTURES / f"{fixture_name(family)}_golden_seed{seed}.npy", logits)
    import torch

    tv = import_torchvision()
    doc = {"peer": f"torchvision {tv.__version__} (torch {torch.__version__})",
           "config": "torchvision.models.resnet50", "made_by":
           "benchmarks/semseg_checkpoints.py --fixtures", "keys": torchvision_key_shapes()}
    (FIXTURES / "torchvision_resnet50.json").write_text(json.dumps(doc, indent=0) + "\n")
    np.save(FIXTURES / f"torchvision_resnet50_stage4_golden_seed{TORCHVISION_GOLDEN[0]}.npy",
            torchvision_golden())


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", action="store_true", help="rewrite tests/fixtures/semseg/")
    args = ap.parse_args()
    if args.fixtures:
        write_fixtures()
        print(f"wrote {FIXTURES}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for family in NETWORKS:
            for dtype in ("float32", "float64"):
                for size, diff, scale in compare(family, Path(tmp), dtype=dtype):
                    print(f"{family:18s} {dtype:8s} {size[0]}x{size[1]}  max|diff| {diff:.3g}  "
                          f"max|logit| {scale:.3g}  ratio {diff / scale:.3g}")
        for size, stage, diff, scale in compare_torchvision(Path(tmp)):
            print(f"torchvision resnet50 {size[0]}x{size[1]} stage {stage}  max|diff| {diff:.3g}  "
                  f"max|feature| {scale:.3g}  ratio {diff / scale:.3g}")


if __name__ == "__main__":
    main()
