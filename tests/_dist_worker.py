"""One rank of a multi-rank test: ``mpiexec -n R python3 tests/_dist_worker.py CHECK``.

Each rank computes its part, and also, alone, what one process does with the whole batch (the
reference, no communication). Rank 0 prints one JSON line of measured differences, which
tests/test_distributed.py judges. A failed assertion here ends every rank (distributed.init()).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tinygrad_bn.distributed as dist  # noqa: E402
import tinygrad_bn.nn.functional as F  # noqa: E402
from tinygrad_bn import GradcheckError, Tensor, gradcheck, nn, optim  # noqa: E402
from tinygrad_bn.distributed.comm import allreduce_array  # noqa: E402

GLOBAL_BATCH = 60


def err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def worst_over_ranks(errors):
    """Per key, the largest error of any rank (every rank must call this)."""
    keys = sorted(errors)
    mine = np.array([errors[k] for k in keys])
    comm = dist.init()
    from mpi4py import MPI
    worst = np.empty_like(mine)
    comm.Allreduce(mine, worst, op=MPI.MAX)
    return dict(zip(keys, worst.tolist()))


def report(result):
    if dist.rank() == 0:
        print(json.dumps(result), flush=True)


def check_syncbn(use_torch):
    """SyncBatchNorm on a batch split over the ranks = BatchNorm1d on the whole batch."""
    errors = {}
    for shape in ((GLOBAL_BATCH, 5), (GLOBAL_BATCH, 4, 3)):
        rng = np.random.default_rng(len(shape))
        x = rng.normal(2.0, 3.0, shape)
        u = rng.normal(size=shape)  # upstream gradient
        gamma, beta = rng.uniform(0.5, 1.5, shape[1]), rng.normal(size=shape[1])
        ref = _bn_run(nn.BatchNorm1d(shape[1], dtype=np.float64), x, u, gamma, beta)
        sync = nn.SyncBatchNorm(shape[1], dtype=np.float64)
        mine = _bn_run(sync, dist.shard(x), dist.shard(u), gamma, beta)
        tag = f"{len(shape)}d"
        errors[f"y {tag}"] = err(mine["y"], dist.shard(ref["y"]))
        errors[f"dx {tag}"] = err(mine["dx"], dist.shard(ref["dx"]))
        # gamma and beta are replicated: their gradient is the sum of the ranks' parts
        for k in ("dgamma", "dbeta"):
            errors[f"{k} {tag}"] = err(allreduce_array(mine[k]), ref[k])
        for k in ("running_mean", "running_var"):
            errors[f"{k} {tag}"] = err(mine[k], ref[k])
        if use_torch:  # and PyTorch's BatchNorm1d on the whole batch, in float64
            for k, v in _torch_bn_run(x, u, gamma, beta).items():
                if k in ("y", "dx"):
                    got = mine[k]
                    v = dist.shard(v)
                elif k in ("dgamma", "dbeta"):
                    got = allreduce_array(mine[k])
                else:
                    got = mine[k]
                errors[f"torch {k} {tag}"] = err(got, v)
    report({"errors": worst_over_ranks(errors)})


def _bn_run(bn, x, u, gamma, beta):
    """Two training steps' forwards (running statistics move twice), then a backward."""
    bn.weight.data, bn.bias.data = gamma.copy(), beta.copy()
    bn(Tensor(x * 0.5 + 1.0))
    xt = Tensor(x, requires_grad=True)
    y = bn(xt)
    y.backward(u)
    return {"y": y.data, "dx": xt.grad.data, "dgamma": bn.weight.grad.data,
            "dbeta": bn.bias.grad.data, "running_mean": bn.running_mean.data,
            "running_var": bn.running_var.data}


def _torch_bn_run(x, u, gamma, beta):
    import torch
    bn = torch.nn.BatchNorm1d(x.shape[1]).double()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
    bn(torch.from_numpy(x * 0.5 + 1.0))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    y = bn(xt)
    y.backward(torch.from_numpy(u))
    return {"y": y.detach().numpy(), "dx": xt.grad.numpy(), "dgamma": bn.weight.grad.numpy(),
            "dbeta": bn.bias.grad.numpy(), "running_mean": bn.running_mean.numpy(),
            "running_var": bn.running_var.numpy()}


