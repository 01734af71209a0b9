"""Early stopping: the rule, where it stops, the best checkpoint it keeps, and resume after it."""

import io
import json
import logging
import os

import numpy as np
import paddle
import pytest

from paddleseg_ext.core import val as val_module
from paddleseg_ext.core.early_stop import EarlyStopping, early_stopping_from
from paddleseg_ext.cvlibs import Config, ConfigError, SegBuilder
from paddleseg_ext.checkpoints import training as ckpt
from paddleseg_ext.utils.cli import run_cli
from paddleseg_ext.utils.logger import get_logger
from paddleseg_ext.utils.runtime import seed_everything
from tiny_config import load_tool, tiny_trainer, write_tiny_config


def test_the_rule():
    rule = EarlyStopping(patience=2, min_delta=0.01)
    assert rule.improves(0.1, None) and rule.improves(0.52, 0.5) and not rule.improves(0.505, 0.5)
    loss_rule = EarlyStopping(patience=1, metric="loss")
    assert loss_rule.improves(0.9, 1.0) and not loss_rule.improves(1.1, 1.0)
    for bad, match in [(dict(patience=0), "EarlyStopping: patience must be a positive int, got 0"),
                       (dict(patience=True), "patience must be a positive int, got True"),
                       (dict(patience=2.0), "patience must be a positive int, got 2.0"),
                       (dict(patience=2, metric="miou"), "metric must be one of 'mIoU', 'Acc'"),
                       (dict(patience=2, min_delta=-0.1), "min_delta must be a number >= 0"),
                       (dict(patience=2, min_delta=float("nan")), "min_delta must be a number >= 0"),
                       (dict(patience=2, min_delta=False), "min_delta must be a number >= 0")]:
        with pytest.raises(ValueError, match=match):
            EarlyStopping(**bad)
    assert EarlyStopping(patience=2, min_delta=0).min_delta == 0.0 and isinstance(
        EarlyStopping(patience=2, min_delta=1).min_delta, float)


def test_train_settings_use_the_shared_rules():
    from paddleseg_ext.core import TrainSettings

    for bad, match in [(dict(iters=0, batch_size=2), "TrainSettings: iters must be a positive int, got 0"),
                       (dict(iters=4, batch_size=True), "batch_size must be a positive int, got True"),
                       (dict(iters=4, batch_size=2, num_workers=-1), "num_workers must be an int >= 0"),
                       (dict(iters=4, batch_size=2, nan_policy="ignore"), "nan_policy must be one of 'stop'"),
                       (dict(iters=4, batch_size=2, precision="fp64"), "precision must be one of 'fp32'"),
                       (dict(iters=4, batch_size=2, amp_level="O3"), "amp_level must be one of 'O1'")]:
        with pytest.raises(ValueError, match=match):
            TrainSettings(**bad)


def test_config_block_and_flags():
    assert early_stopping_from(None) is None
    assert early_stopping_from({"patience": 3}) == EarlyStopping(patience=3)
    assert early_stopping_from({"patience": 3, "metric": "Acc"}, patience=0) is None  # the flag turns it off
    assert early_stopping_from({"patience": 3}, metric="loss", min_delta=0.5) == EarlyStopping(3, "loss", 0.5)
    assert early_stopping_from(None, patience=2) == EarlyStopping(patience=2)
    with pytest.raises(ConfigError, match=r"Unknown key 'early_stop.paitence' in a.yml; valid keys: patience"):
        early_stopping_from({"paitence": 3}, "a.yml")
    with pytest.raises(ConfigError, match=r"early stopping \(a.yml\) has metric but no patience"):
        early_stopping_from({"metric": "mIoU"}, "a.yml")
    with pytest.raises(ConfigError, match=r"metric must be one of .*got 'IoU' \(early_stop in a.yml"):
        early_stopping_from({"patience": 2, "metric": "IoU"}, "a.yml")


