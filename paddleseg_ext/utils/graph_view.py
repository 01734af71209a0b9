"""The model graph in a browser: Netron serving an exported model.

Netron (https://netron.app, the ``netron`` package on PyPI, a local web
server plus the viewer) reads both files ``tools/export.py`` writes on Paddle
3: the PIR program ``model.json`` and, with ``--format onnx``, ``model.onnx``.
VisualDL 2.5.3's graph page cannot be used for Paddle 3 models (its bundled
Netron reads only the pre-3.0 ``.pdmodel`` protobuf, and
``LogWriter.add_graph`` fails on Paddle 3.3.1); see docs/model_graph.md.
"""

from __future__ import annotations

import os
from typing import Tuple

from ..cvlibs.errors import MissingDependencyError

NETRON_HINT = "pip install netron (it is in requirements.txt)"


def graph_file(export_dir: str, fmt: str) -> str:
    """The model file of an export folder to show: ``model.json`` (``paddle``) or ``model.onnx``.

    Raises:
        FileNotFoundError: the export has no such file.
    """
    names = {"paddle": ("model.json", "model.pdmodel"), "onnx": ("model.onnx",)}[fmt]
    for name in names:
        path = os.path.join(export_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{export_dir} holds no {' or '.join(names)} (export it with tools/export.py"
                            f"{' --format onnx' if fmt == 'onnx' else ''})")


def serve(path: str, host: str = "localhost", port: int = 8080) -> Tuple[str, int]:
    """Serve ``path`` with Netron in a background thread; returns the ``(host, port)`` bound
    (``port`` 0: any free port). Stop it with :func:`stop`.

    Raises:
        MissingDependencyError: netron is not installed.
    """
    try:
        import netron
    except ImportError as e:
        raise MissingDependencyError(f"showing the graph needs the 'netron' package ({e}): {NETRON_HINT}") from e
    return tuple(netron.start(path, (host, port), browse=False))


def stop(address: Tuple[str, int]) -> None:
    import netron

    netron.stop(address)


def wait() -> None:
    """Block until the server stops (Ctrl-C)."""
    import netron

    netron.wait()
