"""cProfile the tinygrad_bn candidates: where a training step and the overhead chain spend time.

    python benchmarks/profile_engine.py                      # paper/float32 step and the chain
    python benchmarks/profile_engine.py --step mid/float64 --top 30 --sort cumtime

Also prints the step split into phases (forward, loss, backward, optimizer) next to the numpy
reference's forward+backward and update, timed without the profiler.
"""
import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_overhead  # noqa: E402
import bench_step  # noqa: E402
import harness  # noqa: E402  (the bench modules import it before numpy)
import numpy as np  # noqa: E402

import tinygrad_bn.nn.functional as F  # noqa: E402
from tinygrad_bn import Tensor, optim  # noqa: E402


def phases(config, dtype, steps=200):
    """Median time of each phase of tinygrad_bn's step and of the numpy reference's."""
    sizes, activation, batch = bench_step.CONFIGS[config]
    model = bench_step.build_tinygrad(sizes, activation, dtype)
    ref = bench_step.build_reference(model, activation)
    x, targets = bench_step.make_batch(sizes, batch, dtype)
    opt = optim.SGD(model.parameters(), lr=bench_step.LR, momentum=bench_step.MOMENTUM)
    xt = Tensor(x)
    names = ("forward", "loss", "backward", "optimizer", "numpy fwd+bwd", "numpy update")
    times = {name: [] for name in names}
    for i in range(steps + 10):
        t0 = time.perf_counter()
        opt.zero_grad()
        out = model(xt)
        t1 = time.perf_counter()
        loss = F.cross_entropy(out, targets)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        _, grads = ref.loss_and_grads(x, targets)
        t5 = time.perf_counter()
        ref.sgd_step(grads)
        t6 = time.perf_counter()
        if i >= 10:  # warm-up steps allocate the momentum buffers
            for name, dt in zip(names, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                times[name].append(dt)
    return {name: statistics.median(ts) for name, ts in times.items()}


def profile(fn, repeat, top, sort):
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(repeat):
        fn()
    prof.disable()
    pstats.Stats(prof).strip_dirs().sort_stats(sort).print_stats(top)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--step", default="paper/float32", help="config/dtype, e.g. mid/float64")
    p.add_argument("--steps", type=int, default=300, help="steps to profile")
    p.add_argument("--ops", type=int, default=10_000, help="length of the overhead chain")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--sort", default="tottime", help="pstats key: tottime, cumtime, ncalls")
    args = p.parse_args(argv)
    harness.keep_freed_memory()
    harness.pin_threads()
    print(harness.describe_machine(harness.machine_info()))
    config, dtype = args.step.split("/")
    dtype = np.dtype(dtype)

    print(f"\n== {args.step} step, phases (median of 200 steps, no profiler) ==")
    for name, t in phases(config, dtype).items():
        print(f"  {name:14s} {harness.fmt_time(t)}")

    print(f"\n== {args.step} step, cProfile over {args.steps} steps ==")
    step = bench_step.candidates(*bench_step.CONFIGS[config], dtype)["tinygrad_bn"]
    for _ in range(10):
        step()
    profile(step, args.steps, args.top, args.sort)

    print(f"== overhead chain of {args.ops} ops, cProfile over 5 chains ==")
    x0 = np.random.default_rng(0).standard_normal(bench_overhead.SHAPE)
    bench_overhead.chain_tinygrad(x0, args.ops)
    profile(lambda: bench_overhead.chain_tinygrad(x0, args.ops), 5, args.top, args.sort)


if __name__ == "__main__":
    main()
