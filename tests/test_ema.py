"""The weight average (core/ema.py): its update rule, what evaluation and best_model see, resume."""

import json
import os

import numpy as np
import paddle
import pytest

from paddleseg_ext.core import val as val_module
from paddleseg_ext.core.ema import EMAHook, WeightAveraging, weight_averaging_from
from paddleseg_ext.core.storage import TrainStorage
from paddleseg_ext.cvlibs import Config, ConfigError, SegBuilder
from paddleseg_ext.checkpoints import training as ckpt
from paddleseg_ext.checkpoints.weights import load_weights_file
from paddleseg_ext.utils.runtime import seed_everything
from tiny_config import load_tool, tiny_trainer, write_tiny_config


def weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_the_rule_and_its_settings():
    rule = WeightAveraging(decay=0.99)
    # warm-up: (1 + n) / (10 + n) until it reaches the decay
    assert rule.decay_at(0) == pytest.approx(0.1) and rule.decay_at(8) == pytest.approx(0.5)
    assert rule.decay_at(10_000) == 0.99
    for bad in (0, 1, 1.5, -0.1, float("nan"), True):
        with pytest.raises(ValueError, match=r"WeightAveraging: decay must be a number in \(0, 1\)"):
            WeightAveraging(decay=bad)
    assert weight_averaging_from(None) is None
    assert weight_averaging_from({"decay": 0.9}) == WeightAveraging(0.9)
    assert weight_averaging_from({"decay": 0.9}, decay=0) is None  # the flag turns it off
    assert weight_averaging_from(None, decay=0.95) == WeightAveraging(0.95)
    with pytest.raises(ConfigError, match=r"Unknown key 'ema.decya' in a.yml; valid keys: decay"):
        weight_averaging_from({"decya": 0.9}, "a.yml")
    with pytest.raises(ConfigError, match=r"decay must be a number in \(0, 1\), got 1.5 \(ema in a.yml"):
        weight_averaging_from({"decay": 1.5}, "a.yml")


class _Trainer:
    """What the hook reads of a trainer: the model and the storage."""

    def __init__(self, model):
        self.model, self.storage = model, TrainStorage()


def test_update_follows_the_formula_and_skips_bad_steps():
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Conv2D(2, 3, 3), paddle.nn.BatchNorm2D(3))
    t = _Trainer(model)
    hook = EMAHook(WeightAveraging(decay=0.9))
    hook.before_train(t)
    assert t.storage.eval_model is hook.shadow and t.storage.model_to_evaluate(model) is hook.shadow
    shadow = weights(hook.shadow)
    expected = dict(shadow)
    for n in range(4):
        new = {k: (np.random.RandomState(n).standard_normal(v.shape)).astype(v.dtype) for k, v in shadow.items()}
        model.set_state_dict({k: paddle.to_tensor(v) for k, v in new.items()})
        t.storage.step_ok = n != 2  # a skipped (non-finite) step leaves the average alone
        hook.after_step(t)
        if n != 2:
            d = min(0.9, (1 + hook.updates - 1) / (10 + hook.updates - 1))
            expected = {k: d * expected[k] + (1 - d) * new[k] for k in expected}
        got = weights(hook.shadow)
        for k in expected:
            # one multiply-add per entry in float32: a few units of rounding of values of size ~4
            np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=8 * 4 * np.finfo(np.float32).eps,
                                       err_msg=k)
    assert hook.updates == 3
    # the trained model is not touched, and the shadow takes no gradients
    np.testing.assert_array_equal(weights(model)["0.weight"], new["0.weight"])
    assert all(p.stop_gradient for p in hook.shadow.parameters())


def make_trainer(path, save_dir, **kw):
    seed_everything(0)
    return tiny_trainer(SegBuilder(Config(path)), save_dir, do_eval=True, save_interval=2, log_iters=100,
                        ema=WeightAveraging(decay=0.5), **kw)


def test_evaluation_and_best_model_use_the_average(tmp_path, monkeypatch):
    path, _ = write_tiny_config(tmp_path, iters=4)
    seen = []
    real = val_module.evaluate

    def evaluate(model, dataset, **kw):
        seen.append(weights(model))
        return real(model, dataset, **kw)

    monkeypatch.setattr(val_module, "evaluate", evaluate)
    t = make_trainer(path, tmp_path / "out")
    t.train()
    hook = next(h for h in t.hooks if isinstance(h, EMAHook))
    trained, average = weights(t.model), weights(hook.shadow)
    differs = [k for k in trained if not np.array_equal(trained[k], average[k])]
    assert differs, "the average equals the trained weights: the test would not see a mix-up"
    for k in average:  # the last evaluation saw the average
        np.testing.assert_array_equal(seen[-1][k], average[k], err_msg=k)
    best = json.load(open(os.path.join(tmp_path / "out", "best_model", "state.json")))["best"]
    saved = load_weights_file(os.path.join(tmp_path / "out", "best_model", "model.pdparams"))
    if best["iter"] == 4:
        for k in average:
            np.testing.assert_array_equal(np.asarray(saved[k]), average[k], err_msg=k)
    # iter_4 keeps the trained weights and, beside them, the average
    ck = os.path.join(tmp_path / "out", "iter_4")
    for k in trained:
        np.testing.assert_array_equal(np.asarray(load_weights_file(os.path.join(ck, "model.pdparams"))[k]),
                                      trained[k], err_msg=k)
        np.testing.assert_array_equal(np.asarray(ckpt.load_extra(ck, "ema")[k]), average[k], err_msg=k)


def test_resume_continues_the_average_exactly(tmp_path):
    path, _ = write_tiny_config(tmp_path, iters=4)
    straight = make_trainer(path, tmp_path / "a")
    straight.train()
    first = make_trainer(path, tmp_path / "b")
    first.iters = 2
    first.train()
    resumed = make_trainer(path, tmp_path / "b")
    resumed.train(resume_model="auto")

    def average(t):
        return weights(next(h for h in t.hooks if isinstance(h, EMAHook)).shadow)

    a, b = average(straight), average(resumed)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert next(h for h in resumed.hooks if isinstance(h, EMAHook)).updates == 4
    # a checkpoint without an average (trained with it off) starts the average from the weights
    assert ckpt.load_extra(str(tmp_path / "a" / "iter_4"), "nothing") is None


def test_train_tool_flag_and_config_block(tmp_path):
    tools_train = load_tool("train")
    path, _ = write_tiny_config(tmp_path, iters=2)
    with open(path, "a") as f:
        f.write("ema: {decay: 0.8}\n")
    out = str(tmp_path / "out")
    tools_train.main(["--config", path, "--save_dir", out, "--do_eval", "--save_interval", "2", "--device", "cpu"])
    state = json.load(open(os.path.join(out, "iter_2", "state.json")))
    assert state["hooks"]["ema"] == {"decay": 0.8, "updates": 2} and "ema.pdparams" in state["_files"]
    out2 = str(tmp_path / "off")
    tools_train.main(["--config", path, "--save_dir", out2, "--save_interval", "2", "--device", "cpu",
                      "--ema_decay", "0"])
    assert not os.path.exists(os.path.join(out2, "iter_2", "ema.pdparams"))
