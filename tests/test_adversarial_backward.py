"""An adversarial review of the backward pass (heap order, lazy in-place gradient sums, per-pass
rule tables, version entries that leave with their array), against PyTorch float64.

Each scenario runs the same user code on tinygrad_bn and on torch and compares every gradient:
graphs where one gradient array reaches several vertices (where an in-place sum would corrupt
another gradient), retained and returned gradients of intermediates, second order, threads, and
random graphs with shared nodes. The xfail test is a wrong number found and not fixed here.
"""
import threading

import numpy as np
import pytest
from conftest import torch_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_bn
from tinygrad_bn import Tensor, jit, no_grad, optim

torch = torch_or_skip()

A = np.array([[0.5, -1.25, 2.0], [1.5, 0.25, -0.75], [-0.5, 1.0, 0.25]])
B = np.array([[1.5, 2.0, -0.5], [0.75, -1.0, 3.0], [0.25, 0.5, -2.0]])
UP = np.array([[1.0, -2.0, 0.5], [3.0, 1.5, -1.0], [-0.5, 2.0, 0.25]])


def _pair(a):
    a = np.array(a, dtype=np.float64)
    return Tensor(a.copy(), requires_grad=True), torch.tensor(a, requires_grad=True)


def _close(ours, theirs, what=""):
    if theirs is None:
        assert ours is None, what
        return
    assert ours is not None, f"{what}: None, torch has a gradient"
    np.testing.assert_allclose(np.asarray(getattr(ours, "data", ours)), theirs.detach().numpy(),
                               rtol=1e-12, atol=1e-14, err_msg=what)


# ---- one gradient array reaching several vertices (GradientSums' in-place sums) ----

SHARED_GRADIENTS = {
    "x + x": lambda x, w: x + x,
    "x + x.T": lambda x, w: x + x.T,
    "(x + x) + x": lambda x, w: (x + x) + x,
    "adds into one leaf": lambda x, w: ((x + w) + (x + x)) + (w + x),
    "a + a, a = x * w": lambda x, w: (lambda a: (a + a) * a)(x * w),
    "reshape round trip": lambda x, w: x.reshape(9).reshape(3, 3) + x,
    "broadcast row": lambda x, w: x.sum(0) + x + w[0],
    "rows": lambda x, w: x[0] + x[1] + x,
    "x - x": lambda x, w: (x - x) + x * w,
    "negations": lambda x, w: -x + -x + x,
    "transposes": lambda x, w: (x + w.T).T + (x * w).T,
    "0-d sums": lambda x, w: (x.sum() + x.sum()) * (w.sum() + x.sum()) + x,
}


@pytest.mark.parametrize("name", list(SHARED_GRADIENTS))
def test_one_gradient_reaching_several_vertices_as_torch(name):
    f = SHARED_GRADIENTS[name]
    (x, tx), (w, tw) = _pair(A), _pair(B)
    f(x, w).backward(UP.copy())
    f(tx, tw).backward(torch.tensor(UP))
    _close(x.grad, tx.grad, "x")
    _close(w.grad, tw.grad, "w")


def test_retained_gradients_summed_into_and_handed_on_stay_apart():
    # u's gradient is handed on unchanged to x and w (add), which each get another share after;
    # v and u are retained: an in-place sum into the handed-on array would change u.grad.
    def run(x, w):
        u = x + w
        u.retain_grad()
        v = u + u
        v.retain_grad()
        loss = (v * 3).sum() + (u * v).sum() + (x * 2).sum() + w.sum()
        loss.backward(retain_graph=True)
        loss.backward()
        return u, v
    (x, tx), (w, tw) = _pair(A), _pair(B)
    for ours, theirs, what in zip(run(x, w) + (x, w), run(tx, tw) + (tx, tw), "uvxw"):
        _close(ours.grad, theirs.grad, what)


def test_grad_of_intermediates_and_leaves_together():
    def run(x, w, grad):
        u = x + w
        v = u * u
        return grad([(v + u).sum(), u.sum()], [u, x, v, w, u])
    (x, tx), (w, tw) = _pair(A), _pair(B)
    for i, (ours, theirs) in enumerate(zip(run(x, w, tinygrad_bn.grad),
                                           run(tx, tw, torch.autograd.grad))):
        _close(ours, theirs, f"input {i}")


