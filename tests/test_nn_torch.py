"""nn and optim against PyTorch float64: BatchNorm1d, Linear, losses, and a whole MLP trained
with SGD-momentum and Adam from the same weights (skips without torch)."""
import numpy as np
import pytest
from conftest import torch_or_skip

from tinygrad_bn import Tensor, nn, optim
from tinygrad_bn.nn import functional as F

torch = torch_or_skip()


@pytest.mark.parametrize("shape", [(16, 5), (7, 3, 4)])
def test_batchnorm_matches_pytorch_over_steps(shape):
    rng = np.random.default_rng(0)
    c = shape[1]
    ours, theirs = nn.BatchNorm1d(c).double(), torch.nn.BatchNorm1d(c).double()
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    ours.load_state_dict({"weight": gamma, "bias": beta, "running_mean": np.zeros(c),
                          "running_var": np.ones(c), "num_batches_tracked": np.array(0)})
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(gamma))
        theirs.bias.copy_(torch.tensor(beta))
    for step in range(4):
        x = rng.standard_normal(shape) * 3 + 1
        dy = rng.standard_normal(shape)
        tx, px = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, py = ours(tx), theirs(px)
        np.testing.assert_allclose(y.data, py.detach().numpy(), rtol=1e-10, atol=1e-12)
        ours.zero_grad()
        theirs.zero_grad()
        y.backward(dy)
        py.backward(torch.tensor(dy))
        np.testing.assert_allclose(tx.grad.data, px.grad.numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(ours.bias.grad.data, theirs.bias.grad.numpy(), rtol=1e-10)
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), rtol=1e-12)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_linear_and_losses_match_pytorch():
    rng = np.random.default_rng(1)
    lin, tlin = nn.Linear(6, 4).double(), torch.nn.Linear(6, 4).double()
    lin.load_state_dict({k: v.detach().numpy() for k, v in tlin.state_dict().items()})
    x, t = rng.standard_normal((5, 6)), rng.integers(0, 4, 5)
    tx, px = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    loss = F.cross_entropy(lin(tx), t) + F.mse_loss(lin(tx), np.ones((5, 4)))
    ploss = (torch.nn.functional.cross_entropy(tlin(px), torch.tensor(t))
             + torch.nn.functional.mse_loss(tlin(px), torch.ones(5, 4, dtype=torch.float64)))
    np.testing.assert_allclose(loss.item(), ploss.item(), rtol=1e-12)
    loss.backward()
    ploss.backward()
    np.testing.assert_allclose(tx.grad.data, px.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(lin.weight.grad.data, tlin.weight.grad.numpy(), rtol=1e-10)


def _paper_mlp_pair():
    def ours():
        layers = []
        for a, b in [(784, 100), (100, 100), (100, 100)]:
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.Sigmoid()]
        return nn.Sequential(*layers, nn.Linear(100, 10)).double()

    def theirs():
        layers = []
        for a, b in [(784, 100), (100, 100), (100, 100)]:
            layers += [torch.nn.Linear(a, b), torch.nn.BatchNorm1d(b), torch.nn.Sigmoid()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(100, 10)).double()
    torch.manual_seed(0)
    m, tm = ours(), theirs()
    assert list(m.state_dict()) == list(tm.state_dict())  # same names, same order
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    return m, tm


@pytest.mark.parametrize("kind,steps", [("sgd", 20), ("adam", 10)])
def test_mlp_training_matches_pytorch(kind, steps):
    m, tm = _paper_mlp_pair()
    if kind == "sgd":
        opt = optim.SGD(m.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
        topt = torch.optim.SGD(tm.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    else:
        opt = optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-4)
        topt = torch.optim.Adam(tm.parameters(), lr=1e-2, weight_decay=1e-4)
    rng = np.random.default_rng(2)
    for _ in range(steps):
        x, t = rng.random((60, 784)), rng.integers(0, 10, 60)
        loss = F.cross_entropy(m(Tensor(x)), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tloss = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(t))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        assert abs(loss.item() - tloss.item()) < 1e-8
    for name, value in tm.state_dict().items():
        np.testing.assert_allclose(m.state_dict()[name], value.numpy(), atol=1e-8, rtol=0,
                                   err_msg=name)
    m.eval()
    tm.eval()
    x = rng.random((5, 784))
    np.testing.assert_allclose(m(Tensor(x)).data, tm(torch.tensor(x)).detach().numpy(),
                               atol=1e-8)


def test_sgd_nesterov_matches_pytorch():
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((3, 2))
    p, tp = nn.Parameter(w0), torch.tensor(w0, requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(5):
        opt.zero_grad()
        topt.zero_grad()
        ((p * p * p).sum()).backward()
        ((tp * tp * tp).sum()).backward()
        opt.step()
        topt.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12)
