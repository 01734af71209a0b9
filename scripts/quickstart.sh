#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone:
#   set-up -> six-band land-cover scene -> train PointRend -> evaluate (with --aug_eval) -> per-pixel baseline
#   -> predict (colour maps + overlays) -> export -> Paddle Inference deployment -> summary.
# Usage: bash scripts/quickstart.sh [config]   (env: OUT=output/quickstart, ITERS=<override iters>,
#        PATIENCE=<early stopping patience in evaluations, default 2; 0: train all iters>)
# Training evaluates every 100 iterations a moving average of the weights (--ema_decay) and stops
# early when its val mIoU has not improved for PATIENCE evaluations (README.md, "The quick start's
# curve"); best_model (that average at its best evaluation) is the model used after.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# The best model of the learning check on the six-band land-cover scene (README.md).
CONFIG="${1:-configs/landcover6/pointrend_resnet18_landcover6band_64x64_1500.yml}"
OUT="${OUT:-output/quickstart}"
source "$ROOT/scripts/demo_data.sh"
read -r DATA MODEL_TYPE < <(config_value "$CONFIG" "d['val_dataset']['dataset_root'], d['model']['type']")
mkdir -p "$OUT"

echo "== 1/7 preparing the demo data in $DATA"
prepare_demo_data "$DATA"

echo "== 2/7 training $CONFIG"
start=$(date +%s)
python tools/train.py --config "$CONFIG" --save_dir "$OUT" --do_eval --use_vdl ${ITERS:+--iters "$ITERS"} \
    --save_interval 100 --log_iters 50 --keep_checkpoint_max 2 --seed 0 --ema_decay 0.99 \
    --early_stop_patience "${PATIENCE:-2}" "${BANDS[@]/--overlay_bands/--vdl_bands}"
train_s=$(( $(date +%s) - start ))

echo "== 3/7 evaluating best_model with multi-scale + flip (--aug_eval)"
python tools/val.py --config "$CONFIG" --model_path "$OUT/best_model" --save_json "$OUT/val_plain.json"
python tools/val.py --config "$CONFIG" --model_path "$OUT/best_model" --aug_eval \
    --scales 0.75 1.0 1.25 --flip_horizontal --flip_vertical --save_json "$OUT/val_aug.json"

echo "== 4/7 per-pixel classifier baseline (colour only, no spatial context)"
python tools/pixel_baseline.py --config "$CONFIG" --save_json "$OUT/baseline.json"

echo "== 5/7 predicting the val tiles and the whole scene"
python tools/predict.py --config "$CONFIG" --model_path "$OUT/best_model" \
    --image_path "$DATA/val.txt" --save_dir "$OUT/predict_val" "${BANDS[@]}"
python tools/predict.py --config "$CONFIG" --model_path "$OUT/best_model" \
    --image_path "$SCENE" --save_dir "$OUT/predict_scene" "${BANDS[@]}"

echo "== 6/7 exporting and running Paddle Inference"
python tools/export.py --config "$CONFIG" --model_path "$OUT/best_model" --save_dir "$OUT/inference_model"
python deploy/python/infer.py --config "$OUT/inference_model/deploy.yaml" \
    --image_path "$SCENE" --save_dir "$OUT/deploy_scene" --benchmark

echo "== 7/7 summary"
python scripts/summarize.py "$OUT" "$train_s" "$MODEL_TYPE"
echo "The README's other commands run in a shell with the environment active: source ${VENV#"$ROOT/"}/bin/activate"
