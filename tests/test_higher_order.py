"""Higher-order differentiation: grad(), second and third derivatives of every primitive and of
the composites against PyTorch float64 and finite differences, gradgradcheck, HVPs, λ_max."""
import numpy as np
import pytest
from conftest import torch_or_skip

import tinygrad_bn as tb
import tinygrad_bn.nn.functional as F
from tinygrad_bn import GradcheckError, Tensor, gradgradcheck, ops
from tinygrad_bn.autograd import _next_seq
from tinygrad_bn.gradcheck import batch_norm_fn, gradgradcheck_report, numeric_vjp
from tinygrad_bn.hessian import hvp, top_hessian_eigenvalue
from tinygrad_bn.samples import SAMPLES, make_inputs
from tinygrad_bn.tensor import _apply

CASES = [(name, s) for name, samples in SAMPLES.items() for s in samples]


def _np(t):
    return None if t is None else np.asarray(t.detach().numpy() if hasattr(t, "detach")
                                             else t.data)


def _derivatives(grad, tensors, y, weights):
    """[first, second, third] derivatives with the same random cotangents in either library.

    first = d<u, y>/dx with u requiring grad; second = d<w, first>/d(x, u); third =
    d<z, second>/d(x, u). Differentiating w.r.t. u too checks each rule as a function of g
    (a linear op has a zero second derivative in x, but not in u)."""
    *xs, u = tensors
    w, z = weights
    first = grad(y, xs, u, create_graph=True, allow_unused=True)
    live = [(g, wi) for g, wi in zip(first, w) if g is not None and g.requires_grad]
    second = [None] * len(tensors)
    if live:
        second = list(grad([g for g, _ in live], tensors, [wi for _, wi in live],
                           create_graph=True, allow_unused=True))
    live = [(g, zi) for g, zi in zip(second, z) if g is not None and g.requires_grad]
    third = [None] * len(tensors)
    if live:
        third = grad([g for g, _ in live], tensors, [zi for _, zi in live], allow_unused=True)
    return [list(first), second, list(third)]


def _compare_with_torch(fn, torch_fn, arrays, rng, label, orders=3):
    torch = torch_or_skip()
    out_shape = fn(*[Tensor(a) for a in arrays]).shape
    u = rng.standard_normal(out_shape)
    w = [rng.standard_normal(a.shape) for a in arrays]
    z = [rng.standard_normal(a.shape) for a in arrays] + [rng.standard_normal(out_shape)]
    ours = [Tensor(a.copy(), requires_grad=True) for a in arrays] + [Tensor(u, requires_grad=True)]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays] + \
        [torch.tensor(u, requires_grad=True)]
    mine = _derivatives(tb.grad, ours, fn(*ours[:-1]), (w, z))
    ref = _derivatives(torch.autograd.grad, theirs, torch_fn(*theirs[:-1]),
                       ([torch.tensor(a) for a in w], [torch.tensor(a) for a in z]))
    for order, (a_list, b_list) in enumerate(zip(mine[:orders], ref), start=1):
        for k, (a, b) in enumerate(zip(a_list, b_list)):
            shape = (ours[k].shape)
            a = np.zeros(shape) if a is None else _np(a)
            b = np.zeros(shape) if b is None else _np(b)
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11,
                                       err_msg=f"{label}: derivative {order}, input {k}")
    for t in ours:  # grad() writes no .grad anywhere
        assert t.grad is None


@pytest.mark.parametrize("name,sample", CASES, ids=[s.label for _, s in CASES])
def test_second_and_third_derivatives_of_every_primitive_match_pytorch(name, sample):
    from test_torch_oracle import _torch_fn
    rng = np.random.default_rng(11)
    arrays = make_inputs(sample, rng)
    _compare_with_torch(sample.fn, _torch_fn(name, sample), arrays, rng, sample.label)


def test_every_primitive_is_covered():
    assert {op.name for op in ops.PRIMITIVES} == {name for name, _ in CASES}


COMPOSITES = {
    "softmax": (lambda x: x.softmax(axis=-1), lambda x: x.softmax(dim=-1)),
    "log_softmax": (lambda x: x.log_softmax(axis=-1), lambda x: x.log_softmax(dim=-1)),
    "var": (lambda x: x.var(axis=0), lambda x: x.var(dim=0, unbiased=False)),
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_higher_derivatives_of_composites_match_pytorch(name):
    rng = np.random.default_rng(5)
    ours, theirs = COMPOSITES[name]
    _compare_with_torch(ours, theirs, [rng.standard_normal((4, 5))], rng, name)


def test_higher_derivatives_of_cross_entropy_match_pytorch():
    torch = torch_or_skip()
    rng = np.random.default_rng(6)
    targets = np.array([0, 3, 1, 3])
    _compare_with_torch(lambda x: F.cross_entropy(x, targets),
                        lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(targets)),
                        [rng.standard_normal((4, 5))], rng, "cross_entropy")


