"""Every op and its gradient against PyTorch in float64, on the same inputs.

Skips without torch."""
import numpy as np
import pytest
from conftest import torch_or_skip

from tinygrad_bn import Tensor
from tinygrad_bn.samples import SAMPLES, make_inputs

torch = torch_or_skip()

# The same computation as each sample, in PyTorch's own API.
TORCH = {
    "sqrt": lambda x: x.sqrt(), "exp": lambda x: x.exp(), "log": lambda x: x.log(),
    "relu": lambda x: x.relu(), "sigmoid": lambda x: x.sigmoid(), "tanh": lambda x: x.tanh(),
    "neg": lambda x: -x, "reshape": lambda x: x.reshape(4, 3),
    "transpose": lambda x: x.permute(2, 0, 1), "expand": lambda x: x.expand(3, 4),
    "cast": lambda x: x.to(x.dtype),
}
TORCH_BY_LABEL = {
    "sum(x)": lambda x: x.sum(), "sum(x, axis=0)": lambda x: x.sum(dim=0),
    "sum(x, axis=(0,2), keepdims)": lambda x: x.sum(dim=(0, 2), keepdim=True),
    "mean(x)": lambda x: x.mean(), "mean(x, axis=-1, keepdims)": lambda x: x.mean(-1, True),
    "max(x)": lambda x: x.amax(), "max(x, axis=1)": lambda x: x.amax(dim=1),
    "x ** 2": lambda x: x ** 2, "x ** -1.5": lambda x: x ** -1.5,
    "x[1:, ::2]": lambda x: x[1:, ::2],
    "x[[0,2,2,1]] (repeated)": lambda x: x[torch.tensor([0, 2, 2, 1])],
}
BINARY = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
          "div": lambda x, y: x / y, "pow": lambda x, y: x ** y, "matmul": lambda x, y: x @ y}

CASES = [(name, s) for name, samples in SAMPLES.items() for s in samples]


def _torch_fn(name, sample):
    return TORCH_BY_LABEL.get(sample.label) or TORCH.get(name) or BINARY[name]


@pytest.mark.parametrize("name,sample", CASES, ids=[s.label for _, s in CASES])
def test_op_and_gradient_match_pytorch(name, sample):
    rng = np.random.default_rng(7)
    arrays = make_inputs(sample, rng)
    ours = [Tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, ty = sample.fn(*ours), _torch_fn(name, sample)(*theirs)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    ty.backward(torch.tensor(upstream))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.data, b.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["var", "softmax", "log_softmax"])
def test_composites_match_pytorch(name):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 4))
    x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y = getattr(x, name)(axis=0) if name == "var" else getattr(x, name)(axis=-1)
    ty = tx.var(dim=0, unbiased=False) if name == "var" else getattr(tx, name)(dim=-1)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12)
    up = rng.standard_normal(y.shape)
    y.backward(up)
    ty.backward(torch.tensor(up))
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
