"""The engine: graph bookkeeping, accumulation, grad mode, memory, and errors for users."""
import gc
import weakref

import numpy as np
import pytest

from tinygrad_bn import Tensor, no_grad
from tinygrad_bn.autograd import enable_grad, is_grad_enabled, is_node


def test_diamond_graph():
    a = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    b = a + a
    c = b * b  # c = 4 a², dc/da = 8 a
    c.backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(a.grad.data, 8 * a.data * [1, 2, 3])


def test_shared_node_used_three_ways():
    a = Tensor(np.array([0.5, 2.0]), requires_grad=True)
    b = a.exp()
    y = b * b + b / a - b  # d/da = 2e^{2a} + e^a/a - e^a/a² - e^a
    y.backward(np.ones(2))
    e = np.exp(a.data)
    np.testing.assert_allclose(a.grad.data, 2 * e ** 2 + e / a.data - e / a.data ** 2 - e)


def test_100k_deep_chain_without_recursion():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1e-6
    y.backward(np.ones(1))
    assert x.grad.data[0] == 1.0
    np.testing.assert_allclose(y.data, 1.1)


def test_gradients_accumulate_across_backward_calls_until_cleared():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [6, 6])
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2, 4])


def test_leaf_gradients_never_alias():
    x = Tensor(np.ones(3), requires_grad=True)
    y = Tensor(np.ones(3), requires_grad=True)
    upstream = np.array([1.0, 2.0, 3.0])
    (x + y).backward(upstream)  # add hands the same array to both inputs
    assert not np.shares_memory(x.grad.data, y.grad.data)
    assert not np.shares_memory(x.grad.data, upstream)
    x.grad.data[0] = 100.0
    assert y.grad.data[0] == 1.0 and upstream[0] == 1.0
    # reshape/broadcast gradients are views: .grad must still be writeable and unshared
    z = Tensor(np.ones((1, 3)), requires_grad=True)
    w = z.reshape(3).expand(2, 3)
    up = np.ones((2, 3))
    w.backward(up)
    assert z.grad.data.flags.writeable and not np.shares_memory(z.grad.data, up)
    # one buffer reaching two leaves through views: the second gets a copy
    a = Tensor(np.ones(6), requires_grad=True)
    b = Tensor(np.ones((2, 3)), requires_grad=True)
    h = Tensor(np.ones(6), requires_grad=True) * 2  # an intermediate, so g is a fresh array
    (a.reshape(2, 3) + b + h.reshape(2, 3)).backward(np.ones((2, 3)))
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data[:] = 7
    assert np.all(b.grad.data == 1)


def test_accumulation_creates_a_new_array():
    x = Tensor(np.ones(2), requires_grad=True)
    (x * 2).sum().backward()
    first = x.grad.data
    (x * 2).sum().backward()
    assert first[0] == 2.0 and x.grad.data[0] == 4.0


def test_no_grad_records_nothing_and_restores():
    x = Tensor(np.ones(2), requires_grad=True)
    assert is_grad_enabled()
    with no_grad():
        y = x * 2
        assert not is_grad_enabled()
        with enable_grad():
            z = x * 2
    assert is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    assert z.requires_grad

    @no_grad()
    def f(t):
        return t * 3
    assert not f(x).requires_grad and is_grad_enabled()


def test_no_grad_restores_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_constants_do_not_get_gradients():
    x = Tensor(np.ones(2), requires_grad=True)
    c = Tensor(np.full(2, 3.0))
    (x * c).sum().backward()
    assert c.grad is None and x.grad is not None


def test_graph_is_freed_when_output_goes_away():
    x = Tensor(np.ones((100, 100)), requires_grad=True)
    y = (x * 2).log()  # log's derivative reads its input, so the node keeps x * 2
    probe = weakref.ref(y._ctx.args[0])  # the intermediate x * 2
    del y
    assert probe() is None  # no cycles: freed by reference counting, no gc needed
    y = (x * 2).log()
    probe = weakref.ref(y._ctx.args[0])
    y.sum().backward()  # retain_graph=False releases intermediates during the pass
    assert probe() is None
    gc.collect()


def test_intermediates_no_derivative_reads_are_freed_during_the_forward():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    h = x * 3 + 1  # sum's derivative needs only the shape of its input
    probe = weakref.ref(h.data)
    s = h.sum()
    del h
    assert probe() is None
    e = (x * 2).exp()  # exp's derivative reads its output, not its input
    node = e._ctx
    assert node.out is e.data and is_node(node.args[0])  # a stand-in, no array of x * 2
    (s + e.sum()).backward()
    np.testing.assert_allclose(x.grad.data, 3 + 2 * np.exp(2 * x.data))


def test_keep_values_saves_every_array_and_gives_the_same_gradients():
    from tinygrad_bn.autograd import keep_values
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 4))
    grads = []
    for keep in (False, True):
        x = Tensor(a, requires_grad=True)
        if keep:
            with keep_values():
                h = x * 3 + 1
                out = (h.sum(axis=0) / (h ** 2).sum(axis=0).sqrt()).sum()
            probe = weakref.ref(h.data)
            del h
            assert probe() is not None  # the add node still holds it
        else:
            h = x * 3 + 1
            out = (h.sum(axis=0) / (h ** 2).sum(axis=0).sqrt()).sum()
        out.backward()
        grads.append(x.grad.data)
    np.testing.assert_array_equal(grads[0], grads[1])


def test_second_backward_needs_retain_graph():
    x = Tensor(np.ones(2), requires_grad=True)
    y = (x * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad.data, [4, 4])
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_grad_keeps_intermediate_gradient():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = (x * 3).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_array_equal(h.grad.data, 2 * h.data)


