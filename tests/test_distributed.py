"""Data-parallel training over MPI: each multi-rank check runs as ``mpiexec -n R`` on this
machine (tests/_dist_worker.py), bounded by a timeout; its rank 0 reports measured differences.

References: one process on the whole batch (our BatchNorm1d, and PyTorch's in float64), central
differences for all_reduce's derivatives.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_bn import Tensor, nn
from tinygrad_bn.distributed.data_parallel import _buckets, check_divides
from tinygrad_bn.distributed.launch import find_mpiexec, run_ranks

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_dist_worker.py")
TIMEOUT = 120  # seconds: a hang fails the test instead of the suite

needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or find_mpiexec() is None,
    reason="needs mpi4py and mpiexec: pip install '.[distributed]' (make test does)")


def run_worker(ranks, *args):
    """The worker's JSON report from rank 0; fails with the ranks' stderr if it did not end well."""
    proc = run_ranks(ranks, [sys.executable, WORKER, *map(str, args)], timeout=TIMEOUT,
                     capture_output=True, text=True)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_small(errors, tol):
    too_big = {k: v for k, v in errors.items() if not v <= tol}
    assert not too_big, f"differences above {tol:g}: {too_big}"


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_sync_batchnorm_on_ranks_equals_one_process_on_the_whole_batch(ranks):
    # e.g. 2 ranks x 30 rows vs one process x 60 rows, float64, (N, C) and (N, C, L): output,
    # dx, d gamma, d beta (summed over ranks) and the running statistics after two steps.
    errors = run_worker(ranks, "syncbn")["errors"]
    assert len(errors) == 12
    assert_small(errors, 1e-12)


@needs_mpi
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_sync_batchnorm_in_one_process_matches_torch_batchnorm1d():
    # A plain process is a world of one (MPI's singleton start): SyncBatchNorm against our
    # BatchNorm1d and PyTorch's BatchNorm1d in float64 on the same batch.
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, WORKER, "syncbn", "--torch"], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])["errors"]
    assert sum(k.startswith("torch ") for k in errors) == 12
    assert_small(errors, 1e-12)


@needs_mpi
def test_twenty_steps_with_sync_batchnorm_on_two_ranks_equal_one_process():
    # The paper's 784-100-100-100-10 sigmoid network with BN, global batch 60, SGD + momentum.
    report = run_worker(2, "train", 20, "sync")
    assert_small(report["errors"], 1e-10)
    assert report["spread"] == 0.0  # the ranks' parameters are bit-identical
    assert len(report["losses"]) == 20 and all(np.isfinite(report["losses"]))


@needs_mpi
def test_twenty_steps_with_per_rank_batchnorm_average_the_halves_gradients():
    report = run_worker(2, "train", 20, "local")
    assert_small(report["errors"], 1e-10)
    assert report["spread"] == 0.0


@needs_mpi
def test_per_rank_batchnorm_normalizes_each_half_by_itself():
    errors = run_worker(2, "localbn")["errors"]
    distance = -errors.pop("distance to whole-batch BN")
    assert_small(errors, 1e-12)
    assert distance > 1e-2  # each half's statistics differ from the whole batch's


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_all_reduce_derivatives_pass_gradcheck_across_ranks(ranks):
    report = run_worker(ranks, "gradcheck")
    assert report["all_passed"]
    # second derivatives through all_reduce (create_graph) vs central differences of gradients
    assert report["second_order"] < 1e-6


@needs_mpi
def test_gradcheck_across_ranks_catches_a_wrong_all_reduce_derivative():
    report = run_worker(2, "gradcheck", "--wrong")
    assert not report["any_passed"]


@needs_mpi
def test_an_error_on_one_rank_ends_every_rank_with_the_error():
    proc = run_ranks(2, [sys.executable, WORKER, "error"], timeout=TIMEOUT, capture_output=True,
                     text=True)
    report = f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert proc.returncode != 0, report
    assert "[rank 1] Traceback" in proc.stderr, report
    assert "ValueError: deliberate failure on rank 1" in proc.stderr, report
    assert "got past" not in proc.stdout, report


def test_a_rank_count_that_does_not_divide_the_batch_is_refused():
    with pytest.raises(ValueError, match="7 ranks do not divide the global batch of 60"):
        check_divides(60, 7)
    with pytest.raises(ValueError, match="at least 1"):
        check_divides(60, 0)
    check_divides(60, 4)


@pytest.mark.parametrize("flags, message", [
    (["--ranks", "7"], "7 ranks do not divide the global batch of 60"),
    (["--ranks", "0"], "--ranks must be at least 1"),
    (["--ranks", "2", "--sync-bn", "--no-bn"], "--sync-bn needs a network with batch norm"),
])
def test_cli_refuses_bad_rank_flags_in_one_line(flags, message, capsys):
    from tinygrad_bn.cli import main
    assert main(["train", *flags, "--quick", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sync_batchnorm_outside_training_needs_no_group_and_inside_says_what_to_do():
    bn = nn.SyncBatchNorm(3, dtype=np.float64)
    saved, nn.SyncBatchNorm.default_group = nn.SyncBatchNorm.default_group, None
    try:
        x = Tensor(np.random.default_rng(0).normal(size=(4, 3)))
        with pytest.raises(RuntimeError, match=r"distributed\.init\(\)"):
            bn(x)
        bn.eval()
        np.testing.assert_allclose(bn(x).data, x.data / np.sqrt(1 + 1e-5))
    finally:
        nn.SyncBatchNorm.default_group = saved


def test_convert_sync_batchnorm_keeps_order_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Sigmoid(),
                          nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)))
    model.eval()
    params, state = model.parameters(), model.state_dict()
    names = [name for name, _ in model.named_parameters()]
    assert nn.SyncBatchNorm.convert_sync_batchnorm(model) is model
    assert [type(m).__name__ for m in model.modules()] == [
        "Sequential", "Linear", "SyncBatchNorm", "Sigmoid", "Sequential", "Linear",
        "SyncBatchNorm"]
    assert all(p is q for p, q in zip(model.parameters(), params))
    assert [name for name, _ in model.named_parameters()] == names
    assert list(model.state_dict()) == list(state)
    assert not model[1].training
    single = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(5, momentum=0.3))
    assert type(single) is nn.SyncBatchNorm and single.momentum == 0.3


def test_gradients_are_bucketed_by_dtype_and_size():
    arrays = [np.zeros(10, np.float32), np.zeros(10, np.float32), np.zeros(30, np.float32),
              np.zeros(5, np.float64), np.zeros(5, np.float64)]
    # 40 + 40 bytes fit in 100, +120 would not; a dtype change starts a new bucket
    assert _buckets(arrays, 100) == [[0, 1], [2], [3, 4]]
    assert _buckets(arrays, 10 ** 6) == [[0, 1, 2], [3, 4]]


@needs_mpi
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="needs mlxtend ([demo])")
def test_cli_train_on_two_ranks_writes_once_from_rank_0(tmp_path):
    out = tmp_path / "train"
    proc = subprocess.run(
        [sys.executable, "-m", "tinygrad_bn", "train", "--ranks", "2", "--sync-bn", "--bn-only",
         "--steps", "20", "--seeds", "1", "--eval-every", "10", "--no-progress", "--out",
         str(out)], capture_output=True, text=True, timeout=TIMEOUT,
        cwd=os.path.dirname(os.path.dirname(WORKER)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # rank 1 prints nothing
    assert "2 ranks, a global batch of 60 (30 per rank), SyncBatchNorm" in proc.stdout
    doc = json.loads((out / "mnist_bn.json").read_text())
    assert doc["config"]["distributed"] == {"ranks": 2, "sync_bn": True}
    assert doc["runs"][0]["steps"] == [0, 10, 20]


def test_the_core_never_imports_the_distributed_layer():
    code = ("import sys, tinygrad_bn, tinygrad_bn.nn, tinygrad_bn.optim, tinygrad_bn.gradcheck; "
            "m = [n for n in sys.modules if n.startswith(('tinygrad_bn.distributed', 'mpi4py'))]; "
            "print(m)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=os.path.dirname(os.path.dirname(WORKER)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_all_reduce_inside_a_jit_step_is_refused():
    from tinygrad_bn import JitError, jit
    from tinygrad_bn.distributed import all_reduce

    @jit
    def step(x):
        return all_reduce(x * 2)
    with pytest.raises(JitError, match="all_reduce inside a jit step"):
        for _ in range(3):
            step(Tensor(np.ones(3), requires_grad=True))


def test_the_experiment_measures_gaps_to_one_process_on_the_same_steps():
    from tinygrad_bn.experiments.distributed_bn import differences
    runs = {"single": {"test_acc": [0.1, 0.5, 0.9]},
            "sync": {"test_acc": [0.1, 0.5, 0.9], "weight_gap": 1e-7},
            "local": {"test_acc": [0.1, 0.3, 0.95], "weight_gap": 0.5}}
    d = differences(runs)
    assert d["sync"] == {"final": 0.0, "max_abs": 0.0, "mean": 0.0, "weight_gap": 1e-7}
    assert d["local"]["final"] == pytest.approx(0.05)
    assert d["local"]["max_abs"] == pytest.approx(0.2)


@needs_mpi
def test_ranks_started_by_hand_check_the_rank_count_once_and_end_together():
    proc = run_ranks(2, [sys.executable, "-m", "tinygrad_bn", "train", "--ranks", "4",
                         "--no-progress"], timeout=TIMEOUT, capture_output=True, text=True,
                     cwd=os.path.dirname(os.path.dirname(WORKER)))
    assert proc.returncode == 2
    assert proc.stderr.count("--ranks 4 given, but mpiexec started 2 ranks") == 1
    assert "Traceback" not in proc.stderr
