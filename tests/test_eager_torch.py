"""PyTorch semantics users rely on (issue 16), each against torch float64: tied weights, the
optimizer's arguments, cross-entropy with masked classes, 0-d reductions, BatchNorm1d's
cumulative average and loading state dicts without num_batches_tracked."""
import numpy as np
import pytest
from conftest import torch_or_skip

from tinygrad_bn import JitError, Tensor, jit, nn, optim
from tinygrad_bn.nn import functional as F

torch = torch_or_skip()


def _to_torch(model, torch_model):
    torch_model.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return torch_model


def _train_both(model, torch_model, steps=3):
    """SGD with momentum on both (an update applied twice would show); returns both states."""
    rng = np.random.default_rng(0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        x = rng.standard_normal((5, 3))
        opt.zero_grad()
        topt.zero_grad()
        (model(Tensor(x)) ** 2).mean().backward()
        (torch_model(torch.tensor(x)) ** 2).mean().backward()
        opt.step()
        topt.step()
    return model.state_dict(), torch_model.state_dict()


def test_a_module_used_twice_is_one_set_of_parameters():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.Tanh(), lin).double()
    tlin = torch.nn.Linear(3, 3)
    tmodel = _to_torch(model, torch.nn.Sequential(tlin, torch.nn.Tanh(), tlin).double())
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    assert len(model.parameters()) == 2 and len(model.modules()) == 3
    assert list(model.state_dict()) == list(tmodel.state_dict())  # every name kept
    ours, theirs = _train_both(model, tmodel)
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k].numpy(), rtol=1e-12, err_msg=k)


class _AutoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(3, 3), nn.Linear(3, 3)
        self.dec.weight = self.enc.weight  # tied

    def forward(self, x):
        return self.dec(self.enc(x).tanh())


class _TorchAutoEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
        self.dec.weight = self.enc.weight

    def forward(self, x):
        return self.dec(self.enc(x).tanh())


def test_tied_weights_are_updated_once():
    model = _AutoEncoder().double()
    tmodel = _to_torch(model, _TorchAutoEncoder().double())
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    assert [n for n, _ in model.named_parameters(remove_duplicate=False)] == \
        [n for n, _ in tmodel.named_parameters(remove_duplicate=False)]
    assert list(model.state_dict()) == list(tmodel.state_dict())
    ours, theirs = _train_both(model, tmodel)
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k].numpy(), rtol=1e-12, err_msg=k)
    assert model.dec.weight is model.enc.weight


@pytest.mark.parametrize("make", [optim.SGD, optim.Adam])
def test_optimizer_refuses_what_torch_refuses(make):
    model, w = nn.Linear(2, 2), nn.Parameter(np.ones(2))
    tmodel, tw = torch.nn.Linear(2, 2), torch.nn.Parameter(torch.ones(2))
    tmake = getattr(torch.optim, make.__name__)
    for ours, theirs in ((model, tw), (w, tw)):
        with pytest.raises(TypeError, match="iterable of Tensors or dicts, but got"):
            make(ours, lr=0.1)
        with pytest.raises(TypeError, match="iterable of Tensors or dicts, but got"):
            tmake(theirs, lr=0.1)
    with pytest.raises(TypeError):
        tmake(tmodel, lr=0.1)
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        make([], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        tmake([], lr=0.1)
    with pytest.raises(ValueError, match="appears twice"):  # torch warns; ours would step twice
        make([w, w], lr=0.1)
    with pytest.raises(TypeError, match="only optimize Tensors"):
        make([w, np.ones(2)], lr=0.1)
    assert len(make((p for p in model.parameters()), lr=0.1).params) == 2  # a generator


def test_cross_entropy_with_a_minus_inf_logit_is_finite_as_torch():
    a = np.array([[1.0, -np.inf, 0.5, 2.0], [0.2, 0.3, -np.inf, -np.inf], [0.0, 1.0, 2.0, 3.0]])
    targets = np.array([0, 1, 3])
    x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        x.grad, tx.grad = None, None
        loss = F.cross_entropy(x, targets, reduction=reduction)
        tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(targets), reduction=reduction)
        assert np.all(np.isfinite(loss.data))
        np.testing.assert_allclose(loss.data, tloss.detach().numpy(), rtol=1e-12)
        up = np.random.default_rng(1).standard_normal(loss.shape)
        loss.backward(up)
        tloss.backward(torch.tensor(up))
        np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-12, atol=1e-15)


