"""mmsegmentation 1.2.2 checkpoints loaded through this toolkit: exact logits, key/shape lists.

Runs only in the peer environment (PyTorch, mmengine, mmcv-lite, mmsegmentation):

    bash benchmarks/setup_peer_env.sh
    .venv-peers/bin/python benchmarks/mmseg_checkpoints.py              # logits table
    .venv-peers/bin/python benchmarks/mmseg_checkpoints.py --only CONFIG...  # of some
    .venv-peers/bin/python benchmarks/mmseg_checkpoints.py --fixtures   # rewrite tests/fixtures/mmseg/
    .venv-peers/bin/python benchmarks/mmseg_checkpoints.py --fixtures --only CONFIG...  # some
    .venv-peers/bin/python -m pytest tests/test_peer_mmseg.py -q -p no:cacheprovider

For each checkpoint family, mmsegmentation's own model is built from its own
config file (SyncBN replaced by BN, which is what a single-process eval runs),
given random weights and random BatchNorm statistics, saved the way
mmsegmentation saves it, loaded into ours (built from the recipe of the same
name in ``configs/<model>/mmseg/``) through ``load_model_weights`` (what
``--model_path`` uses), and both models' eval logits (mmseg's
``EncoderDecoder.encode_decode``) are compared: in float32 at :data:`SIZES`, and
in float64 at :data:`F64_SIZES` (see there) and the odd sizes. PSANet's and
PointRend's compiled ``mmcv.ops`` are the stand-ins of ``mmcv_ops_standin.py``.

:func:`random_state` needs only NumPy: the main suite draws the same seeded
state from the committed key/shape list and checks its logits against the
golden ones mmsegmentation computed here (``tests/test_mmseg_adapter.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import eval_logits, recipe_model  # noqa: E402
FIXTURES = ROOT / "tests" / "fixtures" / "mmseg"
#: mmseg's config folder of each model (ours is the model's name).
PEER_FOLDER = {"pspnet": "pspnet", "danet": "danet", "psanet": "psanet", "pointrend": "point_rend"}
#: mmseg config name -> our recipe of the same name (the families this toolkit loads).
FAMILIES = {
    name: f"configs/{name.split('_')[0]}/mmseg/{name}.yml" for name in (
        "pspnet_r50-d8_4xb2-40k_cityscapes-512x1024",
        "pspnet_r50-d8_4xb2-80k_cityscapes-512x1024",
        "pspnet_r18-d8_4xb2-80k_cityscapes-512x1024",
        # "b": mmseg's type='ResNet', torchvision's 7x7 stem
        *(f"pspnet_r{d}b-d8_4xb2-80k_cityscapes-{c}" for d in (18, 50, 101)
          for c in ("512x1024", "769x769")),
        "danet_r50-d8_4xb2-40k_cityscapes-512x1024",
        "danet_r50-d8_4xb2-80k_cityscapes-512x1024",
        *(f"psanet_r{d}-d8_{s}" for d in (50, 101) for s in (
            "4xb2-40k_cityscapes-512x1024", "4xb2-80k_cityscapes-512x1024",
            "4xb4-80k_ade20k-512x512", "4xb4-160k_ade20k-512x512",
            "4xb2-40k_cityscapes-769x769", "4xb2-80k_cityscapes-769x769",
            "4xb4-20k_voc12aug-512x512", "4xb4-40k_voc12aug-512x512")),
        *(f"pointrend_r{d}_{s}" for d in (50, 101) for s in (
            "4xb2-80k_cityscapes-512x1024", "4xb4-160k_ade20k-512x512")),
    )
}
#: One family per distinct network (the 40k/80k schedules build the same one; R101 differs
#: from R50 only in the number of stage-3 blocks, checked by test_recipe_builds_the_peer_network).
NETWORKS = ("pspnet_r18-d8_4xb2-80k_cityscapes-512x1024",
            "pspnet_r50-d8_4xb2-80k_cityscapes-512x1024",
            "pspnet_r18b-d8_4xb2-80k_cityscapes-512x1024",  # 7x7 stem
            "pspnet_r50b-d8_4xb2-80k_cityscapes-512x1024",
            "danet_r50-d8_4xb2-80k_cityscapes-512x1024",
            "psanet_r50-d8_4xb2-80k_cityscapes-512x1024",   # 97x97 masks
            "psanet_r50-d8_4xb4-80k_ade20k-512x512",        # 66x66 masks (even)
            "pointrend_r50_4xb2-80k_cityscapes-512x1024")
#: (H, W) of the compared inputs. The first is a multiple of 32; the second is odd, not a
#: multiple of 8 (a 9x12 stage-4 map at d8: PSAHead's h//2 shrink) and overshot by PointRend's
#: uncapped subdivision (68x96); the third gives a 9x13 d8 map (both odd: PSAHead's
#: (h-1)//2+1 shrink with align_corners=True).
SIZES = ((64, 96), (67, 93), (65, 97))
#: The float64 comparison: every network whose peer runs in float64 (mmseg's PointHead builds
#: its test points in float32, which mmcv's point_sample refuses with a float64 map), at a size
#: where every resize ratio of every network is a dyadic fraction (an 8x8 d8 map; PSPNet's bins
#: 1, 2, 3, 6; PSANet's 4x4 shrink and 6x6 padded proj): Paddle 3.3.1's CPU bilinear
#: interpolation computes its source coordinates in float32 even for float64 tensors, so at
#: other ratios (the odd sizes) the two sides agree only to ~1e-7 (the float32 coordinates).
F64_NETWORKS = tuple(f for f in NETWORKS if not f.startswith("pointrend"))
F64_SIZES = ((64, 64),)
#: Our architecture name of each model folder (the adapters' layout names).
ARCH = {"pspnet": "PSPNet", "danet": "DANet", "psanet": "PSANet", "pointrend": "PointRend"}
#: The seeded small cases whose mmseg logits are committed (network, seed, input size).
GOLDEN = (("pspnet_r18-d8_4xb2-80k_cityscapes-512x1024", 7, (33, 45)),
          ("pspnet_r18b-d8_4xb2-80k_cityscapes-512x1024", 12, (37, 51)),
          ("pspnet_r50b-d8_4xb2-80k_cityscapes-512x1024", 13, (41, 33)),
          ("danet_r50-d8_4xb2-80k_cityscapes-512x1024", 8, (25, 35)),
          ("psanet_r50-d8_4xb2-80k_cityscapes-512x1024", 9, (33, 49)),
          # 150 classes: kept small, but every d8 side >= 4: a side of 2 or 3 shrinks to 1 under
          # mmseg's rule, and Paddle's bilinear resize to a side of 1 (align_corners=False)
          # reads the first pixel where torch reads the centre (measured here, 17x25 input).
          ("psanet_r50-d8_4xb4-80k_ade20k-512x512", 10, (25, 25)),
          ("pointrend_r50_4xb2-80k_cityscapes-512x1024", 11, (45, 70)))
#: PSPNet's d32 configs (ResNetV1c / ResNet with strides (1, 2, 2, 2) and dilations (1, 1, 2, 4):
#: ours at output_stride 32 with dilations [1, 1, 2, 4]), the ResNet-strikes-back configs
#: (type='ResNet' from mmcls' rsb file, AdamW) and COCO-Stuff 10k.
D32_NETWORKS = ("pspnet_r50-d32_4xb2-80k_cityscapes-512x1024",
                "pspnet_r50b-d32_4xb2-80k_cityscapes-512x1024")
#: Each ResNet-strikes-back config -> the "b" config whose network it builds (only the
#: ImageNet file and the schedule differ).
RSB_NETWORKS = {"pspnet_r50-d8-rsb_4xb2-adamw-80k_cityscapes-512x1024":
                "pspnet_r50b-d8_4xb2-80k_cityscapes-512x1024",
                "pspnet_r50-d32_rsb_4xb2-adamw-80k_cityscapes-512x1024":
                "pspnet_r50b-d32_4xb2-80k_cityscapes-512x1024"}
FAMILIES.update({name: f"configs/pspnet/mmseg/{name}.yml" for name in (
    *D32_NETWORKS, *RSB_NETWORKS,
    *(f"pspnet_r{d}-d8_4xb4-{i}k_coco-stuff10k-512x512" for d in (50, 101) for i in (20, 40)))})
NETWORKS += D32_NETWORKS
# d32 at 64x64: a 2x2 stage-4 map, so every PPM resize ratio (1/2 .. 6/2) and the final 1/32
# are dyadic, as the float64 comparison needs.
F64_NETWORKS += D32_NETWORKS
GOLDEN += (("pspnet_r50-d32_4xb2-80k_cityscapes-512x1024", 16, (97, 65)),
           ("pspnet_r50b-d32_4xb2-80k_cityscapes-512x1024", 17, (75, 129)))


def fixture_name(family: str) -> str:
    """``<model>_<backbone>``, plus the dataset for a network that differs by dataset (ADE20K
    PSANet: 66x66 masks, 150 classes); the schedule never changes the network."""
    name = family.split("_4xb")[0]
    return f"{name}_ade20k" if family.endswith("ade20k-512x512") else name


def random_state(keys: Mapping[str, Sequence[int]], seed: int) -> Dict[str, np.ndarray]:
    """A seeded random state dict with mmseg's keys and shapes (NumPy only).

    Every tensor is drawn, so no conversion rule can pass by accident on an
    all-zero or all-one tensor: conv weights He-scaled, BN scales in
    [0.25, 0.75] (keeping logits at a few units through 50 layers), BN running
    variances in [0.5, 2], means and biases small, DANet's 0-d attention
    scales in [0.25, 0.75] (0 at mmseg's init), and the step counters
    ``num_batches_tracked`` random integers.
    """
    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {}
    for key, shape in keys.items():
        shape = list(shape)
        if key.endswith("num_batches_tracked"):
            out[key] = rng.integers(0, 80000, shape).astype(np.int64)
            continue
        if key.endswith("running_var"):
            new = rng.uniform(0.5, 2.0, shape)
        elif key.endswith("running_mean") or key.endswith("bias"):
            new = rng.normal(0.0, 0.2, shape)
        elif key.endswith(".scale") or len(shape) == 1:
            new = rng.uniform(0.25, 0.75, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            new = rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape)
        out[key] = np.asarray(new, dtype=np.float32)
    return out


def random_input(size: Tuple[int, int], seed: int) -> np.ndarray:
    """A normalised image batch ``[1, 3, H, W]`` (what ``encode_decode`` takes)."""
    return np.random.default_rng(seed).normal(0.0, 1.0, (1, 3, *size)).astype(np.float32)


# ----------------------------------------------------------------- peer side
#: The compiled ``mmcv.ops`` that mmsegmentation 1.2.2 imports when it registers its models.
#: mmcv-lite has no compiled ops (PyPI has no CPU build of them); PSPNet and DANet call none,
#: PSANet and PointRend call PSAMask and point_sample (stand-ins: mmcv_ops_standin.py).
MMCV_OPS = ("CrissCrossAttention", "DeformConv2d", "ModulatedDeformConv2d",
            "sigmoid_focal_loss")


def _mmcv_ops_stand_in() -> None:
    """Make ``import mmcv.ops`` succeed without the compiled ops.

    ``PSAMask`` and ``point_sample`` are the stand-ins of ``mmcv_ops_standin.py``
    (written from the ops' documented semantics); every other name is a
    placeholder that raises, naming the op, when it is built or called, so a
    model that needs another compiled op fails loudly instead of running
    anything else in its place.
    """
    import importlib
    import types

    try:
        importlib.import_module("mmcv.ops")
        return
    except ImportError:
        pass

    def missing(name: str) -> Any:
        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError(f"mmcv.ops.{name} is a compiled op that mmcv-lite lacks; the "
                               "peer environment cannot run a model that uses it")
        return refuse

    ops = types.ModuleType("mmcv.ops")
    ops.__doc__ = "Stand-in for mmcv's compiled ops (benchmarks/mmseg_checkpoints.py)."
    for name in MMCV_OPS:
        setattr(ops, name, missing(name))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import mmcv_ops_standin

    ops.PSAMask = mmcv_ops_standin.PSAMask
    ops.point_sample = mmcv_ops_standin.point_sample
    sys.modules["mmcv.ops"] = ops
    import mmcv

    mmcv.ops = ops

def peer_config_path(family: str) -> Path:
    import mmseg

    folder = PEER_FOLDER[family.split("_")[0]]
    path = Path(mmseg.__file__).parent / ".mim" / "configs" / folder / f"{family}.py"
    if not path.is_file():
        raise FileNotFoundError(f"mmseg config {path} not found (mmsegmentation 1.2.2 wheel?)")
    return path


def peer_model(family: str) -> Any:
    """mmsegmentation's EncoderDecoder built from its own config file, in eval mode, float32."""
    _mmcv_ops_stand_in()
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(str(peer_config_path(family)))
    cfg.model.pretrained = None  # open-mmlab:// ImageNet weights: not wanted, not reachable
    parts = [cfg.model.backbone]
    for part in ("decode_head", "auxiliary_head"):
        heads = cfg.model.get(part)
        parts += heads if isinstance(heads, list) else [heads] if heads else []
    for part in parts:
        # SyncBN needs a process group; a single-process eval runs it as BatchNorm.
        if (part.get("norm_cfg") or {}).get("type") == "SyncBN":
            part.norm_cfg = dict(type="BN", requires_grad=True)
    model = MODELS.build(cfg.model)
    return model.eval()


def key_shapes(family: str) -> Dict[str, List[int]]:
    """The peer model's state-dict keys and shapes, in its order."""
    return {k: list(v.shape) for k, v in peer_model(family).state_dict().items()}


def randomized_peer(family: str, seed: int) -> Any:
    import torch

    model = peer_model(family)
    state = random_state(key_shapes_of(model), seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model


def key_shapes_of(model: Any) -> Dict[str, List[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def save_like_mmseg(model: Any, path: Path, style: str) -> None:
    """Save ``model`` as mmsegmentation does.

    ``style="mmcv1"``: the published model-zoo files, ``{'meta', 'state_dict'}``
    written by ``torch.save`` in its legacy layout (mmcv 1.x era);
    ``style="mmengine"``: what ``Runner.save_checkpoint`` writes today, through
    mmengine's own ``save_checkpoint`` with its ``message_hub`` (log buffers)
    and meta.
    """
    import torch
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu

    state = weights_to_cpu(model.state_dict())
    meta = {"mmseg_version": "1.2.2", "config": "...", "CLASSES": tuple(f"c{i}" for i in range(19)),
            "PALETTE": [[i, i, i] for i in range(19)]}
    if style == "mmcv1":
        torch.save({"meta": meta, "state_dict": state}, str(path),
                   _use_new_zipfile_serialization=False)
        return
    hub = MessageHub.get_instance("mmseg_checkpoints")
    hub.update_scalar("train/loss", 1.25)
    hub.update_scalar("train/lr", 0.01)
    hub.update_info("iter", 80000, resumed=True)
    save_checkpoint({"meta": {**meta, "iter": 80000, "seed": 0}, "state_dict": state,
                     "message_hub": hub.state_dict()}, str(path))


def peer_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """mmseg's ``encode_decode`` logits in the dtype of ``x`` (the model is cast to it)."""
    import torch

    if x.dtype == np.float64:
        model = model.double()
    h, w = x.shape[2:]
    metas = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))]
    with torch.no_grad():
        return model.encode_decode(torch.from_numpy(x), metas).numpy()


# ------------------------------------------------------------------ our side
def our_model(family: str) -> Any:
    return recipe_model(ROOT / FAMILIES[family])


def our_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """Our eval logits in the dtype of ``x`` (the model is cast to it)."""
    return eval_logits(model, x)


def compare(family: str, tmp: Path, style: str = "mmcv1", seed: int = 0,
            dtype: str = "float32", sizes: Sequence[Tuple[int, int]] = SIZES
            ) -> List[Tuple[Tuple[int, int], float, float]]:
    """``[(size, max abs diff, max |peer logit|)]`` for a random checkpoint of ``family``,
    both models run in ``dtype`` (the checkpoint is float32, as the peer's files)."""
    from paddleseg_ext.checkpoints.weights import load_model_weights

    peer = randomized_peer(family, seed)
    path = tmp / f"{family}_{style}.pth"
    save_like_mmseg(peer, path, style)
    ours = our_model(family)
    load_model_weights(ours, str(path))
    rows = []
    for i, size in enumerate(sizes):
        x = random_input(size, seed + 100 + i).astype(dtype)
        want, got = peer_logits(peer, x), our_logits(ours, x)
        assert got.shape == want.shape, (got.shape, want.shape)
        rows.append((size, float(np.abs(got - want).max()), float(np.abs(want).max())))
    return rows


def write_fixtures(networks: Sequence[str] = NETWORKS, tiny_file: bool = True) -> None:
    """Key/shape lists of ``networks``, the golden logits of their seeded small cases and
    (``tiny_file``) the small mmengine checkpoint."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for family in networks:
        doc = {"peer": "mmsegmentation 1.2.2 (mmcv-lite 2.1.0)", "config": family,
               "recipe": FAMILIES[family],
               "made_by": "benchmarks/mmseg_checkpoints.py --fixtures",
               "keys": key_shapes(family)}
        (FIXTURES / f"{fixture_name(family)}.json").write_text(json.dumps(doc, indent=0) + "\n")
    for family, seed, size in (g for g in GOLDEN if g[0] in networks):
        logits = peer_logits(randomized_peer(family, seed), random_input(size, seed))
        np.save(FIXTURES / f"{fixture_name(family)}_golden_seed{seed}.npy", logits)
    if tiny_file:
        write_tiny_mmengine_file(FIXTURES / "mmengine_tiny.pth")


def write_tiny_mmengine_file(path: Path) -> None:
    """A real checkpoint of mmengine's ``Runner`` (a conv + BN net trained 2 iterations,
    saved by its ``CheckpointHook``; a few KB): ``meta``, ``state_dict``, ``optimizer``,
    ``param_schedulers`` and a ``message_hub`` whose ``HistoryBuffer`` objects the
    toolkit's reader must set aside."""
    import shutil
    import tempfile

    import torch
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Net(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, bias=False)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, inputs, labels=None, mode="tensor"):  # noqa: ARG002 (mmengine's API)
            y = self.bn(self.conv(inputs)).mean()
            return {"loss": (y - 1) ** 2} if mode == "loss" else y

    class Data(torch.utils.data.Dataset):
        metainfo = {"classes": ("a", "b"), "palette": [[0, 0, 0], [255, 255, 255]]}

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i):
            return {"inputs": torch.randn(3, 8, 8), "labels": torch.tensor(0)}

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        runner = Runner(
            model=Net(), work_dir=work, experiment_name="tiny", randomness={"seed": 0},
            train_dataloader={"dataset": Data(), "batch_size": 2, "num_workers": 0,
                              "sampler": {"type": "DefaultSampler", "shuffle": False},
                              "collate_fn": {"type": "default_collate"}},
            optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9}},
            param_scheduler={"type": "PolyLR", "power": 0.9, "by_epoch": False, "end": 2},
            train_cfg={"by_epoch": False, "max_iters": 2, "val_interval": 100},
            default_hooks={"checkpoint": {"type": "CheckpointHook", "interval": 2,
                                          "by_epoch": False}})
        runner.train()
        shutil.copy(Path(work) / "iter_2.pth", path)