def _bn_inputs(shape, seed=8):
    rng = np.random.default_rng(seed)
    c = shape[1]
    return rng, [rng.standard_normal(shape) * 2 + 1, rng.uniform(0.5, 1.5, c),
                 rng.standard_normal(c)]


def _our_bn(x, g, b):
    return F.batch_norm(x, None, None, g, b, training=True)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2)])
def test_higher_derivatives_of_training_batch_norm_match_pytorch(shape):
    # Through μ and σ² (batch statistics), w.r.t. x, γ and β. torch's fused batch_norm is
    # right to order 2 only: from order 3 it treats its saved mean and 1/std as constants
    # (pytorch/pytorch#186256; the next test shows it with finite differences). Order 3 is
    # checked against the same formula composed from torch primitives.
    torch = torch_or_skip()

    def composed(x, g, b):
        axes = (0,) if x.ndim == 2 else (0, 2)
        per = (lambda t: t) if x.ndim == 2 else (lambda t: t.reshape(1, -1, 1))
        mu = x.mean(axes, keepdim=True)
        var = ((x - mu) ** 2).mean(axes, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * per(g) + per(b)
    rng, arrays = _bn_inputs(shape)
    _compare_with_torch(
        _our_bn, lambda x, g, b: torch.nn.functional.batch_norm(x, None, None, g, b, True),
        arrays, rng, f"batch_norm {shape}", orders=2)
    rng, arrays = _bn_inputs(shape)
    _compare_with_torch(_our_bn, composed, arrays, rng, f"batch_norm {shape} vs composed")


def test_third_derivative_of_batch_norm_matches_finite_differences():
    # d/dx <z, d²<u, BN(x)>/dx² w> by central differences of the second derivative.
    rng, (x0, g0, b0) = _bn_inputs((4, 3), seed=1)
    u, w, z = (rng.standard_normal(x0.shape) for _ in range(3))

    def second(a):
        with tb.enable_grad():  # numeric_vjp calls it under no_grad
            x = Tensor(a, requires_grad=True)
            (d1,) = tb.grad(_our_bn(x, Tensor(g0), Tensor(b0)), x, u, create_graph=True)
            (d2,) = tb.grad(d1, x, w, create_graph=True)
        return x, d2
    x, d2 = second(x0.copy())
    (d3,) = tb.grad(d2, x, z)
    (numeric,) = numeric_vjp(lambda t: second(t.data.copy())[1], [x0.copy()], z, eps=1e-5)
    np.testing.assert_allclose(d3.data, numeric, rtol=1e-6, atol=1e-8)


def test_third_derivative_of_tanh_has_its_closed_form():
    # tanh' = 1 - t², tanh'' = -2t(1 - t²), tanh''' = (1 - t²)(6t² - 2)
    x = Tensor(np.linspace(-2.5, 2.5, 11), requires_grad=True)
    (d1,) = tb.grad(x.tanh().sum(), x, create_graph=True)
    (d2,) = tb.grad(d1.sum(), x, create_graph=True)
    (d3,) = tb.grad(d2.sum(), x)
    t = np.tanh(x.data)
    np.testing.assert_allclose(d1.data, 1 - t ** 2, rtol=1e-13)
    np.testing.assert_allclose(d2.data, -2 * t * (1 - t ** 2), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d3.data, (1 - t ** 2) * (6 * t ** 2 - 2), rtol=1e-12, atol=1e-15)


# ---- gradgradcheck: finite differences of the first derivative, no torch ----

@pytest.mark.parametrize("name,sample", CASES, ids=[s.label for _, s in CASES])
def test_gradgradcheck_passes_for_every_primitive(name, sample):
    rng = np.random.default_rng(2)
    xs = [Tensor(a, requires_grad=True) for a in make_inputs(sample, rng)]
    assert gradgradcheck(sample.fn, xs)


def test_gradgradcheck_passes_for_batch_norm_and_cross_entropy():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((5, 3)), requires_grad=True)
    g = Tensor(rng.uniform(0.5, 1.5, 3), requires_grad=True)
    b = Tensor(rng.standard_normal(3), requires_grad=True)
    assert gradgradcheck(batch_norm_fn(), [x, g, b])
    assert gradgradcheck(lambda x: F.cross_entropy(x, np.array([0, 2, 1, 1, 0])), [x])


