import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


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
