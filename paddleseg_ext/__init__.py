"""paddleseg_ext: a config-driven semantic-segmentation toolkit on PaddlePaddle."""

__version__ = "0.1.0"

# Importing the component packages registers every component in its registry.
from . import cvlibs  # noqa: F401
from . import models, datasets, transforms, optimizers  # noqa: F401,E402
