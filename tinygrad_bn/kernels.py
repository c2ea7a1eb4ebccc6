"""Fast forms of some rules of the op table, registered as overrides of ``ops.py``'s textbook forms.

``ops.py`` says what each primitive computes; this module says how to compute some of them
faster on numpy arrays (the seam, ``dispatch.py``, runs these on arrays and the textbook forms on
Tensors, for higher-order gradients). Every override is tested equal to its textbook form, bit
for bit unless its comment says otherwise (``tests/test_kernels.py``); why each one pays is
measured in ``benchmarks/``.

``KERNELS[op]`` holds, per primitive, any of:

* ``forward``: the forward on arrays;
* ``vjps``: the derivatives on arrays (None keeps the textbook one);
* ``into``: ``into(out, *arrays, **attrs)``, the forward written into an existing array (a
  numpy ufunc forward has it implied): a ``jit`` replay writes a result over an intermediate
  that dies there, as hand-written numpy does ``z += b``;
* ``vjps_into``: per derivative, None or the same rule writing into ``dst`` (``g`` or an input it
  reads, which nothing needs afterwards), for the same reason;
* ``vjp_reads``: per derivative, which inputs it reads (a replay lets the others go early).
"""
import math

import numpy as np

from . import ops


class Kernel:
    """The fast forms of one primitive (see the module docstring); None keeps the textbook."""

    __slots__ = ("forward", "vjps", "into", "vjps_into", "vjp_reads")

    def __init__(self, op, forward=None, vjps=None, into=None, vjps_into=None, vjp_reads=None):
        n = len(op.vjps)
        self.forward = forward or op.forward
        self.vjps = tuple(fast or rule for fast, rule in zip(vjps or (None,) * n, op.vjps))
        if into is None and is_elementwise_ufunc(self.forward):
            into = _ufunc_into(self.forward)
        self.into = into
        self.vjps_into = vjps_into or (None,) * n
        names = ("x", "y")[:n]
        reads = vjp_reads or (op.reads,) * n
        self.vjp_reads = tuple(tuple(name in r for name in names) for r in reads)


def is_elementwise_ufunc(f):
    """A numpy ufunc without a core signature (np.add, not np.matmul): it computes the same
    values into any array given as ``out``."""
    return type(f) is np.ufunc and f.signature is None


def _ufunc_into(ufunc):
    def into(out, *arrays):
        return ufunc(*arrays, out=out)
    return into


# ---- broadcasting and batch sums ----

def expand(g, shape):
    """np.broadcast_to(g, shape) as a direct zero-stride view (broadcast_to costs ~2 µs)."""
    if type(g) is np.ndarray and g.flags.c_contiguous:
        key = (g.shape, g.itemsize, shape)
        strides = _EXPAND_STRIDES.get(key)
        if strides is None:
            strides = _cached(_EXPAND_STRIDES, key, _expand_strides(g, shape))
        if strides:
            view = np.ndarray(shape, g.dtype, g, 0, strides)
            view.flags.writeable = False
            return view
    return np.broadcast_to(g, shape)


def _expand_strides(g, shape):
    """The strides of a C-contiguous ``g`` broadcast to ``shape`` (same ndim), else ()."""
    if g.ndim != len(shape) or not all(n == 1 or n == m for n, m in zip(g.shape, shape)):
        return ()
    return tuple(0 if n == 1 else s for n, s in zip(g.shape, g.strides))


def compact(g):
    """The array a broadcast view ``g`` repeats (its zero-stride axes cut to length 1), or
    None if ``g`` is not one."""
    if type(g) is not np.ndarray:
        return None
    index = _COMPACT_INDEX.get(g.strides)
    if index is None:  # () for an array without zero strides
        index = _cached(_COMPACT_INDEX, g.strides, tuple(
            slice(0, 1) if s == 0 else slice(None) for s in g.strides) if 0 in g.strides else ())
    return g[index] if index else None


def sum_to(g, shape):
    """``ops.sum_to`` for arrays: one cached plan per shape pair, batch sums as ones @ g."""
    if g.shape == shape:
        return g
    key = (g.shape, shape, g.dtype)
    plan = _SUM_TO_PLANS.get(key)
    if plan is None:
        axes, keepdims = _broadcast_plan(g.shape, shape)
        plan = _cached(_SUM_TO_PLANS, key,
                       (axes, keepdims, _row_sum_plan(g.shape, axes, shape, g.dtype)))
    axes, keepdims, rows = plan
    if rows and g.flags.c_contiguous:
        return _row_sum(g, rows)
    if axes:
        g = np.add.reduce(g, axes, None, None, keepdims)
    if g.shape != shape and g.size == math.prod(shape):
        g = g.reshape(shape)
    return g


