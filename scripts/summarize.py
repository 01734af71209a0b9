"""Print the quick-start figures: mIoU (plain / aug), per-class IoU, baseline, where the pictures are."""

import json
import os
import sys


def main(out, train_seconds, model="model"):
    def load(name):
        with open(os.path.join(out, name)) as f:
            return json.load(f)

    plain, aug, base = load("val_plain.json"), load("val_aug.json"), load("baseline.json")
    names = plain.get("class_names") or [str(i) for i in range(len(plain["class_IoU"]))]
    print(f"Training time: {int(train_seconds) // 60} min {int(train_seconds) % 60} s")
    best_state = os.path.join(out, "best_model", "state.json")
    if os.path.isfile(best_state):
        best = load(os.path.join("best_model", "state.json"))["best"]
        last = max((int(n[5:]) for n in os.listdir(out) if n.startswith("iter_") and n[5:].isdigit()), default=0)
        stopped = (((load(f"iter_{last}/state.json").get("hooks") or {}).get("early_stop") or {}).get("stopped")
                   if last else None)
        print(f"best_model: iter {best['iter']} (val mIoU {best['mIoU']:.4f}); "
              + (f"stopped early at iter {last}: {stopped}" if stopped else f"trained to iter {last}"))
    print(f"{'class':<12} {'val pixels':>10} {model:>8} {'+aug':>8} {'pixel baseline':>15}")
    for i, n in enumerate(names):
        cells = [plain["class_IoU"][i], aug["class_IoU"][i], base["class_IoU"][i]]
        fmt = ["     n/a" if c is None or c != c else f"{c:8.4f}" for c in cells]
        print(f"{n:<12} {plain['class_pixels'][i]:>10d} {fmt[0]} {fmt[1]} {fmt[2]:>15}")
    print(f"{'mIoU':<12} {'':>10} {plain['mIoU']:8.4f} {aug['mIoU']:8.4f} {base['mIoU']:15.4f}")
    print(f"{'Acc':<12} {'':>10} {plain['Acc']:8.4f} {aug['Acc']:8.4f} {base['Acc']:15.4f}")
    print("Pictures:")
    for sub in ("predict_scene/added_prediction", "predict_scene/pseudo_color_prediction",
                "predict_val/added_prediction", "deploy_scene"):
        print("  " + os.path.join(out, sub))
    print("Training curves: visualdl --logdir " + os.path.join(out, "vdl_log"))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), *sys.argv[3:4])
