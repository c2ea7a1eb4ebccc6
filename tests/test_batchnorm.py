"""Batch norm composed from primitives: against the closed-form backward, the running-statistics
formula, PyTorch float64 (when installed), and its errors for users."""
import warnings

import numpy as np
import pytest
from conftest import numeric_vjp

from tinygrad_bn import Tensor, nn
from tinygrad_bn.autograd import is_node, toposort
from tinygrad_bn.nn import functional as F


def closed_form_backward(x, gamma, dy, eps):
    """dx = gamma / (m sqrt(var+eps)) * (m dy - sum dy - x_hat sum(dy x_hat)); dgamma; dbeta."""
    m = x.shape[0]
    mu, var = x.mean(0), x.var(0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    dx = gamma / (m * np.sqrt(var + eps)) * (m * dy - dy.sum(0) - x_hat * (dy * x_hat).sum(0))
    return dx, (dy * x_hat).sum(0), dy.sum(0)


@pytest.mark.parametrize("seed", range(6))
def test_autodiff_equals_closed_form(seed):
    rng = np.random.default_rng(seed)
    m, c = rng.integers(2, 40), rng.integers(1, 20)
    x = rng.standard_normal((m, c)) * rng.uniform(0.1, 10) + rng.uniform(-5, 5)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    dy = rng.standard_normal((m, c))
    tx, tg, tb = (Tensor(a, requires_grad=True) for a in (x, gamma, beta))
    F.batch_norm(tx, None, None, tg, tb, training=True, eps=1e-5).backward(dy)
    for got, want in zip((tx.grad, tg.grad, tb.grad), closed_form_backward(x, gamma, dy, 1e-5)):
        np.testing.assert_allclose(got.data, want, rtol=1e-9, atol=1e-11)


def test_autodiff_equals_central_differences_3d():
    rng = np.random.default_rng(5)
    x, g, b = rng.standard_normal((4, 3, 5)), rng.standard_normal(3), rng.standard_normal(3)
    dy = rng.standard_normal((4, 3, 5))
    tx, tg, tb = (Tensor(a, requires_grad=True) for a in (x, g, b))
    F.batch_norm(tx, None, None, tg, tb, training=True).backward(dy)

    def f(x, g, b):
        mu, var = x.mean((0, 2), keepdims=True), x.var((0, 2), keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * g[:, None] + b[:, None]
    for got, want in zip((tx, tg, tb), numeric_vjp(f, [x.copy(), g.copy(), b.copy()], dy)):
        np.testing.assert_allclose(got.grad.data, want, rtol=1e-6, atol=1e-8)


def test_batch_norm_is_built_from_primitives_through_the_mean():
    x = Tensor(np.random.default_rng(0).standard_normal((8, 3)), requires_grad=True)
    bn = nn.BatchNorm1d(3).double()
    y = bn(x)
    nodes = [v for v in toposort(y) if is_node(v)]
    ops_used = [v.op.name for v in nodes]
    assert {"mean", "sub", "pow_scalar", "add", "sqrt", "div", "mul"} <= set(ops_used)
    assert ops_used.count("mean") == 2  # mu and sigma², both on the graph
    var = next(v for v in nodes if v.name == "σ²_B")
    # the variance's graph reaches x through the mean as well as directly (not detached)
    centered = var.parents[0].parents[0]
    assert centered.name == "x − μ_B" and centered.parents[1].name == "μ_B"
    assert centered.parents[0] is x and centered.parents[1].parents[0] is x


def test_output_is_normalized_then_affine():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 4)) * 3 + 7
    bn = nn.BatchNorm1d(4).double()
    y = bn(Tensor(x)).data
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(0), x.var(0) / (x.var(0) + 1e-5), rtol=1e-12)
    bn.weight.data[:] = [1, 2, 3, 4]
    bn.bias.data[:] = [0, -1, 5, 0.5]
    y = bn(Tensor(x)).data
    np.testing.assert_allclose(y.mean(0), [0, -1, 5, 0.5], atol=1e-12)


def test_gamma_sqrt_var_beta_mu_recovers_identity():
    # The lecture notes: with gamma = sqrt(sigma² + eps) and beta = mu, batch norm is the identity.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 5)) * 4 - 2
    bn = nn.BatchNorm1d(5).double()
    bn.weight.data = np.sqrt(x.var(0) + bn.eps)
    bn.bias.data = x.mean(0)
    np.testing.assert_allclose(bn(Tensor(x)).data, x, rtol=1e-12, atol=1e-12)


