"""Every primitive of the op table: forward vs numpy, gradient vs float64 central differences,
dtypes, broadcasting, reductions. Driven by ops.PRIMITIVES and samples.SAMPLES."""
import itertools

import numpy as np
import pytest
from conftest import numeric_vjp
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_bn import Tensor, dispatch, kernels, ops
from tinygrad_bn.samples import SAMPLES, make_inputs

CASES = [(name, s) for name, samples in SAMPLES.items() for s in samples]


def _numpy_fn(sample):
    """The sample's computation run on plain arrays (through Tensor, detached): f(arrays)."""
    return lambda *arrays: sample.fn(*[Tensor(a) for a in arrays]).data


def test_every_primitive_has_a_method_and_samples():
    names = {op.name for op in ops.PRIMITIVES}
    assert names == set(SAMPLES), names ^ set(SAMPLES)
    for op in ops.PRIMITIVES:
        assert callable(op.forward) and op.vjps, op.name
    # each sample really goes through the op it is filed under
    rng = np.random.default_rng(0)
    for name, s in CASES:
        xs = [Tensor(a, requires_grad=True) for a in make_inputs(s, rng)]
        seen = {node.op.name for node in _walk(s.fn(*xs))}
        assert name in seen, (name, s.label, seen)


def _walk(t):
    from tinygrad_bn.autograd import is_node, toposort
    return [n for n in toposort(t) if is_node(n)]


@pytest.mark.parametrize("name,sample", CASES, ids=[s.label for _, s in CASES])
def test_gradient_matches_central_differences(name, sample, rng):
    arrays = make_inputs(sample, rng)
    xs = [Tensor(a, requires_grad=True) for a in arrays]
    y = sample.fn(*xs)
    upstream = rng.standard_normal(y.shape)  # random, never just ones: sum() hides errors
    y.backward(upstream)
    expected = numeric_vjp(_numpy_fn(sample), [a.copy() for a in arrays], upstream)
    for x, e in zip(xs, expected):
        assert x.grad.shape == x.shape
        np.testing.assert_allclose(x.grad.data, e, rtol=1e-6, atol=1e-7, err_msg=sample.label)


