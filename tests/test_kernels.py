"""Every fast form in kernels.py against its textbook form in ops.py.

For each primitive with an override (a forward, a derivative, an ``into`` or a ``vjps_into``
form), both forms run on the same arrays: the samples of ``samples.py`` and awkward inputs
(broadcast shapes, 0-d, transposed, negative-stride and strided layouts, float32 and float64,
-0.0, ±inf, NaN, subnormals, huge values). They must give the same bits (a NaN equals any NaN)
unless the kernel's comment says why not; those cases are listed in ``ROUNDED`` and compared
with a tolerance on ordinary numbers. Also: the layering of the core's imports.
"""
import ast
import pathlib

import numpy as np
import pytest

from tinygrad_bn import Tensor, dispatch, kernels, ops
from tinygrad_bn.autograd import is_node, keep_values, toposort
from tinygrad_bn.samples import SAMPLES, make_inputs


def _overridden(op):
    k = dispatch.kernel(op)
    return (k.forward is not op.forward or k.into is not None or any(k.vjps_into)
            or any(a is not b for a, b in zip(k.vjps, op.vjps)))


OVERRIDDEN = [op for op in ops.PRIMITIVES if _overridden(op)]
DTYPES = [np.float32, np.float64]

# The forms that are not bit for bit their textbook rule, and why (their comments say so):
ROUNDED = {
    # reduce_sum: a batch sum is ones @ x in BLAS, which keeps several partial sums
    ("sum", "forward"): "BLAS row sums (reduce_sum)",
    ("mean", "forward"): "BLAS row sums (reduce_sum), then / n",
    # -g x / y², computed as Σ(g x) / (y · -y) for a broadcast y, and (g x / y) / -y otherwise,
    # so that y² cannot overflow
    ("div", 1): "the derivative's order of operations (_div_vjp_y)",
    # Σ g·y for a broadcast factor above 8,192 elements: einsum, without the product array
    ("mul", 0): "einsum's summation order (mul_sum_to)",
    ("mul", 1): "einsum's summation order (mul_sum_to)",
}

# A kernel that deliberately differs from its textbook rule is compared with this form instead
# (and with the textbook where they agree, in its own test below): relu's rule is PyTorch's
# threshold, 0 where the input was <= 0, where the textbook's g · mask gives NaN for an infinite
# g and -0.0 for a negative one.
REFERENCE = {("relu", 0): lambda g, out, x: np.where(~(out <= 0), g, np.zeros((), g.dtype))}

# Awkward calls beyond the samples: 0-d tensors, broadcasting both ways, reductions over no axis.
EXTRA = {
    "sub": [(lambda x, y: x - y, [(), (2, 3)]), (lambda x, y: x - y, [(2, 1, 3), (4, 1)]),
            (lambda x, y: x - y, [(3, 5), ()])],
    "mul": [(lambda x, y: x * y, [(), ()]), (lambda x, y: x * y, [(2, 1, 3), (4, 1)]),
            (lambda x, y: x * y, [(4, 1), (4, 3)]),
            (lambda x, y: x * y, [(2, 96, 50), (96, 1)])],  # > 8192 elements: mul_sum_to
    "div": [(lambda x, y: x / y, [(), (2, 3)]), (lambda x, y: x / y, [(2, 3), ()]),
            (lambda x, y: x / y, [(5, 1), (1, 4)])],
    "neg": [(lambda x: -x, [()])],
    "pow_scalar": [(lambda x: x ** 2, [()]), (lambda x: x ** 2.0, [(2, 3, 5)]),
                   (lambda x: x ** 0, [(3, 2)]), (lambda x: x ** 3, [(4,)]),
                   (lambda x: (x - x.mean(axis=0, keepdims=True)) ** 2, [(6, 3)])],
    "exp": [(lambda x: x.exp(), [()])],
    "relu": [(lambda x: x.relu(), [()]), (lambda x: x.relu(), [(3, 130)]),
             (lambda x: x.relu(), [(2, 64)])],
    "sigmoid": [(lambda x: x.sigmoid(), [()]), (lambda x: x.sigmoid(), [(2, 3, 4)])],
    "tanh": [(lambda x: x.tanh(), [()])],
    "matmul": [(lambda x, y: x @ y.T, [(3, 4), (5, 4)]),  # y F-ordered: the other layout path
               (lambda x, y: x @ y, [(2, 3, 4), (2, 4, 2)])],
    "sum": [(lambda x: x.sum(), [()]), (lambda x: x.sum(axis=(0, 1)), [(3, 2, 4)]),
            (lambda x: x.sum(axis=0, keepdims=True), [(5, 1, 4)]),
            (lambda x: x.sum(axis=1), [(3, 5)]), (lambda x: x.sum(axis=()), [(3,)])],
    "mean": [(lambda x: x.mean(), [()]), (lambda x: x.mean(axis=(0, 2)), [(3, 2, 4)]),
             (lambda x: x.mean(axis=0), [(7, 3)]), (lambda x: x.mean(axis=()), [(3,)])],
    "max": [(lambda x: x.max(), [()]), (lambda x: x.max(axis=0, keepdims=True), [(4, 3)])],
    "transpose": [(lambda x: x.T, [(3, 4)]), (lambda x: x.transpose(), [()]),
                  (lambda x: x.transpose(1, 2, 0), [(2, 3, 4)])],
}


