"""Our models vs PaddleSeg 2.8's implementation of the same architecture, same Paddle, same process.

For PSPNet, DANet and PointRend each side builds its own Cityscapes R50_vd
recipe (ours from ``configs/<model>/*_resnet50*_cityscapes_1024x512_80k.yml``,
PaddleSeg's from :mod:`paddleseg_peer`), with random weights, and we time:

* eval: ``model.eval()`` forward under ``no_grad`` on 1x3x512x1024, full
  resolution logits out (what evaluation and prediction run);
* train: one training step on 2x3x512x512 with 19-class labels: forward in
  train mode, the recipe's losses over every output, backward, Momentum SGD
  step, clear grads. Ours is ``Trainer._step`` itself (what ``tools/train.py``
  runs per iteration); PaddleSeg's is the same sequence with its losses, as in
  its ``core/train.py``.

Both sides alternate within one process (interleaved rounds, same threads),
so load from elsewhere hits both alike. PSANet has no PaddleSeg peer: it is
timed against our PSPNet (same backbone, same shapes) and against its own
pure-Paddle PSA path.

Target (issue 6): ours <= 0.9x PaddleSeg's time, eval and train.

Same process means the same MKL code path for both (this process imported
``paddleseg_ext``, which selects MKL's AVX2 kernels on AMD CPUs; see the
``mkl`` section), so those rows compare the implementations alone. The
``as shipped`` rows compare what users of each toolkit get: each side in its
own process, alternating, ours after ``import paddleseg_ext`` and PaddleSeg
in a plain environment (its tools do not touch MKL's dispatch). They are
added only where the dispatch changes something (``mkl_dispatch.applied``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __name__ == "__main__":  # a child process: make common and paddleseg_peer importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (ROOT, Context, Section, interleaved_medians, plain_paddle_env, ratio,  # noqa: E402
                    run_child)

SCRIPT = str(Path(__file__).resolve())

RECIPES = {
    "PSPNet": "configs/pspnet/pspnet_resnet50_os8_cityscapes_1024x512_80k.yml",
    "DANet": "configs/danet/danet_resnet50_os8_cityscapes_1024x512_80k.yml",
    "PointRend": "configs/pointrend/pointrend_resnet50_cityscapes_1024x512_80k.yml",
    "PSANet": "configs/psanet/psanet_resnet50_os8_cityscapes_1024x512_80k.yml",
}
#: Overrides that make our recipe PaddleSeg's network where the recipes differ in a
#: training-only part (DANet: PaddleSeg's linear aux head on stage 4, its logit resize).
SAME_ARCHITECTURE = {"DANet": ["model.aux_head=linear", "model.align_mode=1"]}
COLUMNS = ["model", "pass", "input", "ours ms", "peer", "peer ms", "ours / peer",
           "ours params", "peer params"]


def count_params(model: Any) -> int:
    """Learnable parameters."""
    return int(sum(int(p.numel()) for p in model.parameters() if not p.stop_gradient))


def build_ours(arch: str, backbone: str, opts: Optional[List[str]] = None
               ) -> Tuple[Any, Dict[str, List[Any]]]:
    """Our model and losses from the recipe, random weights (no downloads)."""
    from paddleseg_ext.cvlibs import Config, SegBuilder

    opts = [f"model.backbone.type={backbone}", "model.backbone.pretrained=null",
            "model.pretrained=null", *(opts or [])]
    if backbone in ("ResNet18_vd", "ResNet34_vd"):  # 2-block last stage: the recipes' 3-entry multi_grid does not apply
        opts.append("model.backbone.multi_grid=[1,1]")
    builder = SegBuilder(Config(str(ROOT / RECIPES[arch]), opts=opts))
    model = builder.model
    model.config_policy = builder.policy_overrides  # the recipe's execution choices (psa_impl)
    return model, builder.loss


def prepared(model: Any, target: str, **policy: Any) -> Any:
    """Our model as the tools run it: prepared for ``target`` by the execution policy
    (the environment's, the recipe's choices, then ``policy``); ``train`` in place."""
    from paddleseg_ext.runtime import policy_from_environment, prepare

    choices = dict(getattr(model, "config_policy", {}), **policy)
    return prepare(model, policy_from_environment(target=target, **choices))


def our_train_step(model: Any, losses: Dict[str, List[Any]], workdir: Path
                   ) -> Callable[[Any, Any], Any]:
    """The trainer's own per-iteration step, bound to a fresh Momentum optimizer."""
    import paddle

    from paddleseg_ext.core.train import Trainer

    opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, weight_decay=4.0e-5,
                                    parameters=model.parameters())
    trainer = Trainer(model, opt, losses, train_dataset=None, iters=1, batch_size=1,
                      save_dir=str(workdir / "unused"), handle_signals=False)
    return trainer._step