# ------------------------------------------------------------ mmcls ImageNet ResNet
#: Where the key/shape list of an mmcls / mmpretrain ImageNet ResNet50 file is kept.
MMCLS_FIXTURE = ROOT / "tests" / "fixtures" / "mmcls" / "resnet50_in1k.json"


def mmcls_resnet(depth: int = 50) -> Any:
    """The ``ResNet`` backbone of an mmcls ImageNet classifier, in eval mode: built as mmseg's
    ``ResNet`` (mmpretrain's ``models/backbones/resnet.py`` has the same layers and names;
    mmpretrain is not installed here), returning all four stages."""
    _mmcv_ops_stand_in()
    from mmseg.models.backbones import ResNet

    model = ResNet(depth=depth, out_indices=(0, 1, 2, 3))
    model.eval()  # mmseg's ResNet.train() returns None, so not chained
    return model


def mmcls_key_shapes(backbone: Any) -> Dict[str, List[int]]:
    """An mmcls ``ImageClassifier``'s state-dict keys: the backbone under ``backbone.`` and
    ``LinearClsHead``'s ``fc`` under ``head.fc`` (1000 ImageNet classes)."""
    keys = {f"backbone.{k}": list(v.shape) for k, v in backbone.state_dict().items()}
    width = keys["backbone.layer4.0.conv3.weight"][0] if "backbone.layer4.0.conv3.weight" in keys \
        else keys["backbone.layer4.0.conv2.weight"][0]
    return {**keys, "head.fc.weight": [1000, width], "head.fc.bias": [1000]}