def test_second_order_through_shared_gradients():
    def run(x, w, grad):
        y = ((x + x) * w + x).sum()
        gx, gw = grad(y, [x, w], create_graph=True)
        return grad((gx * gx * x).sum() + (gw * x).sum(), [x, w])
    (x, tx), (w, tw) = _pair(A), _pair(B)
    for ours, theirs in zip(run(x, w, tinygrad_bn.grad), run(tx, tw, torch.autograd.grad)):
        _close(ours, theirs)


def test_ten_thousand_deep_chain_as_torch():
    (x, tx) = _pair([0.5, -0.25])
    h, th = x, tx
    for _ in range(10_000):
        h = h * 0.9999 + x * 1e-4
        th = th * 0.9999 + tx * 1e-4
    h.sum().backward()
    th.sum().backward()
    _close(x.grad, tx.grad)


def test_jit_step_with_shared_gradients_equals_eager():
    def make(w, v):
        opt = optim.SGD([w, v], lr=0.01)

        def step(x):
            opt.zero_grad()
            h = x @ (w + w.T) + v
            loss = ((h + h) * h).sum() + (h.sum(0) + v).sum()
            loss.backward()
            opt.step()
            return loss
        return step
    runs = []
    for wrap in (lambda f: f, jit):
        w, v = Tensor(B.copy(), requires_grad=True), Tensor(A[0].copy(), requires_grad=True)
        step = wrap(make(w, v))
        rng = np.random.default_rng(0)
        runs.append([(step(Tensor(rng.standard_normal((4, 3)))).data.copy(), w.grad.data.copy(),
                      v.grad.data.copy()) for _ in range(4)])
    for eager, replayed in zip(*runs):
        for a, b in zip(eager, replayed):
            assert np.array_equal(a, b)


# ---- found by this review ----

def test_threads_backpropagating_into_one_leaf_add_every_share():
    # Found: two threads read the same .grad, each added its share and wrote back, so one
    # share was lost (about 20 of 40 arrived); PyTorch accumulates every share.
    x = Tensor(np.ones(300_000), requires_grad=True)

    def work():
        for _ in range(10):
            (x * 2.0).sum().backward()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(x.grad.data, np.full(300_000, 80.0))


def test_grad_runs_only_the_part_that_leads_to_its_inputs():
    # Found: grad() ran every node of the graph, so a node that leads to no input but saved an
    # array changed in place since raised, where PyTorch returns the gradient.
    def run(x, grad):
        p = x + x
        q = x.exp()
        q += x * 0.5  # exp's saved output is overwritten: only its own gradient needs it
        loss = (q * 3).sum() + (p * p).sum()
        return grad(loss, [p, q])
    (x, tx) = _pair(A)
    for ours, theirs in zip(run(x, tinygrad_bn.grad), run(tx, torch.autograd.grad)):
        _close(ours, theirs)


@pytest.mark.parametrize("write_between", [False, True])
def test_grad_still_refuses_a_freed_graph_on_the_way_to_an_input(write_between):
    # With a write since the graph was made, grad() asks each node that saved arrays whether
    # it leads to an input; a freed node on the way must not read as "leads nowhere".
    x = Tensor(A.copy(), requires_grad=True)
    u = x.exp()
    u.sum().backward()  # frees exp's node
    loss = (u * 3.0).sum()
    if write_between:
        other = Tensor(B.copy())
        with no_grad():
            other += 1.0
    with pytest.raises(RuntimeError, match="already freed"):
        tinygrad_bn.grad(loss, [x])


def test_in_place_op_on_an_element_of_a_vector():
    # x[i] is a 0-d view of x, as torch's: written in place under no_grad, it writes x
    def run(x):
        a = x * 1.0
        e = a[0]
        with (no_grad() if isinstance(x, Tensor) else torch.no_grad()):
            e += 5.0
        (a * a).sum().backward()
        return x.grad
    (x, tx) = _pair(A[0])
    _close(run(x), run(tx))


# ---- random graphs with shared nodes, retained gradients and in-place ops ----

