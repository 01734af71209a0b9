"""PSANet_paddle comparison cases, shared by the main suite and the peer run.

PSANet_paddle (https://github.com/justld/PSANet_paddle) is the PaddlePaddle
reproduction of PSANet whose checkpoints ``paddleseg_ext.checkpoints.adapters
.psanet_paddle`` converts. Three users share this module:

* ``tests/test_psanet_paddle_adapter.py`` (main suite, no peer): rebuilds the
  peer's state dict of the golden case from the committed key/shape list and
  :func:`seeded_state`, converts it and compares our logits with the committed
  golden logits;
* ``tests/test_peer_psanet.py`` (``.venv-bench`` with the peer's model file):
  runs the peer's model itself via :func:`load_peer_psanet`;
* ``tests/fixtures/psanet_paddle/regenerate.py``: writes the fixtures from
  the peer's model.

Nothing of the peer's code is in this repository: :func:`load_peer_psanet`
reads its ``paddleseg/models/psanet.py`` from a checkout named by
``$PSANET_PADDLE_ROOT`` and runs it on PaddleSeg 2.8 (``benchmarks/
paddleseg_peer.py``), with this toolkit's ``psa_mask`` standing in for its
compiled ``psamask`` op (the same collect/distribute mapping; the peer test
checks that against the peer's own op source when it compiles).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "psanet_paddle"
PEER_ENV = "PSANET_PADDLE_ROOT"
PEER_MODEL_FILE = "paddleseg/models/psanet.py"

#: The published model's settings (the peer's
#: configs/psanet/psanet_resnet50_os8_cityscapes_1024x512_80k.yml).
RECIPE = dict(backbone="ResNet50_vd", num_classes=19, psa_type=2, mask_h=59, mask_w=59,
              shrink_factor=2, normalization_factor=1.0, psa_softmax=True, use_psa=True)
#: The small seeded case whose logits are committed (sizes [H, W]; 33x41 is
#: not a multiple of 8).
GOLDEN = dict(backbone="ResNet18_vd", num_classes=3, psa_type=2, mask_h=5, mask_w=7,
              shrink_factor=2, normalization_factor=1.0, psa_softmax=True, use_psa=True)
GOLDEN_SEED = 16
GOLDEN_SIZES: Tuple[Tuple[int, int], ...] = ((33, 41), (48, 64))


def seeded_state(shapes: Sequence[Tuple[str, Sequence[int]]], seed: int) -> Dict[str, np.ndarray]:
    """A deterministic state dict for ``shapes`` (``[(key, shape), ...]`` in order).

    One ``numpy.random.default_rng(seed)`` stream, drawn key by key in the
    given order, float32:

    * ``*._mean``: normal(0, 0.1); ``*._variance``: uniform(0.5, 1.5);
    * other 1-D ``*.weight`` (BatchNorm scale): uniform(0.5, 1.5);
    * ``*.bias``: normal(0, 0.1);
    * 4-D conv weights: normal(0, sqrt(1 / fan_in)), fan_in = prod(shape[1:])
      (with He's sqrt(2 / fan_in) and BatchNorm statistics that do not match
      the activations, ResNet50's logits reach 6.5e4; with this they stay
      within about +-4, so a 1e-5 tolerance is a tight one).

    Args:
        shapes: key names and shapes, in the peer's state-dict order.
        seed: the generator seed.

    Returns:
        ``{key: float32 array}``.
    """
    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {}
    for key, shape in shapes:
        shape = tuple(int(d) for d in shape)
        if key.endswith("._mean"):
            v = rng.normal(0.0, 0.1, shape)
        elif key.endswith("._variance"):
            v = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(".bias"):
            v = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:
            v = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 4:
            v = rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[1:])), shape)
        else:
            raise ValueError(f"seeded_state: no rule for {key} with shape {shape}")
        out[key] = v.astype(np.float32)
    return out


def seeded_input(size: Sequence[int], seed: int) -> np.ndarray:
    """A ``[1, 3, H, W]`` float32 image, normal(0, 1), from ``default_rng(seed)``."""
    return np.random.default_rng(seed).normal(0.0, 1.0, (1, 3, *size)).astype(np.float32)


def build_ours(case: Dict[str, Any], concat_order: str = "distribute_first") -> Any:
    """Our PSANet for ``case`` (eval mode), built like the peer builds its model."""
    from paddleseg_ext.models import backbones
    from paddleseg_ext.models.psanet import PSANet

    net = getattr(backbones, case["backbone"])(output_stride=8)
    kwargs = {k: v for k, v in case.items() if k not in ("backbone", "num_classes")}
    model = PSANet(case["num_classes"], net, enable_auxiliary_loss=True,
                   psa_concat_order=concat_order, **kwargs)
    model.eval()
    return model


def read_shapes(name: str) -> List[Tuple[str, List[int]]]:
    """The committed ``(key, shape)`` list of fixture ``name`` (peer order)."""
    data = json.loads((FIXTURES / name).read_text())
    return [(k, list(s)) for k, s in data["shapes"]]


# --------------------------------------------------------------------------
# The peer (benchmark environment only)
# --------------------------------------------------------------------------

def peer_root() -> Path:
    """The PSANet_paddle checkout named by ``$PSANET_PADDLE_ROOT``.

    Raises:
        FileNotFoundError: the variable is unset or has no model file.
    """
    root = os.environ.get(PEER_ENV, "")
    if not root or not (Path(root) / PEER_MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"set ${PEER_ENV} to a checkout of https://github.com/justld/PSANet_paddle "
            f"(needs {PEER_MODEL_FILE}); got {root!r}")
    return Path(root)


def _psa_mask_op_stand_in(x, psa_type, num, h, w, mask_h, mask_w, half_h, half_w):
    """The peer's ``psamask(x, type, N, H, W, mh, mw, mh//2, mw//2)`` via our op."""
    from paddleseg_ext.ops import psa_mask

    if (half_h, half_w) != ((mask_h - 1) // 2, (mask_w - 1) // 2):
        raise ValueError(f"peer stand-in: half mask ({half_h}, {half_w}) is not "
                         f"((mask-1)//2) for mask ({mask_h}, {mask_w})")
    if list(x.shape) != [num, mask_h * mask_w, h, w]:
        raise ValueError(f"peer stand-in: input {list(x.shape)} is not "
                         f"{[num, mask_h * mask_w, h, w]}")
    return psa_mask(x, int(psa_type), (mask_h, mask_w))


_PEER: Dict[str, Any] = {}


def load_peer_psanet() -> Any:
    """PSANet_paddle's model module, run on PaddleSeg 2.8 (benchmark env).

    Its ``PSANet`` is the model; its global ``psa_mask_op`` is the stand-in
    (a test may swap in the peer's compiled op).

    Raises:
        FileNotFoundError: ``$PSANET_PADDLE_ROOT`` is not usable.
        ImportError: PaddleSeg 2.8 is not installed (``benchmarks/paddleseg_peer``
            raises its ``PeerUnavailable``).
    """
    if "module" in _PEER:
        return _PEER["module"]
    path = peer_root() / PEER_MODEL_FILE
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import paddleseg_peer

    paddleseg_peer.load()
    ops = types.ModuleType("paddleseg.models.ops")
    ops.psa_mask_op = _psa_mask_op_stand_in
    sys.modules["paddleseg.models.ops"] = ops
    spec = importlib.util.spec_from_file_location("psanet_paddle_peer_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _PEER["module"] = module
    return module


def build_peer(case: Dict[str, Any]) -> Any:
    """The peer's PSANet for ``case`` (eval mode, default initialisation)."""
    from paddleseg.models import backbones

    cls = load_peer_psanet().PSANet
    net = getattr(backbones, case["backbone"])(output_stride=8)
    kwargs = {k: v for k, v in case.items() if k not in ("backbone", "num_classes")}
    model = cls(case["num_classes"], net, enable_auxiliary_loss=True, **kwargs)
    model.eval()
    return model


def peer_shapes(model: Any) -> List[Tuple[str, List[int]]]:
    """``(key, shape)`` of a peer model's state dict, in its order."""
    return [(k, [int(d) for d in v.shape]) for k, v in model.state_dict().items()]