def _calls(op, dtype, rng):
    """(arrays, attrs, out shape) of every call of ``op`` in its samples and extra cases."""
    fns = [(s.fn, make_inputs(s, rng, dtype)) for s in SAMPLES[op.name]]
    fns += [(fn, [np.asarray(rng.standard_normal(s), dtype) for s in shapes])
            for fn, shapes in EXTRA.get(op.name, [])]
    calls = []
    for fn, arrays in fns:
        xs = [Tensor(a, requires_grad=True) for a in arrays]
        with keep_values():
            y = fn(*xs)
        calls += [([a.data for a in v.args], v.attrs, v.shape)
                  for v in toposort(y) if is_node(v) and v.op is op]
    assert calls, f"no call of {op.name}"
    return calls


# ---- the same values in other memory layouts and with special values ----

def _fortran(a):
    return np.array(a, order="F")  # (np.asfortranarray makes a 0-d array 1-d)


def _c_order(a):
    return np.array(a, order="C")


def _reversed(a):
    # negative strides on every axis, the same values
    if a.ndim == 0:
        return np.array(a)
    flipped = a[(slice(None, None, -1),) * a.ndim].copy()
    return flipped[(slice(None, None, -1),) * a.ndim]


def _strided(a):
    # every other element of a twice-as-long last axis
    if a.ndim == 0:
        return np.array(a)
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


LAYOUTS = {"C": _c_order, "F": _fortran, "reversed": _reversed, "strided": _strided}


def _specials(dtype, huge=True):
    fi = np.finfo(dtype)
    values = [0.0, -0.0, np.inf, -np.inf, np.nan, fi.smallest_subnormal, -fi.smallest_subnormal,
              fi.tiny, 1.0, -2.5]
    return values + ([fi.max, -fi.max / 3] if huge else [])


def _spoil(a, rng, huge=True):
    """A copy of ``a`` with about half its entries replaced by special values."""
    a = np.array(a)
    flat = a.reshape(-1)
    values = np.array(_specials(a.dtype, huge), a.dtype)
    hit = rng.random(flat.size) < 0.5
    flat[hit] = values[rng.integers(len(values), size=int(hit.sum()))]
    return a


def _same_bits(got, want):
    """Equal dtypes, shapes and bits (signed zeros, subnormals); a NaN matches any NaN."""
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    nan = np.isnan(want)
    return (np.isnan(got) == nan).all() and \
        np.ascontiguousarray(got[~nan]).tobytes() == np.ascontiguousarray(want[~nan]).tobytes()


def _assert_same(got, want, what):
    if not _same_bits(got, want):
        got, want = np.asarray(got), np.asarray(want)
        bad = [i for i in np.ndindex(want.shape) if not _same_bits(got[i], want[i])][:3]
        raise AssertionError(f"{what}: kernel {[got[i] for i in bad]} vs textbook "
                             f"{[want[i] for i in bad]} at {bad} (dtypes {got.dtype}, "
                             f"{want.dtype}, shapes {got.shape}, {want.shape})")


def _variants(arrays, rng, special):
    """The arrays in every layout, with ordinary or special values (one kind per call)."""
    for name, layout in LAYOUTS.items():
        values = [_spoil(a, rng) for a in arrays] if special else arrays
        yield name, [layout(a) for a in values]