@pytest.mark.parametrize("name,sample", CASES, ids=[s.label for _, s in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(name, sample, dtype, rng):
    xs = [Tensor(a, requires_grad=True) for a in make_inputs(sample, rng, dtype)]
    y = sample.fn(*xs)
    assert y.dtype == dtype
    y.backward(np.ones(y.shape))
    assert all(x.grad.dtype == dtype for x in xs)


UNARY_NUMPY = {
    "neg": np.negative, "sqrt": np.sqrt, "exp": np.exp, "log": np.log,
    "relu": lambda a: np.maximum(a, 0), "tanh": np.tanh, "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
}


@pytest.mark.parametrize("name", sorted(UNARY_NUMPY))
def test_unary_forward_matches_numpy(name, rng):
    sample = SAMPLES[name][0]
    (a,) = make_inputs(sample, rng)
    np.testing.assert_allclose(sample.fn(Tensor(a)).data, UNARY_NUMPY[name](a), rtol=1e-12)


BINARY_NUMPY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                "pow": np.power, "matmul": np.matmul}


@pytest.mark.parametrize("name", sorted(BINARY_NUMPY))
def test_binary_forward_matches_numpy(name, rng):
    for sample in SAMPLES[name]:
        a, b = make_inputs(sample, rng)
        np.testing.assert_allclose(sample.fn(Tensor(a), Tensor(b)).data,
                                   BINARY_NUMPY[name](a, b), rtol=1e-12)


BROADCAST_SHAPES = [((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)), ((), (2, 3)),
                    ((5, 1, 3), (1, 4, 1)), ((1,), (2, 2))]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_broadcast_gradients_reduce_to_input_shapes(shapes, op, rng):
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
          "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    arrays = [rng.uniform(0.5, 1.5, s) for s in shapes]
    xs = [Tensor(a, requires_grad=True) for a in arrays]
    y = fn(*xs)
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    expected = numeric_vjp(lambda a, b: fn(a, b), [a.copy() for a in arrays], upstream)
    for x, e in zip(xs, expected):
        np.testing.assert_allclose(x.grad.data, e, rtol=1e-6, atol=1e-8)


AXES = [None, 0, 1, -1, (0, 2), (-1, 0), (0, 1, 2)]


@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean", "max", "var"])
def test_reductions_over_axis_keepdims_grid(axis, keepdims, reduction, rng):
    a = rng.permutation(24).reshape(2, 3, 4) * 0.31 + rng.uniform(0, 0.1, (2, 3, 4))
    x = Tensor(a, requires_grad=True)
    y = getattr(x, reduction)(axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(y.data, getattr(a, reduction)(axis=axis, keepdims=keepdims),
                               rtol=1e-12)
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    (expected,) = numeric_vjp(lambda b: getattr(b, reduction)(axis=axis, keepdims=keepdims),
                              [a.copy()], upstream)
    np.testing.assert_allclose(x.grad.data, expected, rtol=1e-6, atol=1e-8)


def test_max_ties_share_the_gradient():
    x = Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.data, [0, 0.5, 0.5])


def test_composites_match_numpy_and_their_gradients(rng):
    a = rng.standard_normal((4, 5))
    for name, ref in [("softmax", lambda b: np.exp(b) / np.exp(b).sum(-1, keepdims=True)),
                      ("log_softmax", lambda b: b - np.log(np.exp(b).sum(-1, keepdims=True)))]:
        x = Tensor(a, requires_grad=True)
        y = getattr(x, name)()
        np.testing.assert_allclose(y.data, ref(a), rtol=1e-12)
        up = rng.standard_normal(y.shape)
        y.backward(up)
        (e,) = numeric_vjp(ref, [a.copy()], up)
        np.testing.assert_allclose(x.grad.data, e, rtol=1e-6, atol=1e-8)


def test_log_softmax_is_stable_for_large_logits():
    x = Tensor(np.array([[1000.0, 0.0, -1000.0]]), requires_grad=True)
    y = x.log_softmax()
    assert np.all(np.isfinite(y.data))
    np.testing.assert_allclose(y.data, [[0.0, -1000.0, -2000.0]])
    y.backward(np.array([[1.0, 0.0, 0.0]]))
    assert np.all(np.isfinite(x.grad.data))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_relu_gives_numpys_bits_for_signed_zeros_nan_and_inf(dtype):
    # relu's forward compares against a vector of zeros (faster than the scalar 0): the same bits
    values = [-0.0, 0.0, -1.5, 2.5, np.nan, -np.inf, np.inf] * 20  # rows of 140: the vector form
    for shape in [(7,), (140,), (3, 140), (2, 3, 140), (140, 7)]:
        x = np.resize(np.array(values, dtype=dtype), shape)
        want = np.maximum(x, 0)
        for got in (Tensor(x).relu().data, dispatch.kernel(ops.RELU).into(np.empty_like(x), x)):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    big = np.full(kernels._MAX_ROWS + 1, -2.0, dtype)  # beyond the cached zeros: the scalar form
    assert (Tensor(big).relu().data == 0).all()


def test_sigmoid_is_stable_in_both_tails():
    x = Tensor(np.array([-800.0, -40.0, 0.0, 40.0, 800.0]))
    s = x.sigmoid().data
    assert np.all(np.isfinite(s)) and s[0] == 0.0 and s[-1] == 1.0
    np.testing.assert_allclose(s[1], np.exp(-40.0) / (1 + np.exp(-40.0)), rtol=1e-12)


def test_getitem_repeated_indices_accumulate():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0, 3, 0, 1])