ZERO_D = {"sum(0)": (lambda t: t.sum(0), lambda t: t.sum(0)),
          "sum(-1)": (lambda t: t.sum(-1), lambda t: t.sum(-1)),
          "sum(0, keepdims)": (lambda t: t.sum(0, keepdims=True), lambda t: t.sum(0, True)),
          "mean(0)": (lambda t: t.mean(0), lambda t: t.mean(0)),
          "mean(-1)": (lambda t: t.mean(-1), lambda t: t.mean(-1)),
          "max(0)": (lambda t: t.max(0), lambda t: t.amax(0)),
          "softmax()": (lambda t: t.softmax(), lambda t: t.softmax(-1)),
          "softmax(0)": (lambda t: t.softmax(0), lambda t: t.softmax(0)),
          "log_softmax()": (lambda t: t.log_softmax(), lambda t: t.log_softmax(-1))}


@pytest.mark.parametrize("name", list(ZERO_D))
def test_reductions_of_a_0d_tensor_as_torch(name):
    ours_fn, torch_fn = ZERO_D[name]
    x, tx = Tensor(np.array(1.5), requires_grad=True), torch.tensor(1.5, requires_grad=True,
                                                                    dtype=torch.float64)
    y, ty = ours_fn(x), torch_fn(tx)
    assert y.shape == tuple(ty.shape)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-15)
    (y * 3.0).sum().backward()
    (ty * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-15)


def test_0d_axis_errors_as_torch():
    x = Tensor(np.array(1.5))
    for bad in (1, -2, (0, -1)):
        with pytest.raises(ValueError, match="axis"):
            x.sum(bad)


def test_backward_through_an_element_of_a_vector():
    a = np.array([1.0, 2.0, 3.0])
    x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    for _ in range(2):  # the second pass adds into a gradient (0-d sums gave numpy scalars)
        (x[1] * 2.0 + x[1] * x[2]).backward()
        (tx[1] * 2.0 + tx[1] * tx[2]).backward()
        np.testing.assert_array_equal(x.grad.data, tx.grad.numpy())
    s, ts = Tensor(np.array(2.0), requires_grad=True), torch.tensor(2.0, requires_grad=True,
                                                                    dtype=torch.float64)
    for _ in range(2):
        (s * 3.0 + s * s).backward()
        (ts * 3.0 + ts * ts).backward()
    assert type(s.grad.data) is np.ndarray
    np.testing.assert_array_equal(s.grad.data, ts.grad.numpy())


def test_batchnorm_momentum_none_is_a_cumulative_average():
    bn, tbn = nn.BatchNorm1d(3, momentum=None).double(), \
        torch.nn.BatchNorm1d(3, momentum=None).double()
    rng = np.random.default_rng(2)
    for n in (4, 7, 5):
        x = rng.standard_normal((n, 3)) * 2 + 1
        y, ty = bn(Tensor(x)), tbn(torch.tensor(x))
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10)
    for k, v in tbn.state_dict().items():
        np.testing.assert_allclose(bn.state_dict()[k], v.numpy(), rtol=1e-12, err_msg=k)
    bn.eval()
    tbn.eval()
    x = rng.standard_normal((2, 3))
    np.testing.assert_allclose(bn(Tensor(x)).data, tbn(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12)
    assert "momentum=None" in repr(bn)
    bn.train()

    @jit
    def step(x):
        return bn(x)
    with pytest.raises(JitError, match="momentum=None.*fixed momentum"):
        step(Tensor(x))


def test_load_state_dict_without_num_batches_tracked_as_torch():
    trained, ttrained = nn.BatchNorm1d(3).double(), torch.nn.BatchNorm1d(3).double()
    x = np.random.default_rng(3).standard_normal((4, 3))
    trained(Tensor(x)), trained(Tensor(x)), ttrained(torch.tensor(x)), ttrained(torch.tensor(x))
    state = {k: v for k, v in trained.state_dict().items() if k != "num_batches_tracked"}
    for ours, theirs in ((nn.BatchNorm1d(3).double(), torch.nn.BatchNorm1d(3).double()),
                         (trained, ttrained)):
        ours.load_state_dict(state)
        theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
        assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item()
        np.testing.assert_array_equal(ours.running_var.data, theirs.running_var.numpy())
    with pytest.raises(KeyError, match="missing keys.*running_mean"):
        nn.BatchNorm1d(3).load_state_dict({k: v for k, v in state.items() if k != "running_mean"})
    with pytest.raises(KeyError, match="unexpected keys.*extra"):
        nn.BatchNorm1d(3).load_state_dict(dict(state, extra=np.zeros(1)))


def test_cross_entropy_second_order_with_a_minus_inf_logit():
    a = np.array([[1.0, -np.inf, 0.5, 2.0], [0.2, 0.3, -np.inf, 1.0]])
    targets = np.array([0, 3])
    x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    F.cross_entropy(x, targets).backward(create_graph=True)
    g = x.grad
    x.grad = None
    (g * g).sum().backward()
    tg, = torch.autograd.grad(torch.nn.functional.cross_entropy(tx, torch.tensor(targets)), tx,
                              create_graph=True)
    (tg * tg).sum().backward()
    np.testing.assert_allclose(g.data, tg.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-10, atol=1e-15)