def _gradient(shape, dtype, rng, special, kind):
    """An incoming gradient: fresh, a broadcast view (as sum's rule hands on), transposed, or
    signed zeros (a reduction of zeros must keep the textbook's sign)."""
    if kind == "zeros":
        g = np.zeros(shape, dtype)
        return np.negative(g, out=g, where=rng.random(shape) < 0.5) if special else g
    if kind == "broadcast" and len(shape) >= 1:
        small = rng.standard_normal((1,) + shape[1:]).astype(dtype)
        small = _spoil(small, rng) if special else small
        return np.broadcast_to(small, shape)
    g = np.asarray(rng.standard_normal(shape), dtype)
    g = _spoil(g, rng) if special else g
    return _fortran(g) if kind == "F" else g


GRADIENTS = ("C", "broadcast", "F", "zeros")


def _engine_gradient(pg, shape):
    """What the engine makes of a rule's result for an input of ``shape`` (one reduction for
    both forms: the reduction itself is compared in test_sum_to_reduction_is_numpys_sum)."""
    pg = np.asarray(pg)
    return dispatch.unbroadcast(pg, shape, "test") if pg.shape != shape else pg


@pytest.fixture(autouse=True)
def _quiet():
    with np.errstate(all="ignore"):  # inf - inf, 0 * inf: both forms warn alike
        yield


# ---- forward ----

def _tolerance(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", [op for op in OVERRIDDEN
                                if dispatch.kernel(op).forward is not op.forward],
                         ids=lambda op: op.name)
def test_forward_equals_the_textbook(op, dtype, rng):
    k = dispatch.kernel(op)
    for arrays, attrs, _ in _calls(op, dtype, rng):
        for special in (False, True):
            for layout, xs in _variants(arrays, rng, special):
                what = f"{op.name} forward {layout} special={special} {attrs}"
                got, want = k.forward(*xs, **attrs), op.forward(*xs, **attrs)
                if (op.name, "forward") not in ROUNDED:
                    _assert_same(got, want, what)
                elif not special:  # special values: the next test, without overflow
                    assert np.shape(got) == np.shape(want), what
                    assert np.asarray(got).dtype == np.asarray(want).dtype, what
                    np.testing.assert_allclose(got, want, rtol=_tolerance(dtype),
                                               atol=_tolerance(dtype), err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", [op for op in OVERRIDDEN if (op.name, "forward") in ROUNDED],
                         ids=lambda op: op.name)
def test_rounded_forwards_agree_on_special_values(op, dtype, rng):
    # Without huge values no summation order overflows: the special values must come out the
    # same (inf stays inf, NaN stays NaN, a sum of subnormals is not flushed to zero).
    k = dispatch.kernel(op)
    for arrays, attrs, _ in _calls(op, dtype, rng):
        for layout in LAYOUTS.values():
            xs = [layout(_spoil(a, rng, huge=False)) for a in arrays]
            got, want = k.forward(*xs, **attrs), op.forward(*xs, **attrs)
            np.testing.assert_allclose(got, want, rtol=_tolerance(dtype), atol=0, equal_nan=True,
                                       err_msg=f"{op.name} {layout} {attrs}")
    tiny = np.full((8, 3), np.finfo(dtype).smallest_subnormal, dtype)
    got = k.forward(tiny, axis=(0,), keepdims=False)
    want = op.forward(tiny, axis=(0,), keepdims=False)
    assert (got > 0).all() and (want > 0).all()  # BLAS does not flush subnormals


# ---- derivatives ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", [op for op in OVERRIDDEN
                                if any(a is not b for a, b in
                                       zip(dispatch.kernel(op).vjps, op.vjps))],
                         ids=lambda op: op.name)
def test_derivatives_equal_the_textbook(op, dtype, rng):
    k = dispatch.kernel(op)
    for arrays, attrs, shape in _calls(op, dtype, rng):
        for special in (False, True):
            for layout, xs in _variants(arrays, rng, special):
                out = op.forward(*xs, **attrs)
                for kind in GRADIENTS:
                    g = _gradient(shape, dtype, rng, special, kind)
                    for i, (fast, rule) in enumerate(zip(k.vjps, op.vjps)):
                        if fast is rule:
                            continue
                        rule = REFERENCE.get((op.name, i), rule)
                        what = f"{op.name} d/d input {i}, {layout}, g {kind}, special={special}"
                        got = _engine_gradient(fast(g, out, *xs, **attrs), xs[i].shape)
                        want = _engine_gradient(rule(g, out, *xs, **attrs), xs[i].shape)
                        if (op.name, i) not in ROUNDED:
                            _assert_same(got, want, what)
                        elif not special:
                            np.testing.assert_allclose(got, want, rtol=_tolerance(dtype),
                                                       atol=_tolerance(dtype), err_msg=what)


