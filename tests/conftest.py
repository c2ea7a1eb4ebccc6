"""Shared test helpers: a float64 central-difference oracle independent of the engine."""
import numpy as np
import pytest


def numeric_vjp(f, arrays, upstream, eps=1e-6):
    """Central differences of sum(f(*arrays) * upstream) w.r.t. each array (all numpy, float64)."""
    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a, dtype=np.float64)
        for i in np.ndindex(a.shape):
            orig = a[i]
            a[i] = orig + eps
            hi = np.sum(f(*arrays) * upstream)
            a[i] = orig - eps
            lo = np.sum(f(*arrays) * upstream)
            a[i] = orig
            g[i] = (hi - lo) / (2 * eps)
        grads.append(g)
    return grads


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def torch_or_skip():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def state_of(model, opt):
    """Every array a training step changes: parameters, gradients, the state dict (running
    statistics), optimizer state; copies, to compare an eager run with a jit replay."""
    out = {}
    for name, p in model.named_parameters():
        out[name] = p.data.copy()
        out[name + ".grad"] = None if p.grad is None else p.grad.data.copy()
    for name, b in model.state_dict().items():
        out["state." + name] = np.array(getattr(b, "data", b), copy=True)
    for i, s in enumerate(opt.state):
        for k, v in s.items():
            out[f"opt{i}.{k}"] = np.array(v, copy=True)
    return out


def assert_same_state(a, b, where=""):
    """Two ``state_of`` snapshots equal bit for bit, dtypes included."""
    assert a.keys() == b.keys(), where
    for k in a:
        if a[k] is None or b[k] is None:
            assert a[k] is None and b[k] is None, (where, k)
        else:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), (where, k)
