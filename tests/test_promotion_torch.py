"""Type promotion against PyTorch: every tensor dtype x every kind of operand x every binary op,
value, dtype and gradient; and the constructor's dtypes, masks and integer indices."""
import numbers

import numpy as np
import pytest
from conftest import torch_or_skip

from tinygrad_bn import Tensor
from tinygrad_bn.tensor import result_dtype

torch = torch_or_skip()

DTYPES = [np.bool_, np.int32, np.int64, np.float32, np.float64]
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
       "/": lambda a, b: a / b, "**": lambda a, b: a ** b, ">": lambda a, b: a > b,
       "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


def _values(dtype, shape):
    # positive, so ** and / stay finite; bools are all True for the same reason
    return np.resize(np.array([1, 2, 3]), shape).astype(dtype) if shape else \
        np.array(2, dtype=dtype)


def _operands():
    """(label, ours, torch's) for every kind of second operand."""
    out = [("True", True, True), ("3", 3, 3), ("2.5", 2.5, 2.5),
           ("np.float64(1.5)", np.float64(1.5), np.float64(1.5))]
    for dt in DTYPES:
        name = np.dtype(dt).name
        zero_d, array = _values(dt, ()), _values(dt, (3,))
        out += [(f"0-d {name} array", zero_d, torch.from_numpy(zero_d)),
                (f"{name} array", array, torch.from_numpy(array)),
                (f"0-d {name} Tensor", Tensor(zero_d), torch.from_numpy(zero_d)),
                (f"{name} Tensor", Tensor(array), torch.from_numpy(array))]
    return out


def _torch_dtype_as_numpy(t):
    return torch.empty(0, dtype=t.dtype).numpy().dtype


def _run(fn, a, b):
    try:
        with np.errstate(all="ignore"):
            return fn(a, b), None
    except (TypeError, RuntimeError, ValueError, NotImplementedError, OverflowError) as e:
        return None, e


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_binary_ops_promote_as_torch(dtype, op):
    fn = OPS[op]
    x = _values(dtype, (3,))
    checked = 0
    for label, ours, theirs in _operands():
        for reflected in (False, True):
            args = (Tensor(x), ours) if not reflected else (ours, Tensor(x))
            tx = torch.from_numpy(x)
            targs = (tx, theirs) if not reflected else (theirs, tx)
            if reflected and isinstance(ours, Tensor):
                continue  # Tensor op Tensor: the other order is another dtype's case
            case = f"{'other' if reflected else 'x'} {op} {'x' if reflected else 'other'}, " \
                   f"x {np.dtype(dtype).name}, other {label}"
            expected, torch_error = _run(fn, *targs)
            got, error = _run(fn, *args)
            if torch_error is not None or (dtype is np.bool_ and op == "**" and label == "True"):
                # torch answers bool ** True but refuses bool ** bool tensors; we refuse both
                assert error is not None, f"{case}: torch raises {torch_error!r}, we gave {got}"
                continue
            assert error is None, f"{case}: torch gives {expected}, we raise {error!r}"
            assert got.dtype == _torch_dtype_as_numpy(expected), (case, got.dtype, expected.dtype)
            np.testing.assert_allclose(got.data, expected.numpy(), rtol=1e-6, err_msg=case)
            checked += 1
    assert checked or (dtype is np.bool_ and op in "-**")  # bool: torch refuses all


GRAD_OPS = ["+", "-", "*", "/", "**"]


@pytest.mark.parametrize("op", GRAD_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_gradients_flow_through_promotion(dtype, op):
    """Each float operand's gradient comes back in its own dtype with torch's value, also when
    promotion converts it (a 0-d float64 weight times float32 data: the result is float32)."""
    fn = OPS[op]
    rng = np.random.default_rng(0)
    for other_dtype in (np.float32, np.float64):
        for shape in ((), (3,)):
            a = rng.uniform(0.5, 2, 3).astype(dtype)
            b = np.asarray(rng.uniform(0.5, 2, shape)).astype(other_dtype)
            x, y = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
            tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
            out, tout = fn(x, y), fn(tx, ty)
            assert out.dtype == _torch_dtype_as_numpy(tout)
            up = rng.standard_normal(3)
            out.backward(up.astype(out.dtype))
            tout.backward(torch.tensor(up, dtype=tout.dtype))
            for ours, theirs in ((x, tx), (y, ty)):
                assert ours.grad.dtype == _torch_dtype_as_numpy(theirs.grad)
                np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=1e-5)


def test_result_dtype_is_torch_result_type():
    cases = [(np.ones(3, np.float32), 2.5), (np.ones(3, np.int32), 2.5), (np.ones(3, bool), 1),
             (np.ones(3, bool), 0.5), (np.ones(3, np.int32), np.array(2.0)),
             (np.ones(3, np.float32), np.array(2.0)),
             (np.ones(3, np.float32), np.ones(3, np.int64)),
             (np.ones(3, np.int64), np.ones(3, np.float16)), (np.array(1, np.int8), 300)]
    for a, b in cases:
        tb = b if isinstance(b, numbers.Number) else torch.from_numpy(b)
        expected = torch.empty(0, dtype=torch.result_type(torch.from_numpy(a), tb)).numpy().dtype
        assert result_dtype(Tensor(a), b) == expected, (a.dtype, b)


