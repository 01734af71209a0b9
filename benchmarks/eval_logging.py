"""What the VisualDL hook adds to one evaluation during training.

Times, interleaved on the same model and validation set:

- A (baseline, the evaluation training ran before): ``evaluate(model, val_set)``;
- B (with ``--use_vdl``): ``evaluate`` with the validation loss and the sample
  capture, then ``VisualDLHook.log_evaluation`` (scalars, per-class IoU, the
  confusion-matrix picture and the sample panels written to a VisualDL log).

Prints the median of each and B / A. Run on the quick start's data and config:

    python benchmarks/eval_logging.py [--config C] [--model_path P] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_CONFIG = "configs/landcover6/pointrend_resnet18_landcover6band_64x64_1500.yml"


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--model_path", help="weights (default: the model's random initialisation)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--samples", type=int, default=4)
    args = p.parse_args(argv)

    from paddleseg_ext.core.storage import TrainStorage
    from paddleseg_ext.core.val import evaluate
    from paddleseg_ext.core.visualdl_hook import VisualDLHook
    from paddleseg_ext.cvlibs import Config, SegBuilder
    from paddleseg_ext.checkpoints.weights import load_model_weights
    from paddleseg_ext.utils.runtime import seed_everything

    seed_everything(0)
    builder = SegBuilder(Config(args.config))
    model, ds = builder.model, builder.val_dataset
    if args.model_path:
        load_model_weights(model, args.model_path)
    main_loss, coef = builder.loss["types"][0], builder.loss["coef"][0]

    class Run:  # what the hook reads from the trainer
        rank, iter = 0, 0
        storage = TrainStorage()

        @staticmethod
        def output_names():
            return list(getattr(model, "output_names", ["seg"]))

    with tempfile.TemporaryDirectory(prefix="bench_vdl_") as tmp:
        hook = VisualDLHook(tmp, 1, val_dataset=ds, num_samples=args.samples)
        hook.before_train(Run)
        keep = set(Run.storage.sample_indices)

        def plain():
            evaluate(model, ds, print_detail=False, progress=False)

        def with_vdl():
            samples = {}

            def each(i, data, pred):
                if i in keep:
                    samples[i] = {"img": data["img"].numpy(), "label": data["label"], "pred": pred}

            m = evaluate(model, ds, print_detail=False, progress=False,
                         loss_fn=lambda lg, lb: main_loss(lg, lb) * coef, on_image=each)
            Run.iter += 1
            hook.log_evaluation(Run.iter, m, samples)

        plain(), with_vdl()  # warm-up
        a, b = [], []
        for _ in range(args.repeats):
            for fn, times in ((plain, a), (with_vdl, b)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        hook.writer.close()
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{len(ds)} val images, {args.repeats} interleaved repeats, load {os.getloadavg()[0]:.2f}")
    print(f"A evaluate: median {ma:.3f} s   B evaluate + val loss + samples + VisualDL: median {mb:.3f} s")
    print(f"B / A = {mb / ma:.3f}")
    return mb / ma


if __name__ == "__main__":
    main()
