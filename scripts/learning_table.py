"""The learning-check table (Markdown) from the results scripts/learning_check.sh wrote.

    python scripts/learning_table.py OUT "MACHINE NOTE" MODEL [MODEL ...] > table.md

Reads ``OUT/<model>/val.json``, ``OUT/<model>/train_seconds`` and the per-pixel baselines
``OUT/baseline_<priors>.json`` (``tools/pixel_baseline.py --priors data|uniform``); prints one
column per model plus one per baseline: per-class IoU, mIoU, Acc, Kappa and the training time.
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

    priors = sorted(f[len("baseline_"):-len(".json")] for f in os.listdir(out)
                    if f.startswith("baseline_") and f.endswith(".json"))
    if not priors:
        raise SystemExit(f"learning_table: no {out}/baseline_<priors>.json (tools/pixel_baseline.py --save_json)")
    bases = [json.loads(load(f"baseline_{p}.json")) for p in priors]
    rows = {m: json.loads(load(m, "val.json")) for m in models}
    names = rows[models[0]].get("class_names") or [str(i) for i in range(len(bases[0]["class_IoU"]))]
    lines = ["| class IoU | " + " | ".join(TITLES.get(m, m) for m in models) + " | "
             + " | ".join(f"per-pixel, {p} priors" for p in priors) + " |",
             "|---" * (len(models) + len(priors) + 1) + "|"]
    cols = [rows[m] for m in models] + bases
    for i, n in enumerate(names):
        lines.append(f"| {n} | " + " | ".join(fmt(r["class_IoU"][i]) for r in cols) + " |")
    for k in ("mIoU", "Acc", "Kappa"):
        lines.append(f"| **{k}** | " + " | ".join(fmt(r[k]) for r in cols) + " |")
    secs = [load(m, "train_seconds").strip() for m in models]
    lines.append(f"| train time (s, {machine}) | " + " | ".join(secs + ["-"] * len(priors)) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    sys.stdout.write(table(sys.argv[1], sys.argv[2], sys.argv[3:]))
