"""In-place operations and version counters against PyTorch float64.

Each scenario is written once against a small adapter (``Lib``) and run on tinygrad_bn and on
torch: both must give the same values and gradients, or both must raise RuntimeError (ours naming
the op). Where torch computes something we refuse (in-place on views), ours must raise rather than
give another number.
"""
import numpy as np
import pytest
from conftest import torch_or_skip

from tinygrad_bn import Tensor, autograd, jit, nn, no_grad, optim
from tinygrad_bn.nn import functional as F

torch = torch_or_skip()

A = np.array([[0.5, -1.25, 2.0], [1.5, 0.25, -0.75]])
B = np.array([[1.5, 2.0, -0.5], [0.75, -1.0, 3.0]])
ROW = np.array([0.25, -2.0, 1.25])
UP = np.array([[1.0, -2.0, 0.5], [3.0, 1.5, -1.0]])  # an upstream gradient that is not ones


class Lib:
    """The few calls a scenario needs, on tinygrad_bn ("ours") or torch."""

    def __init__(self, name):
        self.name = name
        self.ours = name == "ours"

    def tensor(self, a, requires_grad=False):
        if self.ours:
            return Tensor(np.array(a, dtype=np.float64), requires_grad=requires_grad)
        return torch.tensor(np.array(a, dtype=np.float64), requires_grad=requires_grad)

    def no_grad(self):
        return no_grad() if self.ours else torch.no_grad()

    def backward(self, t, g=None, **kw):
        if g is None:
            return t.backward(**kw)
        return t.backward(g if self.ours else torch.tensor(g), **kw)

    def sgd(self, params, **kw):
        return (optim.SGD if self.ours else torch.optim.SGD)(params, **kw)

    def adam(self, params, **kw):
        return (optim.Adam if self.ours else torch.optim.Adam)(params, **kw)


def value(t):
    """A tensor's values (or gradient) as a float64 array; None stays None."""
    if t is None:
        return None
    if isinstance(t, Tensor):
        return np.array(t.data)
    return t.detach().numpy().copy()


def grad(t):
    return value(t.grad)


def run(scenario, lib):
    try:
        return "ok", scenario(lib)
    except RuntimeError as e:
        return "raises", str(e)


def assert_same_as_torch(scenario, names=()):
    """Both give the same results (nested tuples of arrays), or both raise RuntimeError; our
    message then names one of ``names`` (the op whose saved array changed)."""
    ours, theirs = run(scenario, Lib("ours")), run(scenario, Lib("torch"))
    assert ours[0] == theirs[0], f"ours {ours}, torch {theirs}"
    if ours[0] == "raises":
        assert not names or any(f"'{n}'" in ours[1] or n in ours[1] for n in names), ours[1]
        return ours[1]
    _assert_equal(ours[1], theirs[1])
    return ours[1]


def _assert_equal(a, b, where="result"):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif a is None or b is None:
        assert a is None and b is None, f"{where}: ours {a}, torch {b}"
    else:
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15, err_msg=where)


def assert_ours_raises_or_equals(scenario):
    """Where torch tracks views we may refuse instead; we must never give another number."""
    ours, theirs = run(scenario, Lib("ours")), run(scenario, Lib("torch"))
    if ours[0] == "ok":
        assert theirs[0] == "ok", f"ours {ours}, torch {theirs}"
        _assert_equal(ours[1], theirs[1])
    return ours


# ---- the operators and methods, on whatever ``other`` is ----

def _other(lib, kind):
    return {"tensor": lambda: lib.tensor(B), "row": lambda: lib.tensor(ROW),
            "scalar": lambda: 1.75, "int": lambda: 3, "numpy scalar": lambda: np.float64(0.5),
            "ndarray": lambda: B.copy() if lib.ours else torch.tensor(B),
            "grad": lambda: lib.tensor(B, requires_grad=True)}[kind]()


def _apply(t, method, other):
    if method == "+=":
        t += other
    elif method == "-=":
        t -= other
    elif method == "*=":
        t *= other
    elif method == "/=":
        t /= other
    elif method in ("add_", "sub_"):
        getattr(t, method)(other, alpha=0.5)
    elif method == "add_1":
        t.add_(other)
    elif method in ("zero_",):
        t.zero_()
    elif method == "fill_":
        t.fill_(other if not hasattr(other, "shape") or not other.shape else 2.5)
    else:
        getattr(t, method)(other)
    return t


METHODS = ["+=", "-=", "*=", "/=", "add_", "add_1", "sub_", "mul_", "div_", "zero_", "fill_",
           "copy_"]
OTHERS = ["tensor", "row", "scalar", "int", "numpy scalar"]


def _pairs(kinds):
    # torch's copy_ takes a tensor only
    return [(m, k) for m in METHODS for k in kinds
            if not (m == "copy_" and k in ("scalar", "int", "numpy scalar"))]


@pytest.mark.parametrize("method,kind", _pairs(OTHERS))
def test_in_place_under_no_grad_on_a_leaf(method, kind):
    def scenario(lib):
        x = lib.tensor(A, requires_grad=True)
        with lib.no_grad():
            out = _apply(x, method, _other(lib, kind))
        assert out is x and x.requires_grad and x.grad is None
        return value(x)
    assert_same_as_torch(scenario)