def peer_train_step(model: Any, losses: List[Any], coefs: List[float]) -> Callable[[Any, Any], Any]:
    """PaddleSeg's per-iteration sequence: forward, loss sum, backward, step, clear."""
    import paddle

    import paddleseg_peer

    opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, weight_decay=4.0e-5,
                                    parameters=model.parameters())

    def step(img: Any, label: Any) -> float:
        loss = paddleseg_peer.loss_sum(model(img), label, losses, coefs)
        loss.backward()
        opt.step()
        model.clear_gradients()
        return float(loss)

    return step


def _inputs(shape: Tuple[int, int, int, int], num_classes: int) -> Tuple[Any, Any]:
    import numpy as np
    import paddle

    rng = np.random.default_rng(0)
    img = paddle.to_tensor(rng.standard_normal(shape).astype("float32"))
    label = paddle.to_tensor(rng.integers(0, num_classes, (shape[0], *shape[2:])).astype("int64"))
    return img, label


def _eval_fn(model: Any, img: Any) -> Callable[[], Any]:
    import paddle

    def forward() -> Any:
        with paddle.no_grad():
            return model(img)[0]

    return forward


def child_main(argv: Optional[Sequence[str]] = None) -> int:
    """One side, one pass, in this process: print ``{"ms": median, "params": n}``.

    The PaddleSeg side never imports ``paddleseg_ext`` (which would change
    MKL's code path): it runs as PaddleSeg's own tools would.
    """
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true")
    p.add_argument("--side", choices=["ours", "peer"], required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--pass", dest="pass_", choices=["eval", "train"], required=True)
    p.add_argument("--shape", type=int, nargs=4, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", default=".")
    args = p.parse_args(argv)
    import paddle

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(args.threads)
    paddle.seed(0)
    img, label = _inputs(tuple(args.shape), 19)
    if args.side == "ours":
        model, losses = build_ours(args.arch, args.backbone)
    else:
        import paddleseg_peer

        model, peer_losses, coefs = paddleseg_peer.build_model(args.arch, args.backbone)
    if args.pass_ == "eval":
        model.eval()
        fn = _eval_fn(prepared(model, "infer") if args.side == "ours" else model, img)
    else:
        if args.side == "ours":
            model = prepared(model, "train")
        model.train()
        step = (our_train_step(model, losses, Path(args.workdir)) if args.side == "ours"
                else peer_train_step(model, peer_losses, coefs))
        fn = lambda: step(img, label)  # noqa: E731
    fn()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    print(json.dumps({"ms": statistics.median(times) * 1e3, "params": count_params(model)}))
    return 0


def as_shipped(ctx: Context, arch: str, backbone: str, pass_: str, shape: Tuple[int, ...],
               repeats: int) -> Dict[str, Dict[str, float]]:
    """``{side: {"ms", "params"}}``, each side timed in its own process (eval: ours
    first; train: PaddleSeg first)."""
    plain = plain_paddle_env()
    args = ["--arch", arch, "--backbone", backbone, "--pass", pass_,
            "--shape", *map(str, shape), "--threads", str(ctx.threads),
            "--repeats", str(repeats), "--workdir", str(ctx.workdir)]
    out: Dict[str, Dict[str, float]] = {}
    for side in (("ours", "peer") if pass_ == "eval" else ("peer", "ours")):
        res = run_child([SCRIPT, "--child", "--side", side, *args], timeout=3600,
                        base_env=plain if side == "peer" else None)
        if "error" in res:
            raise RuntimeError(f"{arch} {pass_} ({side}, own process) failed: {res['error']}")
        out[side] = res
    return out


def run(ctx: Context) -> Section:
    """Eval and train timings for each architecture, ours vs PaddleSeg 2.8."""
    import paddle

    import paddleseg_peer

    backbone = "ResNet18_vd" if ctx.quick else "ResNet50_vd"
    eval_shape = (1, 3, 64, 128) if ctx.quick else (1, 3, 512, 1024)
    train_shape = (2, 3, 64, 64) if ctx.quick else (2, 3, 512, 512)
    section = Section("models", f"Models vs PaddleSeg {paddleseg_peer.PADDLESEG_VERSION} "
                      f"({backbone}, CPU, float32)", COLUMNS)
    try:
        paddleseg_peer.load()
        peer_error = None
        section.notes.append("PaddleSeg run-time fixes: " + " ".join(paddleseg_peer.FIXES))
    except paddleseg_peer.PeerUnavailable as e:
        peer_error = str(e)
        section.notes.append(f"PaddleSeg rows skipped: {e}")

    def add(arch: str, pass_: str, shape: Tuple[int, ...], ms: Dict[str, float], peer: str,
            ours_params: int, peer_params: Optional[int]) -> None:
        section.rows.append({
            "model": arch, "pass": pass_, "input": "x".join(map(str, shape)),
            "ours ms": ms["ours"], "peer": peer, "peer ms": ms.get("peer"),
            "ours / peer": ratio(ms["ours"], ms.get("peer")),
            "ours params": ours_params, "peer params": peer_params})

    section.notes += [
        f"median of {ctx.repeats} interleaved rounds after 1 warm-up round; random "
        "weights; 19 classes; labels uniform in [0, 19).",
        "train step = forward + the recipe's losses on every output + backward + Momentum "
        "step + clear grads; ours is Trainer._step.",
        "ours = the model prepared by the execution policy as the tools run it "
        "(paddleseg_ext.runtime.prepare: target infer for eval, train for the train step). "
        "eval: without BN folding; eval, BN folded: with it (what tools/val.py and "
        "tools/predict.py run by default), timed in the same interleaved rounds as the "
        "'eval' row (same PaddleSeg times).",
        "DANet recipes differ in one head: ours has an FCN aux head on stage 3 "
        "(3x3 conv, 2.36 M params, train only); PaddleSeg's aux is a 1x1 conv on stage 4. "
        "Eval runs neither. The 'same architecture' train row builds PaddleSeg's heads "
        "with our code (SAME_ARCHITECTURE), timed in the same rounds.",
    ]
    eval_img, _ = _inputs(eval_shape, 19)
    train_img, train_label = _inputs(train_shape, 19)
    for arch in [a for a in ("PSPNet", "DANet", "PointRend") if a in ctx.models]:
        paddle.seed(0)
        ours, losses = build_ours(arch, backbone)
        peer = peer_losses = coefs = None
        if peer_error is None:
            peer, peer_losses, coefs = paddleseg_peer.build_model(arch, backbone)
        n_ours, n_peer = count_params(ours), (count_params(peer) if peer is not None else None)

        if "eval" in ctx.passes:
            ctx.log(f"[models] {arch} eval {eval_shape}")
            # tools/val.py and tools/predict.py run the BN-folded copy by default; the
            # model without folding is timed in the same rounds (the "before").
            unfolded, folded = prepared(ours, "infer", fold_bn=False), prepared(ours, "infer")
            fns = {"ours": _eval_fn(unfolded, eval_img), "folded": _eval_fn(folded, eval_img)}
            if peer is not None:
                peer.eval()
                fns["peer"] = _eval_fn(peer, eval_img)
            ms = interleaved_medians(fns, 1, ctx.repeats)
            add(arch, "eval", eval_shape, ms, "PaddleSeg", n_ours, n_peer)
            add(arch, "eval, BN folded", eval_shape, dict(ms, ours=ms["folded"]), "PaddleSeg",
                n_ours, n_peer)
            del folded, unfolded, fns
        if "train" not in ctx.passes:
            del ours, peer
            continue
        ctx.log(f"[models] {arch} train {train_shape}")
        ours = prepared(ours, "train")
        step = our_train_step(ours, losses, ctx.workdir)
        fns = {"ours": lambda step=step: step(train_img, train_label)}
        same = None
        if arch in SAME_ARCHITECTURE:  # PaddleSeg's network built by our code, same rounds
            paddle.seed(0)
            same, same_losses = build_ours(arch, backbone, SAME_ARCHITECTURE[arch])
            same = prepared(same, "train")
            same_step = our_train_step(same, same_losses, ctx.workdir)
            fns["same"] = lambda same_step=same_step: same_step(train_img, train_label)
        if peer is not None:
            peer.train()
            peer_step = peer_train_step(peer, peer_losses, coefs)
            fns["peer"] = lambda peer_step=peer_step: peer_step(train_img, train_label)
        ms = interleaved_medians(fns, 1, ctx.repeats)
        add(arch, "train step", train_shape, ms, "PaddleSeg", n_ours, n_peer)
        if same is not None:
            add(arch, "train step, same architecture (" + " ".join(SAME_ARCHITECTURE[arch]) + ")",
                train_shape, dict(ms, ours=ms["same"]), "PaddleSeg", count_params(same), n_peer)
        del ours, peer, fns, step, same

    from paddleseg_ext.utils import mkl_dispatch

    if "shipped" not in ctx.passes:
        section.notes.append("No 'as shipped' rows: not asked for (--passes).")
    elif peer_error is None and mkl_dispatch.applied:
        # Each toolkit as its users run it: own process, its own MKL set-up.
        shipped_repeats = 1 if not ctx.quick else 2
        for arch in [a for a in ("PSPNet", "DANet", "PointRend") if a in ctx.models]:
            for pass_, shape in (("eval", eval_shape), ("train", train_shape)):
                ctx.log(f"[models] {arch} {pass_} {shape}, as shipped (own processes)")
                ms = as_shipped(ctx, arch, backbone, pass_, shape, shipped_repeats)
                add(arch, f"{'eval' if pass_ == 'eval' else 'train step'}, as shipped", shape,
                    {"ours": ms["ours"]["ms"], "peer": ms["peer"]["ms"]}, "PaddleSeg, plain MKL",
                    ms["ours"]["params"], ms["peer"]["params"])
        section.notes.append(
            f"'as shipped' rows: each side in its own process (1 warm-up call, median of "
            f"{shipped_repeats} timed), ours with MKL_DEBUG_CPU_TYPE="
            f"{os.environ.get('MKL_DEBUG_CPU_TYPE')} as import paddleseg_ext sets it on this "
            "CPU, PaddleSeg in the plain environment its own tools run in. The gain is MKL's "
            "AVX2 path (section mkl), not the implementation: PaddleSeg users get it too by "
            "exporting MKL_DEBUG_CPU_TYPE=5 on AMD CPUs.")
    else:
        section.notes.append("No 'as shipped' rows: " + (
            "PaddleSeg is absent." if peer_error is not None else
            "import paddleseg_ext leaves MKL's dispatch alone on this CPU, so separate processes "
            "would measure the same thing as the rows above."))

    if "PSANet" not in ctx.models or not {"eval", "train"} <= set(ctx.passes):
        return section
    # PSANet: no PaddleSeg peer; against our PSPNet and its own pure-Paddle PSA path.
    ctx.log("[models] PSANet vs PSPNet and pure-Paddle PSA")
    paddle.seed(0)
    nets = {"PSANet": build_ours("PSANet", backbone),
            "PSANet pure-Paddle PSA": build_ours("PSANet", backbone, ["model.psa_impl=paddle"]),
            "PSPNet": build_ours("PSPNet", backbone)}
    for pass_, shape, img in (("eval", eval_shape, eval_img), ("train step", train_shape, train_img)):
        fns = {}
        for name, (net, losses) in nets.items():
            if pass_ == "eval":
                fns[name] = _eval_fn(prepared(net, "infer"), img)
            else:
                net = prepared(net, "train")
                fns[name] = (lambda s=our_train_step(net, losses, ctx.workdir): s(img, train_label))
        ms = interleaved_medians(fns, 1, ctx.repeats)
        psanet_params = count_params(nets["PSANet"][0])
        for peer_name in ("PSPNet", "PSANet pure-Paddle PSA"):
            add("PSANet", pass_, shape, {"ours": ms["PSANet"], "peer": ms[peer_name]},
                f"our {peer_name}", psanet_params, count_params(nets[peer_name][0]))
    return section


if __name__ == "__main__":
    sys.exit(child_main())
