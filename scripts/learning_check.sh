#!/usr/bin/env bash
# Learning check for all four models: train each quick-start config on the
# land-cover tiles, evaluate it, and compare with the per-pixel baseline.
# Usage: bash scripts/learning_check.sh [model ...]   (default: all four; OUT=output/learning_check)
# Writes the table to $OUT/table.md; with the default model set (or README=1) also into README.md
# between <!-- BEGIN learning_check --> and <!-- END learning_check --> (README=0: never).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
OUT="${OUT:-output/learning_check}"
models=("$@")
readme="${README:-}"
if [ ${#models[@]} -eq 0 ]; then models=(pspnet danet psanet pointrend); readme="${readme:-1}"; fi
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || commit="$commit+local changes"
load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
python tools/data/prepare_landcover.py --out data/landcover
mkdir -p "$OUT"
for m in "${models[@]}"; do
  cfg=$(ls configs/quick_start/${m}_resnet18_*landcover*.yml)   # the ResNet18 recipe (EfficientNet ones: pretrained_check.sh)
  echo "== $m: $cfg"
  start=$(date +%s)
  python tools/train.py --config "$cfg" --save_dir "$OUT/$m" --save_interval 100000 --log_iters 100 --seed 0
  echo "$(( $(date +%s) - start ))" > "$OUT/$m/train_seconds"
  python tools/val.py --config "$cfg" --model_path "$OUT/$m/iter_$(python -c "
import sys; sys.path.insert(0, '.')
from paddleseg_ext.cvlibs import Config; print(Config('$cfg').iters)")" --save_json "$OUT/$m/val.json"
done
python tools/pixel_baseline.py --config "$cfg" --save_json "$OUT/baseline.json"
python scripts/learning_table.py "$OUT" "$(nproc) cores, load $load at start" "${models[@]}" > "$OUT/table.md"
cat "$OUT/table.md"
if [ "$readme" = 1 ]; then
  python scripts/readme_table.py README.md learning_check "$OUT/table.md" \
      --command "bash scripts/learning_check.sh" --commit "$commit"
fi