@pytest.mark.parametrize("method", METHODS)
def test_in_place_on_a_leaf_that_requires_grad_raises(method):
    def scenario(lib):
        x = lib.tensor(A, requires_grad=True)
        _apply(x, method, _other(lib, "tensor"))
        return value(x)
    message = assert_same_as_torch(scenario)
    assert "no_grad" in message and "clone" in message  # says what to do
    # ... and leaves the values alone
    x = Tensor(A.copy(), requires_grad=True)
    with pytest.raises(RuntimeError):
        x.mul_(2.0)
    np.testing.assert_array_equal(x.data, A)


def test_manual_sgd_under_no_grad_changes_the_parameter():
    def scenario(lib):
        x, w = lib.tensor(A), lib.tensor(B.T, requires_grad=True)
        out = []
        for _ in range(3):
            w.grad = None
            loss = ((x @ w) ** 2).sum()
            lib.backward(loss)
            with lib.no_grad():
                w -= 0.05 * w.grad
            out.append((value(loss), value(w), grad(w)))
        assert w.requires_grad and w.grad is not None
        return out
    assert_same_as_torch(scenario)


@pytest.mark.parametrize("method,kind", _pairs(OTHERS + ["grad", "ndarray"]))
def test_in_place_on_a_non_leaf_is_recorded(method, kind):
    # the new values and the gradients to every input (x, and other if it requires grad)
    def scenario(lib):
        x = lib.tensor(A, requires_grad=True)
        other = _other(lib, kind)
        y = x * x  # a non-leaf whose rule saved x, not y
        _apply(y, method, other)
        # a second path from x, so that x gets a gradient also when y forgot it (zero_)
        loss = (y * lib.tensor(UP)).sum() + (x * 0.5).sum()
        lib.backward(loss)
        g_other = grad(other) if kind == "grad" else None
        return value(y), grad(x), g_other
    assert_same_as_torch(scenario)


def test_mul_by_a_tensor_that_requires_grad_then_more_in_place():
    def scenario(lib):
        x, w = lib.tensor(A, requires_grad=True), lib.tensor(ROW, requires_grad=True)
        y = x.exp()
        y = y * 1  # a copy: exp's saved output is not written
        y.mul_(w)
        y.div_(w + 3)
        y += x
        y.sub_(w, alpha=2)
        lib.backward(y, UP)
        return value(y), grad(x), grad(w)
    assert_same_as_torch(scenario)


# ---- version counters: an in-place change between forward and backward ----

def _exp_then_add(lib):
    x = lib.tensor(A, requires_grad=True)
    y = x.exp()
    y.add_(1)  # exp's derivative reads its output, overwritten here
    lib.backward(y.sum())
    return grad(x)


def _saved_by_mul_then_add(lib):
    x = lib.tensor(A, requires_grad=True)
    y = x + 0  # add saves nothing
    z = y * y  # mul saves y
    y.add_(1)
    lib.backward(z, UP)
    return grad(x)


def _saved_by_mul_then_add_under_no_grad(lib):
    x = lib.tensor(A, requires_grad=True)
    y = x + 0
    z = y * y
    with lib.no_grad():
        y.add_(1)
    lib.backward(z, UP)
    return grad(x)


def _leaf_saved_then_changed(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True)
    z = x * w
    with lib.no_grad():
        w.mul_(2)
    lib.backward(z.sum())
    return grad(x)


def _detached_then_zeroed(lib):
    x = lib.tensor(A, requires_grad=True)
    y = x.sigmoid()
    d = y.detach()
    d.zero_()  # the same memory as y
    lib.backward(y.sum())
    return grad(x)


def _relu_output_changed(lib):
    x = lib.tensor(A, requires_grad=True)
    y = x.relu()
    with lib.no_grad():
        y *= 3
    lib.backward(y.sum())
    return grad(x)


def _retain_graph_then_update(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True)
    loss = (x * w).sum()
    lib.backward(loss, retain_graph=True)
    with lib.no_grad():
        w -= 0.1 * w.grad
    lib.backward(loss)
    return grad(w)


def _optimizer_step_between(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B.T, requires_grad=True)
    opt = lib.sgd([w], lr=0.1, momentum=0.9)
    lib.backward((x @ w).sum())  # a gradient, so that step() changes w
    loss = ((x @ w) ** 2).sum()
    opt.step()
    lib.backward(loss)
    return grad(w)


def _adam_step_between(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B.T, requires_grad=True)
    opt = lib.adam([w], lr=0.01)
    lib.backward((x @ w).tanh().sum())
    loss = (x @ w).tanh().sum()
    opt.step()
    lib.backward(loss)
    return grad(w)


def _times_itself_in_place(lib):
    x = lib.tensor(A, requires_grad=True)
    y = x.tanh()
    y = y * 2
    y.mul_(y)  # the second operand is y itself, saved, then written
    lib.backward(y, UP)
    return value(y), grad(x)


def _in_place_on_the_root(lib):
    x = lib.tensor(A, requires_grad=True)
    y = x.tanh()
    y = y * 2
    y.mul_(y * 1)  # mul_ reads the old y: it keeps its own copy
    y.div_(3)
    lib.backward(y, UP)
    return value(y), grad(x)


