"""A review of the merged branches (seam, promotion, in-place, higher order, jit, CLI): programs
a user would write that cross two of them, each against PyTorch float64, finite differences or
a closed form. Each test is a finding that failed before its fix."""
import subprocess
import sys

import numpy as np
import pytest
from conftest import torch_or_skip

import tinygrad_bn as tg
from tinygrad_bn import Tensor, jit, nn, no_grad, optim
from tinygrad_bn.nn import functional as F

torch = torch_or_skip()
TF = torch.nn.functional

X0 = np.array([[0.5, -1.25, 2.0], [1.5, 0.25, -0.75], [-0.3, 0.8, 1.1], [2.2, -0.6, 0.4]])
W1 = np.array([[1.0, -2.0, 0.5], [3.0, 1.5, -1.0], [0.2, 0.7, -0.4], [-1.1, 0.3, 0.9]])
W2 = np.array([[0.6, 0.1, -1.3], [-0.2, 2.1, 0.5], [1.4, -0.9, 0.3], [0.8, 0.4, -0.7]])


def _derivatives(grad, tensor, f, x0, order):
    """[d^k/dx^k of sum(f(x)), contracted with W1, W2 after the first] for k = 1..order."""
    x = tensor(x0)
    out, results = f(x).sum(), []
    for k, w in enumerate([None, W1, W2][:order]):
        if w is not None:
            out = (results[-1] * tensor(w, False)).sum()
        (g,) = grad(out, x, k + 1 < order)
        results.append(g)
    return [r.detach().numpy() if hasattr(r, "detach") and not isinstance(r, Tensor)
            else r.data for r in results]


def _ours(f, x0, order):
    return _derivatives(lambda o, x, cg: tg.grad(o, [x], create_graph=cg),
                        lambda a, rg=True: Tensor(a, requires_grad=rg), f, x0, order)


def _torch(f, x0, order):
    return _derivatives(lambda o, x, cg: torch.autograd.grad(o, [x], create_graph=cg),
                        lambda a, rg=True: torch.tensor(a, requires_grad=rg), f, x0, order)


# ---- higher order x promotion ----

def test_second_derivative_through_a_float32_cast_and_back():
    # The engine cast a gradient Tensor to its input's dtype with ndarray.astype
    # (AttributeError) whenever create_graph met two float dtypes.
    def f(x):
        return (x.float() * x.float()).double() * x
    ours, theirs = _ours(f, X0, 3), _torch(f, X0, 3)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-5)  # float32 products in between


def test_hvp_through_casts_matches_torch():
    def f(w):
        return ((Tensor(X0).float() @ w.float()).double() ** 2).sum()

    def tf(w):
        return ((torch.tensor(X0).float() @ w.float()).double() ** 2).sum()
    v = np.array([[0.3, -0.2, 0.1], [1.0, 0.5, -0.5], [0.25, 0.75, -1.0]])
    w0 = W1[:3]
    _, ours = tg.hvp(f, Tensor(w0), Tensor(v))
    _, theirs = torch.autograd.functional.hvp(tf, torch.tensor(w0), torch.tensor(v))
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-5)


def test_batch_norm_third_derivative_against_finite_differences():
    # Ours agrees with torch's own composite formula and with central differences of the
    # second derivative; torch 2.13's fused F.batch_norm does not at third order (its
    # hand-written double backward is not differentiated correctly), so that is no oracle here.
    def ours_f(x):
        return F.batch_norm(x, None, None, training=True) * x

    def composite(x):
        centered = x - x.mean(0)
        return centered / ((centered ** 2).mean(0) + 1e-5).sqrt() * x
    third = _ours(ours_f, X0, 3)[2]
    np.testing.assert_allclose(third, _torch(composite, X0, 3)[2], rtol=1e-9, atol=1e-9)

    def second_contracted(x0):
        return float(np.sum(_torch(composite, x0, 2)[1] * W2))
    eps, numeric = 1e-5, np.zeros_like(X0)
    for i in np.ndindex(X0.shape):
        hi, lo = X0.copy(), X0.copy()
        hi[i] += eps
        lo[i] -= eps
        numeric[i] = (second_contracted(hi) - second_contracted(lo)) / (2 * eps)
    np.testing.assert_allclose(third, numeric, rtol=1e-6, atol=1e-6)


