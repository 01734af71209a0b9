"""The learning-check table (Markdown) from the results scripts/learning_check.sh wrote.

    python scripts/learning_table.py OUT "MACHINE NOTE" MODEL [MODEL ...] > table.md

Reads ``OUT/<model>/val.json``, ``OUT/<model>/train_seconds`` and ``OUT/baseline.json``;
prints one column per model plus the per-pixel baseline: per-class IoU, mIoU, Acc, Kappa
and the training time.
"""

import json
import os
import sys

TITLES = {"pspnet": "PSPNet", "danet": "DANet", "psanet": "PSANet", "pointrend": "PointRend"}


def fmt(v):
    return "n/a" if v is None or v != v else f"{v:.3f}"


def table(out, machine, models):
    def load(*parts):
        with open(os.path.join(out, *parts)) as f:
            return f.read()

    base = json.loads(load("baseline.json"))
    rows = {m: json.loads(load(m, "val.json")) for m in models}
    names = rows[models[0]].get("class_names") or [str(i) for i in range(len(base["class_IoU"]))]
    lines = ["| class | " + " | ".join(TITLES.get(m, m) for m in models) + " | per-pixel baseline |",
             "|---" * (len(models) + 2) + "|"]
    for i, n in enumerate(names):
        lines.append(f"| {n} | " + " | ".join(fmt(rows[m]["class_IoU"][i]) for m in models)
                     + f" | {fmt(base['class_IoU'][i])} |")
    for k in ("mIoU", "Acc", "Kappa"):
        lines.append(f"| **{k}** | " + " | ".join(fmt(rows[m][k]) for m in models) + f" | {fmt(base[k])} |")
    secs = [load(m, "train_seconds").strip() for m in models]
    lines.append(f"| train time (s, {machine}) | " + " | ".join(secs) + " | - |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    sys.stdout.write(table(sys.argv[1], sys.argv[2], sys.argv[3:]))
