# Sourced by scripts/quickstart.sh, learning_check.sh and pretrained_check.sh (after setup_env.sh,
# in the repository root). prepare_demo_data <data root> makes the demo scene a config reads from
# that root and sets SCENE (the whole scene image, for prediction) and BANDS (predict.py's
# overlay arguments, an array).
prepare_demo_data() {
  case "$1" in
    data/landcover6) python tools/data/prepare_landcover.py --out "$1" --bands all --split halves
                     SCENE="$1/scene/scene_bands.tif"; BANDS=(--overlay_bands 2 1 0) ;;  # true colour
    data/roads)      python tools/data/prepare_roads.py --out "$1"
                     SCENE="$1/scene/scene_image.tif"; BANDS=() ;;
    data/landcover)  python tools/data/prepare_landcover.py --out "$1"
                     SCENE="$1/scene/scene_rgb.png"; BANDS=() ;;
    *) echo "no demo data preparation known for '$1' (the data roots of configs/landcover6," \
            "configs/roads and configs/quick_start: data/landcover6, data/roads, data/landcover)" >&2
       return 2 ;;
  esac
}

# config_value <config> <python expression over the merged dict d>: one value of a config.
config_value() {
  python -c "
import sys; sys.path.insert(0, '.')
from paddleseg_ext.cvlibs import Config; d = Config(sys.argv[1]).dic; print($2)" "$1"
}
