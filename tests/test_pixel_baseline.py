"""tools/pixel_baseline.py: the per-pixel Gaussian classifier on any band count, and its priors."""

import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("pixel_baseline", os.path.join(ROOT, "tools", "pixel_baseline.py"))
PB = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(PB)


@pytest.mark.parametrize("bands", [1, 6])
def test_separable_classes_are_learned_on_any_band_count(bands):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    x = rng.normal(size=(3000, bands)) + 10.0 * y[:, None]
    y[:10] = 255  # ignored pixels take no part in the fit
    clf = PB.GaussianPixelClassifier().fit(x, y, num_classes=3, ignore_index=255)
    assert (clf.predict(x[10:]) == y[10:]).mean() > 0.99


def test_uniform_priors_predict_a_rare_overlapping_class():
    """A 3 % class that overlaps the background: data priors hardly predict it, uniform priors do."""
    rng = np.random.default_rng(1)
    y = (rng.random(20000) < 0.03).astype(np.int64)
    x = rng.normal(size=(20000, 1)) + 1.5 * y[:, None]
    data = PB.GaussianPixelClassifier("data").fit(x, y, 2, 255).predict(x)
    uniform = PB.GaussianPixelClassifier("uniform").fit(x, y, 2, 255).predict(x)
    assert (data[y == 1] == 1).mean() < 0.1
    assert (uniform[y == 1] == 1).mean() > 0.5


def test_unknown_priors():
    with pytest.raises(ValueError, match="priors must be one of"):
        PB.GaussianPixelClassifier("flat")