def _cloned_then_changed(lib):
    # the reason to clone: the copy keeps the old values and its own gradient path
    x = lib.tensor(A, requires_grad=True)
    y = x.sigmoid() * 1
    c = y.clone()
    y.mul_(3)
    y.add_(c)
    lib.backward((c * c).sum() + (y * lib.tensor(UP)).sum())
    return value(c), value(y), grad(x)


def _constant_times_a_parameter_updated(lib):
    # x * w with a constant x: only w's rule runs, and it reads x, not w (torch saves only x)
    x, w = lib.tensor(A), lib.tensor(B, requires_grad=True)
    loss = (x * w).sum() + (w / lib.tensor(B)).sum()
    with lib.no_grad():
        w.mul_(3)
    lib.backward(loss)
    return grad(w)


@pytest.mark.parametrize("scenario,names", [
    (_exp_then_add, ("exp",)),
    (_saved_by_mul_then_add, ("mul",)),
    (_saved_by_mul_then_add_under_no_grad, ("mul",)),
    (_leaf_saved_then_changed, ("mul",)),
    (_detached_then_zeroed, ("sigmoid",)),
    (_relu_output_changed, ("relu",)),
    (_retain_graph_then_update, ("mul",)),
    (_times_itself_in_place, ("mul",)),
    (_optimizer_step_between, ("matmul",)),
    (_adam_step_between, ("matmul",)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_an_in_place_change_before_backward_raises_naming_the_op(scenario, names):
    message = assert_same_as_torch(scenario, names)
    assert isinstance(message, str), "torch and we both must refuse"
    assert "in-place" in message and "clone" in message


def _no_saved_value_changed(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True)
    y = x * w  # saves x and w, not y
    y.add_(1)
    s = x + 1  # add saves nothing
    s.mul_(w)
    t = x.sum(axis=0) if lib.ours else x.sum(dim=0)
    t.add_(2)  # sum saves nothing
    lib.backward((y * s).sum() + (t * t).sum())
    return value(y), value(s), grad(x), grad(w)


def _retain_graph_update_of_an_unsaved_leaf(lib):
    x, w = lib.tensor(A), lib.tensor(B, requires_grad=True)
    loss = (x + w).sum()  # add saves nothing
    lib.backward(loss, retain_graph=True)
    with lib.no_grad():
        w -= 0.1 * w.grad
    lib.backward(loss)
    return grad(w)


def _update_after_backward(lib):
    x, w = lib.tensor(A), lib.tensor(B.T, requires_grad=True)
    opt = lib.sgd([w], lr=0.1, momentum=0.9)
    out = []
    for _ in range(3):
        opt.zero_grad()
        loss = ((x @ w).sigmoid() ** 2).sum()
        lib.backward(loss)
        opt.step()
        out.append((value(loss), value(w)))
    return out


@pytest.mark.parametrize("scenario", [_no_saved_value_changed,
                                      _retain_graph_update_of_an_unsaved_leaf,
                                      _constant_times_a_parameter_updated,
                                      _cloned_then_changed,
                                      _update_after_backward],
                         ids=lambda f: f.__name__)
def test_no_error_where_torch_has_none(scenario):
    result = assert_same_as_torch(scenario)
    assert not isinstance(result, str), result


def test_a_tensor_read_before_a_recorded_in_place_op_keeps_its_edge_as_in_torch():
    # y * 1 read y (to give the gradient of its other input) and saved only the tensor y; the
    # recorded y.mul_ gives y a new node. As torch, the node keeps its edge to what y was then
    # (dispatch.vertex_at): it sends no gradient to the new node (which would halve it).
    status, result = assert_ours_raises_or_equals(_in_place_on_the_root)
    assert status == "ok", result


def test_running_statistics_update_between_forward_and_backward():
    # Training mode: the running statistics are not read by backward; a second forward that
    # updates them does not change the first graph's gradient (torch agrees).
    def scenario(lib):
        torch.manual_seed(0)
        bn = nn.BatchNorm1d(3).double() if lib.ours else torch.nn.BatchNorm1d(3).double()
        x = lib.tensor(A[[0, 1, 0, 1]] * [[1], [2], [3], [-1]], requires_grad=True)
        y = bn(x)
        bn(lib.tensor(B))  # updates the running statistics in place
        lib.backward(y, np.tile(UP, (2, 1)))
        return grad(x), value(bn.running_mean), value(bn.running_var)
    assert_same_as_torch(scenario)


def test_eval_graph_keeps_the_running_variance_it_normalized_with():
    # eval mode, then a training forward updates running_var in place before backward. Our
    # graph saved √(running_var + ε) as computed, so the gradient is γ / √(old var + ε), the
    # derivative of what the forward did. (torch 2.13 differentiates with the updated
    # running_var here, without a version error, so it is not the oracle for this case.)
    bn = nn.BatchNorm1d(3).double()
    with no_grad():
        bn.running_var.data[:] = [4.0, 0.25, 1.0]
        bn.weight.data[:] = [2.0, -1.0, 0.5]
    bn.eval()
    x = Tensor(A.copy(), requires_grad=True)
    y = bn(x)
    bn.train()
    bn(Tensor(B * 10))
    y.backward(UP)
    want = UP * np.array([2.0, -1.0, 0.5]) / np.sqrt(np.array([4.0, 0.25, 1.0]) + 1e-5)
    np.testing.assert_allclose(x.grad.data, want, rtol=1e-14)


# ---- views: memory shared between tensors ----

def _view_under_no_grad(lib):
    x = lib.tensor(A, requires_grad=True)
    v = x[0]
    w = x.T
    with lib.no_grad():
        v.add_(1)  # x sees it
        w.mul_(2)  # so does v
        x[1].sub_(3)
    return value(x), value(v), value(w)


def _view_of_a_plain_tensor(lib):
    x = lib.tensor(A)
    v = x.reshape(6)
    v *= 2
    x[0].fill_(7.0)
    return value(x), value(v)


@pytest.mark.parametrize("scenario", [_view_under_no_grad, _view_of_a_plain_tensor],
                         ids=lambda f: f.__name__)
def test_views_share_memory_as_in_torch(scenario):
    assert_same_as_torch(scenario)


def _view_of_a_leaf_written(lib):
    x = lib.tensor(A, requires_grad=True)
    v = x[0]
    v.mul_(2)
    return value(x)


def _view_of_a_non_leaf_written_then_base_used(lib):
    x = lib.tensor(A, requires_grad=True)
    b = x * 1
    v = b[0]
    v.mul_(2)
    lib.backward(b, UP)
    return value(b), grad(x)


def _view_copied_into(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(ROW, requires_grad=True)
    b = x * 1
    b[1].copy_(w)
    lib.backward(b, UP)
    return grad(x), grad(w)


def _reshaped_view_added_to(lib):
    x = lib.tensor(A, requires_grad=True)
    b = x * 1
    v = b.reshape(6)
    v += x.reshape(6)
    lib.backward((b * b).sum())
    return grad(x)


def _transposed_view_of_plain_tensor_times_grad(lib):
    x, w = lib.tensor(A), lib.tensor(A.T, requires_grad=True)
    v = x.T
    v.mul_(w)  # x changes and now depends on w
    lib.backward((x * x).sum())
    return grad(w)


@pytest.mark.parametrize("scenario", [_view_of_a_leaf_written,
                                      _view_of_a_non_leaf_written_then_base_used,
                                      _view_copied_into, _reshaped_view_added_to,
                                      _transposed_view_of_plain_tensor_times_grad],
                         ids=lambda f: f.__name__)
def test_recorded_in_place_on_a_view_raises_or_equals_torch(scenario):
    assert_ours_raises_or_equals(scenario)


def _base_written_after_a_view_was_taken(lib):
    x = lib.tensor(A, requires_grad=True)
    b = x * 1
    v = b[0]
    b.mul_(2)  # v sees the new values; torch also gives v the new graph
    lib.backward(v.sum())
    return value(v), grad(x)


def _reshaped_before_its_base_was_added_to(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True)
    b = x * 1
    v = b.reshape(6)
    b += w
    lib.backward((v * v).sum())
    return grad(x), grad(w)


def _transposed_before_its_base_was_divided(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True)
    b = x.exp()
    t = b.T
    b.div_(w)
    lib.backward(t, UP.T)
    return value(t), grad(x), grad(w)


def _expanded_before_its_base_was_multiplied(lib):
    x = lib.tensor(ROW, requires_grad=True)
    b = x * 1
    e = b.expand(2, 3)
    b.mul_(2)
    lib.backward((e * e).sum())
    return grad(x)


def _view_of_a_gone_view_before_its_base_was_written(lib):
    x = lib.tensor(A, requires_grad=True)
    b = x * 1
    u = b[0].reshape(1, 3)  # the view b[0] in between is gone at once
    b.add_(x)
    lib.backward(u.sum())
    return grad(x)


def _view_of_a_plain_tensor_that_then_gets_a_graph(lib):
    x, w = lib.tensor(A), lib.tensor(B, requires_grad=True)
    v = x[0]
    x += w  # x now depends on w; torch makes v require grad through it
    lib.backward((v * 3).sum())
    return value(v), grad(w)


def _view_of_a_plain_tensor_used_with_another_parameter(lib):
    x, w, z = lib.tensor(A), lib.tensor(B, requires_grad=True), lib.tensor(ROW, requires_grad=True)
    v = x[1]
    x.mul_(w)
    lib.backward((v * z).sum())  # w's share of the gradient must not go missing
    return grad(z), grad(w)


def _base_copied_into_after_a_view_was_taken(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(ROW, requires_grad=True)
    b = x * 1
    v = b[:, 1:]
    b.copy_(w.expand(2, 3))
    lib.backward((v * v).sum())
    return grad(x), grad(w)


def _base_filled_with_a_number_after_a_view_was_taken(lib):
    x, z = lib.tensor(A, requires_grad=True), lib.tensor(ROW, requires_grad=True)
    b = x * 1
    v = b[0]
    b.fill_(2.5)
    lib.backward((v * z).sum())
    return value(v), grad(z)  # (x.grad: zeros in torch, None here, as without a view)


@pytest.mark.parametrize("scenario", [_base_written_after_a_view_was_taken,
                                      _reshaped_before_its_base_was_added_to,
                                      _transposed_before_its_base_was_divided,
                                      _expanded_before_its_base_was_multiplied,
                                      _view_of_a_gone_view_before_its_base_was_written,
                                      _view_of_a_plain_tensor_that_then_gets_a_graph,
                                      _view_of_a_plain_tensor_used_with_another_parameter,
                                      _base_copied_into_after_a_view_was_taken],
                         ids=lambda f: f.__name__)
def test_a_view_used_after_its_base_was_written_in_place_raises_saying_what_to_do(scenario):
    status, message = assert_ours_raises_or_equals(scenario)
    assert status == "raises", message  # torch moves the view onto the new graph; we refuse
    assert "in-place" in message and "clone()" in message and "after the in-place" in message


def test_the_refusal_names_the_view_the_op_and_the_shapes():
    _, message = run(_transposed_before_its_base_was_divided, Lib("ours"))
    assert "shape (3, 2) (transpose)" in message and "shape (2, 3)" in message
    assert "in-place div" in message


def test_a_view_of_a_tensor_filled_with_a_number_as_torch():
    assert_ours_raises_or_equals(_base_filled_with_a_number_after_a_view_was_taken)


def _view_used_before_its_base_was_written(lib):
    x = lib.tensor(A, requires_grad=True)
    b = x * 1
    v = b[0]
    y = (v * lib.tensor(ROW)).sum()  # v is used up before the write, and stays alive
    b.mul_(2)
    lib.backward(y)
    return value(v), grad(x)


def _view_saved_before_its_base_was_written(lib):
    x = lib.tensor(A, requires_grad=True)
    b = x * 1
    v = b.T
    y = (v * v).sum()  # saves v, whose values change
    b.mul_(2)
    lib.backward(y)
    return grad(x)


def _view_taken_after_its_base_was_written(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True)
    b = x * 1
    b.mul_(w)
    v = b.reshape(3, 2)[1:]
    lib.backward(v, UP.reshape(3, 2)[1:])
    return value(v), grad(x), grad(w)


def _view_read_without_a_gradient_after_its_base_was_written(lib):
    x, z = lib.tensor(A, requires_grad=True), lib.tensor(ROW, requires_grad=True)
    b = x * 1
    v = b[1]
    b.add_(x)
    lib.backward((v.detach() * z).sum() + b.sum())
    return value(v), grad(x), grad(z)


def _copy_of_a_view_before_its_base_was_written(lib):
    x = lib.tensor(A, requires_grad=True)
    b = x * 1
    c = b.T.reshape(6)  # not contiguous: a copy, not a view (in torch too)
    b.mul_(2)
    lib.backward((c * lib.tensor(np.arange(6.0))).sum())
    return value(c), grad(x)


def _view_of_a_detached_copy_before_the_original_was_written(lib):
    x, w, z = (lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True),
               lib.tensor(ROW, requires_grad=True))
    b = x * 1
    v = b.detach()[0]  # a view of the detached tensor: torch does not move it to b's graph
    b.mul_(w)
    lib.backward((v * z).sum() + b.sum())
    return value(v), grad(x), grad(w), grad(z)


def _view_of_a_parameter_across_optimizer_steps(lib):
    w = lib.tensor(A, requires_grad=True)
    opt = lib.sgd([w], lr=0.5)
    v = w.T  # made before the in-place steps (under no_grad), used after them
    for _ in range(2):
        opt.zero_grad()
        lib.backward((w * w * lib.tensor(UP)).sum())
        opt.step()
    opt.zero_grad()
    lib.backward((v * v * lib.tensor(UP.T)).sum())
    return value(w), value(v), grad(w)


def _view_made_under_no_grad_then_base_written(lib):
    x = lib.tensor(A, requires_grad=True)
    b = x * 1
    with lib.no_grad():
        v = b[0]
    b.mul_(2)
    lib.backward((v * x[0]).sum())  # torch refuses: the view was made in no_grad mode
    return grad(x)


@pytest.mark.parametrize("scenario", [_view_used_before_its_base_was_written,
                                      _view_saved_before_its_base_was_written,
                                      _view_taken_after_its_base_was_written,
                                      _view_read_without_a_gradient_after_its_base_was_written,
                                      _copy_of_a_view_before_its_base_was_written,
                                      _view_of_a_parameter_across_optimizer_steps,
                                      _view_made_under_no_grad_then_base_written],
                         ids=lambda f: f.__name__)
def test_views_and_in_place_ops_that_keep_working_as_torch(scenario):
    assert_same_as_torch(scenario, ("mul", "clone()"))


def _view_of_a_detached_copy_kept_as_a_constant(lib):
    x, w, z = (lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True),
               lib.tensor(ROW, requires_grad=True))
    b = x * 1
    v = b.detach()[0]
    b.mul_(w)
    lib.backward((v.detach() * z).sum() + b.sum())  # v as the constant it is in torch
    return value(v), grad(x), grad(w), grad(z)


def test_a_view_without_a_graph_is_refused_only_when_differentiated_through():
    # A view without a graph, of a tensor written by a recorded in-place op, may have been made
    # under no_grad (torch refuses it) or from a detach() of it (torch keeps it a constant);
    # nothing tells which, so differentiating through it is refused, and nothing else is.
    assert_same_as_torch(_view_of_a_detached_copy_kept_as_a_constant)
    status, message = assert_ours_raises_or_equals(
        _view_of_a_detached_copy_before_the_original_was_written)
    assert status == "raises" and "clone()" in message


def test_the_search_for_views_runs_only_when_something_else_holds_the_memory(monkeypatch):
    import gc

    from tinygrad_bn import tensor
    calls = []
    monkeypatch.setattr(tensor, "gc", type("GC", (), {"get_objects": staticmethod(
        lambda: calls.append(1) or gc.get_objects())}))
    x, w = Tensor(A.copy(), requires_grad=True), Tensor(B.copy(), requires_grad=True)
    for op in (lambda b: b.add_(w), lambda b: b.mul_(w), lambda b: b.copy_(w), lambda b: b.zero_()):
        b = x * 1
        op(b)
    acc = Tensor(np.zeros(3))
    for _ in range(3):  # the graph keeps a stand-in for acc's first value, sharing its array
        acc += w[0]
    assert calls == []  # no view: one reference count, no search
    b = x * 1
    v = b[0]
    b.div_(w)
    assert calls == [1]
    with pytest.raises(RuntimeError, match="clone"):
        v.sum().backward()


def test_broadcast_views_cannot_be_written():
    x = Tensor(ROW.copy())
    e = x.expand(2, 3)
    for op in (lambda t: t.add_(1.0), lambda t: t.zero_(), lambda t: t.copy_(Tensor(A))):
        with pytest.raises(RuntimeError, match="clone"):
            op(e)
    np.testing.assert_array_equal(x.data, ROW)
    xt = torch.tensor(ROW).expand(2, 3)
    with pytest.raises(RuntimeError):
        xt.add_(1.0)


def test_zero_dimensional_tensors_and_numpy_scalars():
    def scenario(lib):
        s = lib.tensor(np.array(1.5), requires_grad=True)
        t = s * 2
        t += np.float64(0.25)
        t *= s
        t.div_(lib.tensor(np.array(4.0)))
        lib.backward(t)
        with lib.no_grad():
            s -= 0.5 * s.grad
        return value(t), value(s)
    assert_same_as_torch(scenario)


# ---- dtypes ----

def test_in_place_keeps_the_dtype_of_the_tensor_written():
    x32 = Tensor(A.astype(np.float32))
    x32 += B  # a float64 array
    assert x32.dtype == np.float32
    t32 = torch.tensor(A.astype(np.float32))
    t32 += torch.tensor(B)
    assert x32.data.tobytes() == t32.numpy().tobytes()
    x64 = Tensor(A.copy())
    x64 *= B.astype(np.float32)
    assert x64.dtype == np.float64
    np.testing.assert_array_equal(x64.data, A * B.astype(np.float32).astype(np.float64))
    # recorded: the result is cast back, and the gradient flows in each input's dtype
    x = Tensor(A.astype(np.float32), requires_grad=True)
    y = x * 1
    w = Tensor(B.copy(), requires_grad=True)
    y.mul_(w)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float64


def test_float_into_a_mask_raises_as_torch():
    mask = Tensor(A) > 0
    before = mask.data.copy()
    for op in (lambda m: m.add_(1.5), lambda m: m.mul_(0.5), lambda m: m.fill_(0.5)):
        with pytest.raises(RuntimeError, match="bool"):
            op(mask)
    np.testing.assert_array_equal(mask.data, before)
    with pytest.raises(RuntimeError):
        (torch.tensor(A) > 0).add_(1.5)


# ---- gradients never alias, and backward(inputs=) leaves .grad alone ----

def test_create_graph_gradients_do_not_share_memory():
    x = Tensor(A.copy(), requires_grad=True)
    w = Tensor(B.copy(), requires_grad=True)
    c = Tensor(ROW.copy(), requires_grad=True)
    y = x + w - c + x.reshape(3, 2).T * 0 + (w.expand(2, 3) * 1)
    g = UP.copy()
    y.backward(g, create_graph=True)
    grads = [x.grad, w.grad, c.grad]
    before = [t.data.copy() for t in grads]
    for i, t in enumerate(grads):
        with no_grad():
            t.mul_(3.0)
        for j, other in enumerate(grads):
            np.testing.assert_array_equal(other.data, before[j] * (3.0 if j <= i else 1.0))
        np.testing.assert_array_equal(g, UP)
    # and they are differentiable: d/dx of sum(x.grad * x) is x.grad (no second order here)
    xg = Tensor(A.copy(), requires_grad=True)
    (xg * xg).sum().backward(create_graph=True)
    first = xg.grad
    xg.grad = None
    (first * first).sum().backward()
    np.testing.assert_allclose(xg.grad.data, 8 * A, rtol=1e-15)


def test_backward_with_inputs_returns_gradients_without_touching_grad():
    x = Tensor(A.copy(), requires_grad=True)
    w = Tensor(B.copy(), requires_grad=True)
    h = (x * w).tanh()
    loss = (h * h).sum()
    found = autograd.backward(loss, np.array(1.0), retain_graph=True, inputs={x, w, h._ctx})
    assert x.grad is None and w.grad is None and h.grad is None
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (A, B))
    th = (tx * tw).tanh()
    gx, gw, gh = torch.autograd.grad((th * th).sum(), (tx, tw, th))
    for ours, theirs in ((found[x], gx), (found[w], gw), (found[h._ctx], gh)):
        np.testing.assert_allclose(np.asarray(getattr(ours, "data", ours)), theirs.numpy(),
                                   rtol=1e-13)
    loss.backward()  # the graph was retained: .grad is filled now, with the same numbers
    np.testing.assert_allclose(x.grad.data, gx.numpy(), rtol=1e-13)



# ---- state loaded or steps taken between forward and backward ----

def _load_state_between(lib):
    bn = nn.BatchNorm1d(3).double() if lib.ours else torch.nn.BatchNorm1d(3).double()
    state = {k: np.array(v if lib.ours else v.numpy()) for k, v in bn.state_dict().items()}
    state["weight"] = np.array([2.0, -1.0, 0.5])
    bn.load_state_dict(state if lib.ours else {k: torch.tensor(v) for k, v in state.items()})
    x = lib.tensor(np.vstack([A, B]), requires_grad=True)
    y = bn(x)  # γ·x̂: mul saves the weight tensor itself
    state["weight"] = state["weight"] * 3
    bn.load_state_dict(state if lib.ours else {k: torch.tensor(v) for k, v in state.items()})
    lib.backward(y, np.vstack([UP, UP[::-1]]))
    return grad(x)


def test_loading_a_state_between_forward_and_backward_raises_as_torch():
    # load_state_dict gives the parameters new arrays; batch norm's γ·x̂ reaches γ through the
    # tensor, so it would differentiate with the new γ (found: silently 3x the gradient)
    message = assert_same_as_torch(_load_state_between, ("mul",))
    assert isinstance(message, str) and "load_state_dict" in message


def _step_without_gradients_between(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B.T, requires_grad=True)
    v = lib.tensor(ROW, requires_grad=True)
    opt = lib.sgd([w, v], lr=0.1, momentum=0.9)
    loss = ((x @ w) ** 2).sum()
    opt.step()  # no parameter has a gradient yet: nothing is written
    lib.backward(loss)
    return grad(x), grad(w), value(w)


def test_a_step_that_changes_nothing_does_not_invalidate_the_graph():
    assert not isinstance(assert_same_as_torch(_step_without_gradients_between), str)


# ---- the jit replaying steps with in-place ops ----

def _mlp(seed):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).double()
    model.load_state_dict({k: rng.standard_normal(np.shape(v)) if not k.endswith("tracked")
                           else v for k, v in model.state_dict().items()} | {
        "1.running_var": np.ones(5)})
    return model


def _jit_pair(make_step):
    eager_model, jit_model = _mlp(0), _mlp(0)
    return (eager_model, make_step(eager_model)), (jit_model, jit(make_step(jit_model)))


def _batches(n):
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((6, 3)), rng.integers(0, 2, 6)) for _ in range(n)]


