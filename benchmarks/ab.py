"""A/B: this checkout's engine against another commit's, interleaved, as paired ratios.

A refactor must not regress the speed table. This runs the same workloads with two source trees
(``--base DIR``, e.g. a ``git worktree add --detach /tmp/base <commit>``, and this checkout),
alternating A and B in fresh subprocesses round after round, so a shared machine's drift hits
both alike; it prints the median of the per-round ratios new/base (below 1: faster).

Workloads: the README speed table's rows where Python bookkeeping shows (``wide`` is matmul-bound):
the per-op chain (eager), the ``paper`` step in float32 and float64 and the ``mid`` step in
float32, each eager and through ``jit``, and batch norm alone at (60, 100), eager and jit.

Run: ``python benchmarks/ab.py --base /tmp/base [--rounds 9] [--all]`` (``--all``: also the
matmul-bound rows, mid float64, ``wide`` and batch norm at (1024, 1024); about 3 minutes a round).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2])
ALL = sys.argv[3] == "all"
import harness  # pins BLAS threads
import numpy as np
import tinygrad_bn
from tinygrad_bn import allocator
allocator.keep_freed_memory()
import bench_batchnorm, bench_overhead, bench_step

def best(fn, n, reps=5):
    out = []
    for _ in range(reps):
        t = time.thread_time()  # CPU time of this thread: less of the other processes' noise
        for _ in range(n):
            fn()
        out.append((time.thread_time() - t) / n)
    return min(out)

res = {}
x0 = np.random.default_rng(0).standard_normal((4, 4))
bench_overhead.chain_tinygrad(x0, 200)
res["per-op chain, eager"] = best(lambda: bench_overhead.chain_tinygrad(x0, 200), 20)
steps = [("paper", "float32", False, 40), ("paper", "float32", True, 150),
         ("paper", "float64", False, 40), ("paper", "float64", True, 100),
         ("mid", "float32", False, 10), ("mid", "float32", True, 20)]
if ALL:
    steps += [("mid", "float64", False, 5), ("mid", "float64", True, 5),
              ("wide", "float32", False, 1), ("wide", "float32", True, 1),
              ("wide", "float64", False, 1), ("wide", "float64", True, 1)]
for name, dtype, compiled, n in steps:
    sizes, act, batch = bench_step.CONFIGS[name]
    model = bench_step.build_tinygrad(sizes, act, dtype)
    model.train()
    x, t = bench_step.make_batch(sizes, batch, dtype)
    step = bench_step.tinygrad_step_fn(model, x, t, compiled=compiled)
    for _ in range(5):
        step()
    res[f"{name} {dtype} step, {'jit' if compiled else 'eager'}"] = best(step, n)
for (n, c), reps in [((60, 100), 200)] + ([((1024, 1024), 5)] if ALL else []):
    cands, _ = bench_batchnorm.candidates(n, c, "float32")
    for compiled in (False, True):
        fn = cands["tinygrad_bn jit" if compiled else "tinygrad_bn"]
        for _ in range(3):
            fn()
        res[f"batch norm ({n}, {c}), {'jit' if compiled else 'eager'}"] = best(fn, reps)
print(json.dumps(res))
"""


def measure(src, everything=False):
    out = subprocess.run([sys.executable, "-c", CHILD, src, HERE, "all" if everything else ""],
                         capture_output=True, text=True, check=True, cwd=src)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="source tree of the commit to compare with")
    p.add_argument("--new", default=ROOT, help="source tree under test (default: this one)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--all", action="store_true",
                   help="also the matmul-bound rows: mid float64, wide, batch norm (1024, 1024)")
    args = p.parse_args(argv)
    ratios = {}
    for r in range(args.rounds):
        base, new = (lambda: measure(args.base, args.all)), (lambda: measure(args.new, args.all))
        a, b = (base(), new()) if r % 2 == 0 else reversed((new(), base()))
        for k in a:
            ratios.setdefault(k, []).append(b[k] / a[k])
    print(f"new / base, median of {args.rounds} interleaved rounds (below 1: faster)")
    for k, v in ratios.items():
        print(f"  {k:34s} {statistics.median(v):.3f}  (rounds {min(v):.3f}-{max(v):.3f})")


if __name__ == "__main__":
    main()