def test_matmul_batched_broadcasts_batch_axes(rng):
    a, b = rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((5, 4, 2))
    x, y = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    z = x @ y
    assert z.shape == (2, 5, 3, 2)
    up = rng.standard_normal(z.shape)
    z.backward(up)
    ex, ey = numeric_vjp(np.matmul, [a.copy(), b.copy()], up)
    np.testing.assert_allclose(x.grad.data, ex, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(y.grad.data, ey, rtol=1e-6, atol=1e-8)


def test_reflected_ops_with_scalars_and_arrays(rng):
    a = rng.uniform(0.5, 1.5, (2, 3))
    x = Tensor(a, requires_grad=True)
    arr = rng.uniform(0.5, 1.5, (2, 3))
    y = 2 - x + arr * x - 3 / x + 2 ** x + arr / x
    assert isinstance(y, Tensor)
    np.testing.assert_allclose(y.data, 2 - a + arr * a - 3 / a + 2 ** a + arr / a)
    up = rng.standard_normal(y.shape)
    y.backward(up)
    (e,) = numeric_vjp(lambda b: 2 - b + arr * b - 3 / b + 2 ** b + arr / b, [a.copy()], up)
    np.testing.assert_allclose(x.grad.data, e, rtol=1e-6)


def test_python_scalars_keep_float32():
    x = Tensor(np.ones(3, dtype=np.float32))
    for y in (x * 2.5, 2.5 * x, x + 1, x / 3.0, x ** 2, 1 - x):
        assert y.dtype == np.float32



# ---- property tests: random broadcastable shapes and random reduction axes ----



@st.composite
def broadcast_pair(draw):
    """Two shapes numpy can broadcast: each axis of the shorter one is the other's or 1."""
    full = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
    drop = draw(st.integers(0, len(full)))
    short = [n if draw(st.booleans()) else 1 for n in full[drop:]]
    return (tuple(full), tuple(short)) if draw(st.booleans()) else (tuple(short), tuple(full))


@settings(max_examples=40, deadline=None)
@given(shapes=broadcast_pair(), op=st.sampled_from(["add", "sub", "mul", "div"]),
       seed=st.integers(0, 2**16))
def test_broadcast_gradients_property(shapes, op, seed):
    rng = np.random.default_rng(seed)
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
          "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    arrays = [rng.uniform(0.5, 1.5, s) for s in shapes]
    xs = [Tensor(a, requires_grad=True) for a in arrays]
    y = fn(*xs)
    assert y.shape == np.broadcast_shapes(*shapes)
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    for x, e in zip(xs, numeric_vjp(fn, [a.copy() for a in arrays], upstream)):
        assert x.grad.shape == x.shape
        np.testing.assert_allclose(x.grad.data, e, rtol=1e-6, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data(),
       reduction=st.sampled_from(["sum", "mean", "max", "var"]), keepdims=st.booleans())
def test_reduction_gradients_property(shape, data, reduction, keepdims):
    ndim = len(shape)
    axes = data.draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                               st.sets(st.integers(0, ndim - 1), min_size=1).map(tuple)))
    n = int(np.prod(shape))
    a = (np.random.default_rng(n).permutation(n) * 0.37).reshape(shape)  # distinct: no max ties
    x = Tensor(a, requires_grad=True)
    y = getattr(x, reduction)(axis=axes, keepdims=keepdims)
    np.testing.assert_allclose(y.data, getattr(a, reduction)(axis=axes, keepdims=keepdims),
                               rtol=1e-12, atol=1e-12)
    upstream = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(upstream)
    (e,) = numeric_vjp(lambda b: getattr(b, reduction)(axis=axes, keepdims=keepdims),
                       [a.copy()], upstream)
    np.testing.assert_allclose(x.grad.data, e, rtol=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(shapes=broadcast_pair(), seed=st.integers(0, 2**16))
def test_sum_to_and_mul_sum_to_equal_numpy_broadcast_sums(shapes, seed):
    full = np.broadcast_shapes(*shapes)
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(full), rng.standard_normal(full)
    for shape in shapes:
        extra = len(full) - len(shape)
        axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape)
                                           if n == 1 and full[i + extra] != 1)
        want = (a * b).sum(axis=axes, keepdims=True).reshape(shape)
        got = kernels.mul_sum_to(a, b, shape)
        assert got.shape == shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(kernels.sum_to(a, shape), a.sum(axis=axes, keepdims=True)
                                   .reshape(shape), rtol=1e-12, atol=1e-12)
    f32 = a.astype(np.float32)
    assert kernels.mul_sum_to(f32, f32, shapes[1]).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64])
