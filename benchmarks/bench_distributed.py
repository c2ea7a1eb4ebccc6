"""Data-parallel speed-up: one process vs 2 MPI ranks on bench_step's ``mid`` and ``wide`` steps.

The global batch is fixed (256 for mid, 1024 for wide): with 2 ranks each rank runs the step on
half of it, then the gradients are averaged over the ranks (bucketed all-reduce) before the SGD
step. Measured per configuration: the step time of one process (no communication at all) and of
2 ranks, in alternating launches (1, 2, 1, 2, ...) so that a neighbour's load shifts both; the
speed-up is the median of the per-round ratios. The share of communication is the time rank 0
spends in the gradient all-reduce (waiting for the other rank included) over its step time.
Batch norm per rank (BatchNorm1d, PyTorch's default under DDP) and SyncBatchNorm. Eager steps,
one BLAS thread per process.

Run: ``python benchmarks/bench_distributed.py [--quick] [--configs mid,wide] [--rounds 3]``.
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


def rank_run(config, dtype, bn, steps, warmup):
    """One rank's timings (seconds per step, seconds in the gradient all-reduce per step)."""
    from tinygrad_bn import distributed
    distributed.init()
    sizes, activation, batch = CONFIGS[config]
    model = build_tinygrad(sizes, activation, np.dtype(dtype))
    ranks = distributed.world_size()
    if bn == "sync":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = distributed.DistributedDataParallel(model) if ranks > 1 else None
    step_model = model if ddp is None else ddp
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    x, targets = make_batch(sizes, batch, np.dtype(dtype))
    x, targets = distributed.shard(x), distributed.shard(targets)
    step_times, comm_times = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(step_model(Tensor(x)), targets).backward()
        t1 = time.perf_counter()
        if ddp is not None:
            ddp.average_gradients()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= warmup:
            step_times.append(t3 - t0)
            comm_times.append(t2 - t1)
    return {"step": statistics.median(step_times), "comm": statistics.median(comm_times)}


def launch(ranks, config, dtype, bn, steps, warmup):
    from tinygrad_bn.distributed import run_ranks
    proc = run_ranks(ranks, [sys.executable, os.path.abspath(__file__), "--rank-run", config,
                             dtype, bn, str(steps), str(warmup)],
                     timeout=1800, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{ranks}-rank run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(configs, dtype, bns, rounds, steps, warmup):
    out = {}
    for config in configs:
        for bn in bns:
            ones, twos = [], []
            for _ in range(rounds):
                ones.append(launch(1, config, dtype, bn, steps, warmup))
                twos.append(launch(2, config, dtype, bn, steps, warmup))
            ratios = [a["step"] / b["step"] for a, b in zip(ones, twos)]
            out[f"{config}/{dtype}/{bn}"] = {
                "one_process_step": statistics.median(a["step"] for a in ones),
                "two_ranks_step": statistics.median(b["step"] for b in twos),
                "speedup": statistics.median(ratios), "speedup_rounds": ratios,
                "comm_share": statistics.median(b["comm"] / b["step"] for b in twos)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank-run", nargs=5, metavar=("CONFIG", "DTYPE", "BN", "STEPS", "WARMUP"),
                   help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="mid only, 1 round, few steps")
    p.add_argument("--configs", default="mid,wide")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--bn", default="local,sync", help="local, sync or both (comma-separated)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.rank_run:
        config, dtype, bn, steps, warmup = args.rank_run
        result = rank_run(config, dtype, bn, int(steps), int(warmup))
        from tinygrad_bn import distributed
        if distributed.rank() == 0:
            print(json.dumps(result), flush=True)
        return 0
    configs = ["mid"] if args.quick else args.configs.split(",")
    rounds, steps = (1, 3) if args.quick else (args.rounds, 7)
    result = run(configs, args.dtype, args.bn.split(","), rounds, steps, warmup=2)
    print(f"{'case':24} {'1 process':>10} {'2 ranks':>10} {'speed-up':>9} {'comm share':>11}")
    for case, r in result.items():
        print(f"{case:24} {r['one_process_step'] * 1e3:8.1f}ms {r['two_ranks_step'] * 1e3:8.1f}ms "
              f"{r['speedup']:8.2f}x {r['comm_share'] * 100:10.1f}%")
    print(f"load average during the run: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cases": result, "loadavg": os.getloadavg(),
                       "machine": harness.machine_info()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
