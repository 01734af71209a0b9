#!/usr/bin/env bash
# The numerics-sensitive tests on every CPU path a user can have here: MKL's dispatch as the
# package sets it and off, Winograd 3x3 convolutions on and off, one and two threads.
#   bash scripts/numerics_matrix.sh [pytest args]
# Paths this machine cannot reach (AVX-512 only kernels on a CPU without them, another vendor's
# MKL code path) are not emulated: run it on such a machine too.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh" >/dev/null
cd "$ROOT"
TESTS=(tests/test_tolerance.py tests/test_winograd.py tests/test_strip_conv.py tests/test_split_convs.py
       tests/test_fold_bn.py tests/test_export_parity.py tests/test_psanet.py tests/test_psa_attention.py
       tests/test_psa_mask.py tests/test_danet.py tests/test_pointrend.py tests/test_pspnet.py
       tests/test_eval_predict_export.py tests/test_efficientnet_lite.py tests/test_deploy.py
       tests/test_psanet_paddle_adapter.py tests/test_peer_psanet.py tests/test_checkpoint_adapters.py
       tests/test_rewrites.py tests/test_cuda_emulation.py tests/test_scene.py)
grep -m1 'model name' /proc/cpuinfo
status=0
for dispatch in 1 0; do
  for winograd in 1 0; do
    for threads in 1 2; do
      label="PADDLESEG_EXT_MKL_DISPATCH=$dispatch PADDLESEG_EXT_WINOGRAD=$winograd PADDLESEG_EXT_TEST_THREADS=$threads"
      line=$(env PADDLESEG_EXT_MKL_DISPATCH=$dispatch PADDLESEG_EXT_WINOGRAD=$winograd \
                 PADDLESEG_EXT_TEST_THREADS=$threads \
             python -m pytest -q -p no:cacheprovider "${TESTS[@]}" "$@" 2>&1 | tee /tmp/numerics_matrix.log | tail -n 1)
      echo "$label: $line"
      case "$line" in *failed*|*error*) status=1; grep -E '^(FAILED|ERROR)' /tmp/numerics_matrix.log ;; esac
    done
  done
done
exit $status
