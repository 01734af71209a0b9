#!/usr/bin/env bash
# TIPC basic chain: train -> eval -> export -> Paddle Inference (CPU; with and without MKLDNN,
# each thread count), as PaddleSeg's test_tipc does, driven by a train_infer_python.txt.
#
#   bash test_tipc/prepare.sh                 test_tipc/configs/pspnet/train_infer_python.txt lite_train_lite_infer
#   bash test_tipc/test_train_inference_python.sh test_tipc/configs/pspnet/train_infer_python.txt lite_train_lite_infer
#
# Results: test_tipc/output/<model_name>/<MODE>/results_python.log, one line per step:
#   "Run successfully with command - <model> - <command> - <step log> - <seconds>s"  or  "Run failed ...".
# Exit status: 0 when every step succeeded, 1 otherwise.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
source test_tipc/common_func.sh

if [ $# -lt 2 ]; then
    echo "usage: bash test_tipc/test_train_inference_python.sh CONFIG_TXT MODE   (MODE: ${TIPC_MODES// / | })" >&2
    exit 2
fi
FILENAME="$1"
MODE="$2"
if [ ! -f "$FILENAME" ]; then echo "[TIPC] no such config: $FILENAME" >&2; exit 2; fi
case " $TIPC_MODES " in *" $MODE "*) ;; *) echo "[TIPC] unknown mode '$MODE' (${TIPC_MODES// / | })" >&2; exit 2;; esac

get() { func_section_value "$FILENAME" "$1" "$2"; }
get_mode() { func_mode_value "$(get "$1" "$2")" "$MODE"; }

# ---- train_params
model_name=$(get train_params model_name)
python=$(get train_params python); func_is_null "$python" && python=python
func_check_python "$python" "[TIPC]" || exit 2
train_device=$(get_mode train_params --device); func_is_null "$train_device" && train_device=cpu
iters=$(get_mode train_params --iters)
batch_size=$(get_mode train_params --batch_size)
save_interval=$(get_mode train_params --save_interval)
dataset_root=$(get_mode train_params dataset_root)
train_model_name=$(get train_params train_model_name)
trainer=$(get train_params trainer); func_is_null "$trainer" && trainer=norm
train_cmd=$(get train_params "${trainer}_train")
# ---- eval_params
eval_cmd=$(get eval_params eval)
# ---- export_params
export_cmd=$(get export_params "${trainer}_export")
# ---- infer_params
infer_model=$(get_mode infer_params infer_model)
infer_export=$(get infer_params infer_export)
inference=$(get infer_params inference)
infer_devices=$(get infer_params --device)
mkldnn_list=$(get infer_params --enable_mkldnn)
threads_list=$(get infer_params --cpu_threads)
infer_bs_list=$(get infer_params --batch_size)
trt_list=$(get infer_params --use_trt)
precision_list=$(get infer_params --precision)
image_path=$(get_mode infer_params --image_path)
benchmark=$(get infer_params --benchmark)
save_log_name=$(get infer_params --save_log_path)

LOG_PATH="${TIPC_OUTPUT_DIR:-test_tipc/output}/${model_name}/${MODE}"   # TIPC_OUTPUT_DIR: another root
rm -rf "$LOG_PATH"
mkdir -p "$LOG_PATH"
RESULTS="$LOG_PATH/results_python.log"
: > "$RESULTS"
echo "[TIPC] $model_name $MODE -> $RESULTS"
chain_start=$(date +%s)

data_opts=""
if ! func_is_null "$dataset_root"; then
    if [ ! -f "$dataset_root/val.txt" ]; then
        echo "[TIPC] $dataset_root/val.txt is missing: run bash test_tipc/prepare.sh $FILENAME $MODE first" >&2
        exit 2
    fi
    data_opts="--opts train_dataset.dataset_root=${dataset_root} val_dataset.dataset_root=${dataset_root}"
fi
export_dir="$LOG_PATH/inference_model"