def reduce_sum(x, axis, keepdims):
    """``np.add.reduce(x, axis, keepdims=keepdims)`` for a normalized ``axis`` tuple.

    Summing over the leading axes of a C-contiguous float array (a batch axis: batch norm's
    statistics, a bias's gradient) is a vector-matrix product, ones @ x: BLAS does it about twice
    as fast as numpy's reduction across rows, and in float32 more accurately (numpy adds one row
    after another; BLAS keeps several partial sums). Not bit for bit numpy's sum.
    """
    if type(x) is np.ndarray:
        key = (x.shape, axis, keepdims, x.dtype)
        rows = _ROW_SUM_PLANS.get(key)
        if rows is None:
            out_shape = ops.keepdims_shape(x.shape, axis) if keepdims else \
                tuple(n for i, n in enumerate(x.shape) if i not in axis)
            rows = _cached(_ROW_SUM_PLANS, key, _row_sum_plan(x.shape, axis, out_shape, x.dtype))
        if rows and x.flags.c_contiguous:
            return _row_sum(x, rows)
    return np.add.reduce(x, axis, None, None, keepdims)


def _row_sum(x, plan):
    ones, rows_shape, out_shape = plan
    total = np.dot(ones, x.reshape(rows_shape))
    return total if out_shape is None else total.reshape(out_shape)


def _row_sum_plan(shape, axis, out_shape, dtype):
    """(ones, 2-D shape, result shape) if summing ``shape`` over ``axis`` into ``out_shape`` is
    ones @ x, else ().

    The result shape is None where the product has it already: (C,), or (1, C) from a (1, rows)
    row of ones. Then the sum is an array of its own, not a view (a jit replay may reuse it).
    """
    k = len(axis)
    rows, cols = math.prod(shape[:k]), math.prod(shape[k:])
    if not (0 < k < len(shape) and axis[-1] == k - 1 and 1 < rows <= _MAX_ROWS and cols
            and math.prod(out_shape) == cols and dtype in (np.float32, np.float64)):
        return ()
    ones = _filled(1, rows, dtype)
    if out_shape == (cols,):
        out_shape = None
    elif out_shape == (1, cols):
        ones, out_shape = ones.reshape(1, rows), None
    return ones, (rows, cols), out_shape


# Batches, not datasets: beyond this many rows numpy reduces. The plans' ones are views of one
# vector per dtype (see _filled), so they stay below 2 x 512 KB however many shapes are cached.
_MAX_ROWS = 1 << 16


def _filled(value, n, dtype):
    """A read-only view of n copies of ``value`` (n <= _MAX_ROWS), cut from one vector per
    (value, dtype) that grows by doubling: the memory is that of the longest asked for."""
    vector = _FILLED.get((value, dtype))
    if vector is None or vector.size < n:
        size = min(max(n, 2 * (0 if vector is None else vector.size), 256), _MAX_ROWS)
        vector = np.full(size, value, dtype)
        vector.flags.writeable = False
        _FILLED[(value, dtype)] = vector
    return vector[:n]


_FILLED = {}


def mul_sum_to(a, b, shape):
    """``sum_to(a * b, shape)`` for two arrays of the same shape; above 8,192 elements in one
    pass without the full-size product (einsum): the gradient of a broadcast factor such as γ.
    einsum adds in its own order, so that sum is not bit for bit sum_to's (rounding only)."""
    if a.size <= 8192 or a.shape != b.shape or a.dtype != b.dtype:
        return sum_to(a * b, shape)
    plan = _EINSUM_PLANS.get((a.shape, shape))
    if plan is None:
        axes, _ = _broadcast_plan(a.shape, shape)
        letters = "abcdefghijklmnopqrstuvwxyz"[:a.ndim]
        kept = "".join(c for i, c in enumerate(letters) if i not in axes)
        plan = _cached(_EINSUM_PLANS, (a.shape, shape), f"{letters},{letters}->{kept}")
    out = np.einsum(plan, a, b)
    return out.reshape(shape) if out.shape != shape else out


# (gradient shape, operand shape) -> plan: a training loop meets the same few shapes.
_BROADCAST_PLANS, _EINSUM_PLANS, _EXPAND_STRIDES = {}, {}, {}
_ROW_SUM_PLANS, _SUM_TO_PLANS, _COMPACT_INDEX = {}, {}, {}