# ---- in-place x promotion ----

@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.float64])
def test_sub_of_a_bool_in_place_is_refused_as_out_of_place(dtype):
    # x - True is refused (as torch), but x -= True and x.sub_(mask) went through.
    x = np.array([1, 0, 3]).astype(dtype)
    with pytest.raises(RuntimeError):
        torch.tensor(x).sub_(True)
    for other in (True, Tensor(np.array([True, False, True]))):
        t = Tensor(x.copy())
        with pytest.raises(TypeError, match="bool"):
            t -= other
        np.testing.assert_array_equal(t.data, x)  # nothing was written
    assert ((Tensor(x) + True).data == torch.tensor(x).add(True).numpy()).all()  # add is fine


@pytest.mark.parametrize("kind", ["tensor", "ndarray"])
def test_an_index_changed_in_place_after_indexing_does_not_move_the_gradient(kind):
    # x[idx] kept idx's array for its derivative; idx += 1 then sent the gradient to other
    # positions, silently. torch refuses (idx is saved); ours differentiates what was computed:
    # the gradient of x[[0, 1]] * [1, 10] whatever idx holds now.
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    idx = Tensor(np.array([0, 1])) if kind == "tensor" else np.array([0, 1])
    y = x[idx] * Tensor(np.array([1.0, 10.0]))
    idx += 1
    y.sum().backward()
    tx = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    (tx[torch.tensor([0, 1])] * torch.tensor([1.0, 10.0], dtype=torch.float64)).sum().backward()
    np.testing.assert_array_equal(x.grad.data, tx.grad.numpy())


@pytest.mark.parametrize("dtype,index,value", [
    (np.float64, 1, 7.5), (np.int64, 0, 2.7), (np.float32, slice(0, 2), [9.0, 8.0]),
    (np.float64, np.array([0, 2]), -1.0), (np.float64, np.array([True, False, True]), 0.25),
    (bool, 1, 5)])
def test_item_assignment_as_torch(dtype, index, value):
    # x[i] = v, the commonest in-place write of PyTorch code, was a bare Python TypeError
    x = np.array([1, 0, 3]).astype(dtype)
    ours, theirs = Tensor(x.copy()), torch.tensor(x.copy())
    ours[Tensor(index) if isinstance(index, np.ndarray) else index] = \
        Tensor(np.array(value)) if isinstance(value, list) else value
    theirs[torch.tensor(index) if isinstance(index, np.ndarray) else index] = \
        torch.tensor(value) if isinstance(value, list) else value
    assert ours.dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(ours.data, theirs.numpy())


def test_item_assignment_while_recording_is_refused_and_counted_as_a_write():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w[0] = 1.0
    c = Tensor(np.array([3.0, 4.0]))
    y = (c * w).sum()  # saves c for w's gradient
    c[0] = 0.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


# ---- in-place x jit ----

def _ema_run(use_jit, update, steps=6, replace_at=None):
    np.random.seed(0)
    model = nn.Linear(4, 3, dtype=np.float64)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ema = [p.detach().clone() for p in model.parameters()]

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        with no_grad():
            for e, p in zip(ema, model.parameters()):
                update(e, p)
        return loss
    f = jit(step) if use_jit else step
    rng = np.random.default_rng(0)
    losses = []
    for s in range(steps):
        if s == replace_at:  # changed outside the step: a replay must read the new values
            with no_grad():
                ema[0].copy_(Tensor(np.full((3, 4), 0.5)))
            ema[1].data = np.zeros(3)
        losses.append(f(Tensor(rng.standard_normal((8, 4))), Tensor(rng.integers(0, 3, 8))).data)
    if use_jit:
        assert f.replays >= 2  # replayed after the change too (else nothing was tested)
    return [e.data.copy() for e in ema] + [p.data.copy() for p in model.parameters()] + losses


