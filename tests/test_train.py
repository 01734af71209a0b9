import os

import numpy as np
import paddle
import pytest

from paddleseg_ext.core import NonFiniteLossError, Trainer
from paddleseg_ext.core.data import ResumableBatchSampler
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.checkpoints import training as ckpt
from paddleseg_ext.utils.runtime import seed_everything
from tiny_config import write_tiny_config


def make_trainer(path, save_dir, seed=0, **kw):
    seed_everything(seed)
    b = SegBuilder(Config(path))
    opts = dict(save_interval=2, log_iters=1, num_workers=0, seed=seed, handle_signals=False)
    opts.update(kw)
    return Trainer(b.model, b.optimizer, b.loss, b.train_dataset, b.config.iters, b.config.batch_size,
                   str(save_dir), val_dataset=b.val_dataset, **opts)


def weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_sampler_is_a_pure_function_of_seed_and_iteration():
    full = list(ResumableBatchSampler(10, 3, iters=7, seed=1))
    tail = list(ResumableBatchSampler(10, 3, iters=7, seed=1, start_iter=4))
    assert len(full) == 7 and full[4:] == tail
    # every batch within an epoch draws distinct samples; epochs reshuffle
    assert len({i for b in full[:3] for i, _ in b}) == 9
    assert full[:3] != full[3:6]
    ranks = [list(ResumableBatchSampler(10, 2, iters=2, seed=1, rank=r, world=2)) for r in (0, 1)]
    assert not {i for b in ranks[0] for i, _ in b} & {i for b in ranks[1] for i, _ in b}
    with pytest.raises(ValueError, match="fewer than one batch"):
        ResumableBatchSampler(3, 4, iters=1, seed=0)


def test_training_reduces_the_loss(tmp_path):
    path, _ = write_tiny_config(tmp_path, iters=30, n_train=4, batch_size=4)
    t = make_trainer(path, tmp_path / "out", save_interval=100)
    losses = []

    class Record:
        def before_train(self, t):
            pass

        def after_step(self, t):
            losses.append(t.last["loss"])

        def after_train(self, t):
            pass

    t.hooks.append(Record())
    out = t.train()
    assert out["iter"] == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_resume_is_exact(tmp_path):
    path, _ = write_tiny_config(tmp_path, iters=4)
    straight = make_trainer(path, tmp_path / "a")
    straight.train()
    w_straight = weights(straight.model)

    first = make_trainer(path, tmp_path / "b")
    first.iters = 2  # stop half way (same 4-iter LR schedule); a checkpoint is written at iter 2
    first.train()
    assert ckpt.latest_checkpoint(str(tmp_path / "b")).endswith("iter_2")

    resumed = make_trainer(path, tmp_path / "b", seed=123)  # seed comes from the checkpoint
    resumed.train(resume_model="auto")
    assert resumed.iter == 4
    w_resumed = weights(resumed.model)
    for k in w_straight:
        np.testing.assert_array_equal(w_straight[k], w_resumed[k], err_msg=k)
    assert resumed.optimizer.get_lr() == pytest.approx(straight.optimizer.get_lr())


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    path, _ = write_tiny_config(tmp_path, iters=6)
    t = make_trainer(path, tmp_path / "out")
    real = t.losses["types"][0]
    calls = {"n": 0}

    def poisoned(logit, label):
        calls["n"] += 1
        loss = real(logit, label)
        return loss * float("nan") if calls["n"] > 3 else loss  # NaN from iter 4

    t.losses = {"types": [poisoned, t.losses["types"][1]], "coef": t.losses["coef"]}
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at iter 4: loss_seg=nan.*iter_2"):
        t.train()
    good = ckpt.latest_checkpoint(str(tmp_path / "out"))
    assert good.endswith("iter_2")
    state = ckpt.load_checkpoint(good, t.model)
    assert state["iter"] == 2
    assert all(np.isfinite(v.numpy()).all() for v in t.model.state_dict().values())


def test_nan_policy_skip_keeps_weights_finite(tmp_path):
    path, _ = write_tiny_config(tmp_path, iters=3)
    t = make_trainer(path, tmp_path / "out", nan_policy="skip")
    real = t.losses["types"][0]
    t.losses = {"types": [lambda lg, lb: real(lg, lb) * float("inf"), t.losses["types"][1]],
                "coef": t.losses["coef"]}
    before = weights(t.model)
    t.train()
    after = weights(t.model)
    for k in before:
        if "_mean" in k or "_variance" in k:  # BN statistics still update in the forward
            continue
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_interrupted_save_is_invisible(tmp_path):
    path, _ = write_tiny_config(tmp_path, iters=2)
    t = make_trainer(path, tmp_path / "out")
    t.train()
    save_dir = str(tmp_path / "out")
    # a save killed half way leaves only a hidden temp folder / an iter folder without state.json
    os.makedirs(os.path.join(save_dir, ".iter_4.tmp"))
    os.makedirs(os.path.join(save_dir, "iter_6"))
    paddle.save(t.model.state_dict(), os.path.join(save_dir, "iter_6", "model.pdparams"))
    assert ckpt.latest_checkpoint(save_dir).endswith("iter_2")
    with pytest.raises(ValueError, match="incomplete"):
        ckpt.load_checkpoint(os.path.join(save_dir, "iter_6"), t.model)


def test_signal_saves_and_stops(tmp_path):
    import signal

    path, _ = write_tiny_config(tmp_path, iters=50)
    t = make_trainer(path, tmp_path / "out", handle_signals=True, save_interval=100)

    class SendSigterm:
        def before_train(self, t):
            pass

        def after_step(self, t):
            if t.iter == 3:
                os.kill(os.getpid(), signal.SIGTERM)

        def after_train(self, t):
            pass

    t.hooks.insert(0, SendSigterm())
    out = t.train()
    assert out["iter"] == 3 and t.stop_requested == "SIGTERM"
    assert ckpt.latest_checkpoint(str(tmp_path / "out")).endswith("iter_3")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_eval_hook_keeps_best_model_and_keep_max(tmp_path):
    path, _ = write_tiny_config(tmp_path, iters=6)
    t = make_trainer(path, tmp_path / "out", do_eval=True, keep_checkpoint_max=2)
    out = t.train()
    assert 0.0 <= out["best"]["mIoU"] <= 1.0 and out["best"]["iter"] in (2, 4, 6)
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == ["best_model", "iter_4", "iter_6"], names
    assert ckpt.is_complete(str(tmp_path / "out" / "best_model"))
