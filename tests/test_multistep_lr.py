"""MultiStepDecay (``MultiStepLR``): mmseg's ResNet-strikes-back schedule, iteration by iteration.

The reference values are mmengine 0.10's own ``LinearLR(start_factor=0.001, begin=0,
end=1000)`` + ``MultiStepLR(begin=1000, end=80000, milestones=[60000, 72000])`` on an
AdamW at lr 5e-4 (mmseg's ``pspnet_r50-d8-rsb_4xb2-adamw-80k_cityscapes-512x1024``), read in
``.venv-peers`` as the LR each of its iterations trains with: the warm-up reaches the full
LR on iteration 999, and the milestones count from the scheduler's ``begin`` (drops at
61000 and 73000).
"""

import math
from pathlib import Path

import pytest

from paddleseg_ext.cvlibs import Config, SegBuilder, manager
from paddleseg_ext.optimizers.lr_schedulers import MultiStepDecay

ROOT = Path(__file__).resolve().parents[1]
#: iteration -> the LR mmengine trained that iteration with (printed in .venv-peers).
MMENGINE = {0: 5e-07, 1: 1e-06, 2: 1.5e-06, 500: 0.00025049999999999926, 998: 0.0004994999999999973,
            999: 0.0004999999999999974, 1000: 0.0004999999999999974, 1001: 0.0004999999999999974,
            60999: 0.0004999999999999974, 61000: 4.9999999999999745e-05, 61001: 4.9999999999999745e-05,
            72999: 4.9999999999999745e-05, 73000: 4.999999999999975e-06, 79999: 4.999999999999975e-06}


def _lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched())
        sched.step()
    return out


def test_rsb_schedule_is_mmengines():
    sched = manager.LR_SCHEDULERS.get("MultiStepLR")(
        learning_rate=5e-4, total_iters=80000, milestones=[60000, 72000], gamma=0.1,
        warmup_iters=1000, warmup_start_factor=0.001)
    assert isinstance(sched, MultiStepDecay)
    lrs = _lrs(sched, 80000)
    for it, want in MMENGINE.items():
        # mmengine multiplies factors step by step (a few ulps of drift); ours is closed-form
        assert math.isclose(lrs[it], want, rel_tol=1e-12), (it, lrs[it], want)
    # the LR is constant between the listed iterations (warm-up aside)
    assert len(set(lrs[1000:61000])) == len(set(lrs[61000:73000])) == len(set(lrs[73000:])) == 1


def test_no_warmup_and_resume():
    sched = MultiStepDecay(learning_rate=1.0, total_iters=10, milestones=[3, 6], gamma=0.5, warmup_iters=0)
    assert _lrs(sched, 10) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    again = MultiStepDecay(learning_rate=1.0, total_iters=10, milestones=[3, 6], gamma=0.5)
    _lrs(again, 4)
    resumed = MultiStepDecay(learning_rate=1.0, total_iters=10, milestones=[3, 6], gamma=0.5)
    resumed.set_state_dict(again.state_dict())
    assert _lrs(resumed, 3) == _lrs(again, 3) == [0.5, 0.5, 0.25]


@pytest.mark.parametrize("kwargs,match", [
    (dict(milestones=[6, 3]), r"milestones must increase, got \[6, 3\]"),
    (dict(milestones=[3, 3]), r"milestones must increase"),
    (dict(milestones=[9], warmup_iters=2), r"milestone 9 \(counted after the 2 warm-up iterations\) is never "
                                           r"reached in 10 iterations; milestones must be below 8"),
    (dict(milestones=[]), r"milestones must be a non-empty list of positive ints"),
    (dict(milestones=[3], gamma=0), r"gamma must be"),
    (dict(milestones=[3], warmup_start_factor=1.5), r"warmup_start_factor must be"),
    (dict(milestones=[3], warmup_iters=-1), r"warmup_iters must be"),
])
def test_bad_arguments_are_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiStepDecay(learning_rate=0.1, total_iters=10, **kwargs)


def test_rsb_recipe_builds_mmsegs_optimizer():
    recipe = ROOT / "configs/pspnet/mmseg/pspnet_r50-d8-rsb_4xb2-adamw-80k_cityscapes-512x1024.yml"
    b = SegBuilder(Config(str(recipe)))
    b.validate()
    opt, sched = b.optimizer, b.lr_scheduler
    assert type(opt).__name__ == "AdamW" and opt._weight_decay == 0.05
    assert (opt._beta1, opt._beta2, opt._epsilon) == (0.9, 0.999, 1e-8)  # torch's AdamW defaults
    assert type(opt._grad_clip).__name__ == "ClipGradByGlobalNorm" and opt._grad_clip.clip_norm == 1.0
    assert isinstance(sched, MultiStepDecay) and sched() == 5e-7
    assert (sched.milestones, sched.gamma, sched.warmup_iters) == ([60000, 72000], 0.1, 1000)


def test_trainer_steps_and_resumes_it(tmp_path):
    """Four iterations with the schedule, and a run resumed at iteration 2 continues it."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_config import tiny_trainer, write_tiny_config

    base, _ = write_tiny_config(tmp_path, iters=4)
    cfg = tmp_path / "multistep.yml"  # the rsb recipes' way: the base's poly schedule replaced whole
    cfg.write_text(f"_base_: {base}\n"
                   "lr_scheduler: {type: MultiStepLR, learning_rate: 0.01, milestones: [1], "
                   "warmup_iters: 2, warmup_start_factor: 0.5, _inherited_: false}\n")
    cfg = str(cfg)
    b = SegBuilder(Config(cfg))
    trainer = tiny_trainer(b, tmp_path / "out", save_interval=2, log_iters=100)
    assert isinstance(b.lr_scheduler, MultiStepDecay)
    trainer.train()
    # warm-up 0.005, 0.01; after it 0.01 until milestone 1 (iteration 3), then 0.001
    assert b.lr_scheduler.last_epoch == 4 and math.isclose(b.lr_scheduler(), 0.001)
    again = SegBuilder(Config(cfg))
    resumed = tiny_trainer(again, tmp_path / "out", iters=4, save_interval=2, log_iters=100)
    resumed.train(resume_model=str(tmp_path / "out" / "iter_2"))
    assert again.lr_scheduler.last_epoch == 4 and math.isclose(again.lr_scheduler(), 0.001)
