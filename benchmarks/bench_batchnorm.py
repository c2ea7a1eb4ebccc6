"""Batch norm alone, training mode, forward + backward with a random upstream gradient.

Candidates, on the same x (N, C), gamma, beta and upstream gradient:

* ``tinygrad_bn``: ``nn.BatchNorm1d``, composed of primitives, differentiated by the engine;
* ``tinygrad_bn jit``: the same layer's forward + backward as a ``jit`` step (replayed numpy);
* ``composite``: the same composed steps written by hand in numpy — mean, subtract, square, mean,
  add eps, sqrt, divide, scale, shift — and their backward step by step, each step a new array as
  a graph would make it (what the engine could reach if its bookkeeping cost nothing);
* ``closed_form``: forward plus the closed-form backward, in place where possible (the floor);
* ``torch``: PyTorch's fused ``BatchNorm1d`` (when installed).

Peak memory is measured in a separate untimed call with tracemalloc (numpy reports its buffers
to it; PyTorch's allocator does not, so torch has none) and given as a multiple of x's size. It
counts everything a call allocates: the output, saved arrays, temporaries and the gradients.

Run: ``python benchmarks/bench_batchnorm.py [--quick] [--dtypes float32,float64]``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (sets the BLAS thread variables before numpy loads)
import numpy as np  # noqa: E402

from tinygrad_bn import Tensor, jit, nn  # noqa: E402

SHAPES = ((60, 100), (256, 512), (1024, 1024), (4096, 4096))
EPS, MOMENTUM = 1e-5, 0.1
TIME_LIMIT, MEMORY_LIMIT = 1.2, 5.0  # issue 7: vs the hand-written composite; x's size


def composite(x, gamma, beta, g, running_mean, running_var):
    """The composed graph's forward and backward, one numpy step per primitive."""
    m = x.shape[0]
    mu = x.mean(axis=0, keepdims=True)
    xc = x - mu
    sq = xc ** 2
    var = sq.mean(axis=0, keepdims=True)
    ve = var + EPS
    std = np.sqrt(ve)
    x_hat = xc / std
    scaled = x_hat * gamma
    y = scaled + beta
    running_mean *= 1 - MOMENTUM
    running_mean += MOMENTUM * mu[0]
    running_var *= 1 - MOMENTUM
    running_var += MOMENTUM * m / (m - 1) * var[0]
    # backward, in reverse order of the steps above
    dbeta = g.sum(axis=0)                                       # y = scaled + beta
    dgamma = (g * x_hat).sum(axis=0)                            # scaled = x_hat * gamma
    dx_hat = g * gamma
    dxc = dx_hat / std                                          # x_hat = xc / std
    dstd = (-dx_hat * x_hat / std).sum(axis=0, keepdims=True)   # (-g * out / y, reduced)
    dve = dstd / (std * 2)                                      # std = sqrt(ve)
    dsq = np.broadcast_to(dve / m, x.shape)                     # var = mean(sq); ve = var + eps
    dxc = dxc + dsq * 2 * xc                                    # sq = xc ** 2
    dmu = -dxc.sum(axis=0, keepdims=True)                       # xc = x - mu
    dx = dxc + np.broadcast_to(dmu / m, x.shape)                # mu = mean(x)
    return y, dx, dgamma, dbeta


def closed_form(x, gamma, beta, g, running_mean, running_var):
    """Forward, then dx = gamma/std * (g - mean(g) - x_hat * mean(g * x_hat)), in place."""
    m = x.shape[0]
    mu = x.mean(axis=0)
    x_hat = x - mu
    var = np.square(x_hat).mean(axis=0)
    inv_std = 1 / np.sqrt(var + EPS)
    x_hat *= inv_std
    y = x_hat * gamma
    y += beta
    running_mean *= 1 - MOMENTUM
    running_mean += MOMENTUM * mu
    running_var *= 1 - MOMENTUM
    running_var += MOMENTUM * m / (m - 1) * var
    dbeta = g.sum(axis=0)
    dx = g * x_hat
    dgamma = dx.sum(axis=0)
    np.multiply(x_hat, dgamma / -m, out=dx)
    dx += g
    dx -= dbeta / m
    dx *= gamma * inv_std
    return y, dx, dgamma, dbeta


