#!/usr/bin/env bash
# Learning check for all four models: train each quick-start config on the
# land-cover tiles, evaluate it, and compare with the per-pixel baseline.
# Usage: bash scripts/learning_check.sh [model ...]   (default: all four; OUT=output/learning_check)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
OUT="${OUT:-output/learning_check}"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(pspnet danet psanet pointrend)
python tools/data/prepare_landcover.py --out data/landcover
mkdir -p "$OUT"
for m in "${models[@]}"; do
  cfg=$(ls configs/quick_start/${m}_*landcover*.yml)
  echo "== $m: $cfg"
  start=$(date +%s)
  python tools/train.py --config "$cfg" --save_dir "$OUT/$m" --save_interval 100000 --log_iters 100 --seed 0
  echo "$(( $(date +%s) - start ))" > "$OUT/$m/train_seconds"
  python tools/val.py --config "$cfg" --model_path "$OUT/$m/iter_$(python -c "
import sys; sys.path.insert(0, '.')
from paddleseg_ext.cvlibs import Config; print(Config('$cfg').iters)")" --save_json "$OUT/$m/val.json"
done
python tools/pixel_baseline.py --config "$cfg" --save_json "$OUT/baseline.json"
python - "$OUT" "${models[@]}" <<'PY'
import json, os, sys
out, models = sys.argv[1], sys.argv[2:]
base = json.load(open(os.path.join(out, "baseline.json")))
rows = {m: json.load(open(os.path.join(out, m, "val.json"))) for m in models}
names = next(iter(rows.values())).get("class_names") or [str(i) for i in range(len(base["class_IoU"]))]
fmt = lambda v: "n/a" if v is None or v != v else f"{v:.3f}"
print("| class | " + " | ".join(models) + " | pixel baseline |")
print("|---" * (len(models) + 2) + "|")
for i, n in enumerate(names):
    print(f"| {n} | " + " | ".join(fmt(rows[m]["class_IoU"][i]) for m in models) + f" | {fmt(base['class_IoU'][i])} |")
for k in ("mIoU", "Acc", "Kappa"):
    print(f"| **{k}** | " + " | ".join(fmt(rows[m][k]) for m in models) + f" | {fmt(base[k])} |")
secs = [open(os.path.join(out, m, "train_seconds")).read().strip() for m in models]
print("| train time (s) | " + " | ".join(secs) + " | - |")
PY
