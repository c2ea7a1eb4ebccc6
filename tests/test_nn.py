"""Module API, state round trips, losses and optimizers without PyTorch."""
import numpy as np
import pytest

from tinygrad_bn import Tensor, nn, optim
from tinygrad_bn.nn import functional as F


def seed_network():
    """The lecture notes' network: z = Wx, z̃ = γ·z_norm + β, a = sigmoid(z̃) in every layer."""
    return nn.Sequential(
        nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.Sigmoid(),
        nn.Linear(8, 8, bias=False), nn.BatchNorm1d(8), nn.Sigmoid(),
        nn.Linear(8, 3))


def test_seed_network_trains_evaluates_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)  # 3 classes
    np.random.seed(0)
    model = seed_network()
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    first = None
    for step in range(60):
        idx = rng.choice(90, 30, replace=False)
        loss = F.cross_entropy(model(Tensor(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
    model.eval()
    accuracy = (model(Tensor(x)).argmax(axis=1) == y).mean()
    assert accuracy > 0.85
    model.save(tmp_path / "seed.npz")
    again = seed_network().eval()
    again.load(tmp_path / "seed.npz")
    np.testing.assert_array_equal(again(Tensor(x)).data, model(Tensor(x)).data)


def test_named_parameters_and_modules():
    model = seed_network()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "1.weight", "1.bias", "3.weight", "4.weight", "4.bias",
                     "6.weight", "6.bias"]
    assert [n for n, _ in model.named_buffers()][:3] == ["1.running_mean", "1.running_var",
                                                        "1.num_batches_tracked"]
    assert isinstance(model[1], nn.BatchNorm1d) and len(model) == 7
    assert len(model[:3]) == 3
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        model.nope


def test_train_eval_propagate():
    model = seed_network()
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_zero_grad_clears_every_parameter():
    model = seed_network()
    F.cross_entropy(model(Tensor(np.ones((4, 4)))), [0, 1, 2, 0]).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_load_refuses_mismatched_shapes_and_keeps_the_module(tmp_path):
    model = seed_network()
    before = model.state_dict()
    other = nn.Sequential(nn.Linear(4, 9, bias=False), nn.BatchNorm1d(9), nn.Sigmoid(),
                          nn.Linear(9, 8, bias=False), nn.BatchNorm1d(8), nn.Sigmoid(),
                          nn.Linear(8, 3))
    other.save(tmp_path / "other")
    with pytest.raises(ValueError, match=r"0\.weight has shape \(8, 4\) here but \(9, 4\)"):
        model.load(tmp_path / "other")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(KeyError, match="missing keys"):
        model.load_state_dict({"0.weight": before["0.weight"]})


def test_state_dict_is_a_copy():
    model = nn.Linear(3, 2)
    sd = model.state_dict()
    sd["weight"][:] = 0
    assert np.any(model.weight.data != 0)


def test_linear_init_follows_pytorch_bounds():
    np.random.seed(0)
    lin = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    assert lin.weight.shape == (300, 400) and lin.bias.shape == (300,)
    assert np.abs(lin.weight.data).max() <= bound
    assert np.abs(lin.weight.data).max() > 0.95 * bound
    assert lin.weight.dtype == np.float32
    with pytest.raises(ValueError, match=r"Linear\(400, 300\).*400 features.*\(2, 5\)"):
        lin(Tensor(np.ones((2, 5))))


def test_cross_entropy_errors_and_values():
    logits = Tensor(np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]))
    expected = -np.mean([2 - np.log(np.exp(2) + 1 + np.exp(-1)), -np.log(3)])
    np.testing.assert_allclose(F.cross_entropy(logits, [0, 2]).item(), expected)
    with pytest.raises(ValueError, match=r"target 3 at index 1 is out of range for 3 classes"):
        F.cross_entropy(logits, [0, 3])
    with pytest.raises(ValueError, match=r"target -1 at index 0 is out of range for 3 classes"):
        F.cross_entropy(logits, [-1, 0])  # numpy would take -1 as the last class
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        F.cross_entropy(logits, [0, 1, 2])
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, [0, 1], reduction="avg")


@pytest.mark.parametrize("classes", [3, 256, 257, 2000])  # rows of a cached identity, or not
def test_cross_entropy_picks_each_target_and_refuses_bad_ones(classes, rng):
    logits = rng.standard_normal((5, classes))
    targets = np.array([0, classes - 1, 1, 1, 2])
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = Tensor(logits, requires_grad=True)
    out = F.cross_entropy(loss, targets)
    np.testing.assert_allclose(out.item(), -log_p[np.arange(5), targets].mean(), rtol=1e-12)
    out.backward()
    # d/dlogits = (softmax - onehot) / n: the one-hot's rows are each target's, once
    onehot = np.zeros((5, classes))
    onehot[np.arange(5), targets] = 1
    np.testing.assert_allclose(loss.grad.data, (np.exp(log_p) - onehot) / 5, atol=1e-12)
    for bad, where in (([0, 1, classes, 0, 0], f"target {classes} at index 2"),
                       ([0, 1, 2, 0, -3], "target -3 at index 4"),
                       (np.array([0, 1, 2, 2**64 - 1, 0], dtype=np.uint64),  # -1 stored unsigned
                        f"target {2**64 - 1} at index 3")):
        with pytest.raises(ValueError, match=where):
            F.cross_entropy(Tensor(logits), np.array(bad))
    # a second call still sees a clean identity (the one-hot handed out is a copy)
    np.testing.assert_allclose(F.cross_entropy(Tensor(logits), targets).item(), out.item())


def test_sgd_momentum_and_weight_decay_rule():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    buf, w = None, p.data.copy()
    for _ in range(3):
        opt.zero_grad()
        (p * p).sum().backward()
        opt.step()
        g = 2 * w + 0.01 * w
        buf = g if buf is None else 0.9 * buf + g
        w = w - 0.1 * buf
    np.testing.assert_allclose(p.data, w, rtol=1e-12)


def test_adam_rule():
    p = nn.Parameter(np.array([0.5, -1.5]))
    opt = optim.Adam([p], lr=0.01)
    m = v = np.zeros(2)
    w = p.data.copy()
    for t in range(1, 4):
        opt.zero_grad()
        (p ** 3).sum().backward()
        opt.step()
        g = 3 * w ** 2
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(p.data, w, rtol=1e-10)


def test_optimizers_record_no_graph_and_skip_missing_grads():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.SGD([a, b], lr=1.0)
    (a * 2).sum().backward()
    opt.step()
    np.testing.assert_array_equal(a.data, [-1, -1])
    np.testing.assert_array_equal(b.data, [1, 1])
    assert a._ctx is None
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
