#!/usr/bin/env bash
# Learning check: train each model's demo config on each demo scene, evaluate it on the
# spatially disjoint validation half, and compare with the per-pixel baseline on the same bands.
# Usage: bash scripts/learning_check.sh [model ...]
#   models: default all four (pspnet danet psanet pointrend)
#   SCENES="landcover6 roads" (default both): landcover6 = six Landsat bands, configs/landcover6/;
#          roads = one panchromatic band, configs/roads/
#   OUT=output/learning_check; per scene $OUT/<scene>/table.md
# With the default model set (or README=1) each scene's table also goes into README.md between
# <!-- BEGIN learning_check_<scene> --> and <!-- END learning_check_<scene> --> (README=0: never).
#   EARLY_STOP=N: evaluate every 100 iterations, stop after N evaluations without a better val mIoU
#   and score best_model (a quick look: that model is chosen on the same validation half the table
#   scores, so its numbers are optimistic; never written into README.md). Default: off, the full
#   schedule and its last iteration, as the README tables report.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source scripts/demo_data.sh
OUT="${OUT:-output/learning_check}"
read -r -a scenes <<< "${SCENES:-landcover6 roads}"
models=("$@")
readme="${README:-}"
if [ ${#models[@]} -eq 0 ]; then models=(pspnet danet psanet pointrend); readme="${readme:-1}"; fi
early=()
if [ "${EARLY_STOP:-0}" != 0 ]; then early=(--do_eval --save_interval 100 --early_stop_patience "$EARLY_STOP"); readme=0; fi

one_config() {   # the single ResNet config of model $1 in configs/$2/ (pretrained_check.sh runs the others)
  local found=(configs/"$2"/"$1"_resnet*.yml)
  if [ ${#found[@]} -ne 1 ] || [ ! -f "${found[0]}" ]; then
    echo "learning_check: expected one configs/$2/$1_resnet*.yml, found: ${found[*]}" >&2; exit 2
  fi
  echo "${found[0]}"
}

for scene in "${scenes[@]}"; do
  if [ ! -d "configs/$scene" ]; then
    echo "learning_check: unknown scene '$scene' (landcover6, roads: the folders under configs/)" >&2; exit 2
  fi
  prepare_demo_data "data/$scene"
  # the code this scene's runs use (read per scene: a long run may span commits)
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  git diff --quiet HEAD -- . ':!README.md' 2>/dev/null || commit="$commit+local changes"  # README: our output
  dir="$OUT/$scene"
  mkdir -p "$dir"
  load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
  for m in "${models[@]}"; do
    cfg="$(one_config "$m" "$scene")"
    echo "== $scene / $m: $cfg"
    start=$(date +%s)
    python tools/train.py --config "$cfg" --save_dir "$dir/$m" --save_interval 100000 --log_iters 100 --seed 0 \
        "${early[@]}"
    echo "$(( $(date +%s) - start ))" > "$dir/$m/train_seconds"
    iters="$(config_value "$cfg" "d['iters']")"
    scored="$dir/$m/iter_$iters"; [ ${#early[@]} -eq 0 ] || scored="$dir/$m/best_model"
    python tools/val.py --config "$cfg" --model_path "$scored" --save_json "$dir/$m/val.json"
  done
  for p in data uniform; do   # both: data priors score best on mIoU, uniform ones on rare classes
    python tools/pixel_baseline.py --config "$cfg" --priors "$p" --save_json "$dir/baseline_$p.json"
  done
  python scripts/learning_table.py "$dir" "$(nproc) cores, load $load at start" "${models[@]}" > "$dir/table.md"
  echo "== $scene"
  cat "$dir/table.md"
  if [ "$readme" = 1 ]; then
    python scripts/readme_table.py README.md "learning_check_$scene" "$dir/table.md" \
        --command "bash scripts/learning_check.sh" --commit "$commit"
  fi
done
