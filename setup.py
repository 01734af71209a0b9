"""Install the paddleseg_ext package.

Paddle itself is not a dependency: install ``paddlepaddle`` (CPU) or
``paddlepaddle-gpu`` (CUDA) yourself. The PSA mask custom op is built ahead
of time by ``python -m paddleseg_ext.ops.build`` (the README's set-up runs it).
"""

import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "requirements.txt")) as f:
    requires = [line.strip() for line in f if line.strip() and not line.startswith("#")]

setup(
    name="paddleseg_ext",
    version="0.1.0",
    description="Config-driven semantic segmentation on PaddlePaddle: PSPNet, DANet, PSANet, PointRend",
    packages=find_packages(include=["paddleseg_ext", "paddleseg_ext.*"]),
    python_requires=">=3.8",
    install_requires=requires,
    extras_require={"onnx": ["paddle2onnx>=2.1.0", "onnxruntime>=1.16"], "openvino": ["openvino>=2024.0"],
                    "test": ["pytest", "scipy"]},
)
