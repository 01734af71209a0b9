"""One 3x3 conv layer: ``F.conv2d`` vs Winograd F(2x2, 3x3), forward and forward + backward.

Usage::

    python benchmarks/winograd.py [--threads 2] [--repeats 3] [--quick]

Both are timed in the same process in interleaved rounds (median of
``--repeats``, ``common.interleaved_medians``); the
table prints each time and the ratio Winograd / conv2d (absolute times are
not comparable between runs on a shared machine). The layers are the shapes
of the ResNet-vd stages and heads at os8 on a 512x512 input, batch 2.
Winograd: Lavin & Gray, CVPR 2016, https://arxiv.org/abs/1509.09308.
"""

from __future__ import annotations

import os
import sys
from typing import List, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import eval_and_train_medians, layer_script_main  # noqa: E402

CASES = [  # n, c_in, c_out, h, w, dilation, what
    (2, 512, 512, 64, 64, 2, "ResNet stage 4"),
    (2, 256, 256, 64, 64, 2, "ResNet stage 3"),
    (2, 2048, 1024, 64, 64, 1, "DANet's stacked input convs"),
    (2, 128, 128, 64, 64, 1, "ResNet stage 2"),
    (2, 64, 64, 128, 128, 1, "ResNet stage 1"),
]
QUICK = [(1, 64, 64, 16, 16, 1, "quick"), (1, 64, 64, 15, 17, 2, "quick, odd")]


def run(cases: Sequence[tuple], repeats: int) -> List[str]:
    import paddle
    import paddle.nn.functional as F

    from paddleseg_ext.ops.winograd import winograd_conv3x3

    rows = ["| N, C_in, C_out, H x W, dilation | eval conv2d ms | eval Winograd ms | ratio | "
            "train conv2d ms | train Winograd ms | ratio |", "|---|---|---|---|---|---|---|"]
    for n, c, co, h, w, d, what in cases:
        x = paddle.randn([n, c, h, w])
        wt = paddle.randn([co, c, 3, 3]) * 0.01
        x.stop_gradient = wt.stop_gradient = False
        conv = lambda: F.conv2d(x, wt, padding=d, dilation=d)  # noqa: E731
        wino = lambda: winograd_conv3x3(x, wt, None, d)  # noqa: E731

        ev, tr = eval_and_train_medians({"conv": conv, "wino": wino}, repeats)
        e_c, e_w, t_c, t_w = ev["conv"], ev["wino"], tr["conv"], tr["wino"]
        rows.append(f"| {n}, {c}, {co}, {h}x{w}, {d} ({what}) | {e_c:.0f} | {e_w:.0f} | "
                    f"{e_w / e_c:.2f}x | {t_c:.0f} | {t_w:.0f} | {t_w / t_c:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    return layer_script_main(argv, __doc__, run, CASES, QUICK)


if __name__ == "__main__":
    sys.exit(main())