def _cached(cache, key, value):
    if len(cache) > 4096:  # many distinct shapes (varying batch sizes): start over
        cache.clear()
    cache[key] = value
    return value


def _broadcast_plan(gshape, shape):
    """(axes to sum, keepdims) taking a gradient of ``gshape`` to an operand of ``shape``."""
    plan = _BROADCAST_PLANS.get((gshape, shape))
    if plan is None:
        extra = len(gshape) - len(shape)
        if extra < 0:
            plan = (), False
        else:
            inner = tuple(i + extra for i, n in enumerate(shape)
                          if n == 1 and gshape[i + extra] != 1)
            # Only leading axes to drop: no keepdims, and the result already has ``shape``.
            plan = tuple(range(extra)) + inner, bool(inner)
        _cached(_BROADCAST_PLANS, (gshape, shape), plan)
    return plan


def _times(g, a, shape):
    """g * a for an operand of ``shape``; for a broadcast operand (γ) summed down in one pass."""
    if g.shape != shape and a.shape == g.shape:
        return mul_sum_to(g, a, shape)
    return g * a


# ---- the overrides, in the op table's order ----

def _div_vjp_y(g, out, x, y):
    # -g x / y². A broadcast divisor (batch norm's (1, C) √(σ²+ε)): Σ g·x first, then divided
    # by the small y twice. Either way divided twice instead of squared, so y² cannot overflow.
    if y.shape != g.shape:
        grad = mul_sum_to(g, x, y.shape) / y
        grad /= -y
        return grad
    grad = g * x
    grad /= y
    grad /= -y
    return grad


def _pow_scalar_vjp(g, out, x, exponent):
    # The square, (g·2)·x as the textbook multiplies (2x·g differs where 2x or 2g overflows),
    # in one fresh array; for a broadcast g (mean's gradient in the variance) its small array is
    # doubled instead: one full pass, not two, and the same numbers.
    if exponent == 2:
        small = compact(g)
        if small is not None and small.ndim == x.ndim:
            return x * (small * 2)
        grad = g * 2
        grad *= x
        return grad
    return ops.POW_SCALAR.vjps[0](g, out, x, exponent)


def _pow_scalar_vjp_into(dst, g, out, x, exponent):
    # The same products as _pow_scalar_vjp, each operand computed before dst (g or x) is written.
    if exponent == 2:
        small = compact(g)
        if small is not None and small.ndim == x.ndim:
            return np.multiply(x, small * 2, out=dst)
        return np.multiply(g * 2, x, out=dst)
    if exponent == 0:
        return np.multiply(g, 0, out=dst)
    return np.multiply(g * exponent, x ** (exponent - 1), out=dst)


def _relu(x, out=None):
    # Against a vector of zeros, not the scalar 0: numpy's fast loop for maximum needs both
    # operands to advance. Only for rows long enough to pay for the loop's restart at every row.
    if type(x) is np.ndarray and x.ndim:
        n, shortest = x.shape[-1], _RELU_SHORTEST_ROW.get(x.dtype)
        if shortest is not None and shortest <= n <= _MAX_ROWS:
            return np.maximum(x, _filled(0, n, x.dtype), out=out)
    return np.maximum(x, 0, out=out)


_RELU_SHORTEST_ROW = {np.dtype(np.float32): 64, np.dtype(np.float64): 128}


def _relu_keep(out):
    # ~(out <= 0), the textbook mask, negated in the comparison's own memory
    keep = np.less_equal(out, 0)
    if type(keep) is not np.ndarray:  # 0-d: a numpy bool
        return ~keep
    return np.logical_not(keep, out=keep)


def _relu_vjp(g, out, x):
    # PyTorch's threshold_backward: g where the input was > 0 (or NaN), exactly +0 elsewhere,
    # also for an infinite or NaN g (the textbook's g · mask makes those NaN, and a negative g
    # -0.0). g's bits, read as unsigned integers, times the 0/1 mask are kept or zeroed: the
    # same cost as the float product (np.where costs 10x).
    keep = _relu_keep(out)
    bits = _BITS.get(g.dtype) if type(g) is np.ndarray else None
    if bits is None:
        return np.where(keep, g, g.dtype.type(0))
    return np.multiply(g.view(bits), keep, dtype=bits).view(g.dtype)


def _relu_vjp_into(dst, g, out, x):
    bits = _BITS[dst.dtype]
    np.multiply(g.view(bits), _relu_keep(out), out=dst.view(bits), dtype=bits)
    return dst


