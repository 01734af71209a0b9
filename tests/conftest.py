import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def pytest_configure(config):
    """``PADDLESEG_EXT_TEST_THREADS=N`` runs the CPU kernels on N threads (Paddle's default is
    one): the summation order of MKL's and the compiled ops' kernels depends on it, and the
    tolerances of tests/tolerance.py must hold for every count (scripts/numerics_matrix.sh)."""
    n = os.environ.get("PADDLESEG_EXT_TEST_THREADS")
    if n:
        from paddleseg_ext.utils.logger import set_threads

        set_threads(int(n))


@pytest.fixture(autouse=True)
def _seed():
    import random

    import numpy as np
    import paddle

    random.seed(0)
    np.random.seed(0)
    paddle.seed(0)
    paddle.set_device("cpu")
    yield