@pytest.mark.parametrize("shape", [(60, 100), (5, 3, 4), (7, 1), (1, 4), (0, 3), (3, 0), (6,)])
def test_reduce_sum_equals_numpy_for_every_axis_layout_and_dtype(shape, dtype, rng):
    x = (rng.standard_normal(shape) * 10).astype(dtype)
    layouts = {"C": x, "F": np.asfortranarray(x), "view": x[::-1]}
    for layout, a in layouts.items():
        for k in range(1, a.ndim + 1):
            for axis in itertools.combinations(range(a.ndim), k):
                for keepdims in (True, False):
                    got = kernels.reduce_sum(a, axis, keepdims)
                    want = np.add.reduce(a, axis, keepdims=keepdims)
                    assert got.shape == want.shape and got.dtype == want.dtype, (layout, axis)
                    tol = 1e-2 if dtype == np.float16 else 1e-5 if dtype == np.float32 else 1e-12
                    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)


def test_reduce_sum_over_the_batch_is_a_fresh_array_at_least_as_accurate_as_numpy(rng):
    # The batch-axis sums of batch norm go through BLAS (ones @ x). The result must be an array
    # of its own (a jit replay may write into it) and, in float32, no less accurate than
    # numpy's row-after-row reduction, against a float64 sum of the same numbers.
    x = (rng.standard_normal((4096, 64)) * 3 + 1).astype(np.float32)
    exact = x.astype(np.float64).sum(axis=0)
    ours = kernels.reduce_sum(x, (0,), False)
    numpy_error = np.abs(np.add.reduce(x, 0) - exact).mean()
    assert np.abs(ours - exact).mean() <= numpy_error
    for keepdims in (True, False):
        assert kernels.reduce_sum(x, (0,), keepdims).base is None
    assert np.isnan(kernels.reduce_sum(np.full((3, 2), np.nan), (0,), True)).all()
    inf = np.array([[np.inf, 1.0], [-np.inf, 2.0]])
    with np.errstate(invalid="ignore"):  # inf - inf: both warn, both give NaN
        np.testing.assert_array_equal(kernels.reduce_sum(inf, (0,), False), np.add.reduce(inf, 0))


def test_reduce_sum_caches_stay_small_whatever_the_batch_sizes():
    # Each cached plan holds a ones vector; they are views of one vector per dtype, capped, so
    # many distinct batch sizes (or one huge one, which numpy reduces) cost no more memory.
    most = kernels._MAX_ROWS
    for n in list(range(2, 400, 7)) + [most, most + 1, 3 * most]:
        x = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
        np.testing.assert_array_equal(kernels.reduce_sum(x, (0,), True),
                                      x.sum(axis=0, keepdims=True))
    for (_, dtype), vector in kernels._FILLED.items():
        assert vector.base is None and not vector.flags.writeable
        assert vector.nbytes <= kernels._MAX_ROWS * dtype.itemsize


class _ShapeOnly:
    """What a rule gets for an input its op does not declare in ``reads``: just a shape."""

    def __init__(self, shape):
        self.shape = shape


@pytest.mark.parametrize("name,sample", CASES, ids=[s.label for _, s in CASES])
def test_rules_read_only_what_their_op_declares(name, sample, rng):
    from tinygrad_bn.autograd import is_node, keep_values, toposort
    xs = [Tensor(a, requires_grad=True) for a in make_inputs(sample, rng)]
    with keep_values():  # every node holds all its inputs and its output
        y = sample.fn(*xs)
    for node in (v for v in toposort(y) if is_node(v)):
        op = node.op
        g = rng.standard_normal(node.shape)
        full = [a.data for a in node.args]
        out = node.out if op.reads_out else None
        k = dispatch.kernel(op)
        for vjp, reads in zip(k.vjps, k.vjp_reads):  # each rule: only its own reads
            masked = [a if r else _ShapeOnly(a.shape) for a, r in zip(full, reads)]
            np.testing.assert_array_equal(np.asarray(vjp(g, out, *masked, **node.attrs)),
                                          np.asarray(vjp(g, node.out, *full, **node.attrs)))


IN_PLACE = [op.name for op in ops.PRIMITIVES
            if dispatch.kernel(op).into or any(dispatch.kernel(op).vjps_into)]


