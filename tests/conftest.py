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
