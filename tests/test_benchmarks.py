"""Smoke test of benchmarks/: the modules import, the correctness gates hold, a tiny run works.

No timing assertions (timed tests are not allowed here): only that the harness runs end to end
and that tinygrad_bn's training step equals the hand-written numpy reference in float64.
"""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import bench_batchnorm  # noqa: E402
import bench_overhead  # noqa: E402
import bench_step  # noqa: E402
import harness  # noqa: E402
import run_all  # noqa: E402


@pytest.fixture(autouse=True)
def pinned_threads():
    harness.pin_threads()
    yield
    harness.unpin_threads()


@pytest.mark.parametrize("config", [bench_step.TINY, bench_step.CONFIGS["paper"]],
                         ids=["tiny", "paper"])
def test_step_correctness_gate(config):
    errors = bench_step.gate(*config)
    assert errors["tinygrad_bn"] <= 1e-9 and errors["tinygrad_bn jit"] <= 1e-9


def test_gate_catches_a_wrong_step(monkeypatch):
    # A reference with another learning rate differs from the second step on: the gate must see it.
    monkeypatch.setattr(bench_step, "LR", 0.02)
    real = bench_step.NumpyMLP
    monkeypatch.setattr(bench_step, "NumpyMLP", lambda *a, lr, **k: real(*a, lr=0.01, **k))
    with pytest.raises(AssertionError, match="differs from the numpy reference"):
        bench_step.gate(*bench_step.TINY)


def test_numpy_reference_matches_torch():
    torch = pytest.importorskip("torch")
    sizes, activation, batch = bench_step.TINY
    model = bench_step.build_tinygrad(sizes, activation, np.float64)
    ref = bench_step.build_reference(model, activation)
    tm = bench_step.build_torch(torch, model, activation)
    x, t = bench_step.make_batch(sizes, batch, np.float64)
    loss, grads = ref.loss_and_grads(x, t)
    torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(t)).backward()
    for p, g in zip(tm.parameters(), grads):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-10, atol=1e-12)


def test_tiny_step_comparison_runs():
    cands = bench_step.candidates(*bench_step.TINY, np.float32)
    res = harness.compare(cands, rounds=2, inner=2, reference=["numpy", "torch"])
    assert set(res["candidates"]) >= {"tinygrad_bn", "tinygrad_bn jit", "numpy"}
    assert "numpy" in res["candidates"]["tinygrad_bn"]["ratio"]
    assert harness.table(bench_step.rows({"cases": {"tiny/float32": res}}), bench_step.HEADERS)


def test_overhead_runs():
    res = bench_overhead.run(n_ops=100, rounds=2)
    assert res["candidates"]["tinygrad_bn"]["us_per_op"] > 0
    assert res["candidates"]["tinygrad_bn jit"]["us_per_op"] > 0
    assert bench_overhead.rows(res)


def test_batchnorm_candidates_agree_and_run():
    assert bench_batchnorm.check_agree()
    res = bench_batchnorm.run(quick=True, shapes=((16, 8),))
    e = res["cases"]["(16,8)/float32"]["candidates"]["tinygrad_bn"]
    assert e["peak_x"] > 0 and "composite" in e["ratio"]
    assert bench_batchnorm.rows(res)


def test_run_all_quick_writes_json(tmp_path):
    path = tmp_path / "results.json"
    run_all.main(["--quick", "--only", "overhead", "--json", str(path)])
    data = json.loads(path.read_text())
    assert "overhead" in data and data["machine"]["numpy"] == np.__version__
    if data["machine"]["torch"] is None:  # no torch rows, and no crash either
        assert not data["targets"]
    else:
        assert data["targets"][0]["target"] == "per-op overhead vs torch"


def test_without_torch_the_benchmarks_skip_its_rows_and_say_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "optional_torch", lambda pin=True: None)
    path = tmp_path / "results.json"
    run_all.main(["--quick", "--only", "overhead", "--json", str(path)])
    out = capsys.readouterr().out
    assert harness.TORCH_MISSING in out
    data = json.loads(path.read_text())
    assert "torch" not in data["overhead"]["candidates"] and not data["targets"]