UNARY = {"tanh": lambda v: v.tanh(), "sigmoid": lambda v: v.sigmoid(), "neg": lambda v: -v,
         "relu": lambda v: v.relu(), "square": lambda v: v ** 2, "exp": lambda v: (v * 0.3).exp(),
         "sum0": lambda v: v.sum(0, keepdims=True) if v.ndim else v, "mean": lambda v: v.mean(),
         "row": lambda v: v[0] if v.ndim else v, "T": lambda v: v.T if v.ndim == 2 else v}
BINARY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
          "/": lambda a, b: a / (b * b + 1)}
VIEWS = ("row", "T")  # in-place on these or on what they view: xfails here and in
# test_inplace.py (a view taken before its base is written in place keeps its old graph)


def _graph(data):
    """A random program: leaves, then steps that each read earlier values (shared nodes)."""
    shape = data.draw(st.sampled_from([(3, 3), (3,), (), (1, 3)]), label="shape")
    n_leaves = data.draw(st.integers(1, 3), label="leaves")
    steps, viewed, n = [], set(), n_leaves
    for _ in range(data.draw(st.integers(1, 8), label="steps")):
        i = data.draw(st.integers(0, n - 1))
        if data.draw(st.booleans()):
            name = data.draw(st.sampled_from(sorted(UNARY)))
            steps.append(("unary", name, i))
            if name in VIEWS:
                viewed |= {i, n}
        else:
            j = data.draw(st.sampled_from([i, data.draw(st.integers(0, n - 1))]))
            steps.append(("binary", data.draw(st.sampled_from(sorted(BINARY))), i, j))
        n += 1
        if data.draw(st.booleans()):
            steps.append(("retain", n - 1))
        if n - 1 not in viewed and data.draw(st.integers(0, 9)) == 0:
            steps.append(("add_", n - 1, data.draw(st.integers(0, n - 1))))
    outputs = sorted(set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3))))
    return shape, n_leaves, steps, outputs


def _run(lib, leaves, steps, outputs, mode):
    ours = lib == "ours"
    pool = [Tensor(a.copy(), requires_grad=True) if ours else
            torch.tensor(a, requires_grad=True) for a in leaves]
    n_leaves, retained = len(pool), []
    for step in steps:
        if step[0] == "unary":
            pool.append(UNARY[step[1]](pool[step[2]]))
        elif step[0] == "binary":
            pool.append(BINARY[step[1]](pool[step[2]], pool[step[3]]))
        elif step[0] == "retain" and not pool[step[1]].is_leaf:
            pool[step[1]].retain_grad()
            retained.append(pool[step[1]])
        elif step[0] == "add_" and not pool[step[1]].is_leaf:
            t, o = pool[step[1]], pool[step[2]]
            if np.broadcast_shapes(tuple(o.shape), tuple(t.shape)) == tuple(t.shape):
                t += o * 0.5
    loss = sum((pool[k] * pool[k]).sum() for k in outputs)
    if not loss.requires_grad:
        return None
    if mode == "grad":  # every value that needs a gradient, leaves and intermediates
        inputs = [t for t in pool if t.requires_grad]
        grad = tinygrad_bn.grad if ours else torch.autograd.grad
        return list(grad(loss, inputs, allow_unused=True))
    loss.backward(retain_graph=True)
    loss.backward()  # twice: accumulation into .grad, retained gradients too
    return [t.grad for t in pool[:n_leaves] + retained]


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(["backward", "grad"]))
def test_random_graphs_with_shared_nodes_match_torch(data, mode):
    shape, n_leaves, steps, outputs = _graph(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    leaves = [rng.standard_normal(shape) for _ in range(n_leaves)]
    try:
        theirs = _run("torch", leaves, steps, outputs, mode)
    except RuntimeError:  # torch refuses (a saved value changed in place): so must we
        with pytest.raises(RuntimeError):
            _run("ours", leaves, steps, outputs, mode)
        return
    ours = _run("ours", leaves, steps, outputs, mode)
    if theirs is None:
        assert ours is None
        return
    for i, (a, b) in enumerate(zip(ours, theirs)):
        _close(a, b, f"{steps} -> {outputs}: gradient {i}")


def test_in_place_op_on_an_element_while_recording_is_refused():
    # torch writes x through the 0-d view and re-bases the graph; we refuse with the fix
    a = Tensor(A[0], requires_grad=True) * 1.0
    e = a[0]
    with pytest.raises(RuntimeError, match="clone"):
        e += 5.0