def _assert_replays_like_eager(make_step):
    (em, eager), (jm, step) = _jit_pair(make_step)
    for x, y in _batches(6):
        assert eager(Tensor(x), y).item() == step(Tensor(x), y).item()
        for (name, a), b in zip(em.state_dict().items(), jm.state_dict().values()):
            assert np.array_equal(a, b), name
        for p, q in zip(em.parameters(), jm.parameters()):
            assert np.array_equal(p.grad.data, q.grad.data)
    assert step.replays >= 3


def test_jit_replays_a_manual_update_with_numbers_in_place():
    # p -= lr * p.grad, p.mul_(0.99), p.add_(g, alpha=np.float64(...)), g.zero_(): numbers are
    # handed to numpy as values, so a replay compares them instead of refusing a cached array
    def make_step(model):
        opt = optim.SGD(model.parameters(), lr=0.0)  # only for zero_grad

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            with no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
                    p.mul_(0.99)
                    p.add_(p.grad, alpha=np.float64(-0.01))
                    p.grad.div_(2)
            return loss
        return step
    _assert_replays_like_eager(make_step)


def test_jit_replays_recorded_in_place_ops_on_intermediates():
    # h.mul_(0.5); h += 1 on the logits: the copy of the old values runs through the seam
    def make_step(model):
        opt = optim.Adam(model.parameters(), lr=0.01)

        def step(x, y):
            opt.zero_grad()
            h = model(x)
            h.mul_(0.5)
            h += 1
            loss = F.cross_entropy(h, y)
            loss.backward()
            opt.step()
            return loss
        return step
    _assert_replays_like_eager(make_step)


