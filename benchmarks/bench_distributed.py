"""Data-parallel speed-up: one process vs 2 MPI ranks on bench_step's ``mid`` and ``wide`` steps.

The global batch is fixed (256 for mid, 1024 for wide): with 2 ranks each rank runs the step on
half of it, then the gradients are averaged over the ranks (bucketed all-reduce) before the SGD
step. One ``mpiexec -n 2`` job per case alternates, step by step, (a) rank 0 alone running the
one-process step on the whole batch while rank 1 sleeps, and (b) both ranks running the
data-parallel step; the speed-up is the median of the per-pair ratios, so a neighbour's load
shifts both sides of a pair alike. The share of communication is the time rank 0 spends in the
gradient all-reduce (waiting for the other rank included) over its data-parallel step time.
Batch norm per rank (BatchNorm1d, PyTorch's default under DDP) and SyncBatchNorm. Eager steps,
one BLAS thread per process.

Run: ``python benchmarks/bench_distributed.py [--quick] [--configs mid,wide] [--pairs 15]``.
Not part of run_all (it starts MPI jobs); not run by the tests.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402,F401  (sets the BLAS thread variables before numpy loads)
import numpy as np  # noqa: E402
from bench_step import CONFIGS, LR, MOMENTUM, build_tinygrad, make_batch  # noqa: E402

import tinygrad_bn.nn.functional as F  # noqa: E402
from tinygrad_bn import Tensor, nn, optim  # noqa: E402


def _step(model, opt, x, targets, ddp=None):
    """One SGD step; returns (seconds, seconds in the gradient all-reduce, CPU seconds of this
    process: what the step cost when it was scheduled)."""
    c0, t0 = time.process_time(), time.perf_counter()
    opt.zero_grad()
    F.cross_entropy((ddp or model)(Tensor(x)), targets).backward()
    t1 = time.perf_counter()
    if ddp is not None:
        ddp.average_gradients()
    t2 = time.perf_counter()
    opt.step()
    return time.perf_counter() - t0, t2 - t1, time.process_time() - c0


def rank_run(config, dtype, bn, pairs, warmup):
    """On each rank of a 2-rank job: alternate the one-process step (rank 0 alone) and the
    data-parallel step; rank 0 returns the per-pair timings."""
    from tinygrad_bn import distributed
    from tinygrad_bn.distributed.comm import wait_for_all_ranks
    distributed.init()
    sizes, activation, batch = CONFIGS[config]
    dtype = np.dtype(dtype)
    x, targets = make_batch(sizes, batch, dtype)
    single = build_tinygrad(sizes, activation, dtype)
    single_opt = optim.SGD(single.parameters(), lr=LR, momentum=MOMENTUM)
    model = build_tinygrad(sizes, activation, dtype)
    if bn == "sync":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = distributed.DistributedDataParallel(model)
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    xs, ts = distributed.shard(x), distributed.shard(targets)
    rows = []
    for i in range(warmup + pairs):
        if distributed.rank() == 0:
            one, _, cpu_one = _step(single, single_opt, x, targets)
        wait_for_all_ranks()  # rank 1 sleeps while rank 0 runs alone
        two, comm, cpu_two = _step(model, opt, xs, ts, ddp)
        wait_for_all_ranks()
        if i >= warmup and distributed.rank() == 0:
            rows.append((one, two, comm, cpu_one, cpu_two))
    return rows


def launch(config, dtype, bn, pairs, warmup):
    from tinygrad_bn.distributed import run_ranks
    proc = run_ranks(2, [sys.executable, os.path.abspath(__file__), "--rank-run", config,
                         dtype, bn, str(pairs), str(warmup)],
                     timeout=1800, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"2-rank run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(configs, dtype, bns, pairs, warmup):
    out = {}
    for config in configs:
        for bn in bns:
            rows = launch(config, dtype, bn, pairs, warmup)
            ratios = [r[0] / r[1] for r in rows]
            out[f"{config}/{dtype}/{bn}"] = {
                "one_process_step": statistics.median(r[0] for r in rows),
                "two_ranks_step": statistics.median(r[1] for r in rows),
                "speedup": statistics.median(ratios),
                "speedup_quartiles": statistics.quantiles(ratios, n=4),
                "comm_share": statistics.median(r[2] / r[1] for r in rows),
                # CPU seconds of the step alone vs rank 0's share: the speed-up the ranks
                # would see with a core each to themselves (spinning in MPI counts as CPU)
                "cpu_ratio": statistics.median(r[3] / r[4] for r in rows), "pairs": rows}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank-run", nargs=5, metavar=("CONFIG", "DTYPE", "BN", "PAIRS", "WARMUP"),
                   help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="mid only, few steps")
    p.add_argument("--configs", default="mid,wide")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--bn", default="local,sync", help="local, sync or both (comma-separated)")
    p.add_argument("--pairs", type=int, default=15, help="timed step pairs per case")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.rank_run:
        config, dtype, bn, pairs, warmup = args.rank_run
        result = rank_run(config, dtype, bn, int(pairs), int(warmup))
        from tinygrad_bn import distributed
        if distributed.rank() == 0:
            print(json.dumps(result), flush=True)
        return 0
    configs = ["mid"] if args.quick else args.configs.split(",")
    pairs = 4 if args.quick else args.pairs
    result = run(configs, args.dtype, args.bn.split(","), pairs, warmup=2)
    print(f"{'case':24} {'1 process':>10} {'2 ranks':>10} {'speed-up':>9} {'quartiles':>12} "
          f"{'comm share':>11} {'CPU ratio':>10}")
    for case, r in result.items():
        q1, _, q3 = r["speedup_quartiles"]
        print(f"{case:24} {r['one_process_step'] * 1e3:8.1f}ms {r['two_ranks_step'] * 1e3:8.1f}ms "
              f"{r['speedup']:8.2f}x {q1:5.2f}-{q3:.2f}x {r['comm_share'] * 100:10.1f}% "
              f"{r['cpu_ratio']:9.2f}x")
    print(f"load average during the run: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cases": result, "loadavg": os.getloadavg(),
                       "machine": harness.machine_info()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
