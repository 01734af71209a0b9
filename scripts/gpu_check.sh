#!/usr/bin/env bash
# GPU check, for a machine with a CUDA device, nvcc and Paddle's GPU build (README.md, "GPU"):
#   1. builds the compiled ops with their CUDA kernels;
#   2. runs the op tests on the GPU against the CPU ops (tests/test_gpu_ops.py);
#   3. trains each model's quick-start config for a few iterations on the GPU, without and
#      with AMP (fp16, O1).
# One PASS/FAIL line per step; logs under --out. Exit status 0 only if every step passed,
# 1 if a step failed, 2 on a bad argument, 3 where it cannot run (no GPU build, device or nvcc).
# Runs in the active virtual environment, else sets up .venv as quickstart.sh does
# (PADDLESEG_EXT_VENV, PADDLE_PKG and PADDLE_INDEX_URL as there).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ALL_MODELS=(pspnet danet psanet pointrend)

usage() {
  cat <<EOF
Usage: bash scripts/gpu_check.sh [--models "pspnet danet psanet pointrend"] [--iters N]
                                 [--out DIR] [--skip-train] [--skip-tests]
  --models      models to train (default: all four, configs/quick_start/<model>_*.yml)
  --iters       training iterations per run (default 20)
  --out         logs and checkpoints (default output/gpu_check)
  --skip-train  only build the ops and run the op tests
  --skip-tests  only build the ops and train
EOF
}

fail_usage() { echo "gpu_check: $1" >&2; usage >&2; exit 2; }

models=("${ALL_MODELS[@]}")
iters=20
out=output/gpu_check
train=1
tests=1
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --models)
      [ $# -ge 2 ] || fail_usage "--models needs a value"
      read -r -a models <<< "$2"
      [ ${#models[@]} -gt 0 ] || fail_usage "--models needs at least one model"
      for m in "${models[@]}"; do
        case " ${ALL_MODELS[*]} " in *" $m "*) ;;
          *) fail_usage "unknown model '$m' in --models (allowed: ${ALL_MODELS[*]})" ;; esac
      done
      shift 2 ;;
    --iters)
      [ $# -ge 2 ] || fail_usage "--iters needs a value"
      [[ "$2" =~ ^[1-9][0-9]*$ ]] || fail_usage "--iters must be a positive integer, got '$2'"
      iters="$2"; shift 2 ;;
    --out)
      [ $# -ge 2 ] && [ -n "$2" ] || fail_usage "--out needs a directory"
      out="$2"; shift 2 ;;
    --skip-train) train=0; shift ;;
    --skip-tests) tests=0; shift ;;
    *) fail_usage "unknown argument '$1'" ;;
  esac
done

cd "$ROOT"
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
  export PATH="$VIRTUAL_ENV/bin:$PATH"
else
  source "$ROOT/scripts/setup_env.sh"
fi

refuse() { echo "gpu_check: cannot run here: $1" >&2; exit 3; }
paddle_info="$(python -c 'import paddle
print(paddle.__version__, int(paddle.is_compiled_with_cuda()),
      paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0)' 2>/dev/null)" \
  || refuse "python cannot import paddle (activate the environment with Paddle's GPU build)"
read -r version cuda_build devices <<< "$paddle_info"
[ "$cuda_build" = 1 ] || refuse "Paddle $version in $(command -v python) is a CPU-only build.
Install Paddle's GPU build for your CUDA version (README.md, section GPU), e.g.
  PADDLESEG_EXT_VENV=.venv-gpu PADDLE_PKG=paddlepaddle-gpu==3.3.1 \\
    PADDLE_INDEX_URL=https://www.paddlepaddle.org.cn/packages/stable/cu126/ bash scripts/gpu_check.sh"
[ "$devices" -gt 0 ] || refuse "Paddle $version is a GPU build but sees no CUDA device (CUDA_VISIBLE_DEVICES?)"
command -v nvcc >/dev/null || refuse "nvcc is not on PATH: the ops' CUDA kernels cannot be built"

mkdir -p "$out"
failed=0
step() {   # step <name> <log> <command...>: one PASS/FAIL line
  local name="$1" log="$2"; shift 2
  if "$@" >"$log" 2>&1; then
    echo "PASS  $name"
  else
    echo "FAIL  $name (log: $log)"
    failed=1
  fi
}

echo "gpu_check: Paddle $version, $devices CUDA device(s), $(nvcc --version | tail -n 1)"
step "build ops with CUDA kernels" "$out/build.log" python -m paddleseg_ext.ops.build
if [ "$tests" = 1 ]; then
  step "op tests on the GPU vs the CPU ops" "$out/op_tests.log" \
    python -m pytest tests/test_gpu_ops.py -q -rs -p no:cacheprovider
  # every test skipped (e.g. the ops built without CUDA) is not a pass
  if grep -q "skipped" "$out/op_tests.log" && ! grep -q "passed" "$out/op_tests.log"; then
    echo "FAIL  op tests ran nothing (log: $out/op_tests.log)"; failed=1
  fi
fi
if [ "$train" = 1 ]; then
  source scripts/demo_data.sh
  prepared=""
  for m in "${models[@]}"; do
    cfgs=(configs/quick_start/"$m"_resnet*.yml)
    cfg="${cfgs[0]}"
    [ -f "$cfg" ] || { echo "FAIL  train $m: no configs/quick_start/${m}_resnet*.yml"; failed=1; continue; }
    data="$(config_value "$cfg" "d['train_dataset']['dataset_root']")"
    case " $prepared " in *" $data "*) ;;
      *) prepare_demo_data "$data" >"$out/data.log" 2>&1; prepared="$prepared $data" ;; esac
    for precision in fp32 fp16; do
      label="train $m $iters iters on the GPU, ${precision/fp16/AMP fp16 O1}"
      step "$label" "$out/train_${m}_$precision.log" \
        python tools/train.py --config "$cfg" --device gpu --iters "$iters" --precision "$precision" \
          --amp_level O1 --save_dir "$out/${m}_$precision" --save_interval "$iters" \
          --log_iters 5 --seed 0 --nan_policy stop
    done
  done
fi
exit "$failed"