def _tanh_whose_tensor_rule_is_constant(g, out, x):
    # Right in value, but on Tensors (create_graph) it cuts the dependence on out: its own
    # derivative is wrong (zero instead of -2 tanh (1 - tanh²) g).
    if isinstance(g, np.ndarray):
        return g * (1 - out * out)
    return g * Tensor._wrap(1 - out.data * out.data)


BROKEN_TANH = ops.Op("tanh_broken", np.tanh, _tanh_whose_tensor_rule_is_constant, reads=("out",))


def test_gradgradcheck_fails_on_a_wrong_second_derivative():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 2)), requires_grad=True)
    fn = lambda x: _apply(BROKEN_TANH, x)  # noqa: E731
    assert tb.gradcheck(fn, [x])  # the first derivative is right...
    with pytest.raises(GradcheckError) as err:  # ...the second is not
        gradgradcheck(fn, [x])
    message = str(err.value)
    assert message.startswith("gradgradcheck failed")
    assert "input 0, shape (3, 2)" in message and "analytic" in message
    report = gradgradcheck_report(fn, [x])
    x_row, u_row = report["inputs"]
    assert not x_row["passed"] and u_row["passed"]  # as a function of g the rule is right
    worst = x_row["worst"][0]
    i = tuple(worst["index"])
    t = np.tanh(x.data[i])
    # the numeric side is the true second derivative -2t(1 - t²) times the weights: nonzero
    assert worst["analytic"] == 0 and abs(worst["numeric"]) > 0.01 and abs(t) < 1


def test_gradgradcheck_fails_when_the_rule_is_wrong_as_a_function_of_g():
    def vjp(g, out, x):  # right for arrays, g counted twice as a Tensor... once as constant
        if isinstance(g, np.ndarray):
            return g * 2 * x
        return Tensor._wrap(g.data) * 2 * x
    square = ops.Op("square_broken", np.square, vjp, reads=("x",))
    x = Tensor(np.random.default_rng(1).standard_normal(4), requires_grad=True)
    report = gradgradcheck_report(lambda x: _apply(square, x), [x])
    x_row, u_row = report["inputs"]
    assert x_row["passed"] and not u_row["passed"] and not report["passed"]
    assert "cotangent" in u_row["name"]


def test_gradgradcheck_notes_a_zero_second_derivative_without_warning(recwarn):
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    report = gradgradcheck_report(lambda x: x * 3.0, [x])
    assert report["passed"] and any("linear" in n for n in report["notes"])
    assert gradgradcheck(lambda x: x * 3.0, [x]) and not recwarn.list


# ---- grad(): torch.autograd.grad's semantics ----

def test_grad_returns_gradients_and_writes_no_grad():
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    w.grad = Tensor(np.full((3, 2), 7.0))
    x = Tensor(rng.standard_normal((4, 3)))
    h = (x @ w).tanh()
    h.retain_grad()
    loss = (h * h).sum()
    gw, gh = tb.grad(loss, [w, h])  # a non-leaf input too
    np.testing.assert_allclose(gh.data, 2 * h.data)
    np.testing.assert_allclose(gw.data, x.data.T @ (2 * h.data * (1 - h.data ** 2)))
    np.testing.assert_array_equal(w.grad.data, 7.0)  # untouched
    assert h.grad is None
    assert isinstance(tb.grad(loss.detach() + (w * 2).sum(), w), tuple)


def test_grad_matches_torch_on_sequences_of_outputs_and_grad_outputs():
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(3), rng.standard_normal(3)
    go = [rng.standard_normal(3), None]

    def f(lib_grad, x, y, wrap):
        outs = [x * y, (x.exp() * y).sum()]
        return lib_grad(outs, [y, x], [wrap(go[0]), None])
    ours = f(tb.grad, Tensor(a, requires_grad=True), Tensor(b, requires_grad=True), np.asarray)
    theirs = f(torch.autograd.grad, torch.tensor(a, requires_grad=True),
               torch.tensor(b, requires_grad=True), torch.tensor)
    for m, t in zip(ours, theirs):
        np.testing.assert_allclose(m.data, t.numpy(), rtol=1e-12)