def test_running_statistics_follow_the_formula():
    rng = np.random.default_rng(3)
    bn = nn.BatchNorm1d(4, momentum=0.2).double()
    mean, var = np.zeros(4), np.ones(4)
    for _ in range(5):
        x = rng.standard_normal((10, 4)) * 2 + 1
        bn(Tensor(x))
        mean = 0.8 * mean + 0.2 * x.mean(0)
        var = 0.8 * var + 0.2 * x.var(0, ddof=1)  # unbiased: m / (m - 1)
    np.testing.assert_allclose(bn.running_mean.data, mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.data, var, rtol=1e-12)
    assert bn.num_batches_tracked.data == 5
    # a 0-d array, as it started (numpy's 0-d + 1 is a scalar): also in the state dict
    assert type(bn.num_batches_tracked.data) is np.ndarray
    assert type(bn.state_dict()["num_batches_tracked"]) is np.ndarray
    assert not bn.running_mean.requires_grad and bn.running_mean._ctx is None


def test_eval_uses_running_statistics_and_does_not_update_them():
    rng = np.random.default_rng(4)
    bn = nn.BatchNorm1d(3).double()
    bn.running_mean.data = np.array([1.0, 2.0, 3.0])
    bn.running_var.data = np.array([4.0, 1.0, 0.25])
    bn.eval()
    x = rng.standard_normal((1, 3))  # a single example is fine in eval mode
    y = bn(Tensor(x)).data
    np.testing.assert_allclose(y, (x - [1, 2, 3]) / np.sqrt(np.array([4, 1, 0.25]) + 1e-5))
    np.testing.assert_array_equal(bn.running_mean.data, [1, 2, 3])


def test_running_buffers_are_state_not_parameters():
    bn = nn.BatchNorm1d(3)
    names = [n for n, _ in bn.named_parameters()]
    assert names == ["weight", "bias"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]


def test_batch_of_one_in_training_raises_a_clear_error():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"variance of a single value is 0.*eval\(\)"):
        bn(Tensor(np.ones((1, 3))))


def test_wrong_feature_count_names_both_shapes():
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\) expects.*\(N, 3\).*\(8, 4\)"):
        nn.BatchNorm1d(3)(Tensor(np.ones((8, 4))))


def test_large_momentum_warns_about_the_convention():
    with pytest.warns(UserWarning, match="weight of the NEW batch"):
        nn.BatchNorm1d(3, momentum=0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.BatchNorm1d(3, momentum=0.1)
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm1d(3, momentum=1.5)


def test_no_nan_for_constant_features():
    # A feature that is constant over the batch has variance 0: eps keeps x_hat finite (0).
    x = Tensor(np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]]), requires_grad=True)
    y = nn.BatchNorm1d(2).double()(x)
    y.backward(np.ones((3, 2)))
    assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(x.grad.data))
    np.testing.assert_array_equal(y.data[:, 0], 0)


def test_affine_false_has_no_parameters():
    bn = nn.BatchNorm1d(3, affine=False).double()
    assert bn.parameters() == []
    y = bn(Tensor(np.random.default_rng(0).standard_normal((5, 3)))).data
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-12)


def test_graph_keeps_only_the_full_size_arrays_the_derivatives_read():
    # After the forward the chain rule needs x − μ_B (for ∂σ²/∂x) and x̂ (for ∂L/∂γ and the
    # division's rule) besides the input; (x − μ_B)² and γ·x̂ are only needed as shapes.
    x = Tensor(np.random.default_rng(2).standard_normal((32, 5)), requires_grad=True)
    bn = nn.BatchNorm1d(5).double()
    y = bn(x)
    held = {}
    for v in toposort(y):
        if is_node(v):
            arrays = [a.data for a in v.args if not is_node(a)] + [v.out]
            held.update((id(a), a) for a in arrays if a is not None and a.shape == x.shape)
    mu = x.data.mean(axis=0)
    x_hat = (x.data - mu) / np.sqrt(x.data.var(axis=0) + bn.eps)
    found = sorted(held.values(), key=lambda a: float(np.abs(a).sum()))
    assert len(found) == 3, [a[0, :2] for a in found]
    expect = sorted([x.data, x.data - mu, x_hat], key=lambda a: float(np.abs(a).sum()))
    for got, want in zip(found, expect):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
