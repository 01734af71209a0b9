#!/usr/bin/env bash
# The benchmark environment: everything the toolkit's .venv has, plus
# PaddleSeg 2.8.0 (the peer we compare against) and the NumPy 1.x it needs.
# Kept apart from .venv so the test suite never sees PaddleSeg.
#   bash benchmarks/setup_bench_env.sh      (creates or reuses .venv-bench)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PADDLESEG_EXT_VENV="${PADDLESEG_EXT_BENCH_VENV:-$ROOT/.venv-bench}"
source "$ROOT/scripts/setup_env.sh"
PY="$PADDLESEG_EXT_VENV/bin/python"
stamp="$PADDLESEG_EXT_VENV/.paddleseg_peer"
want="paddleseg==2.8.0;numpy<2;opencv-python-headless==4.6.0.66"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bench-setup] installing PaddleSeg 2.8.0 with NumPy 1.x"
  log="$PADDLESEG_EXT_VENV/bench_setup.log"
  # PaddleSeg pins opencv-python<=4.6.0; the headless build of the same
  # version provides the same cv2 without a second, clashing cv2 package.
  "$PY" -m pip install --disable-pip-version-check "numpy<2" "opencv-python-headless==4.6.0.66" \
      filelock prettytable scikit-learn scipy >"$log" 2>&1 \
    && "$PY" -m pip install --disable-pip-version-check --no-deps paddleseg==2.8.0 >>"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; echo "[bench-setup] failed (log: $log)" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
"$PY" -c "import numpy, paddle; print('[bench-setup] numpy', numpy.__version__, 'paddle', paddle.__version__)"