def scripted_evaluation(monkeypatch, miou_by_iter, calls):
    """Evaluations report the given mIoU per iteration (the trainer's iteration is read from
    the call count: one evaluation every ``save_interval``)."""
    def evaluate(model, dataset, **kw):
        it = sorted(miou_by_iter)[len(calls)]
        calls.append(it)
        return {"mIoU": miou_by_iter[it], "Acc": 0.5, "Kappa": 0.1, "mDice": 0.2, "class_IoU": [0.0] * 3}

    monkeypatch.setattr(val_module, "evaluate", evaluate)


def trainer(cfg, out, **kw):
    seed_everything(0)
    return tiny_trainer(SegBuilder(Config(cfg)), out, do_eval=True, save_interval=2, log_iters=100, **kw)


def logged(fn):
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    get_logger().addHandler(handler)
    try:
        result = fn()
    finally:
        get_logger().removeHandler(handler)
    return result, buf.getvalue()


MIOU = {2: 0.30, 4: 0.50, 6: 0.45, 8: 0.50, 10: 0.49, 12: 0.70}


def test_stops_at_the_right_evaluation_and_keeps_the_best(tmp_path, monkeypatch):
    cfg, _ = write_tiny_config(tmp_path, iters=12)
    out = str(tmp_path / "out")
    calls = []
    scripted_evaluation(monkeypatch, MIOU, calls)
    t = trainer(cfg, out, early_stop=EarlyStopping(patience=2))
    result, log = logged(t.train)
    # best 0.50 at iter 4; iter 6 (0.45) and iter 8 (0.50, not above the best) do not improve
    assert calls == [2, 4, 6, 8] and result["iter"] == 8 and result["stopped_by"] is None
    assert result["early_stop"] == ("val mIoU has not increased by more than 0 over its best 0.5000 (iter 4) "
                                    "in 2 evaluations (iters 6, 8)")
    assert f"early stop at iter 8: {result['early_stop']}" in log
    assert result["best"] == {"mIoU": 0.5, "iter": 4}
    best = json.load(open(os.path.join(out, "best_model", "state.json")))
    assert best["best"] == {"mIoU": 0.5, "iter": 4} and best["iter"] == 4
    # the checkpoint of the stopping iteration records the stop (it was re-saved after the evaluation)
    state = json.load(open(os.path.join(ckpt.latest_checkpoint(out), "state.json")))
    assert state["iter"] == 8 and state["hooks"]["early_stop"]["stopped"] == result["early_stop"]


def test_min_delta_counts_small_gains_as_none(tmp_path, monkeypatch):
    cfg, _ = write_tiny_config(tmp_path, iters=12)
    calls = []
    scripted_evaluation(monkeypatch, {2: 0.30, 4: 0.33, 6: 0.34, 8: 0.38, 10: 0.5, 12: 0.6}, calls)
    result = trainer(cfg, str(tmp_path / "out"), early_stop=EarlyStopping(patience=2, min_delta=0.05)).train()
    # 0.33 and 0.34 are within 0.05 of 0.30: stop at iter 6; best_model still follows every gain
    assert calls == [2, 4, 6] and result["iter"] == 6 and result["best"] == {"mIoU": 0.34, "iter": 6}


def test_no_stop_when_the_last_evaluation_is_the_end(tmp_path, monkeypatch):
    cfg, _ = write_tiny_config(tmp_path, iters=4)
    calls = []
    scripted_evaluation(monkeypatch, {2: 0.5, 4: 0.4}, calls)
    result = trainer(cfg, str(tmp_path / "out"), early_stop=EarlyStopping(patience=1)).train()
    assert result["iter"] == 4 and result["early_stop"] is None