def write_mmcls_fixture() -> None:
    """Rewrite :data:`MMCLS_FIXTURE` (``.venv-peers``)."""
    MMCLS_FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    doc = {"peer": "mmcls / mmpretrain ImageClassifier (ResNet50 + LinearClsHead), built as "
                   "mmsegmentation 1.2.2's ResNet", "made_by": "benchmarks/mmseg_checkpoints.py "
                   "write_mmcls_fixture()", "keys": mmcls_key_shapes(mmcls_resnet(50))}
    MMCLS_FIXTURE.write_text(json.dumps(doc, indent=0) + "\n")


def compare_mmcls(tmp: Path, seed: int = 0, sizes: Sequence[Tuple[int, int]] = SIZES[:2]
                  ) -> List[Tuple[Tuple[int, int], int, float, float]]:
    """``[(size, stage, max abs diff, max |peer feature|)]``: a random mmcls-layout ResNet50
    file (``{'meta', 'state_dict'}``, legacy ``torch.save``) initialises our 7x7-stem
    ResNet50_vd through ``pretrained:``; both backbones' four stage features are compared."""
    import torch

    peer = mmcls_resnet(50)
    state = random_state(mmcls_key_shapes(peer), seed)
    peer.load_state_dict({k[len("backbone."):]: torch.from_numpy(v) for k, v in state.items()
                          if k.startswith("backbone.")}, strict=True)
    path = tmp / "resnet50_mmcls.pth"
    torch.save({"meta": {"mmcls_version": "0.19.0", "CLASSES": [f"c{i}" for i in range(1000)]},
                "state_dict": {k: torch.from_numpy(v) for k, v in state.items()}}, str(path),
               _use_new_zipfile_serialization=False)

    def features(x: np.ndarray) -> List[np.ndarray]:
        with torch.no_grad():
            return [f.numpy() for f in peer(torch.from_numpy(x))]

    return compare_stage_features(path, features, sizes, seed)