_BITS = {np.dtype(np.float16): np.uint16, np.dtype(np.float32): np.uint32,
         np.dtype(np.float64): np.uint64}


def _sigmoid(x):
    # 1 / (1 + exp(-x)) computed in one fresh array
    if type(x) is np.ndarray and x.ndim and x.dtype.kind == "f":  # (0-d gives a scalar)
        return _sigmoid_of_negated(np.negative(x))
    return ops.SIGMOID.forward(x)


def _sigmoid_of_negated(e):
    # 1 / (1 + exp(e)) for e = -x, computed in e's memory
    with np.errstate(over="ignore"):
        np.exp(e, out=e)
    e += 1
    return np.reciprocal(e, out=e)


def _sigmoid_vjp(g, out, x):
    grad = 1 - out
    grad *= out
    grad *= g
    return grad


def _tanh_vjp(g, out, x):
    grad = 1 - out * out
    grad *= g
    return grad


def _matmul_vjp_y(g, out, x, y):
    # The gradient takes the memory layout of y. For Linear's x @ W.T, y is W's transpose:
    # computing (g^T x)^T hands W a C-ordered gradient, so the optimizer does not stride
    # through a transposed array.
    if y.ndim == 2 and y.flags.f_contiguous and not y.flags.c_contiguous:
        return ops.swap_last(ops.swap_last(g) @ x)
    return ops.swap_last(x) @ g


def _mean(x, axis, keepdims):
    total = reduce_sum(x, axis, keepdims)
    n = ops.count(x.shape, axis)
    if type(total) is np.ndarray:
        total /= n
        return total
    return total / n


def _inverse_permutation(axes):
    # Plain Python: np.argsort costs microseconds of array conversion for a 2-tuple.
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a] = i
    return tuple(inverse)


def _register(*kernels):
    return {k[0]: Kernel(*k[:1], **k[1]) for k in kernels}


def _sub_vjp_y(g, out, x, y):
    # -g summed to y's shape: the sum first, on the small result. A sum that is exactly zero is
    # +0, as the textbook's sum of -g is, not -(+0): hence 0 - sum where a sum was taken.
    total = sum_to(g, y.shape)
    return -total if total is g else 0 - total


KERNELS = _register(
    (ops.SUB, dict(vjps=(None, _sub_vjp_y))),
    (ops.MUL, dict(vjps=(lambda g, out, x, y: _times(g, y, x.shape),
                         lambda g, out, x, y: _times(g, x, y.shape)),
                   vjp_reads=(("y",), ("x",)),
                   vjps_into=(lambda dst, g, out, x, y: np.multiply(g, y, out=dst),
                              lambda dst, g, out, x, y: np.multiply(g, x, out=dst)))),
    (ops.DIV, dict(vjps=(None, _div_vjp_y), vjp_reads=(("y",), ("x", "y")),
                   vjps_into=(lambda dst, g, out, x, y: np.divide(g, y, out=dst), None))),
    (ops.NEG, dict(vjps_into=(lambda dst, g, out, x: np.negative(g, out=dst),))),
    (ops.POW_SCALAR, dict(vjps=(_pow_scalar_vjp,), vjps_into=(_pow_scalar_vjp_into,))),
    (ops.EXP, dict(vjps_into=(lambda dst, g, out, x: np.multiply(g, out, out=dst),))),
    (ops.RELU, dict(forward=_relu, into=lambda out, x: _relu(x, out), vjps=(_relu_vjp,),
                    vjps_into=(_relu_vjp_into,))),
    (ops.SIGMOID, dict(forward=_sigmoid, vjps=(_sigmoid_vjp,),
                       into=lambda out, x: _sigmoid_of_negated(np.negative(x, out=out)))),
    (ops.TANH, dict(vjps=(_tanh_vjp,))),
    (ops.MATMUL, dict(vjps=(None, _matmul_vjp_y))),
    (ops.SUM, dict(forward=reduce_sum, vjps=(
        lambda g, out, x, axis, keepdims: expand(ops.unreduce(g, x, axis, keepdims), x.shape),))),
    (ops.MEAN, dict(forward=_mean, vjps=(
        lambda g, out, x, axis, keepdims: expand(
            ops.unreduce(g, x, axis, keepdims) / ops.count(x.shape, axis), x.shape),))),
    (ops.MAX, dict(forward=lambda x, axis, keepdims: x.max(axis=axis, keepdims=keepdims))),
    (ops.TRANSPOSE, dict(vjps=(
        lambda g, out, x, axes: g.transpose(_inverse_permutation(axes)),))),
)
