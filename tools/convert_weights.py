"""Convert another toolkit's whole-model checkpoint into this toolkit's layout.

    python tools/convert_weights.py IN.pdparams OUT.pdparams [--config C] [--opts k=v ...]

The layout (PaddleSeg 2.x PSPNet / DANet / PointRend, ...) is detected from
the keys and converted exactly (renames, conv biases folded into the
following BatchNorm's running mean); the report says what was detected and
done. With ``--config`` the model of that config is built and the converted
file must fit it whole (every model key filled, every tensor placed, shapes
equal), as ``--model_path`` requires; without it the file is converted on
its keys alone. Loading a peer checkpoint directly with ``--model_path``
works too: this tool only saves the conversion once.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle  # noqa: E402

from paddleseg_ext.checkpoints.adapters import as_numpy, detect_adapter, to_native  # noqa: E402
from paddleseg_ext.cvlibs import Config, SegBuilder, run_cli  # noqa: E402
from paddleseg_ext.checkpoints.weights import read_checkpoint  # noqa: E402


def convert(src: str, model=None):
    """``(native state, Conversion)`` for the file at ``src`` (checked against ``model`` if given)."""
    state, meta = read_checkpoint(src)
    if model is not None:
        native, conv = to_native(state, model, source=src, meta=meta)
        if conv is None:
            raise ValueError(f"{src} is already in this toolkit's layout for "
                             f"{type(model).__name__}: nothing to convert")
        return native, conv
    adapter = detect_adapter(list(state), None, src)
    if adapter is None:
        raise ValueError(f"{src} is in no known layout (give --config to check it against a model)")
    conv = adapter.convert(as_numpy(state), None)
    if conv.unplaced:
        raise ValueError(f"{src}: detected a {conv.layout} checkpoint, but {len(conv.unplaced)} "
                         f"tensors have no place in this toolkit's layout "
                         f"({', '.join(conv.unplaced[:5])})")
    return conv.state, conv


def main(argv=None):
    p = argparse.ArgumentParser(description="Convert a peer toolkit's checkpoint to .pdparams")
    p.add_argument("src", help="checkpoint in another toolkit's layout (.pdparams, or a .pth)")
    p.add_argument("dst", help="where to write the converted .pdparams")
    p.add_argument("--config", help="config of the model the weights are for (checks the fit)")
    p.add_argument("--opts", nargs="+", default=[])
    args = p.parse_args(argv)
    model = None
    if args.config:
        cfg = Config(args.config, opts=args.opts)
        builder = SegBuilder(cfg)
        builder.validate(parts=("model",))
        model = builder.model
    state, conv = convert(args.src, model)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, args.dst)
    print(f"layout: {conv.layout}")
    print(f"tensors written: {len(conv.state)} ({conv.renamed} renamed)")
    print(f"conv biases folded into BatchNorm: {len(conv.folded)}"
          + (f" ({', '.join(conv.folded)})" if conv.folded else ""))
    if conv.unused:
        print(f"left out, a layer the peer builds and never calls: {', '.join(conv.unused)}")
    for reason, keys in conv.not_loaded.items():
        print(f"not loaded: {len(keys)} {reason}")
    print(f"checked against: {type(model).__name__ + ' of ' + args.config if model else 'no model (no --config)'}")
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