@pytest.mark.parametrize("name", IN_PLACE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_forms_give_the_same_bits(name, dtype, rng):
    # Op.into writes the forward into any input of the result's shape and dtype; Op.vjps_into
    # writes a rule's result into g or into an input the rule reads: both must equal the
    # allocating form bit for bit (the jit replay relies on it).
    checked = sum(_check_in_place(s, dtype, rng) for s in SAMPLES[name])
    assert checked, f"no sample of {name} has an array an in-place form could write into"


def _check_in_place(sample, dtype, rng):
    from tinygrad_bn.autograd import is_node, keep_values, toposort
    xs = [Tensor(a, requires_grad=True) for a in make_inputs(sample, rng, dtype)]
    with keep_values():
        y = sample.fn(*xs)
    checked = 0
    for node in (v for v in toposort(y) if is_node(v)):
        op, attrs = dispatch.kernel(node.op), node.attrs
        full = [a.data for a in node.args]
        want = op.forward(*full, **attrs)
        for i, a in enumerate(full):
            if op.into is not None and _fits(a, want):
                args = [b.copy() for b in full]
                got = op.into(args[i], *args, **attrs)
                assert got is args[i] and _same_bits(got, want), (sample.label, node.op.name, i)
                checked += 1
        g = rng.standard_normal(node.shape).astype(node.out.dtype)
        for vjp, into, reads in zip(op.vjps, op.vjps_into, op.vjp_reads):
            if into is None:
                continue
            want = vjp(g, node.out, *full, **attrs)
            for j in [-1] + [j for j, r in enumerate(reads) if r]:  # -1: into g
                dst_of = g if j < 0 else full[j]
                if not _fits(dst_of, want):
                    continue
                gg, args = g.copy(), [b.copy() for b in full]
                dst = gg if j < 0 else args[j]
                got = into(dst, gg, node.out, *args, **attrs)
                assert got is dst and _same_bits(got, want), (sample.label, node.op.name, j)
                checked += 1
    return checked


def _fits(a, result):
    return type(a) is np.ndarray and a.shape == np.shape(result) and a.dtype == result.dtype


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_square_rule_on_a_broadcast_gradient_is_exact(dtype, rng):
    # batch norm's variance hands the square's rule a broadcast view (mean's gradient); the rule
    # doubles the small array instead of the full one: the same bits, one pass fewer.
    x = rng.standard_normal((7, 5)).astype(dtype)
    small = rng.standard_normal((1, 5)).astype(dtype)
    view = kernels.expand(small, x.shape)
    assert kernels.compact(view).shape == (1, 5) and kernels.compact(small.copy()) is None
    got = dispatch.kernel(ops.POW_SCALAR).vjps[0](view, None, x, exponent=2)
    want = dispatch.kernel(ops.POW_SCALAR).vjps[0](np.ascontiguousarray(view), None, x, exponent=2)
    assert got.dtype == dtype and np.array_equal(got, want)
    np.testing.assert_array_equal(want, 2 * x * small)
    dst = x.copy()  # the jit replay's form, writing over x (which dies there)
    into = dispatch.kernel(ops.POW_SCALAR).vjps_into[0](dst, view, None, dst, exponent=2)
    assert into is dst and into.tobytes() == want.tobytes()


def test_op_declarations_are_checked():
    fwd, rule = (lambda x, y: x), (lambda g, out, x, y: g)
    with pytest.raises(ValueError, match="reads names"):
        ops.Op("bad", fwd, rule, rule, reads=("z",))
    op = ops.Op("ok", fwd, rule, rule, reads=("y",))
    assert op.reads_inputs == (False, True) and not op.reads_out


@pytest.mark.parametrize("name", ["sigmoid", "relu", "tanh", "exp", "log", "sqrt", "mean",
                                  "sum", "max", "__neg__"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_dimensional_tensors_forward_and_backward(name, dtype):
    # numpy hands back scalars, not 0-d arrays, from 0-d operations: the forward and the rules
    # must still work (found by a review: sigmoid and mean().backward() raised on 0-d tensors)
    t = Tensor(np.array(0.7, dtype), requires_grad=True)
    y = getattr(t, name)()
    (y * 3.0).backward()
    assert y.shape == () and y.dtype == dtype and t.grad.shape == () and t.grad.dtype == dtype

    def f(v):
        return float(getattr(Tensor(np.array(v)), name)().data)
    h = 1e-6
    np.testing.assert_allclose(float(t.grad.data), 3.0 * (f(0.7 + h) - f(0.7 - h)) / (2 * h),
                               rtol=1e-4)
    np.testing.assert_allclose(float(y.data), f(0.7), rtol=1e-6)
