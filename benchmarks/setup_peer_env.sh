#!/usr/bin/env bash
# The peer environment for exactness proofs against mmsegmentation: everything
# the toolkit's .venv has, plus CPU PyTorch, mmengine, mmcv-lite 2.1.0 and
# mmsegmentation 1.2.2 (which refuses mmcv >= 2.2). Kept apart from .venv so
# the test suite never sees PyTorch.
#   bash benchmarks/setup_peer_env.sh      (creates or reuses .venv-peers)
#
# Environment:
#   PEER_TORCH        the PyTorch requirement (default torch==2.13.0+cpu, a CPU build)
#   PEER_TORCH_INDEX  an extra index for it, used only when reachable
#                     (default https://download.pytorch.org/whl/cpu)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PADDLESEG_EXT_VENV="${PADDLESEG_EXT_PEER_VENV:-$ROOT/.venv-peers}"
source "$ROOT/scripts/setup_env.sh"
PY="$PADDLESEG_EXT_VENV/bin/python"
PEER_TORCH="${PEER_TORCH:-torch==2.13.0+cpu}"
PEER_TORCH_INDEX="${PEER_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
stamp="$PADDLESEG_EXT_VENV/.mmseg_peer"
PEER_TORCHVISION="${PEER_TORCHVISION:-torchvision==0.28.0}"  # the release paired with torch 2.13
want="$PEER_TORCH;$PEER_TORCHVISION;ftfy;mmengine==0.10.7;mmcv-lite==2.1.0;mmsegmentation==1.2.2"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[peer-setup] installing $PEER_TORCH, mmengine, mmcv-lite 2.1.0, mmsegmentation 1.2.2"
  log="$PADDLESEG_EXT_VENV/peer_setup.log"
  : > "$log"
  index=()
  if curl -sfI --max-time 5 "$PEER_TORCH_INDEX/" >/dev/null 2>&1; then
    index=(--extra-index-url "$PEER_TORCH_INDEX")
  fi
  pipi() { "$PY" -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1 \
           || { tail -n 40 "$log" >&2; echo "[peer-setup] pip install $* failed (log: $log)" >&2; exit 1; }; }
  pipi "$PEER_TORCH" "${index[@]}"
  # mmengine and mmcv-lite require opencv-python; .venv already has
  # opencv-python-headless, the same cv2 without GUI. Installing theirs would put
  # a second, clashing cv2 package in the environment, so their other
  # requirements are installed here and the three packages with --no-deps.
  # ftfy and regex: mmseg.utils imports its CLIP tokenizer unconditionally.
  pipi addict yapf termcolor rich matplotlib packaging prettytable scipy ftfy regex
  pipi --no-deps mmengine==0.10.7 mmcv-lite==2.1.0 mmsegmentation==1.2.2
  # torchvision's ResNet definitions (the torchvision ImageNet file check of
  # benchmarks/semseg_checkpoints.py); --no-deps keeps the CPU torch above.
  pipi --no-deps "$PEER_TORCHVISION"
  echo "$want" > "$stamp"
fi
"$PY" -c "import cv2, torch, mmengine, mmcv, mmseg, paddle; print('[peer-setup] torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmseg', mmseg.__version__, 'paddle', paddle.__version__, 'cv2', cv2.__version__)"