def compare_stage_features(path: Path, peer_features: Callable[[np.ndarray], List[np.ndarray]],
                           sizes: Sequence[Tuple[int, int]], seed: int = 0
                           ) -> List[Tuple[Tuple[int, int], int, float, float]]:
    """``[(size, stage 1-4, max abs diff, max |peer feature|)]``: an ImageNet ResNet50 file at
    ``path`` initialises our 7x7-stem ResNet50_vd (output stride 32) through ``pretrained:``, and
    its four stage features are compared with ``peer_features`` of the same random inputs."""
    import paddle

    from paddleseg_ext.models.backbones import ResNet50_vd

    ours = ResNet50_vd(output_stride=32, stem="7x7", shortcut="strided_conv", pretrained=str(path))
    ours.eval()
    rows = []
    for i, size in enumerate(sizes):
        x = random_input(size, seed + 200 + i)
        with paddle.no_grad():
            got = [f.numpy() for f in ours(paddle.to_tensor(x))]
        for stage, (a, b) in enumerate(zip(got, peer_features(x)), start=1):
            assert a.shape == b.shape, (a.shape, b.shape)
            rows.append((size, stage, float(np.abs(a - b).max()), float(np.abs(b).max())))
    return rows


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", action="store_true", help="rewrite tests/fixtures/mmseg/")
    ap.add_argument("--only", nargs="+", choices=NETWORKS, metavar="CONFIG",
                    help="only these networks: their logits, or with --fixtures their files "
                         "(not mmengine_tiny.pth)")
    args = ap.parse_args()
    if args.fixtures:
        write_fixtures(args.only or NETWORKS, tiny_file=not args.only)
        print(f"wrote {FIXTURES}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.only or NETWORKS:
            runs = [("mmcv1", "float32", SIZES), ("mmengine", "float32", SIZES)]
            if family in F64_NETWORKS:
                runs.append(("mmcv1", "float64", F64_SIZES + SIZES[1:]))
            for style, dtype, sizes in runs:
                for size, diff, scale in compare(family, Path(tmp), style, dtype=dtype,
                                                 sizes=sizes):
                    print(f"{family:46s} {style:8s} {dtype} {size[0]}x{size[1]}  "
                          f"max|diff| {diff:.3g}  max|logit| {scale:.3g}  "
                          f"ratio {diff / scale:.3g}", flush=True)


if __name__ == "__main__":
    main()
