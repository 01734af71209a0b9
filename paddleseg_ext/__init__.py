"""paddleseg_ext: a config-driven semantic-segmentation toolkit on PaddlePaddle."""

__version__ = "0.1.0"

# Before paddle is first imported: one harmless import-time warning (utils/quiet.py).
from .utils.quiet import ignore_import_warnings as _ignore_import_warnings  # noqa: E402

_ignore_import_warnings()

# Before anything calls into MKL: its AVX2 kernels on AMD CPUs (about 4x faster
# convolutions on the development machine; see utils/mkl_dispatch.py).
from .utils import mkl_dispatch as _mkl_dispatch  # noqa: E402

_mkl_dispatch.apply()

# Importing the component packages registers every component in its registry.
from . import cvlibs  # noqa: F401
from . import models, datasets, transforms, optimizers  # noqa: F401,E402
