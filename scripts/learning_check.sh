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
python - "$OUT" "$(nproc) cores, load $load at start" "${models[@]}" > "$OUT/table.md" <<'PY'
import json, os, sys
out, machine, models = sys.argv[1], sys.argv[2], sys.argv[3:]
base = json.load(open(os.path.join(out, "baseline.json")))
rows = {m: json.load(open(os.path.join(out, m, "val.json"))) for m in models}
names = next(iter(rows.values())).get("class_names") or [str(i) for i in range(len(base["class_IoU"]))]
title = {"pspnet": "PSPNet", "danet": "DANet", "psanet": "PSANet", "pointrend": "PointRend"}
fmt = lambda v: "n/a" if v is None or v != v else f"{v:.3f}"
print("| class | " + " | ".join(title.get(m, m) for m in models) + " | per-pixel baseline |")
print("|---" * (len(models) + 2) + "|")
for i, n in enumerate(names):
    print(f"| {n} | " + " | ".join(fmt(rows[m]["class_IoU"][i]) for m in models) + f" | {fmt(base['class_IoU'][i])} |")
for k in ("mIoU", "Acc", "Kappa"):
    print(f"| **{k}** | " + " | ".join(fmt(rows[m][k]) for m in models) + f" | {fmt(base[k])} |")
secs = [open(os.path.join(out, m, "train_seconds")).read().strip() for m in models]
print(f"| train time (s, {machine}) | " + " | ".join(secs) + " | - |")
PY
cat "$OUT/table.md"
if [ "$readme" = 1 ]; then
  python scripts/readme_table.py README.md learning_check "$OUT/table.md" \
      --command "bash scripts/learning_check.sh" --commit "$commit"
fi