def candidates(n, c, dtype, seed=0):
    """{name: fn} where fn() runs forward + backward and returns (y, dx, dgamma, dbeta)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 2 + 0.5).astype(dtype)
    g = rng.standard_normal((n, c)).astype(dtype)
    gamma = (1 + 0.1 * rng.standard_normal(c)).astype(dtype)
    beta = (0.1 * rng.standard_normal(c)).astype(dtype)
    cands = {}

    for name, compiled in (("tinygrad_bn", False), ("tinygrad_bn jit", True)):
        cands[name] = _tinygrad_candidate(x, gamma, beta, g, compiled)

    stats = {}
    for name, fn in (("composite", composite), ("closed_form", closed_form)):
        stats[name] = (np.zeros(c, dtype), np.ones(c, dtype))
        cands[name] = (lambda fn=fn, s=stats[name]: fn(x, gamma, beta, g, *s))

    torch = harness.optional_torch()
    if torch is not None:
        tdtype = getattr(torch, np.dtype(dtype).name)
        bn_t = torch.nn.BatchNorm1d(c, eps=EPS, momentum=MOMENTUM).to(tdtype)
        with torch.no_grad():
            bn_t.weight.copy_(torch.from_numpy(gamma))
            bn_t.bias.copy_(torch.from_numpy(beta))
        x_t = torch.from_numpy(x).requires_grad_(True)
        g_t = torch.from_numpy(g)

        def run_torch():
            x_t.grad = bn_t.weight.grad = bn_t.bias.grad = None
            y = bn_t(x_t)
            y.backward(g_t)
            return y.detach().numpy(), x_t.grad.numpy(), bn_t.weight.grad.numpy(), \
                bn_t.bias.grad.numpy()
        cands["torch"] = run_torch
    return cands, x.nbytes


def _tinygrad_candidate(x, gamma, beta, g, compiled):
    bn = nn.BatchNorm1d(x.shape[1], eps=EPS, momentum=MOMENTUM, dtype=x.dtype)
    bn.weight.data[...] = gamma
    bn.bias.data[...] = beta
    xt = Tensor(x, requires_grad=True)

    def forward_backward(x, g):
        y = bn(x)
        y.backward(g)
        return y
    if compiled:
        forward_backward = jit(forward_backward)

    def run():
        xt.grad = bn.weight.grad = bn.bias.grad = None
        y = forward_backward(xt, g)
        return y.data, xt.grad.data, bn.weight.grad.data, bn.bias.grad.data
    return harness.warmed_jit(run) if compiled else run


def check_agree(n=33, c=7, tol=1e-9):
    """All candidates give the same y, dx, dgamma, dbeta in float64 (else the timing is moot)."""
    cands, _ = candidates(n, c, np.float64, seed=3)
    want = cands["closed_form"]()
    for name, fn in cands.items():
        for what, got, ref in zip(("y", "dx", "dgamma", "dbeta"), fn(), want):
            err = float(np.max(np.abs(got - ref) / np.maximum(1, np.abs(ref))))
            if not err <= tol:
                raise AssertionError(f"batch norm {name}: {what} differs from the closed form "
                                     f"by {err:.3g}")
    return True


def run(quick=False, dtypes=("float32",), shapes=None):
    harness.pin_threads()
    check_agree()
    shapes = shapes or (SHAPES[:2] if quick else SHAPES)
    out = {"cases": {}}
    for dtype in dtypes:
        for n, c in shapes:
            cands, nbytes = candidates(n, c, np.dtype(dtype))
            big = n * c >= 4096 * 4096
            res = harness.compare(cands, rounds=3 if (quick or big) else 9,
                                  inner=1 if big else "auto", warmup=1,
                                  reference=["composite", "closed_form", "torch"],
                                  round_seconds=0.02 if quick else 0.1)
            for name, fn in cands.items():
                e = res["candidates"][name]
                e["peak_x"] = None if name == "torch" else harness.peak_memory(fn) / nbytes
            res["shape"], res["dtype"] = (n, c), dtype
            out["cases"][f"({n},{c})/{dtype}"] = res
            del cands
    return out


def rows(result):
    out = []
    for case, res in result["cases"].items():
        for row, e in zip(harness.comparison_rows(case, res, ["composite", "closed_form", "torch"]),
                          res["candidates"].values()):
            out.append(row + ["" if e["peak_x"] is None else f"{e['peak_x']:.1f}x"])
    return out


def target_checks(result):
    checks = []
    for case, res in result["cases"].items():
        for who in ("tinygrad_bn", "tinygrad_bn jit"):
            e = res["candidates"][who]
            mode = " (jit)" if who.endswith("jit") else ""
            checks.append((f"batchnorm {case}{mode} time vs composite", e["ratio"]["composite"],
                           TIME_LIMIT))
            checks.append((f"batchnorm {case}{mode} peak memory / x", e["peak_x"], MEMORY_LIMIT))
    return checks


HEADERS = ["case", "candidate", "median", "min – max", "vs composite", "vs closed", "vs torch",
           "peak mem / x"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run (small shapes)")
    p.add_argument("--dtypes", default="float32")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    harness.keep_freed_memory()
    result = run(args.quick, tuple(args.dtypes.split(",")))
    harness.report("batchnorm", result, rows(result), HEADERS, args.json)


if __name__ == "__main__":
    main()