if [ "$MODE" != "whole_infer" ]; then
    # ---- train
    save_dir="$LOG_PATH/${trainer}_train_gpus_-1"
    cmd="${python} ${train_cmd} --save_dir ${save_dir} --device ${train_device} $(func_set_params --iters "$iters") \
$(func_set_params --batch_size "$batch_size") $(func_set_params --save_interval "$save_interval") ${data_opts}"
    run_step train "$cmd" "$LOG_PATH/train.log" "$RESULTS" "$model_name"
    model_path="${save_dir}/${train_model_name}"
    # ---- eval
    if ! func_is_null "$eval_cmd"; then
        val_opts=""
        func_is_null "$dataset_root" || val_opts="--opts val_dataset.dataset_root=${dataset_root}"
        cmd="${python} ${eval_cmd} --model_path ${model_path} --device ${train_device} --save_json ${LOG_PATH}/eval.json ${val_opts}"
        run_step eval "$cmd" "$LOG_PATH/eval.log" "$RESULTS" "$model_name"
    fi
    # ---- export
    cmd="${python} ${export_cmd} --model_path ${model_path} --save_dir ${export_dir}"
    run_step export "$cmd" "$LOG_PATH/export.log" "$RESULTS" "$model_name"
else
    # ---- export the given weights (infer_model); none offline: random weights exercise the chain
    if func_is_null "$infer_model"; then
        echo "[TIPC] infer_model is null: exporting with random weights (the chain, not the accuracy, is tested)"
        cmd="${python} ${infer_export} --save_dir ${export_dir}"
    else
        cmd="${python} ${infer_export} --model_path ${infer_model} --save_dir ${export_dir}"
    fi
    run_step export "$cmd" "$LOG_PATH/export.log" "$RESULTS" "$model_name"
fi

# ---- inference
IFS='|' read -r -a devices <<< "$infer_devices"
IFS='|' read -r -a mkldnns <<< "$mkldnn_list"
IFS='|' read -r -a threads <<< "$threads_list"
IFS='|' read -r -a batch_sizes <<< "$infer_bs_list"
IFS='|' read -r -a trts <<< "$trt_list"
IFS='|' read -r -a precisions <<< "$precision_list"
for device in "${devices[@]}"; do
    if [ "$device" = "gpu" ]; then
        if ! "$python" -c "import paddle, sys; sys.exit(0 if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else 1)" 2> /dev/null; then
            echo "[TIPC] skipping --device gpu: no CUDA build of Paddle or no GPU here"
            continue
        fi
        for use_trt in "${trts[@]}"; do
            for precision in "${precisions[@]}"; do
                if [ "$use_trt" != "True" ] && [ "$precision" != "fp32" ]; then continue; fi
                for bs in "${batch_sizes[@]}"; do
                    tag="gpu_usetrt_${use_trt}_precision_${precision}_batchsize_${bs}"
                    bench=""
                    func_is_null "$save_log_name" || bench="--save_log_path ${LOG_PATH}/${save_log_name}"
                    cmd="${python} ${inference} --config ${export_dir}/deploy.yaml --image_path ${image_path} \
--device gpu --use_trt ${use_trt} --precision ${precision} --batch_size ${bs} \
$(func_set_params --benchmark "$benchmark") ${bench} --save_dir ${LOG_PATH}/infer_result_${tag}"
                    run_step "infer $tag" "$cmd" "$LOG_PATH/python_infer_${tag}.log" "$RESULTS" "$model_name"
                done
            done
        done
    else
        for use_mkldnn in "${mkldnns[@]}"; do
            for t in "${threads[@]}"; do
                for bs in "${batch_sizes[@]}"; do
                    tag="cpu_usemkldnn_${use_mkldnn}_threads_${t}_precision_fp32_batchsize_${bs}"
                    bench=""
                    func_is_null "$save_log_name" || bench="--save_log_path ${LOG_PATH}/${save_log_name}"
                    cmd="${python} ${inference} --config ${export_dir}/deploy.yaml --image_path ${image_path} \
--device cpu --enable_mkldnn ${use_mkldnn} --cpu_threads ${t} --batch_size ${bs} \
$(func_set_params --benchmark "$benchmark") ${bench} --save_dir ${LOG_PATH}/infer_result_${tag}"
                    run_step "infer $tag" "$cmd" "$LOG_PATH/python_infer_${tag}.log" "$RESULTS" "$model_name"
                done
            done
        done
    fi
done

elapsed=$(( $(date +%s) - chain_start ))
echo "[TIPC] $model_name $MODE: $TIPC_PASSED step(s) succeeded, $TIPC_FAILED failed in ${elapsed}s; see $RESULTS"
[ "$TIPC_FAILED" -eq 0 ]
