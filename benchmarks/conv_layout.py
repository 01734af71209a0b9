"""Paddle's CPU ``conv2d`` in NCHW vs NHWC, forward and forward + backward.

Usage::

    python benchmarks/conv_layout.py [--threads 2] [--repeats 3] [--quick]

Issue 13 asked to try NHWC where Paddle's CPU convolutions are faster in it.
Each layer runs on the same values in both layouts (the NHWC input is the
NCHW one transposed, outside the timed region), in one process, interleaved
rounds (median of ``--repeats``, ``common.interleaved_medians``). The table
prints both times, NHWC / NCHW, and the largest difference of the outputs
relative to their largest value. The layers are ResNet50-vd shapes at os8
on a 512x512 input, batch 2.
"""

from __future__ import annotations

import os
import sys
from typing import List, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import eval_and_train_medians, layer_script_main  # noqa: E402

CASES = [  # n, c_in, c_out, h, w, kernel, dilation, what
    (2, 512, 512, 64, 64, 3, 2, "stage 4 3x3"),
    (2, 256, 256, 64, 64, 3, 2, "stage 3 3x3"),
    (2, 1024, 256, 64, 64, 1, 1, "stage 3 1x1 reduce"),
    (2, 256, 1024, 64, 64, 1, 1, "stage 3 1x1 expand"),
    (2, 64, 64, 128, 128, 3, 1, "stage 1 3x3"),
]
QUICK = [(1, 8, 8, 16, 16, 3, 1, "quick"), (1, 8, 16, 15, 17, 1, 1, "quick 1x1")]


def run(cases: Sequence[tuple], repeats: int) -> List[str]:
    import paddle
    import paddle.nn.functional as F

    rows = ["| N, C_in, C_out, H x W, kernel, dilation | eval NCHW ms | eval NHWC ms | ratio | "
            "train NCHW ms | train NHWC ms | ratio | max diff |", "|---|---|---|---|---|---|---|---|"]
    for n, c, co, h, w, k, d, what in cases:
        paddle.seed(7)
        x = paddle.randn([n, c, h, w])
        x_nhwc = paddle.to_tensor(x.numpy().transpose(0, 2, 3, 1))
        wt = paddle.randn([co, c, k, k]) * 0.01
        for t in (x, x_nhwc, wt):
            t.stop_gradient = False
        pad = d * (k // 2)
        nchw = lambda: F.conv2d(x, wt, padding=pad, dilation=d)  # noqa: E731
        nhwc = lambda: F.conv2d(x_nhwc, wt, padding=pad, dilation=d, data_format="NHWC")  # noqa: E731

        with paddle.no_grad():
            ya, yb = nchw(), nhwc().transpose([0, 3, 1, 2])
            diff = float((ya - yb).abs().max() / ya.abs().max())
        ev, tr = eval_and_train_medians({"nchw": nchw, "nhwc": nhwc}, repeats)
        rows.append(f"| {n}, {c}, {co}, {h}x{w}, {k}x{k}, {d} ({what}) | {ev['nchw']:.0f} | "
                    f"{ev['nhwc']:.0f} | {ev['nhwc'] / ev['nchw']:.2f}x | {tr['nchw']:.0f} | "
                    f"{tr['nhwc']:.0f} | {tr['nhwc'] / tr['nchw']:.2f}x | {diff:.1e} |")
        print(rows[-1], flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    return layer_script_main(argv, __doc__, run, CASES, QUICK)


if __name__ == "__main__":
    sys.exit(main())