@pytest.mark.parametrize("update", [
    lambda e, p: e.mul_(0.9).add_(p, alpha=0.1),
    lambda e, p: e.__imul__(0.5).__iadd__(p),
    lambda e, p: e.copy_(p),
], ids=["mul_add_alpha", "imul_iadd", "copy_"])
def test_jit_replays_in_place_updates_of_tensors_kept_beside_the_model(update):
    # An average of weights kept in Tensors and updated with in-place ops (not numpy) is
    # ordinary code; the tape did not know whose array the in-place op wrote and refused it as
    # "an array made outside the step".
    eager = _ema_run(False, update, replace_at=4)
    replayed = _ema_run(True, update, replace_at=4)
    for a, b in zip(eager, replayed):
        np.testing.assert_array_equal(a, b)


# ---- in-place x the graph: ported micrograd, and edges kept as torch keeps them ----

def _micrograd_more_ops(make):
    # micrograd's test_more_ops, with tensors for its Values (its += rebinds, ours writes)
    a, b = make(-4.0), make(2.0)
    c = a + b
    d = a * b + b ** 3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e ** 2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    return [float(v.item()) for v in (g, a.grad, b.grad)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_micrograd_more_ops_with_in_place_adds(dtype):
    # d * 2 read d; the recorded d += ... then gave d a new node, and backward refused ("input
    # 1 of 'mul' was changed"), where torch keeps the edge to the old d and differentiates.
    ours = _micrograd_more_ops(lambda v: Tensor(np.array(v, dtype), requires_grad=True))
    theirs = _micrograd_more_ops(lambda v: torch.tensor(v, dtype=torch.float32 if dtype ==
                                                        np.float32 else torch.float64,
                                                        requires_grad=True))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6 if dtype == np.float32 else 1e-12)


def _routing(lib_tensor, which):
    x = lib_tensor([1.0, 2.0], True)
    if which == "read_then_added":  # h * 3 needs only the 3: the edge to old h must stay
        h = x * 2
        y = h * 3
        h += x
        out = y + h
    elif which == "constant_becomes_a_node":
        c = lib_tensor([3.0, 4.0], False)
        y = c * 2 * x.sum()
        c += x
        out = y.sum() + (c * c).sum()
    else:  # rebound twice, read in between
        h = x + 0
        a = h + 1
        h += 5
        b = h * 1
        h += x
        out = a * 2 + b + h
    out.sum().backward()
    return x.grad


@pytest.mark.parametrize("which", ["read_then_added", "constant_becomes_a_node", "twice"])
def test_nodes_read_before_a_recorded_in_place_op_keep_their_edge(which):
    ours = _routing(lambda a, rg: Tensor(np.array(a), requires_grad=rg), which)
    theirs = _routing(lambda a, rg: torch.tensor(np.array(a), requires_grad=rg), which)
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-12)


def test_retain_grad_follows_a_tensor_through_a_recorded_in_place_op():
    # torch keeps .grad for the tensor's new value; ours kept the old node's gradient
    def run(make):
        x = make([1.0, 2.0], True)
        h = x * 2
        h.retain_grad()
        a = h * 3
        h += x
        (a + h * h).sum().backward()
        return h.grad, x.grad
    ours = run(lambda a, rg: Tensor(np.array(a), requires_grad=rg))
    theirs = run(lambda a, rg: torch.tensor(np.array(a), requires_grad=rg))
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.data, t.numpy(), rtol=1e-12)


def test_a_saved_value_overwritten_by_a_recorded_in_place_op_still_raises():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    c = Tensor(np.array([3.0, 4.0]))
    y = c * x  # saves c for x's gradient
    c += x
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (y.sum() + c.sum()).backward()


# ---- CLI ----

@pytest.mark.parametrize("command", ["gradcheck", "graph", "claims"])
def test_cli_refuses_a_negative_seed_in_one_line(command):
    # numpy refused it deep inside with a traceback and exit code 1
    run = subprocess.run([sys.executable, "-m", "tinygrad_bn", command, "--seed", "-1"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "--seed" in run.stderr and ">= 0" in run.stderr
