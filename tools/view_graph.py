"""Show a model's graph in the browser (Netron): export it, then serve the exported file.

    python tools/view_graph.py --config C [--model_path P] [--format paddle|onnx] [--port 8080]

Exports the model like ``tools/export.py`` into ``--save_dir`` (default
``output/graph/<config name>``) and serves ``model.json`` (Paddle 3's program,
the default) or ``model.onnx`` (``--format onnx``, needs paddle2onnx) with
Netron at ``http://localhost:8080`` until Ctrl-C. ``--no_serve`` only exports
and prints the file. Works for PSPNet, DANet, PSANet and PointRend; see
docs/model_graph.md (and why VisualDL's graph page does not).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from paddleseg_ext.utils import graph_view  # noqa: E402
from paddleseg_ext.utils.cli import run_cli  # noqa: E402
from paddleseg_ext.utils.logger import get_logger  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Show a model's graph in the browser (Netron)")
    p.add_argument("--config", required=True)
    p.add_argument("--model_path", help="weights (.pdparams or checkpoint folder); random if omitted")
    p.add_argument("--format", default="paddle", choices=["paddle", "onnx"],
                   help="paddle: Paddle 3's model.json; onnx: model.onnx via paddle2onnx")
    p.add_argument("--save_dir", help="export folder (default output/graph/<config name>)")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=8080, help="0: any free port")
    p.add_argument("--no_serve", action="store_true", help="export only; print the model file")
    args = p.parse_args(argv)
    import export as export_tool  # tools/export.py

    save_dir = args.save_dir or os.path.join("output", "graph", os.path.splitext(os.path.basename(args.config))[0])
    export_tool.main(["--config", args.config, "--save_dir", save_dir, "--format", args.format]
                     + (["--model_path", args.model_path] if args.model_path else [])
                     + (["--no_check"] if args.format == "onnx" else []))
    path = graph_view.graph_file(save_dir, args.format)
    if args.no_serve:
        print(path)
        return path
    host, port = graph_view.serve(path, args.host, args.port)
    get_logger().info("[GRAPH] %s at http://%s:%d (Ctrl-C to stop)", path, host, port)
    try:
        graph_view.wait()
    except KeyboardInterrupt:
        graph_view.stop((host, port))
    return path


if __name__ == "__main__":
    sys.exit(run_cli(main))
