"""Per-pixel classifier baseline: what colour alone gets, with no spatial context.

A Gaussian (quadratic discriminant) classifier: one full-covariance Gaussian
per class over the pixel's channel values, with class priors, fitted on the
training tiles and scored on the val tiles with the toolkit's own metrics. A
segmentation network must clearly beat it to show it uses spatial context.

    python tools/pixel_baseline.py --config configs/quick_start/pspnet_resnet18_os8_landcover_64x64_400.yml
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_ext.cvlibs import Config, SegBuilder  # noqa: E402
from paddleseg_ext.transforms.loading import read_image  # noqa: E402
from paddleseg_ext.utils.metrics import ConfusionMatrix, format_table  # noqa: E402


def pixels(dataset):
    """All (channel values, label) pairs of a dataset's files, raw (no augmentation)."""
    xs, ys = [], []
    for img_path, label_path in dataset.file_list:
        img = read_image(img_path, img_channels=dataset.img_channels).astype(np.float64)
        xs.append(img.reshape(-1, img.shape[-1]))
        ys.append(dataset.load_label(label_path).reshape(-1).astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


PRIORS = ("data", "uniform")


class GaussianPixelClassifier:
    """Quadratic discriminant analysis on pixel values (classes without pixels are never predicted).

    Args:
        priors: ``data`` (class shares of the training pixels: best accuracy) or
            ``uniform`` (equal priors: a rare class such as roads, 3 % of the
            pixels, is then predicted at all, which the data priors never do).
    """

    def __init__(self, priors: str = "data") -> None:
        if priors not in PRIORS:
            raise ValueError(f"priors must be one of {list(PRIORS)}, got {priors!r}")
        self.priors = priors

    def fit(self, x: np.ndarray, y: np.ndarray, num_classes: int, ignore_index: int) -> "GaussianPixelClassifier":
        keep = y != ignore_index
        x, y = x[keep], y[keep]
        d = x.shape[1]
        self.params = []
        for c in range(num_classes):
            xc = x[y == c]
            if len(xc) < d + 1:
                self.params.append(None)
                continue
            cov = np.cov(xc, rowvar=False) + 1e-3 * np.eye(d)
            inv = np.linalg.inv(cov)
            logdet = np.linalg.slogdet(cov)[1]
            logprior = np.log(len(xc) / len(x)) if self.priors == "data" else 0.0
            self.params.append((xc.mean(0), inv, logdet, logprior))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        scores = np.full((len(x), len(self.params)), -np.inf)
        for c, p in enumerate(self.params):
            if p is None:
                continue
            mean, inv, logdet, logprior = p
            diff = x - mean
            scores[:, c] = -0.5 * np.einsum("nd,de,ne->n", diff, inv, diff) - 0.5 * logdet + logprior
        return scores.argmax(1)


def main(argv=None):
    p = argparse.ArgumentParser(description="Per-pixel Gaussian classifier baseline")
    p.add_argument("--config", required=True, help="a config whose train/val datasets to use")
    p.add_argument("--save_json", help="write the metrics here")
    p.add_argument("--priors", default="data", choices=PRIORS,
                   help="class priors: data (training shares) or uniform (for rare classes such as roads)")
    args = p.parse_args(argv)
    b = SegBuilder(Config(args.config))
    train, val = b.train_dataset, b.val_dataset
    x, y = pixels(train)
    clf = GaussianPixelClassifier(args.priors).fit(x, y, train.num_classes, train.ignore_index)
    cm = ConfusionMatrix(val.num_classes, val.ignore_index)
    vx, vy = pixels(val)
    cm.update(clf.predict(vx), vy)
    m = cm.compute()
    print("[BASELINE] per-pixel Gaussian classifier (%s priors, %d bands) on %d val tiles"
          % (args.priors, x.shape[1], len(val)))
    print(format_table(m, getattr(val, "class_names", None)))
    if args.save_json:
        with open(args.save_json, "w") as f:
            json.dump(m, f, indent=1)
    return m


if __name__ == "__main__":
    main()
