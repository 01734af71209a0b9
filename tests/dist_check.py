"""Run under paddle.distributed.launch by test_tools: trains and saves each rank's weights."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import paddle  # noqa: E402

from paddleseg_ext.core import Trainer, TrainSettings, default_hooks  # noqa: E402
from paddleseg_ext.cvlibs import Config, SegBuilder  # noqa: E402
from paddleseg_ext.utils.runtime import seed_everything, setup_device  # noqa: E402


def main(cfg_path, out):
    setup_device("cpu", 1)
    paddle.distributed.init_parallel_env()
    rank = paddle.distributed.get_rank()
    seed_everything(0)  # same initial weights on every rank
    b = SegBuilder(Config(cfg_path))
    os.makedirs(out, exist_ok=True)
    paddle.save(b.model.state_dict(), os.path.join(out, f"init{rank}.pdparams"))
    t = Trainer(b.model, b.optimizer, b.loss, b.train_dataset,
                TrainSettings(iters=b.config.iters, batch_size=b.config.batch_size,
                              save_dir=os.path.join(out, "ckpt"), seed=0),
                default_hooks(save_interval=100, handle_signals=False))
    assert t.world == 2, t.world
    t.train()
    paddle.save(b.model.state_dict(), os.path.join(out, f"rank{rank}.pdparams"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
