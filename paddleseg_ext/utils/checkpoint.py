"""Former home of the checkpoint functions, kept so existing imports work.

Training checkpoints are :mod:`paddleseg_ext.checkpoints.training`; reading
model weights is :mod:`paddleseg_ext.checkpoints.weights`.
"""

from paddleseg_ext.checkpoints.training import (  # noqa: F401
    COMPLETE_MARK, FILES_KEY, is_complete, latest_checkpoint, list_checkpoints, load_checkpoint,
    prune_checkpoints, recover, save_checkpoint)
from paddleseg_ext.checkpoints.weights import load_model_weights, read_model_weights  # noqa: F401
