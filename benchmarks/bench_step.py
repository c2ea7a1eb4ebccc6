"""A full MLP training step: tinygrad_bn vs the hand-written numpy limit vs PyTorch eager.

One step = forward (Linear → BatchNorm1d → activation per hidden layer, then Linear), mean
cross-entropy, backward, SGD with momentum 0.9 and lr 0.01. Configurations:

* ``paper``: 784-100-100-100-10, sigmoid, batch 60 (Ioffe & Szegedy's MNIST network);
* ``mid``:   784-512-512-10, relu, batch 256;
* ``wide``:  1024-1024-1024-1024-10, relu, batch 1024;

each in float32 and float64. All three candidates start from the same weights (tinygrad_bn's
initialization, copied). Before timing, a correctness gate checks in float64 that tinygrad_bn's
loss and gradients (and the updated parameters and running statistics) equal the numpy
reference step to 1e-9; PyTorch is checked the same way, so all three do the same work.

Run: ``python benchmarks/bench_step.py [--quick] [--configs paper,mid] [--dtypes float32]``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (sets the BLAS thread variables before numpy loads)
import numpy as np  # noqa: E402
from numpy_reference import NumpyMLP  # noqa: E402

import tinygrad_bn.nn.functional as F  # noqa: E402
from tinygrad_bn import Tensor, jit, nn, optim  # noqa: E402

LR, MOMENTUM = 0.01, 0.9

# name: (layer sizes, activation, batch size)
CONFIGS = {
    "paper": ((784, 100, 100, 100, 10), "sigmoid", 60),
    "mid": ((784, 512, 512, 10), "relu", 256),
    "wide": ((1024, 1024, 1024, 1024, 10), "relu", 1024),
}
# A configuration small enough for the smoke test.
TINY = ((20, 16, 12, 5), "sigmoid", 8)

# Issue 7's targets: the largest acceptable paired ratio of tinygrad_bn's time.
TARGETS = {"paper": {"numpy": 1.2, "torch": 0.85}, "mid": {"numpy": 1.05},
           "wide": {"numpy": 1.05}}


def build_tinygrad(sizes, activation, dtype, seed=0):
    np.random.seed(seed)  # nn.Linear draws from numpy's global generator
    act = nn.Sigmoid if activation == "sigmoid" else nn.ReLU
    layers = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(n_in, n_out, dtype=dtype), nn.BatchNorm1d(n_out, dtype=dtype), act()]
    layers.append(nn.Linear(sizes[-2], sizes[-1], dtype=dtype))
    return nn.Sequential(*layers)


def _batchnorms(model):
    return [m for m in model if isinstance(m, nn.BatchNorm1d)]


def build_reference(model, activation):
    """The numpy reference step, starting from ``model``'s weights and running statistics."""
    running = [(bn.running_mean.data, bn.running_var.data) for bn in _batchnorms(model)]
    return NumpyMLP([p.data for p in model.parameters()], running, activation, lr=LR,
                    momentum=MOMENTUM)


def build_torch(torch, model, activation):
    """The same network in PyTorch with ``model``'s weights copied (parameter order matches)."""
    act = torch.nn.Sigmoid if activation == "sigmoid" else torch.nn.ReLU
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            layers.append(torch.nn.Linear(m.in_features, m.out_features))
        elif isinstance(m, nn.BatchNorm1d):
            layers.append(torch.nn.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum))
        else:
            layers.append(act())
    dtype = getattr(torch, str(model.parameters()[0].dtype))
    tm = torch.nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        for p_t, p in zip(tm.parameters(), model.parameters()):
            p_t.copy_(torch.from_numpy(p.data))
        for bn_t, bn in zip([m for m in tm if isinstance(m, torch.nn.BatchNorm1d)],
                            _batchnorms(model)):
            bn_t.running_mean.copy_(torch.from_numpy(bn.running_mean.data))
            bn_t.running_var.copy_(torch.from_numpy(bn.running_var.data))
    return tm