def paper_net(bn_class, seed=0):
    """The paper's 784-100-100-100-10 sigmoid network with batch norm, in float64."""
    rng = np.random.default_rng(seed)
    layers, fan_in = [], 784
    for width in (100, 100, 100):
        lin = nn.Linear(fan_in, width, bias=False, dtype=np.float64)
        lin.weight.data = rng.normal(0.0, 0.01, lin.weight.shape)
        layers += [lin, bn_class(width, dtype=np.float64), nn.Sigmoid()]
        fan_in = width
    last = nn.Linear(fan_in, 10, dtype=np.float64)
    last.weight.data = rng.normal(0.0, 0.01, last.weight.shape)
    last.bias.data = np.zeros(10)
    return nn.Sequential(*layers, last)


def batches(steps, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield rng.normal(size=(GLOBAL_BATCH, 784)), rng.integers(0, 10, GLOBAL_BATCH)


def check_train(steps, sync):
    """``steps`` SGD steps data-parallel (SyncBatchNorm, or per-rank BatchNorm1d) against one
    process: with SyncBatchNorm, one process on the whole batch; with per-rank batch norm, one
    process averaging the gradients of the batch's halves (each half normalized by itself)."""
    ranks = dist.world_size()
    model = paper_net(nn.BatchNorm1d)
    if sync:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if dist.rank() != 0:  # rank 0's start must reach every rank
        for p in model.parameters():
            p.data = p.data + 1.0
    ddp = dist.DistributedDataParallel(model)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref = paper_net(nn.BatchNorm1d)
    ref_opt = optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for x, y in batches(steps):
        opt.zero_grad()
        loss = F.cross_entropy(ddp(Tensor(dist.shard(x))), dist.shard(y))
        loss.backward()
        ddp.average_gradients()
        opt.step()
        losses.append(ddp.mean_loss(loss.item()))
        ref_opt.zero_grad()
        parts = [(x, y)] if sync else [(p, q) for p, q in zip(np.split(x, ranks),
                                                               np.split(y, ranks))]
        for xs, ys in parts:
            (F.cross_entropy(ref(Tensor(xs)), ys) / len(parts)).backward()
        ref_opt.step()
    errors = {"parameters": max(err(p.data, q.data) for p, q in
                                zip(model.parameters(), ref.parameters()))}
    if sync:  # running statistics are the whole batch's, on every rank
        errors["buffers"] = max(err(b.data, c.data) for b, c in
                                zip(model.buffers(), ref.buffers()))
    # bit-identical ranks: summed over ranks, they are ranks times each rank's. Running
    # statistics too with SyncBatchNorm (per-rank ones are rank 0's only after a broadcast).
    state = model.parameters() + ([b for b in model.buffers() if b.dtype == np.float64]
                                  if sync else [])
    flat = np.concatenate([t.data.ravel() for t in state])
    spread = allreduce_array(flat) - ranks * flat
    result = {"errors": worst_over_ranks(errors), "spread": float(np.max(np.abs(spread))),
              "losses": losses}
    report(result)


def check_local_bn():
    """Per-rank BatchNorm1d under data parallelism = BatchNorm1d over this rank's part alone."""
    rng = np.random.default_rng(3)
    x, u = rng.normal(1.0, 2.0, (GLOBAL_BATCH, 6)), rng.normal(size=(GLOBAL_BATCH, 6))
    bn = nn.BatchNorm1d(6, dtype=np.float64)
    ddp = dist.DistributedDataParallel(bn)
    xt = Tensor(dist.shard(x), requires_grad=True)
    y = ddp(xt)
    y.backward(dist.shard(u))
    ref = nn.BatchNorm1d(6, dtype=np.float64)
    xr = Tensor(dist.shard(x), requires_grad=True)
    yr = ref(xr)
    yr.backward(dist.shard(u))
    errors = {"y": err(y.data, yr.data), "dx": err(xt.grad.data, xr.grad.data),
              "running_var": err(bn.running_var.data, ref.running_var.data)}
    # and it is not the whole batch's normalization (the test would be vacuous otherwise)
    whole = nn.BatchNorm1d(6, dtype=np.float64)(Tensor(x)).data
    errors["distance to whole-batch BN"] = -err(y.data, dist.shard(whole))
    report({"errors": worst_over_ranks(errors)})


def check_gradcheck(wrong):
    """gradcheck of a function whose every step crosses ranks, against central differences.

    Every rank holds the same X (R, n); rank r uses row r. F(X) = sum_r w_r * (sum_s c_s *
    tanh(X[s]))**2, the same value on every rank. The copies of X are joined first by a mean over
    ranks (itself an all_reduce), so the gradient every rank computes is that of F, which central
    differences (every rank perturbing X in step) measure. ``wrong``: all_reduce's derivative is
    replaced by the identity, and gradcheck must then fail.
    """
    from tinygrad_bn.distributed import ALL_REDUCE
    if wrong:
        ALL_REDUCE.vjps = (lambda g, out, x: g,)
    r, ranks = dist.rank(), dist.world_size()
    X = np.random.default_rng(7).normal(size=(ranks, 4))
    c = 0.5 + r
    w = np.linspace(-1.0, 1.0, 4) * (r + 1) + 0.1

    mine = np.eye(ranks)[:, [r]]  # row r, picked by a product (indexing has no 2nd order)

    def fn(X):
        joined = dist.all_reduce(X) / ranks
        y = dist.all_reduce((joined * mine).sum(axis=0).tanh() * c)
        return dist.all_reduce(y * y * w)
    try:
        ok = gradcheck(fn, [Tensor(X, requires_grad=True)])
    except GradcheckError:
        ok = False
    flags = worst_over_ranks({"passed": float(ok), "failed": float(not ok)})
    report({"all_passed": flags["failed"] == 0.0, "any_passed": flags["passed"] == 1.0,
            "second_order": None if wrong else _hessian_vector_error(fn, X)})


def _hessian_vector_error(fn, X):
    """create_graph through all_reduce: d<v, grad F>/dX against central differences of grad F."""
    v = np.random.default_rng(8).normal(size=X.shape)
    u = np.random.default_rng(9).normal(size=4)

    def grad_at(X, create_graph=False):
        xt = Tensor(X, requires_grad=True)
        fn(xt).backward(u, create_graph=create_graph)
        return xt
    xt = grad_at(X, create_graph=True)
    g = xt.grad
    xt.grad = None
    (g * Tensor(v)).sum().backward()
    hv = xt.grad.data
    eps = 1e-6
    numeric = np.zeros_like(X)
    for i in np.ndindex(X.shape):
        e = np.zeros_like(X)
        e[i] = eps
        hi, lo = grad_at(X + e).grad.data, grad_at(X - e).grad.data
        numeric[i] = np.sum((hi - lo) / (2 * eps) * v)
    return err(hv, numeric) / max(1.0, float(np.max(np.abs(numeric))))


def check_error():
    """Rank 1 raises while rank 0 waits in a collective: every rank must end, with the error."""
    dist.all_reduce(Tensor(np.ones(3)))
    if dist.rank() == 1:
        raise ValueError("deliberate failure on rank 1")
    dist.all_reduce(Tensor(np.ones(3)))  # rank 0 waits here for a rank that is gone
    print("rank 0 got past the failed rank", flush=True)


if __name__ == "__main__":
    dist.init()
    check = sys.argv[1]
    if check == "syncbn":
        check_syncbn(use_torch="--torch" in sys.argv)
    elif check == "train":
        check_train(int(sys.argv[2]), sync=sys.argv[3] == "sync")
    elif check == "localbn":
        check_local_bn()
    elif check == "gradcheck":
        check_gradcheck(wrong="--wrong" in sys.argv)
    elif check == "error":
        check_error()
    else:
        raise SystemExit(f"unknown check {check!r}")