def test_inverted_dropout_with_a_mask_scales_and_gets_the_gradient():
    """The issue's case: keep * (1 / 0.5) was a bool tensor (all True), off by 2x."""
    a = np.array([-1.0, 0.5, 2.0, -0.3, 1.5])
    w, tw = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    keep, tkeep = w > 0, tw > 0
    out, tout = w * (keep * (1 / 0.5)), tw * (tkeep * (1 / 0.5))
    assert (keep * 0.5).dtype == np.float32 and ((keep + 1).data == [1, 2, 2, 1, 2]).all()
    np.testing.assert_allclose(out.data, tout.detach().numpy())
    out.sum().backward()
    tout.sum().backward()
    np.testing.assert_allclose(w.grad.data, tw.grad.numpy())


def test_unary_functions_of_integers_give_float32_as_torch():
    a = np.array([1, 2, 3], np.int32)
    for name in ("sqrt", "exp", "log", "sigmoid", "tanh"):
        ours, theirs = getattr(Tensor(a), name)(), getattr(torch.from_numpy(a), name)()
        assert ours.dtype == np.float32, name
        np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-6)
    assert Tensor(a).sum().dtype == np.int64 and Tensor([True, False]).sum().item() == 1
    assert Tensor(a).relu().dtype == np.int32
    with pytest.raises(TypeError, match="mean of a tensor of dtype int32.*float"):
        Tensor(a).mean()
    with pytest.raises(TypeError, match="softmax"):
        Tensor(a).softmax()


def test_constructor_dtypes_as_torch():
    for data in ([1, 2], [True, False], [1.5, 2], 3, 2.5, True, [[1], [2]],
                 np.array([1, 2], np.int32), np.array([True]), np.float64(2.0),
                 np.array([1, 2], np.uint8), np.array([1.0], np.float16)):
        expected = torch.tensor(data).numpy().dtype
        assert Tensor(data).dtype == expected, data


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool])
def test_only_float_tensors_take_gradients(dtype):
    with pytest.raises(RuntimeError, match="Only Tensors of floating point dtype"):
        Tensor(np.ones(2, dtype), requires_grad=True)
    with pytest.raises(RuntimeError, match="Only Tensors of floating point dtype"):
        Tensor(np.ones(2, dtype)).requires_grad_()
    x = Tensor(np.ones(2), requires_grad=True)
    # operations on integer tensors never need a gradient; a float op with one does
    assert not (Tensor(np.ones(2, dtype)) * 2).requires_grad
    assert (x * Tensor(np.ones(2, dtype))).requires_grad


def test_bool_mask_indexing_and_its_gradient():
    a = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])
    mask = a > 0
    x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    m = Tensor(mask)
    assert m.dtype == np.bool_
    for index, tindex in ((m, torch.from_numpy(mask)), (x > 0, tx > 0)):
        out, tout = x[index], tx[tindex]
        np.testing.assert_array_equal(out.data, tout.detach().numpy())
        up = np.arange(1.0, out.shape[0] + 1)
        x.grad, tx.grad = None, None
        out.backward(up)
        tout.backward(torch.tensor(up))
        np.testing.assert_array_equal(x.grad.data, tx.grad.numpy())


def test_integer_tensor_indices_index_and_floats_are_refused():
    a = np.arange(12.0).reshape(4, 3)
    x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    idx = [2, 0, 2]
    out, tout = x[Tensor(idx)], tx[torch.tensor(idx)]
    np.testing.assert_array_equal(out.data, tout.detach().numpy())
    up = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(up)
    tout.backward(torch.tensor(up))
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())
    with pytest.raises(IndexError, match="integer or bool"):
        x[Tensor([1.0, 2.0])]


def test_integer_true_division_and_overflow():
    a = Tensor(np.array([1, 2, 3]))
    assert (a / 2).dtype == np.float32 and (a / a).dtype == np.float32
    np.testing.assert_allclose((a / 2).data, [0.5, 1.0, 1.5])
    # torch wraps 2**40 around in int32 silently; refusing is the no-silent-wrong-number rule
    with pytest.raises(OverflowError, match="does not fit.*int32"):
        Tensor(np.array([1], np.int32)) + 2 ** 40
    with pytest.raises(TypeError, match="bool"):
        -(a > 1)
    assert (~(a > 1)).data.tolist() == [True, False, False]


def test_conversions_record_a_cast():
    a = np.array([0.1, 0.2, 0.3])
    x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, ty = x.float() * 3.0, tx.float() * 3.0
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.data, ty.detach().numpy())
    y.backward(np.ones(3, np.float32))
    ty.backward(torch.ones(3))
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad.data, tx.grad.numpy())
    assert not x.long().requires_grad and x.long().dtype == np.int64