def test_grad_errors_say_what_to_do():
    x = Tensor(np.ones(3), requires_grad=True)
    z = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"inputs\[1\] .*not used.*allow_unused=True"):
        tb.grad((x * 2).sum(), [x, z])
    assert tb.grad((x * 2).sum(), [x, z], allow_unused=True)[1] is None
    with pytest.raises(RuntimeError, match="one-element output: pass grad_outputs"):
        tb.grad(x * 2, x)
    with pytest.raises(RuntimeError, match=r"outputs\[0\] does not require grad"):
        tb.grad(x.detach().sum(), x)
    with pytest.raises(RuntimeError, match=r"inputs\[0\] .*does not require grad"):
        tb.grad((x * 2).sum(), x.detach())
    with pytest.raises(ValueError, match="2 grad_outputs for 1 outputs"):
        tb.grad([(x * 2).sum()], [x], [np.ones(()), np.ones(())])
    with pytest.raises(ValueError, match=r"grad_outputs\[0\] has shape \(2,\)"):
        tb.grad(x * 2, x, np.ones(2))


def test_grad_retain_graph_defaults_to_create_graph_as_in_torch():
    torch = torch_or_skip()
    for lib, make in ((tb.grad, lambda: Tensor(np.ones(3), requires_grad=True)),
                      (torch.autograd.grad, lambda: torch.ones(3, dtype=torch.float64,
                                                               requires_grad=True))):
        x = make()
        y = x.tanh().sum()
        lib(y, x)
        with pytest.raises(RuntimeError, match="second|freed"):
            lib(y, x)  # freed by the first call
        y = x.tanh().sum()
        lib(y, x, retain_graph=True)
        lib(y, x)  # kept by retain_graph
        y = x.tanh().sum()
        (g,) = lib(y, x, create_graph=True)
        lib(g.sum(), x)  # create_graph keeps it too
        y = x.tanh().sum()
        (g,) = lib(y, x, create_graph=True, retain_graph=False)
        with pytest.raises(RuntimeError, match="second|freed"):
            lib(g.sum(), x)  # tanh's second derivative needs the freed tanh node


def test_grad_results_own_their_memory():
    x = Tensor(np.ones(3), requires_grad=True)
    y = Tensor(np.ones(3), requires_grad=True)
    up = np.arange(3.0)
    gx, gy = tb.grad(x + y, [x, y], up)  # add hands one array to both inputs
    gx.data += 1
    np.testing.assert_array_equal(gy.data, up)
    np.testing.assert_array_equal(up, np.arange(3.0))


def test_backward_without_create_graph_records_nothing():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    g = Tensor(rng.uniform(0.5, 1.5, 3), requires_grad=True)
    b = Tensor(rng.standard_normal(3), requires_grad=True)
    loss = F.cross_entropy(F.batch_norm(x, None, None, g, b, training=True)[[0, 1, 3]],
                           np.array([0, 2, 1]))
    before = _next_seq()
    loss.backward()
    assert _next_seq() == before + 1  # no node was made during the pass
    for t in (x, g, b):
        assert not t.grad.requires_grad and t.grad._ctx is None
        assert type(t.grad.data) is np.ndarray
    loss = (x.sigmoid() * g).sum()
    before = _next_seq()
    grads = tb.grad(loss, [x, g])
    assert _next_seq() == before + 1
    assert not any(t.requires_grad for t in grads)


# ---- Hessian-vector products and the top eigenvalue ----

def test_hvp_matches_torch_functional_hvp():
    torch = torch_or_skip()
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((5, 3)), rng.uniform(0.5, 1.5, 3)
    va, vb = rng.standard_normal((5, 3)), rng.standard_normal(3)
    targets = np.array([0, 2, 1, 1, 0])

    def loss(lib_F, t, x, g):
        return lib_F.cross_entropy((x * g).tanh() * 3, t)
    out, (ha, hb) = hvp(lambda x, g: loss(F, targets, x, g), [Tensor(a), Tensor(b)], [va, vb])
    t_out, (ta, tb_) = torch.autograd.functional.hvp(
        lambda x, g: loss(torch.nn.functional, torch.tensor(targets), x, g),
        (torch.tensor(a), torch.tensor(b)), (torch.tensor(va), torch.tensor(vb)))
    np.testing.assert_allclose(out.data, t_out.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ha.data, ta.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hb.data, tb_.numpy(), rtol=1e-9, atol=1e-12)
    assert not out.requires_grad and not ha.requires_grad
    # a single tensor in, a single tensor out
    _, h = hvp(lambda x: (x ** 3).sum(), Tensor(a), va)
    np.testing.assert_allclose(h.data, 6 * a * va, rtol=1e-12)


