"""Per-op overhead: build and backpropagate through a chain of tiny elementwise ops.

A (4, 4) float64 tensor goes through N ops alternating ``y * 1.0001`` and ``y + 0.5``, then the
backward pass runs with an upstream gradient of ones. The arrays are so small that the time is
almost all bookkeeping: graph nodes, Python calls, the walk. Candidates:

* ``tinygrad_bn``: the engine;
* ``numpy``: the same forward in raw numpy plus the hand-written backward loop (the floor);
* ``torch``: PyTorch eager autograd (when installed).

Run: ``python benchmarks/bench_overhead.py [--quick] [--ops N] [--json PATH]``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (sets the BLAS thread variables before numpy loads)
import numpy as np  # noqa: E402

from tinygrad_bn import Tensor, jit  # noqa: E402

SHAPE = (4, 4)
MUL, ADD = 1.0001, 0.5


def chain_tinygrad(x0, n_ops):
    """Forward + backward of the chain with tinygrad_bn; returns x's gradient."""
    x = Tensor(x0, requires_grad=True)
    y = x
    for i in range(n_ops):
        y = y * MUL if i % 2 == 0 else y + ADD
    y.backward(np.ones(SHAPE))
    return x.grad.data


def jit_chain(x0, n_ops):
    """The same chain as a ``jit`` step: after two captures, a replay of the numpy calls."""
    def chain(x, g):
        y = x
        for i in range(n_ops):
            y = y * MUL if i % 2 == 0 else y + ADD
        y.backward(g)
        return y
    step = jit(chain)
    x, g = Tensor(x0, requires_grad=True), np.ones(SHAPE)

    def run():
        x.grad = None
        step(x, g)
        return x.grad.data
    return run


def chain_numpy(x0, n_ops):
    """The same chain in raw numpy with its backward written by hand."""
    y = x0
    for i in range(n_ops):
        y = y * MUL if i % 2 == 0 else y + ADD
    g = np.ones(SHAPE)
    for i in reversed(range(n_ops)):
        if i % 2 == 0:
            g = g * MUL  # d(y * c)/dy = c; the add's derivative is the identity
    return g


def chain_torch(torch, x0, n_ops):
    x = torch.tensor(x0, requires_grad=True)
    y = x
    for i in range(n_ops):
        y = y * MUL if i % 2 == 0 else y + ADD
    y.backward(torch.ones(SHAPE, dtype=torch.float64))
    return x.grad.numpy()


def candidates(n_ops):
    x0 = np.random.default_rng(0).standard_normal(SHAPE)
    cands = {"tinygrad_bn": lambda: chain_tinygrad(x0, n_ops),
             "tinygrad_bn jit": harness.warmed_jit(jit_chain(x0, n_ops)),
             "numpy": lambda: chain_numpy(x0, n_ops)}
    torch = harness.optional_torch()
    if torch is not None:
        cands["torch"] = lambda: chain_torch(torch, x0, n_ops)
    # All candidates must compute the same gradient, or the timing compares different work.
    expected = cands["numpy"]()
    for name, fn in cands.items():
        np.testing.assert_allclose(fn(), expected, rtol=1e-12, err_msg=name)
    return cands


def run(quick=False, n_ops=None, rounds=None):
    """Time the chain; returns a JSON-ready dict with µs per op and paired ratios."""
    harness.pin_threads()
    n_ops = n_ops or (2_000 if quick else 10_000)
    rounds = rounds or (3 if quick else 9)
    result = harness.compare(candidates(n_ops), rounds=rounds, warmup=1,
                             reference=["numpy", "torch"])
    result["n_ops"] = n_ops
    for e in result["candidates"].values():
        e["us_per_op"] = e["median"] / n_ops * 1e6
    return result


def rows(result):
    n = result["n_ops"]
    return harness.comparison_rows(f"chain {n} ops, per op", result, ["numpy", "torch"], unit=n)


HEADERS = ["case", "candidate", "median", "min – max", "vs numpy", "vs torch"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--ops", type=int, default=None, help="chain length (default 10,000)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    harness.keep_freed_memory()
    result = run(args.quick, args.ops, args.rounds)
    harness.report("overhead", result, rows(result), HEADERS, args.json)


if __name__ == "__main__":
    main()