def test_resume_after_an_early_stop(tmp_path, monkeypatch):
    """Same patience: nothing trained, said so. Larger patience: continues, counting the stale
    evaluations already seen. Early stopping off: continues to iters."""
    cfg, _ = write_tiny_config(tmp_path, iters=12)
    out = str(tmp_path / "out")
    calls = []
    scripted_evaluation(monkeypatch, MIOU, calls)
    trainer(cfg, out, early_stop=EarlyStopping(patience=2)).train()
    weights = {k: v.numpy().copy() for k, v in paddle.load(os.path.join(out, "iter_8", "model.pdparams")).items()}

    again = trainer(cfg, out, early_stop=EarlyStopping(patience=2))
    result, log = logged(lambda: again.train(resume_model="auto"))
    assert result["iter"] == 8 and result["early_stop"] and calls == [2, 4, 6, 8]
    assert "this run stopped early at iter 8" in log and "nothing to train" in log
    assert "--early_stop_patience" in log
    for k, v in paddle.load(os.path.join(out, "iter_8", "model.pdparams")).items():
        np.testing.assert_array_equal(np.asarray(v), weights[k], err_msg=k)

    more = trainer(cfg, out, early_stop=EarlyStopping(patience=3))
    del calls[:]
    calls += [2, 4, 6, 8]
    result, log = logged(lambda: more.train(resume_model="auto"))
    # iters 6, 8 and now 10 (0.49) without improvement: patience 3 is reached at iter 10
    assert "it continues" in log and calls == [2, 4, 6, 8, 10]
    assert result["iter"] == 10 and "in 3 evaluations (iters 6, 8, 10)" in result["early_stop"]

    off = trainer(cfg, out)  # no early stopping
    result = off.train(resume_model="auto")
    assert result["iter"] == 12 and result["early_stop"] is None and result["best"] == {"mIoU": 0.7, "iter": 12}


def test_train_tool_flags(tmp_path, monkeypatch, capsys):
    tools_train = load_tool("train")
    cfg, _ = write_tiny_config(tmp_path, iters=8)
    out = str(tmp_path / "out")
    code = run_cli(tools_train.cli, ["--config", cfg, "--save_dir", out, "--early_stop_patience", "2",
                                     "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "early stopping (mIoU, patience 2) watches the validation metric: add --do_eval" in err
    calls = []
    scripted_evaluation(monkeypatch, {2: 0.5, 4: 0.4, 6: 0.4, 8: 0.9}, calls)
    (result, log) = logged(lambda: tools_train.main(["--config", cfg, "--save_dir", out, "--do_eval",
                                                     "--save_interval", "2", "--early_stop_patience", "2",
                                                     "--early_stop_min_delta", "0.01", "--device", "cpu"]))
    assert result["iter"] == 6 and "stopped early at iter 6/8; best mIoU 0.5000 at iter 2" in log
    assert tools_train.cli(["--config", cfg, "--save_dir", out, "--do_eval", "--save_interval", "2",
                            "--early_stop_patience", "2", "--resume_model", "auto", "--device", "cpu"]) == 0
    # a config block does the same
    with open(cfg, "a") as f:
        f.write("early_stop: {patience: 1, metric: Acc}\n")
    assert early_stopping_from(Config(cfg).section("early_stop")) == EarlyStopping(1, "Acc")


def test_resume_keeps_a_better_best_model(tmp_path, monkeypatch):
    """iter_2 is saved before the evaluation at 2: the best it found lives in best_model only."""
    cfg, _ = write_tiny_config(tmp_path, iters=4)
    out = str(tmp_path / "out")
    calls = []
    scripted_evaluation(monkeypatch, {2: 0.6, 4: 0.4}, calls)
    first = trainer(cfg, out)
    first.iters = 2
    first.train()
    assert json.load(open(os.path.join(out, "iter_2", "state.json")))["best"]["iter"] == -1
    result = trainer(cfg, out).train(resume_model="auto")
    assert calls == [2, 4] and result["best"] == {"mIoU": 0.6, "iter": 2}
    assert json.load(open(os.path.join(out, "best_model", "state.json")))["best"] == {"mIoU": 0.6, "iter": 2}
