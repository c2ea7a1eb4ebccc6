"""A/B: this checkout's engine against another commit's, interleaved, as paired ratios.

A refactor must not regress the speed table. This runs the same workloads with two source trees
(``--base DIR``, e.g. a ``git worktree add --detach /tmp/base <commit>``, and this checkout),
alternating A and B in fresh subprocesses round after round, so a shared machine's drift hits
both alike; it prints the median of the per-round ratios new/base (below 1: faster).

Workloads: the per-op chain (eager), the ``paper`` step eager and through ``jit``, the ``mid``
step through ``jit`` (float32).

Run: ``python benchmarks/ab.py --base /tmp/base [--rounds 9]``.
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
import harness  # pins BLAS threads
import numpy as np
import tinygrad_bn
from tinygrad_bn import allocator
allocator.keep_freed_memory()
import bench_overhead, bench_step

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
for name, compiled, n in (("paper", False, 40), ("paper", True, 150), ("mid", True, 20)):
    sizes, act, batch = bench_step.CONFIGS[name]
    model = bench_step.build_tinygrad(sizes, act, "float32")
    model.train()
    x, t = bench_step.make_batch(sizes, batch, "float32")
    step = bench_step.tinygrad_step_fn(model, x, t, compiled=compiled)
    for _ in range(5):
        step()
    res[f"{name} step, {'jit' if compiled else 'eager'}"] = best(step, n)
print(json.dumps(res))
"""


def measure(src):
    out = subprocess.run([sys.executable, "-c", CHILD, src, HERE], capture_output=True,
                         text=True, check=True, cwd=src)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="source tree of the commit to compare with")
    p.add_argument("--new", default=ROOT, help="source tree under test (default: this one)")
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args(argv)
    ratios = {}
    for r in range(args.rounds):
        a, b = (measure(args.base), measure(args.new)) if r % 2 == 0 else \
            reversed((measure(args.new), measure(args.base)))
        for k in a:
            ratios.setdefault(k, []).append(b[k] / a[k])
    print(f"new / base, median of {args.rounds} interleaved rounds (below 1: faster)")
    for k, v in ratios.items():
        print(f"  {k:24s} {statistics.median(v):.3f}  (rounds {min(v):.3f}-{max(v):.3f})")


if __name__ == "__main__":
    main()