def test_hvp_errors():
    x = Tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"v\[0\] has shape \(2,\)"):
        hvp(lambda x: x.sum(), x, np.ones(2))
    with pytest.raises(RuntimeError, match="one-element Tensor"):
        hvp(lambda x: x * 2, x, np.ones(3))


def _small_net(rng, bn):
    """A 4-5-3 sigmoid net (with or without batch norm) in float64 and its loss on a batch."""
    layers = [tb.nn.Linear(4, 5, dtype=np.float64)]
    if bn:
        layers.append(tb.nn.BatchNorm1d(5, dtype=np.float64))
    layers += [tb.nn.Sigmoid(), tb.nn.Linear(5, 3, dtype=np.float64)]
    model = tb.nn.Sequential(*layers)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    return model, lambda: F.cross_entropy(model(Tensor(X)), y)


def _dense_hessian_by_differences(loss, params, eps=1e-5):
    """The Hessian from central differences of the first gradient (no second-order code)."""
    def gradient():
        return np.concatenate([g.data.reshape(-1) for g in tb.grad(loss(), params)])
    n = sum(p.size for p in params)
    H = np.zeros((n, n))
    col = 0
    for p in params:
        flat = p.data.reshape(-1)
        for i in range(p.size):
            orig = flat[i]
            flat[i] = orig + eps
            hi = gradient()
            flat[i] = orig - eps
            lo = gradient()
            flat[i] = orig
            H[:, col] = (hi - lo) / (2 * eps)
            col += 1
    return (H + H.T) / 2


@pytest.mark.parametrize("bn", [False, True])
def test_top_hessian_eigenvalue_matches_the_dense_hessian(bn):
    rng = np.random.default_rng(9)
    model, loss = _small_net(rng, bn)
    params = list(model.parameters())
    H = _dense_hessian_by_differences(loss, params)
    top = np.linalg.eigvalsh(H)[-1]
    result = top_hessian_eigenvalue(loss, params, iters=300, tol=1e-10)
    assert result["converged"]
    np.testing.assert_allclose(result["eigenvalue"], top, rtol=1e-5)
    assert all(p.grad is None for p in params)
    # and the HVP is the dense Hessian times v
    v = [rng.standard_normal(p.shape) for p in params]
    _, hv = hvp(lambda *ps: _loss_with(model, params, ps, loss), params, v)
    np.testing.assert_allclose(np.concatenate([h.data.reshape(-1) for h in hv]),
                               H @ np.concatenate([a.reshape(-1) for a in v]), rtol=1e-5,
                               atol=1e-7)


def _loss_with(model, params, new, loss):
    # hvp hands in fresh leaves: put them in the model, compute, put the originals back
    names = [(m, k) for m in model.modules() for k, p in vars(m).items()
             if any(p is q for q in params)]
    old = [getattr(m, k) for m, k in names]
    for (m, k), t in zip(names, new):
        setattr(m, k, t)
    try:
        return loss()
    finally:
        for (m, k), t in zip(names, old):
            setattr(m, k, t)


def test_top_hessian_eigenvalue_finds_the_largest_when_a_negative_one_dominates():
    # f(x) = x^T A x / 2 with eigenvalues -5, 1, 2: power iteration alone would return -5
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    A = Q @ np.diag([-5.0, 1.0, 2.0]) @ Q.T
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    result = top_hessian_eigenvalue(lambda: (x * (Tensor(A) @ x)).sum() * 0.5, [x], iters=500,
                                    tol=1e-12)
    np.testing.assert_allclose(result["eigenvalue"], 2.0, rtol=1e-6)


def test_numeric_vjp_of_the_gradient_agrees_with_hvp():
    # An independent oracle: the HVP as a directional derivative of the gradient.
    rng = np.random.default_rng(3)
    a, v = rng.standard_normal(4), rng.standard_normal(4)

    def fn(x):
        return (x.sigmoid() * x.exp()).sum()
    _, h = hvp(fn, Tensor(a), v)

    def gradient(x):
        with tb.enable_grad():
            leaf = Tensor(x.data, requires_grad=True)
            return tb.grad(fn(leaf), leaf)[0]
    (numeric,) = numeric_vjp(gradient, [a.copy()], v)  # H is symmetric: v^T H = H v
    np.testing.assert_allclose(h.data, numeric, rtol=1e-6)


def test_grad_inside_a_jit_step_is_refused():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(tb.JitError, match=r"grad\(\) inside a jit step"):
        tb.jit(lambda x: tb.grad((x * x).sum(), x)[0])(x)
