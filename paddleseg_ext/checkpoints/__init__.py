"""Reading weights files safely and converting other toolkits' checkpoints.

* ``adapters``: one small module per (toolkit, model) that recognises a peer's
  whole-model checkpoint layout from its keys and converts it exactly into
  this toolkit's layout (renames, conv biases folded into the following
  BatchNorm's running mean). See :mod:`paddleseg_ext.checkpoints.adapters`.
"""
