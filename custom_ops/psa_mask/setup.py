"""Build the PSA mask custom op with Paddle's extension tooling.

PSANet: Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf.

Most users never run this file: ``paddleseg_ext.ops.psa_mask`` builds the op
on first use, and ``python -m paddleseg_ext.ops.build`` builds it ahead of time
into the per-user cache. Use this script to produce an installable package
instead (e.g. for a deployment image)::

    cd custom_ops/psa_mask && python setup.py install
    python -c "import paddleseg_ext_psa_mask"   # registers op 'psa_mask'

CUDA kernels are compiled when Paddle is a CUDA build and ``nvcc`` is on PATH;
otherwise the CPU-only op is built.
"""

from __future__ import annotations

import os
import shutil

import paddle
from paddle.utils.cpp_extension import CppExtension, CUDAExtension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
WITH_CUDA = bool(paddle.is_compiled_with_cuda()) and shutil.which("nvcc") is not None

sources = [os.path.join(HERE, "psa_mask.cc")]
if WITH_CUDA:
    sources.append(os.path.join(HERE, "psa_mask.cu"))

Extension = CUDAExtension if WITH_CUDA else CppExtension

setup(
    name="paddleseg_ext_psa_mask",
    ext_modules=Extension(
        sources=sources,
        include_dirs=[HERE, os.path.join(os.path.dirname(HERE), "common")],
        # Same flags as the lazy build (paddleseg_ext/ops/custom_op_build.py).
        extra_compile_args={"cxx": ["-O3", "-pthread"], "nvcc": ["-O3"]},
        extra_link_args=["-pthread"],
    ),
)
