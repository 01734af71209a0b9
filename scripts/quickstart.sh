#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone:
#   set-up -> land-cover tiles -> train PSPNet -> evaluate (with --aug_eval) -> per-pixel baseline
#   -> predict (colour maps + overlays) -> export -> Paddle Inference deployment -> summary.
# Usage: bash scripts/quickstart.sh [config]   (env: OUT=output/quickstart, ITERS=<override iters>)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
CONFIG="${1:-configs/quick_start/pspnet_resnet18_os8_landcover_64x64_400.yml}"
OUT="${OUT:-output/quickstart}"
DATA=data/landcover
mkdir -p "$OUT"

echo "== 1/7 preparing the land-cover tiles in $DATA"
python tools/data/prepare_landcover.py --out "$DATA"

echo "== 2/7 training $CONFIG"
start=$(date +%s)
python tools/train.py --config "$CONFIG" --save_dir "$OUT" --do_eval --use_vdl ${ITERS:+--iters "$ITERS"} \
    --save_interval 250 --log_iters 50 --keep_checkpoint_max 2 --seed 0
train_s=$(( $(date +%s) - start ))

echo "== 3/7 evaluating best_model with multi-scale + flip (--aug_eval)"
python tools/val.py --config "$CONFIG" --model_path "$OUT/best_model" --save_json "$OUT/val_plain.json"
python tools/val.py --config "$CONFIG" --model_path "$OUT/best_model" --aug_eval \
    --scales 0.75 1.0 1.25 --flip_horizontal --flip_vertical --save_json "$OUT/val_aug.json"

echo "== 4/7 per-pixel classifier baseline (colour only, no spatial context)"
python tools/pixel_baseline.py --config "$CONFIG" --save_json "$OUT/baseline.json"

echo "== 5/7 predicting the val tiles and the whole scene"
python tools/predict.py --config "$CONFIG" --model_path "$OUT/best_model" \
    --image_path "$DATA/val.txt" --save_dir "$OUT/predict_val"
python tools/predict.py --config "$CONFIG" --model_path "$OUT/best_model" \
    --image_path "$DATA/scene/scene_rgb.png" --save_dir "$OUT/predict_scene"

echo "== 6/7 exporting and running Paddle Inference"
python tools/export.py --config "$CONFIG" --model_path "$OUT/best_model" --save_dir "$OUT/inference_model"
python deploy/python/infer.py --config "$OUT/inference_model/deploy.yaml" \
    --image_path "$DATA/scene/scene_rgb.png" --save_dir "$OUT/deploy_scene" --benchmark

echo "== 7/7 summary"
python scripts/summarize.py "$OUT" "$train_s"
echo "The README's other commands run in a shell with the environment active: source ${VENV#"$ROOT/"}/bin/activate"