def make_batch(sizes, batch, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    return x, rng.integers(0, sizes[-1], batch)


def train_step_fn(model):
    """The step every tinygrad_bn candidate runs: ``step(x, targets)`` returns the loss."""
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def train_step(x, targets):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), targets)
        loss.backward()
        opt.step()
        return loss
    return train_step


def tinygrad_step_fn(model, x, targets, compiled=False):
    """tinygrad_bn's step, eager (graph built and walked every step) or ``jit``-replayed."""
    train_step = train_step_fn(model)
    xt = Tensor(x)
    if not compiled:
        return lambda: train_step(xt, targets).item()
    train_step = jit(train_step)
    return harness.warmed_jit(lambda: train_step(xt, targets).item())


def torch_step_fn(torch, tm, x, targets):
    opt = torch.optim.SGD(tm.parameters(), lr=LR, momentum=MOMENTUM)
    xt, tt = torch.from_numpy(x), torch.from_numpy(targets)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(tm(xt), tt)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def reference_step_fn(ref, x, targets):
    return lambda: float(ref.step(x, targets))


# ---- the correctness gate ----

def _max_err(a, b):
    """Largest difference, relative to the size of the values (absolute below 1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))) if a.size else 0.0


def gate(sizes, activation, batch, tol=1e-9, steps=4, seed=0):
    """Check in float64 that tinygrad_bn (and torch) take the numpy reference's step.

    Compares the loss, every parameter's gradient, then (after ``steps`` steps, so the momentum
    buffers matter) the parameters and running statistics. Raises AssertionError on a mismatch;
    returns {candidate: largest error seen}.
    """
    model = build_tinygrad(sizes, activation, np.float64, seed)
    ref = build_reference(model, activation)
    x, targets = make_batch(sizes, batch, np.float64)
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    jit_model = build_tinygrad(sizes, activation, np.float64, seed)
    jit_step = jit(train_step_fn(jit_model))
    torch = harness.optional_torch()
    if torch is not None:
        tm = build_torch(torch, model, activation)
        topt = torch.optim.SGD(tm.parameters(), lr=LR, momentum=MOMENTUM)
        xt, tt = torch.from_numpy(x), torch.from_numpy(targets)
    errors = {"tinygrad_bn": 0.0, "tinygrad_bn jit": 0.0}
    if torch is not None:
        errors["torch"] = 0.0

    def check(name, what, got, want):
        err = _max_err(got, want)
        errors[name] = max(errors[name], err)
        if not err <= tol:
            raise AssertionError(f"correctness gate ({'-'.join(map(str, sizes))} {activation} "
                                 f"float64): {name} {what} differs from the numpy reference by "
                                 f"{err:.3g} > {tol:g}")

    for step in range(steps):
        loss_ref, grads_ref = ref.loss_and_grads(x, targets)
        grads_ref = [g.copy() for g in grads_ref]
        opt.zero_grad()
        loss = F.cross_entropy(model(Tensor(x)), targets)
        loss.backward()
        check("tinygrad_bn", f"loss at step {step}", loss.item(), loss_ref)
        for (name, p), g in zip(model.named_parameters(), grads_ref):
            if p.grad is None:
                raise AssertionError(f"correctness gate: tinygrad_bn left {name}.grad as None")
            check("tinygrad_bn", f"gradient of {name} at step {step}", p.grad.data, g)
        opt.step()
        # The jit step's first calls capture, later ones replay: compare every one of them.
        jit_loss = jit_step(Tensor(x), targets)
        check("tinygrad_bn jit", f"loss at step {step}", jit_loss.item(), loss_ref)
        for (name, p), g in zip(jit_model.named_parameters(), grads_ref):
            check("tinygrad_bn jit", f"gradient of {name} at step {step}", p.grad.data, g)
        if torch is not None:
            topt.zero_grad()
            tloss = torch.nn.functional.cross_entropy(tm(xt), tt)
            tloss.backward()
            check("torch", f"loss at step {step}", tloss.item(), loss_ref)
            for p, g in zip(tm.parameters(), grads_ref):
                check("torch", f"a gradient at step {step}", p.grad.numpy(), g)
            topt.step()
        ref.sgd_step(grads_ref)
    if jit_step.replays < steps - 2:
        raise AssertionError(f"correctness gate: the jit step replayed {jit_step.replays} of "
                             f"{steps} steps (expected all but the 2 captures)")
    for who, m in (("tinygrad_bn", model), ("tinygrad_bn jit", jit_model)):
        for (name, p), want in zip(m.named_parameters(), ref.params):
            check(who, f"parameter {name} after {steps} steps", p.data, want)
        for i, (bn, (mean, var)) in enumerate(zip(_batchnorms(m), ref.running)):
            check(who, f"running_mean of batch norm {i}", bn.running_mean.data, mean)
            check(who, f"running_var of batch norm {i}", bn.running_var.data, var)
    return errors


# ---- timing ----

def candidates(sizes, activation, batch, dtype):
    model = build_tinygrad(sizes, activation, dtype)
    x, targets = make_batch(sizes, batch, dtype)
    cands = {"tinygrad_bn": tinygrad_step_fn(model, x, targets),
             "tinygrad_bn jit": tinygrad_step_fn(build_tinygrad(sizes, activation, dtype), x,
                                                 targets, compiled=True),
             "numpy": reference_step_fn(build_reference(model, activation), x, targets)}
    torch = harness.optional_torch()
    if torch is not None:
        cands["torch"] = torch_step_fn(torch, build_torch(torch, model, activation), x, targets)
    return cands


def run(quick=False, configs=None, dtypes=("float32", "float64"), rounds=None):
    """Gate then time every (config, dtype); returns a JSON-ready dict keyed "config/dtype"."""
    harness.pin_threads()
    configs = configs or (["paper", "mid"] if quick else list(CONFIGS))
    out = {"gate": {}, "cases": {}}
    for name in configs:
        sizes, activation, batch = CONFIGS[name]
        out["gate"][name] = gate(sizes, activation, batch)
        for dtype in dtypes:
            # Per-round ratios of the small steps scatter by ±10% on a shared machine: the
            # median of 21 rounds moves by about 1% between runs, that of 9 by 2-3%.
            n_rounds = rounds or (3 if quick else 5 if name == "wide" else 21)
            res = harness.compare(candidates(sizes, activation, batch, np.dtype(dtype)),
                                  rounds=n_rounds, inner="auto", warmup=1 if name == "wide" else 2,
                                  reference=["numpy", "torch"],
                                  round_seconds=0.02 if quick else 0.1)
            res["config"] = {"sizes": sizes, "activation": activation, "batch": batch,
                             "dtype": dtype}
            out["cases"][f"{name}/{dtype}"] = res
    return out


def rows(result):
    out = []
    for case, res in result["cases"].items():
        out += harness.comparison_rows(case, res, ["numpy", "torch"])
    return out


def target_checks(result):
    """(what, measured ratio, limit) for each of issue 7's step targets in ``result``."""
    checks = []
    for case, res in result["cases"].items():
        config = case.split("/")[0]
        for who in ("tinygrad_bn", "tinygrad_bn jit"):
            for ref, limit in TARGETS.get(config, {}).items():
                ratio = res["candidates"].get(who, {}).get("ratio", {}).get(ref)
                if ratio is not None:
                    mode = " (jit)" if who.endswith("jit") else ""
                    checks.append((f"step {case}{mode} vs {ref}", ratio, limit))
    return checks


HEADERS = ["case", "candidate", "median", "min – max", "vs numpy", "vs torch"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run (paper and mid)")
    p.add_argument("--configs", default=None, help=f"comma-separated subset of {list(CONFIGS)}")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    harness.keep_freed_memory()
    configs = args.configs.split(",") if args.configs else None
    result = run(args.quick, configs, tuple(args.dtypes.split(",")), args.rounds)
    harness.report("step", result, rows(result), HEADERS, args.json, notes=[
        f"correctness gate (float64, max relative error vs numpy reference): {result['gate']}"])


if __name__ == "__main__":
    main()
