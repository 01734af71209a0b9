"""The test-time inference options: one validated object, built from the command line, a
config's ``test_config`` or an export's ``deploy.yaml``.

PaddleSeg spells these seven settings out as keyword arguments of every function that
evaluates or predicts (``aug_eval, scales, flip_horizontal, flip_vertical, is_slide,
crop_size, stride``: multi-scale + flip inference and sliding windows, PaddleSeg's
``test_config``). Here they travel as one :class:`InferOptions`; the sources differ only in
how they spell a key (``--crop_size``, ``test_config.crop_size``, ``Deploy.crop_size``),
so every source gets the same rules and the same messages (the rules of
:mod:`paddleseg_ext.cvlibs.validators`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..cvlibs.errors import ConfigError
from ..cvlibs.validators import BOOL, POSITIVE_INT, POSITIVE_NUMBER, Rule, list_of, optional, validated
from ..runtime import PSA_IMPLS

__all__ = ["InferOptions", "INFER_KEYS", "WINDOW_KEYS", "add_infer_args"]

Pair = Tuple[int, int]

#: The keys, spelled as in ``test_config`` (and as the command-line flags, ``--<key>``).
INFER_KEYS = ("aug_eval", "scales", "flip_horizontal", "flip_vertical", "is_slide", "crop_size", "stride",
              "align_corners")
#: What an export carries into deploy.yaml: the exported program is one forward pass per
#: input, so the deploy runners use the window (``--scene``) and nothing else.
WINDOW_KEYS = ("crop_size", "stride")

_SCALES_ITEMS = list_of(POSITIVE_NUMBER)
#: A positive number or a non-empty list of them; gives a tuple of floats.
SCALES = Rule("a positive number or a non-empty list of positive numbers",
              lambda v: POSITIVE_NUMBER.test(v) or _SCALES_ITEMS.test(v),
              lambda v: (float(v),) if POSITIVE_NUMBER.test(v) else tuple(float(x) for x in v), kind="list")
#: ``int`` or ``[width, height]`` of positive ints; gives a ``(w, h)`` tuple.
SIZE = Rule("a positive int or a [width, height] pair of positive ints",
            lambda v: POSITIVE_INT.test(v) or (isinstance(v, (list, tuple)) and len(v) == 2
                                               and all(POSITIVE_INT.test(x) for x in v)),
            lambda v: (v, v) if POSITIVE_INT.test(v) else (v[0], v[1]), kind="list")

_RULES: Dict[str, Rule] = {"aug_eval": BOOL, "scales": SCALES, "flip_horizontal": BOOL, "flip_vertical": BOOL,
                           "is_slide": BOOL, "crop_size": optional(SIZE), "stride": optional(SIZE),
                           "align_corners": BOOL}
# Where argparse keeps each flag (``--aug_eval`` is also ``--aug_pred``, PaddleSeg's name in predict.py).
_DEST = {"aug_eval": "aug"}
_COMMAND_LINE = "command line"


@validated(**_RULES)
@dataclass(frozen=True)
class InferOptions:
    """How images are inferred at test time (PaddleSeg's ``test_config``).

    Multi-scale + flip inference averages the softmax over every scale and flip of the
    input (as PSPNet's and DANet's papers evaluate, Zhao et al. 2017,
    https://arxiv.org/abs/1612.01105); sliding windows average the logits of overlapping
    ``crop_size`` windows moved by ``stride`` (PaddleSeg's ``slide_inference``).

    Args:
        aug_eval: multi-scale and flip inference (averaged probabilities, not logits).
        scales: input scales of ``aug_eval`` (a number or a list; kept as a tuple).
        flip_horizontal: with ``aug_eval``, also the left-right mirrored input.
        flip_vertical: with ``aug_eval``, also the upside-down input.
        is_slide: sliding-window inference; needs ``crop_size`` and ``stride``.
        crop_size: window ``(w, h)`` (an int means square). Also the window of scene
            prediction (``--scene``), whether or not ``is_slide`` is set.
        stride: step between windows ``(w, h)``.
        align_corners: resize the logits back to the image's size with corner pixels
            aligned, as mmsegmentation does for a model whose heads resize that way
            (``BaseSegmentor.postprocess_result`` uses the decode head's
            ``align_corners``: its Cityscapes 769x769 recipes); else with half-pixel
            centres, as PaddleSeg does.

    Raises:
        ValueError: a value outside its rule, or ``is_slide`` without a window and stride
            (the builders below raise :class:`~paddleseg_ext.cvlibs.ConfigError` naming the
            file or flag instead).
    """

    aug_eval: bool = False
    scales: Tuple[float, ...] = (1.0,)
    flip_horizontal: bool = False
    flip_vertical: bool = False
    is_slide: bool = False
    crop_size: Optional[Pair] = None
    stride: Optional[Pair] = None
    align_corners: bool = False

    def __post_init__(self) -> None:
        if self.is_slide and (self.crop_size is None or self.stride is None):
            raise ValueError(f"InferOptions: is_slide needs crop_size and stride, got crop_size={self.crop_size}, "
                             f"stride={self.stride}")

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_sources(cls, *sources: Tuple[Mapping[str, Any], str, str],
                     keys: Sequence[str] = INFER_KEYS) -> "InferOptions":
        """The options from ``(values, owner, prefix)`` sources, the first that sets a key winning.

        Args:
            sources: ``values`` maps keys to values (None = not set there); an error about a
                key says ``"<owner>: <prefix><key> must be ..."``.
            keys: the keys read (the rest keep their defaults).

        Raises:
            ConfigError: a value outside its rule, or sliding windows without a window and a
                stride in any source; the message names the source and key.
        """
        picked: Dict[str, Tuple[Any, str, str]] = {}
        for values, owner, prefix in sources:
            for key in keys:
                if key not in picked and values.get(key) is not None:
                    picked[key] = (values[key], owner, prefix + key)
        kwargs: Dict[str, Any] = {}
        for key, (value, owner, name) in picked.items():
            rule = _RULES[key]
            try:  # None never gets here: the words of the rule without "or None"
                kwargs[key] = getattr(rule, "optional_of", rule)(owner, name, value)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        missing = [key for key in WINDOW_KEYS if kwargs.get(key) is None]
        if kwargs.get("is_slide") and missing:
            _, owner, name = picked["is_slide"]
            ways = [" and ".join(_spell(prefix, key) for key in missing) for _, _, prefix in sources]
            given = name if name.startswith("--") else f"{name} is true"
            raise ConfigError(f"{owner}: sliding-window inference ({given}) needs {ways[0]}"
                              + "".join(f" (or {w})" for w in ways[1:]) + ", [width, height] each")
        return cls(**kwargs)

    @classmethod
    def from_config(cls, test_config: Optional[Mapping[str, Any]], where: str) -> "InferOptions":
        """The options of a config's ``test_config`` (``where``: the file that set it)."""
        return cls.from_sources((test_config or {}, where, "test_config."))

    @classmethod
    def from_args(cls, args: argparse.Namespace, test_config: Optional[Mapping[str, Any]] = None,
                  where: str = "") -> "InferOptions":
        """The flags of :func:`add_infer_args` given on the command line, then ``test_config``
        (from the file ``where``), then the defaults."""
        flags = {key: getattr(args, _DEST.get(key, key), None) for key in INFER_KEYS}
        return cls.from_sources((flags, _COMMAND_LINE, "--"), (test_config or {}, where, "test_config."))

    @classmethod
    def from_deploy(cls, section: Mapping[str, Any], path: str,
                    args: Optional[argparse.Namespace] = None) -> "InferOptions":
        """The window of a deploy.yaml's ``Deploy`` section (``path``: the file), the
        command line's ``--crop_size`` / ``--stride`` first when ``args`` has them."""
        flags = {key: getattr(args, key, None) for key in WINDOW_KEYS}
        return cls.from_sources((flags, _COMMAND_LINE, "--"), (section, path, "Deploy."), keys=WINDOW_KEYS)

    # ------------------------------------------------------------------ views
    def to_config(self, keys: Sequence[str] = INFER_KEYS) -> Dict[str, Any]:
        """``keys`` as a config would spell them (YAML lists, unset ones left out), so that
        :meth:`from_config` (or :meth:`from_deploy`) of the result gives these options back."""
        out = {}
        for key, value in asdict(self).items():
            if key in keys and value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def describe(self) -> str:
        """One line for the logs: ``plain`` or ``aug (...)``, plus the windows when sliding."""
        text = (f"aug (scales {list(self.scales)}, flip h={self.flip_horizontal} v={self.flip_vertical})"
                if self.aug_eval else "plain")
        text += f", slide crop {list(self.crop_size)} stride {list(self.stride)}" if self.is_slide else ""
        return text + (", logits resized back with align_corners" if self.align_corners else "")


def _spell(prefix: str, key: str) -> str:
    return f"--{key} W H" if prefix == "--" else prefix + key


def add_infer_args(p: argparse.ArgumentParser) -> None:
    """The inference flags tools/val.py and tools/predict.py share (each defaults to the
    config's ``test_config``; see :meth:`InferOptions.from_args`), and the execution
    policy's ``--fold_bn`` / ``--psa_impl``."""
    p.add_argument("--aug_eval", "--aug_pred", dest=_DEST["aug_eval"], action="store_true", default=None,
                   help="multi-scale and flip inference")
    p.add_argument("--scales", nargs="+", type=float, help="scales for aug inference")
    p.add_argument("--flip_horizontal", action="store_true", default=None)
    p.add_argument("--flip_vertical", action="store_true", default=None)
    p.add_argument("--is_slide", action="store_true", default=None, help="sliding-window inference")
    p.add_argument("--crop_size", nargs=2, type=int, help="slide window (w h)")
    p.add_argument("--stride", nargs=2, type=int, help="slide stride (w h)")
    p.add_argument("--align_corners", action="store_true", default=None,
                   help="resize the logits back to the image with corner pixels aligned (mmseg's "
                        "recipes whose heads use align_corners=True)")
    fold = p.add_mutually_exclusive_group()
    fold.add_argument("--fold_bn", dest="fold_bn", action="store_true", default=True,
                      help="run a copy of the model with each batch norm folded into its conv "
                           "(default: same logits within float rounding, one pass less per batch norm)")
    fold.add_argument("--no_fold_bn", dest="fold_bn", action="store_false",
                      help="run the model as trained, batch norms separate")
    p.add_argument("--psa_impl", choices=PSA_IMPLS,
                   help="PSANet's attention implementation (default: the config's model.psa_impl, "
                        "else $PADDLESEG_EXT_PSA_IMPL, else auto)")
