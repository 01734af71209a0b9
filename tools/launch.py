"""Multi-process training: ``python -m paddle.distributed.launch``, minus its import-time noise.

    python tools/launch.py --nproc_per_node 2 --log_dir output/dist_log tools/train.py --config C ...

Takes exactly the arguments of ``paddle.distributed.launch`` (GPUs, or CPU processes
with gloo). The only difference: the launcher process does not print Paddle's
import-time "No ccache found" warning (known harmless: paddleseg_ext/utils/quiet.py).
"""

import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_ext.utils.quiet import ignore_import_warnings  # noqa: E402  (paddleseg_ext applies it too)

if __name__ == "__main__":
    ignore_import_warnings()
    sys.argv[0] = "paddle.distributed.launch"
    runpy.run_module("paddle.distributed.launch", run_name="__main__", alter_sys=True)