def test_a_replayed_step_invalidates_graphs_made_outside_it():
    # found: a replay wrote the parameters without counting versions (update() bumped them,
    # and a replay calls the writer without update()), so the graph made outside silently
    # differentiated with the new weights
    model = _mlp(0)
    opt = optim.SGD(model.parameters(), lr=0.1)

    def train(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    step = jit(train)
    data = _batches(5)
    for x, y in data[:4]:
        step(Tensor(x), y)
    assert step.replays >= 1
    outside = F.cross_entropy(model(Tensor(data[4][0])), data[4][1])  # saves the weights
    step(Tensor(data[0][0]), data[0][1])  # a replay changes them
    with pytest.raises(RuntimeError, match="in-place"):
        outside.backward()


# ---- operands: a value that requires grad, shapes that do not fit ----

@pytest.mark.parametrize("target", ["plain", "non-leaf"])
def test_fill_with_a_tensor_that_requires_grad_passes_its_gradient(target):
    # found: on a tensor without a graph, fill_(v) dropped v's gradient silently
    def scenario(lib):
        x = lib.tensor(A, requires_grad=True)
        y = lib.tensor(np.zeros((2, 3))) if target == "plain" else x * 2
        v = lib.tensor(np.array(1.5), requires_grad=True)
        y.fill_(v)
        lib.backward((y * lib.tensor(UP)).sum() + (x * x).sum())
        return value(y), grad(v), grad(x)
    assert_same_as_torch(scenario)


OP_NAMES = {"+=": "add", "-=": "sub", "*=": "mul", "/=": "div", "add_": "add", "add_1": "add",
            "sub_": "sub", "mul_": "mul", "div_": "div", "fill_": "fill_", "copy_": "copy_"}


@pytest.mark.parametrize("method", sorted(OP_NAMES))
@pytest.mark.parametrize("recorded", [False, True])
def test_an_operand_that_does_not_broadcast_to_the_target_raises(method, recorded):
    # found: numpy's ValueError, not naming the op, for s += t with t larger than s
    def scenario(lib):
        x = lib.tensor(np.array(1.5), requires_grad=recorded)
        s = x * 1 if recorded else x
        before = value(s)
        with pytest.raises(RuntimeError) as e:
            if method == "fill_":
                s.fill_(lib.tensor(ROW))
            else:
                _apply(s, method, lib.tensor(ROW))
        np.testing.assert_array_equal(value(s), before)  # nothing written
        return str(e.value)
    message = scenario(Lib("ours"))
    scenario(Lib("torch"))
    assert f"in-place {OP_NAMES[method]}" in message and "(3,)" in message, message


# ---- in-place and higher-order gradients (create_graph) ----

def _grad_scaled_under_no_grad(lib):
    x = lib.tensor(A, requires_grad=True)
    lib.backward((x.sigmoid() * x).sum(), create_graph=True, retain_graph=True)
    g = x.grad
    with lib.no_grad():
        g.mul_(2)
    x.grad = None
    lib.backward(g.sum())
    return grad(x)


def _grad_added_to_in_place(lib):
    x = lib.tensor(A, requires_grad=True)
    lib.backward((x.tanh() ** 2).sum(), create_graph=True, retain_graph=True)
    g = x.grad
    x.grad = None
    g.add_(x)  # recorded: g is a non-leaf of the backward graph
    lib.backward((g * g).sum())
    return value(g), grad(x)


def _zero_dimensional_chain(lib):
    s = lib.tensor(np.array(2.0), requires_grad=True)
    t = s * s
    t.mul_(s)
    t.div_(s + 1)
    lib.backward(t, create_graph=True, retain_graph=True)
    g = s.grad
    s.grad = None
    lib.backward(g)
    return value(t), value(g), grad(s)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("scenario", [_grad_scaled_under_no_grad, _grad_added_to_in_place,
                                      _zero_dimensional_chain], ids=lambda f: f.__name__)
def test_in_place_on_gradients_of_a_recorded_backward(scenario):
    assert not isinstance(assert_same_as_torch(scenario), str)


def test_a_leaf_changed_between_first_and_second_order_raises():
    def scenario(lib):
        x = lib.tensor(A, requires_grad=True)
        lib.backward((x * x * x).sum(), create_graph=True, retain_graph=True)
        g = x.grad
        x.grad = None
        with lib.no_grad():
            x.mul_(2)  # the first-order graph read x
        lib.backward(g.sum())
        return grad(x)
    assert isinstance(assert_same_as_torch(scenario, ("mul",)), str)


# ---- detach() shares memory (and versions) with the tensor it came from ----

def _detached_copy_multiplied_by_a_parameter(lib):
    x, w = lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True)
    y = x.exp() * 1
    d = y.detach()
    d.mul_(w)  # recorded on d; y shows the new values, its graph is its own
    lib.backward((y * lib.tensor(UP)).sum() + (d * d).sum())
    return value(y), grad(x), grad(w)


def _detached_leaf_changed_before_use(lib):
    x = lib.tensor(A, requires_grad=True)
    d = x.detach()
    d.add_(1)  # x's values change before anything reads them
    lib.backward((x * x).sum())
    return value(x), grad(x)


def _detached_leaf_changed_after_use(lib):
    x = lib.tensor(A, requires_grad=True)
    y = x * x
    x.detach().add_(1)
    lib.backward(y.sum())
    return grad(x)


@pytest.mark.parametrize("scenario", [_detached_copy_multiplied_by_a_parameter,
                                      _detached_leaf_changed_before_use,
                                      _detached_leaf_changed_after_use], ids=lambda f: f.__name__)
def test_detach_then_in_place_as_torch(scenario):
    assert_same_as_torch(scenario, ("mul",))