def test_non_scalar_backward_needs_a_gradient():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(3,\).*sum\(\)\.backward\(\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(2,\).*shape \(3,\)"):
        (x * 2).backward(np.ones(2))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(3)).sum().backward()


def test_ndarray_op_tensor_returns_tensor():
    x = Tensor(np.ones(3), requires_grad=True)
    for y in (np.ones(3) + x, np.ones(3) * x, np.ones(3) - x, np.ones(3) / x,
              np.ones((2, 3)) @ x):
        assert isinstance(y, Tensor) and y.requires_grad


def test_constructor_dtypes():
    # PyTorch's: ints int64, bools bool, floats float32; arrays keep their dtype
    assert Tensor([1, 2]).dtype == np.int64 and Tensor([True]).dtype == np.bool_
    assert Tensor(3).dtype == np.int64 and Tensor(3.0).dtype == np.float32
    assert Tensor([1, 2.5]).dtype == np.float32
    assert Tensor(np.ones(2, dtype=np.float64)).dtype == np.float64
    assert Tensor(np.ones(2, dtype=np.float32)).dtype == np.float32
    assert Tensor(np.arange(3, dtype=np.int32)).dtype == np.int32
    assert Tensor([1.0], dtype=np.float64).dtype == np.float64
    a = np.ones(2)
    t = Tensor(a)
    a[0] = 5  # the tensor holds its own copy
    assert t.data[0] == 1


def test_attributes():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
    assert x.T.shape == (3, 2) and x.sum().item() == 15.0
    assert x.detach().requires_grad is False and x.detach().data is x.data
    assert isinstance(x.numpy(), np.ndarray)
    assert "requires_grad=True" in repr(x)


@pytest.mark.parametrize("bad", ["abc", [[1, 2], [3]], {"a": 1}, None,
                                 np.array(["a", "b"]), np.array([1 + 2j])])
def test_constructor_rejects_non_numeric_input(bad):
    with pytest.raises(TypeError, match="Tensor"):
        Tensor(bad)


def test_constructor_refuses_gradients_of_integers():
    with pytest.raises(RuntimeError, match="floating point dtype can require gradients"):
        Tensor([1, 2], dtype=np.int64, requires_grad=True)


def test_shape_errors_name_op_and_shapes():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(4, 5\)"):
        a + b
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"reshape.*\(2, 3\).*\(4, 2\)"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        a.sum(axis=2)
    with pytest.raises(ValueError, match="permutation"):
        Tensor(np.ones((2, 3, 4))).transpose(0, 1, 1)
    assert Tensor(np.ones((2, 3, 4))).transpose(0, 1).shape == (3, 2, 4)  # torch's swap
    with pytest.raises(TypeError, match="cannot combine a Tensor with str"):
        a + "x"
    with pytest.raises(ValueError, match="item"):
        a.item()


def test_reshape_with_minus_one_and_tuple():
    x = Tensor(np.arange(12.0))
    assert x.reshape(3, -1).shape == (3, 4)
    assert x.reshape((2, 6)).shape == (2, 6)
    assert x.reshape(-1).shape == (12,)


def test_comparisons_give_constant_masks():
    x = Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    m = x > 0
    assert not m.requires_grad and m.data.tolist() == [False, False, True]
    assert hash(x) == hash(x)  # tensors stay hashable (the graph walk keeps them in sets)


def test_second_derivative_with_create_graph():
    x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    first = x.grad
    np.testing.assert_allclose(first.data, 3 * x.data ** 2)
    assert first.requires_grad
    x.grad = None
    first.sum().backward()
    np.testing.assert_allclose(x.grad.data, 6 * x.data)


def test_every_rule_runs_on_tensors_with_the_same_values():
    # The derivative rules use only operations arrays and Tensors share: create_graph=True
    # must give exactly the first-order gradients of the array pass.
    from tinygrad_bn.samples import SAMPLES, make_inputs
    rng = np.random.default_rng(0)
    for name, samples in SAMPLES.items():
        for s in samples:
            arrays = make_inputs(s, rng)
            up = None
            results = []
            for create_graph in (False, True):
                xs = [Tensor(a, requires_grad=True) for a in arrays]
                y = s.fn(*xs)
                up = rng.standard_normal(y.shape) if up is None else up
                y.backward(up, create_graph=create_graph)
                results.append([x.grad.data for x in xs])
            for a, b in zip(*results):
                np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=s.label)


def test_truth_value_and_float_of_tensors():
    loss = Tensor(np.array(0.05))
    assert (loss < 0.1) and not (loss > 0.1)
    assert float(loss) == 0.05
    with pytest.raises(ValueError, match=r"truth value of a tensor of shape \(3,\) is ambiguous"):
        bool(Tensor(np.ones(3)) > 0)


def test_requires_grad_in_place():
    x = Tensor(np.ones(2)).requires_grad_()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [3, 3])
    with pytest.raises(RuntimeError, match="detach"):
        (x * 2).requires_grad_(False)


def test_grad_mode_and_module_scope_are_per_thread():
    # As in PyTorch: no_grad() in one thread does not stop another thread's graph, and the
    # modules a thread is inside do not leak into nodes another thread records.
    import threading

    from tinygrad_bn import nn
    from tinygrad_bn.autograd import enter_scope, exit_scope
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def other():
        with no_grad():
            prev = enter_scope(nn.ReLU())
            inside.set()
            done.wait(5)
            exit_scope(prev)

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(5)
    x = Tensor(np.ones(3), requires_grad=True)
    y = x * 2.0
    seen["requires_grad"], seen["scope"] = y.requires_grad, y._ctx.scope
    done.set()
    thread.join()
    assert seen == {"requires_grad": True, "scope": ()}