def test_div_derivative_for_y_does_not_overflow_where_the_textbook_does():
    # Why _div_vjp_y differs from -g x / (y y): y y overflows for |y| > 1e154 (float64), the
    # textbook then gives -0 instead of -g x / y² = -1e-100 here; the kernel keeps it.
    k = dispatch.kernel(ops.DIV)
    x, y, g = np.full((2, 3), 1e300), np.full((2, 3), 1e200), np.ones((2, 3))
    assert (ops.DIV.vjps[1](g, None, x, y) == 0).all()
    np.testing.assert_allclose(k.vjps[1](g, None, x, y), -1e-100, rtol=1e-15)
    yb = np.full((1, 3), 1e200)  # the broadcast branch: Σ g x first, then two divisions
    np.testing.assert_allclose(kernels.sum_to(k.vjps[1](g, None, x, yb), (1, 3)), -2e-100,
                               rtol=1e-15)


# ---- in-place forms (the jit replay writes results over arrays that die there) ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", [op for op in OVERRIDDEN if dispatch.kernel(op).into],
                         ids=lambda op: op.name)
def test_into_equals_the_textbook_forward(op, dtype, rng):
    into = dispatch.kernel(op).into
    checked = 0
    for arrays, attrs, _ in _calls(op, dtype, rng):
        for special in (False, True):
            for layout, xs in _variants(arrays, rng, special):
                want = np.asarray(op.forward(*xs, **attrs))
                # into a fresh array of the result's layout, and over every input that fits
                targets = [-1] + [i for i, a in enumerate(xs)
                                  if a.shape == want.shape and a.dtype == want.dtype]
                for i in targets:
                    args = [a.copy(order="K") for a in xs]
                    dst = np.empty_like(want) if i < 0 else args[i]
                    got = into(dst, *args, **attrs)
                    assert got is dst, (op.name, i)
                    _assert_same(got, want, f"{op.name} into {i} {layout} special={special}")
                    checked += 1
    assert checked


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", [op for op in OVERRIDDEN if any(dispatch.kernel(op).vjps_into)],
                         ids=lambda op: op.name)
def test_vjps_into_equal_the_textbook_rule(op, dtype, rng):
    k = dispatch.kernel(op)
    checked = 0
    for arrays, attrs, shape in _calls(op, dtype, rng):
        for special in (False, True):
            for layout, xs in _variants(arrays, rng, special):
                out = op.forward(*xs, **attrs)
                for kind in GRADIENTS:
                    g = _gradient(shape, dtype, rng, special, kind)
                    for i, (into, reads) in enumerate(zip(k.vjps_into, k.vjp_reads)):
                        if into is None:
                            continue
                        rule = REFERENCE.get((op.name, i), op.vjps[i])
                        want = np.asarray(rule(g, out, *xs, **attrs))
                        # into g (if it is writeable: a broadcast view never is) or an input
                        # the rule reads, where the shape and dtype fit
                        for j in [-1] + [j for j, r in enumerate(reads) if r]:
                            dst_of = g if j < 0 else xs[j]
                            if (dst_of.shape != want.shape or dst_of.dtype != want.dtype
                                    or (j < 0 and kind == "broadcast")):
                                continue
                            gg, args = g.copy(order="K"), [a.copy(order="K") for a in xs]
                            dst = gg if j < 0 else args[j]
                            got = into(dst, gg, out, *args, **attrs)
                            assert got is dst, (op.name, i, j)
                            _assert_same(got, want, f"{op.name} d/d input {i} into "
                                                    f"{'g' if j < 0 else j} {layout} g {kind} "
                                                    f"special={special}")
                            checked += 1
    assert checked


# ---- the engine's reductions ----

