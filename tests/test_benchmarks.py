"""The benchmark suite does not rot: ``benchmarks/run.py --quick`` runs every section.

Runs in the toolkit's own environment, where PaddleSeg is absent: its rows
must be reported as skipped with the reason, not crash. No timing is asserted
(the machine is shared and noisy); only that every section produced numbers.
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

SECTIONS = ["mkl", "psa_op", "psa_attention", "models", "data", "deploy", "scaling"]


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick",
                           "--threads", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    files = list(out.glob("*-quick.json"))
    return proc, (json.loads(files[0].read_text()) if files else None), out


@pytest.mark.slow
def test_quick_run_writes_every_section(quick_run):
    proc, record, out = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record is not None, f"no results JSON in {out}"
    assert set(record["sections"]) == set(SECTIONS)
    machine = record["machine"]
    assert machine["threads"] == 2 and machine["paddle"] and machine["cores"] >= 1
    for key, sec in record["sections"].items():
        assert sec["rows"], key
        assert "error" not in sec["columns"], (key, sec["rows"])
    md = (out / (next(iter(out.glob("*-quick.json"))).stem + ".md")).read_text()
    assert md.count("### ") == len(SECTIONS)
    assert "| model |" in md


@pytest.mark.slow
def test_quick_run_measures_the_op_and_skips_the_absent_peer(quick_run):
    _, record, _ = quick_run
    psa = record["sections"]["psa_op"]["rows"]
    impls = {r["impl"] for r in psa}
    assert {"copy floor", "op collect", "op distribute", "paddle collect"} <= impls
    for r in psa:
        assert _number(r["bwd ms"])
    models = record["sections"]["models"]
    archs = {r["model"] for r in models["rows"]}
    assert archs == {"PSPNet", "DANet", "PointRend", "PSANet"}
    for r in models["rows"]:
        assert _number(r["ours ms"]) and r["ours params"] > 0
    # DANet's recipe has a different aux head: PaddleSeg's network, built by our code, is timed too.
    same = [r for r in models["rows"]
            if r["model"] == "DANet" and r["pass"].startswith("train step, same architecture")]
    assert len(same) == 1 and "model.aux_head=linear" in same[0]["pass"]
    peer_rows = [r for r in models["rows"] if r["peer"] == "PaddleSeg"]
    try:
        import paddleseg  # noqa: F401
    except ImportError:
        assert all(r["peer ms"] is None for r in peer_rows)
        assert any("PaddleSeg rows skipped" in n and "setup_bench_env.sh" in n
                   for n in models["notes"])
    # PSANet's comparisons are against our own models and always run.
    psanet = [r for r in models["rows"] if r["model"] == "PSANet"]
    assert psanet and all(_number(r["peer ms"]) for r in psanet)


def test_unknown_section_is_a_clear_error():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"),
                           "--sections", "psa_op,modles", "--out", os.devnull],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert "modles" in proc.stderr and "models" in proc.stderr


def test_peer_fix_ones_like_gives_float_for_integer_input():
    import paddle

    from paddleseg_peer import _PatchedPaddle, _float_ones_like

    patched = _PatchedPaddle(paddle, ones_like=_float_ones_like(paddle))
    label = paddle.to_tensor([[1, 2], [3, 4]], dtype="int64")
    ones = patched.ones_like(label)
    assert ones.dtype == paddle.float32 and ones.numpy().tolist() == [[1.0, 1.0], [1.0, 1.0]]
    # Float input and an explicit dtype are left alone; other names pass through.
    assert patched.ones_like(paddle.zeros([2], dtype="float64")).dtype == paddle.float64
    assert patched.ones_like(label, dtype="int32").dtype == paddle.int32
    assert patched.zeros is paddle.zeros
    # The mask * coef product PaddleSeg computes now works under Paddle 3.
    mask = paddle.ones([2, 2], dtype="float32")
    assert float(paddle.mean(mask * ones)) == 1.0


def test_peer_fix_concat_turns_scalars_into_vectors():
    import paddle

    from paddleseg_peer import _PatchedPaddle, _concat_scalars_as_vectors

    patched = _PatchedPaddle(paddle, concat=_concat_scalars_as_vectors(paddle))
    x = paddle.zeros([3, 5])
    hw = paddle.shape(x)[0] * paddle.shape(x)[1]  # 0-D in Paddle 3
    n = paddle.to_tensor(8, dtype=hw.dtype)
    both = patched.concat([hw, n])
    assert both.shape == [2] and both.numpy().tolist() == [15, 8]
    assert int(paddle.min(both)) == 8
    # Ordinary (non-scalar) inputs are untouched.
    assert patched.concat([paddle.ones([2, 1]), paddle.ones([2, 1])], axis=1).shape == [2, 2]


def test_psa_attention_lower_bound_runs_only_where_unfused_does_not_fit():
    import psa_attention as bench

    assert bench.candidates(1, 32 * 64) == ["unfused", "fused"]
    assert bench.candidates(1, 64 * 128) == ["unfused", "fused"]
    assert bench.candidates(1, 128 * 256) == ["unfused", "fused", "unfused_gemms"]  # 24 GiB vs 8
    assert bench.candidates(1, 256 * 512) == ["unfused", "fused"]  # even the bound does not fit
    res = bench.child(1, 8, 4, 5, 3, 3, "unfused_gemms", 0, 1, 1)
    assert res["ms"] > 0 and math.isfinite(res["peak_mb"])


def run_script(name, *args, timeout=300, cwd=None):
    """stdout of ``benchmarks/<name> --quick --threads 1 <args>``, which must exit 0."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name), "--quick",
                           "--threads", "1", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_winograd_benchmark_runs():
    out = run_script("winograd.py")
    rows = [line for line in out.splitlines() if line.startswith("| 1, 64")]
    assert len(rows) == 2 and all(row.count("x |") == 2 for row in rows), out


def test_conv_layout_benchmark_runs():
    out = run_script("conv_layout.py")
    rows = [line for line in out.splitlines() if line.startswith("| 1, 8")]
    assert len(rows) == 2 and all(row.count("x |") == 2 for row in rows), out
    # same values in both layouts: the outputs agree to float rounding
    assert all(float(row.split("|")[-2]) < 1e-5 for row in rows), out


def test_step_profile_runs(tmp_path):
    out = run_script("step_profile.py", "--models", "PSPNet,PSANet", "--top", "3", timeout=600,
                     cwd=str(tmp_path))
    for arch in ("PSPNet", "PSANet"):
        rows = [line for line in out.splitlines() if line.startswith(f"| {arch} |")]
        assert len(rows) == 3 + 3 + 1, out  # groups, top ops, whole step
        assert rows[-1].endswith("| 100 % |")
        shares = [float(r.split("|")[-2].strip(" %")) for r in rows[:-1]]
        assert all(0 <= s <= 100 for s in shares) and sum(shares[:3]) <= 100.5, rows
    assert not (tmp_path / "profiler_log").exists()  # the trace stays in a temporary folder
