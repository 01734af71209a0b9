"""Checkpoints and weights: writing and reading them safely, converting other toolkits'.

* ``training``: training checkpoints (``iter_N/`` folders with model,
  optimizer, RNG and loop state), written atomically, resumed, pruned.
* ``weights``: a model's weights alone for eval / predict / export
  (``--model_path``: a ``.pdparams`` file or a checkpoint folder).
* ``safe_load``: unpickling restricted to what weights files hold.
* ``adapters``: one small module per (toolkit, model) that recognises a peer's
  whole-model checkpoint layout from its keys and converts it exactly into
  this toolkit's layout (renames, conv biases folded into the following
  BatchNorm's running mean). See :mod:`paddleseg_ext.checkpoints.adapters`.
"""