@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_to_reduction_is_numpys_sum(dtype, rng):
    # kernels.sum_to (the engine's broadcast reduction, BLAS row sums) against ops.sum_to
    # (numpy's sum): the same up to rounding (the order of the additions), also on specials.
    tol = _tolerance(dtype)
    for gshape, shape in [((5, 4), (4,)), ((5, 4), (1, 4)), ((2, 3, 4), (3, 1)),
                          ((2, 3, 4), ()), ((6, 1, 3), (1, 3)), ((3, 4), (3, 4))]:
        for special in (False, True):
            for layout in LAYOUTS.values():
                g = rng.standard_normal(gshape).astype(dtype)
                g = layout(_spoil(g, rng, huge=False) if special else g)
                got, want = kernels.sum_to(g, shape), ops.sum_to(g, shape)
                assert got.shape == want.shape == shape and got.dtype == want.dtype
                np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True)


def test_reductions_over_no_axis_never_write_into_their_input():
    # mean divides its sum in place: the sum over no axis must be a new array, not x itself
    x = np.arange(1.0, 4.0)
    for op in (ops.SUM, ops.MEAN):
        out = dispatch.kernel(op).forward(x, (), False)
        assert not np.shares_memory(out, x)
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])
    t = Tensor(x.copy())
    t.mean(axis=())
    np.testing.assert_array_equal(t.data, [1.0, 2.0, 3.0])


# ---- the layering of the core ----

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tinygrad_bn"
CORE = ["ops.py", "kernels.py", "dispatch.py", "autograd.py", "tensor.py", "optim.py",
        "nn/__init__.py", "nn/functional.py", "nn/layers.py", "nn/module.py"]
LAYERS_ABOVE = {"jit", "viz", "distributed", "gradcheck"}


def _imports(path):
    """The modules ``path`` imports, as absolute dotted names inside tinygrad_bn or as given."""
    module = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(module.parts[:-1])  # the package a relative import starts from
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names += [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("name", CORE)
def test_the_core_never_imports_the_layers_above_it(name):
    for imported in _imports(PACKAGE / name):
        parts = imported.split(".")
        if parts[0] == "tinygrad_bn":
            assert not LAYERS_ABOVE & set(parts[1:2]), f"{name} imports {imported}"


def test_the_textbook_imports_nothing_but_numpy():
    assert set(_imports(PACKAGE / "ops.py")) == {"numpy"}


def test_the_import_parser_sees_relative_imports():
    # the check above must be able to fail: a relative import of a layer is seen as one
    src = PACKAGE / "nn" / "functional.py"
    assert "tinygrad_bn.tensor" in _imports(src) and "tinygrad_bn.dispatch" in _imports(src)
    assert "tinygrad_bn.jit" in _imports(PACKAGE / "__init__.py")


# ---- relu's rule: PyTorch's threshold, not the textbook's product, at masked entries ----

@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_rule_gives_zero_where_the_input_was_not_positive(dtype, rng):
    # The textbook's g · [out > 0] makes inf · 0 = NaN (and -0.0 for a negative g) where the
    # input was <= 0; PyTorch's threshold_backward gives 0 there, and so must the kernel (the
    # one the eager pass and the jit run). Elsewhere both are g, bit for bit.
    k = dispatch.kernel(ops.RELU)
    for shape in [(), (7,), (3, 130), (2, 64)]:
        x = _spoil(np.asarray(rng.standard_normal(shape), dtype), rng)
        out = k.forward(x)
        for special in (False, True):
            g = _gradient(shape, dtype, rng, special, "C")
            got = np.asarray(k.vjps[0](g, out, x))
            keep = ~(out <= 0)
            want = np.where(keep, g, np.zeros((), dtype))
            _assert_same(got, want, f"relu rule {shape} special={special}")
            textbook = np.asarray(ops.RELU.vjps[0](g, out, x))
            _assert_same(got[keep], textbook[keep], "relu rule where the input was > 0")
            if k.vjps_into[0] is not None and np.ndim(g):
                gg = g.copy()
                _assert_same(k.vjps_into[0](gg, gg, out, x), want, "relu rule into g")


def test_relu_rule_matches_torch_for_infinite_and_nan_gradients():
    torch = pytest.importorskip("torch")
    x = np.array([-1.0, 0.0, -0.0, 2.0, np.nan, 3.0])
    g = np.array([np.inf, -np.inf, np.nan, np.inf, 1.0, np.nan])
    t = Tensor(x, requires_grad=True)
    t.relu().backward(g)
    tx = torch.tensor(x, requires_grad=True)
    torch.relu(tx).backward(torch.tensor(g))
    np.testing.assert_array_equal(t.grad.data, tx.grad.numpy())
