"""The op table: every differentiable primitive, its numpy forward and its derivative, side by side.

Each primitive is one block: ``Op(name, forward, *vjps, reads=...)``.

* ``forward(*arrays, **attrs) -> array`` runs on numpy arrays.
* one derivative per input, each ``vjp(g, out, *inputs, **attrs) -> gradient for that input``:
  ``g`` is the gradient of the output, ``out`` the forward result. The engine calls only the
  ones whose input needs a gradient (so ``x @ W`` with a data ``x`` never computes ``g @ W``).
* ``reads``: which of ``x``, ``y`` (the inputs, in order) and ``out`` the derivatives read.
  The graph keeps only those arrays alive until backward; an input that is not read reaches
  the rule as a stand-in with just ``.shape``. So ``mean((x - mu)**2)`` does not hold on to
  the full-size square, only to what the chain rule needs (PyTorch's saved tensors).
* ``into`` (optional): ``into(out, *arrays, **attrs)`` computes the forward into an existing
  array, bit for bit what ``forward`` returns; a numpy ufunc forward (``np.add``) has it
  implied (``out=``). A ``jit`` replay uses it to write a result over an intermediate that dies
  there (``(x @ W.T) + b`` into the matmul's result), as hand-written numpy does ``z += b``.
* ``vjp_reads`` (optional): per derivative, the inputs that one reads (default: all of
  ``reads``). ``x * y``'s derivative for x reads only y: a replay lets x go before it runs.
* ``vjps_into`` (optional): per derivative, None or ``into(dst, g, out, *inputs, **attrs)``,
  the same rule writing its result into ``dst``, bit for bit. ``dst`` is ``g`` or an input the
  rule reads, of the result's shape and dtype, that nothing needs afterwards: a replay uses it
  when such an array dies at the rule, as hand-written numpy does ``dz *= gamma``.

A backward rule may return a gradient that is only *broadcastable* to its input's shape: the
engine reduces broadcast axes once, for every op (``autograd.unbroadcast``). Rules use only
operations numpy arrays and ``Tensor`` share (arithmetic, ``@``, comparisons, ``.sum``,
``.reshape``, ``.transpose``) plus the helpers below, so the same rule can run on Tensors to
build a graph of the backward pass. This module knows numpy, not ``Tensor``.

Everything not listed here (var, softmax, log_softmax, batch_norm, cross_entropy) is composed
from these primitives in ``tensor.py`` / ``nn/functional.py`` and has no derivative of its own.
"""
import math

import numpy as np


class Op:
    """A primitive: name, numpy forward, one derivative (vjp) per input, and what they read."""

    __slots__ = ("name", "forward", "vjps", "reads", "reads_inputs", "reads_out", "reads_all",
                 "reads_none", "into", "vjps_into", "vjp_reads")

    def __init__(self, name, forward, *vjps, reads=None, into=None, vjps_into=None,
                 vjp_reads=None):
        if into is None and is_elementwise_ufunc(forward):
            into = _ufunc_into(forward)
        self.name, self.forward, self.vjps, self.into = name, forward, vjps, into
        self.vjps_into = vjps_into or (None,) * len(vjps)
        if len(self.vjps_into) != len(vjps):
            raise ValueError(f"Op {name}: {len(self.vjps_into)} vjps_into for {len(vjps)} "
                             f"derivatives")
        names = ("x", "y")[:len(vjps)]
        if reads is None:  # undeclared: keep everything, always correct
            reads = names + ("out",)
        unknown = set(reads) - set(names) - {"out"}
        if unknown:
            raise ValueError(f"Op {name}: reads names {sorted(unknown)}; its derivatives can "
                             f"read {names + ('out',)}")
        self.reads = tuple(reads)
        self.reads_inputs = tuple(n in reads for n in names)
        if vjp_reads is None:
            vjp_reads = (reads,) * len(vjps)
        if len(vjp_reads) != len(vjps) or any(set(r) - set(reads) for r in vjp_reads):
            raise ValueError(f"Op {name}: vjp_reads {vjp_reads} must give, per derivative, a "
                             f"part of reads {self.reads}")
        # per derivative, per input: does that derivative read it
        self.vjp_reads = tuple(tuple(n in r for n in names) for r in vjp_reads)
        self.reads_out = "out" in reads
        self.reads_all, self.reads_none = all(self.reads_inputs), not any(self.reads_inputs)

    def __repr__(self):
        return f"Op({self.name})"


def is_elementwise_ufunc(f):
    """A numpy ufunc without a core signature (np.add, not np.matmul): it computes the same
    values into any array given as ``out``."""
    return type(f) is np.ufunc and f.signature is None


def _ufunc_into(ufunc):
    def into(out, *arrays):
        return ufunc(*arrays, out=out)
    return into


# ---- helpers shared by the rules (duck-typed: ndarray, or any object with the same method) ----

def expand(g, shape):
    """Broadcast ``g`` to ``shape`` without copying (a read-only view for arrays)."""
    if type(g) is not np.ndarray:
        if isinstance(g, np.generic):  # the gradient of a 0-d tensor's reduction, as a scalar
            return np.broadcast_to(g, shape)
        return g.expand(shape)
    if g.flags.c_contiguous:
        # np.broadcast_to costs ~2 µs of Python; a zero-stride view of the same buffer is direct.
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
    None if ``g`` is not one (or not an ndarray)."""
    if type(g) is not np.ndarray:
        return None
    index = _COMPACT_INDEX.get(g.strides)
    if index is None:  # () for an array without zero strides
        index = _cached(_COMPACT_INDEX, g.strides, tuple(
            slice(0, 1) if s == 0 else slice(None) for s in g.strides) if 0 in g.strides else ())
    return g[index] if index else None


def scatter_add(g, index, shape):
    """Zeros of ``shape`` with ``g`` added at ``index``; repeated indices accumulate."""
    if isinstance(g, (np.ndarray, np.generic)):  # (numpy gives scalars for 0-d arithmetic)
        out = np.zeros(shape, dtype=g.dtype)
        np.add.at(out, index, g)
        return out
    return g.scatter_add(index, shape)


def sum_to(g, shape):
    """``g`` summed over the axes broadcasting added to an operand of ``shape``.

    The engine applies it to every gradient whose shape differs from its input's; a rule may
    apply it itself when reducing first saves work (``-sum_to(g, shape)`` negates a vector,
    not the full-size gradient).
    """
    if g.shape == shape:
        return g
    if type(g) is np.ndarray:
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
    else:  # a Tensor (a recorded backward): its own method
        axes, keepdims = _broadcast_plan(g.shape, shape)
        if axes:
            g = g.sum(axis=axes, keepdims=keepdims)
    if g.shape != shape and g.size == math.prod(shape):
        g = g.reshape(shape)
    return g


def reduce_sum(x, axis, keepdims):
    """``np.add.reduce(x, axis, keepdims=keepdims)`` for a normalized ``axis`` tuple.

    Summing over the leading axes of a C-contiguous float array (a batch axis: batch norm's
    statistics, a bias's gradient) is a vector-matrix product, ones @ x: BLAS does it about twice
    as fast as numpy's reduction across rows, at every size from (60, 100) to (4096, 4096) in
    float32 and float64 (measured), and 2-3x more accurately in float32 (numpy adds one row
    after another; BLAS keeps several partial sums).
    """
    if type(x) is np.ndarray:
        key = (x.shape, axis, keepdims, x.dtype)
        rows = _ROW_SUM_PLANS.get(key)
        if rows is None:
            out_shape = keepdims_shape(x.shape, axis) if keepdims else \
                tuple(n for i, n in enumerate(x.shape) if i not in axis)
            rows = _cached(_ROW_SUM_PLANS, key, _row_sum_plan(x.shape, axis, out_shape, x.dtype))
        if rows and x.flags.c_contiguous:
            return _row_sum(x, rows)
    # ufunc.reduce skips the Python layer of ndarray.sum
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
    """``sum_to(a * b, shape)`` for two arrays of the same shape, in one pass without the
    full-size product (einsum): the gradient of a broadcast factor such as batch norm's γ."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray or a.shape != b.shape:
        return sum_to(a * b, shape)
    if a.size <= 8192 and a.dtype == b.dtype:
        # Small (batch norm at batch 60): the product and reduce_sum's BLAS row sum beat
        # einsum (2.0 vs 2.9 µs at (60, 100), measured), for a temporary of at most 64 KB.
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


def swap_last(a):
    """Swap the last two axes (the matrix transpose of a stack of matrices)."""
    axes = tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2)
    return a.transpose(axes)


def normalize_axis(axis, ndim):
    """``axis`` (None, int or tuple, negatives allowed) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and 0 <= axis < ndim:
        return (axis,)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    n = max(ndim, 1)  # a 0-d tensor takes axis 0 or -1 and reduces over nothing (PyTorch)
    for a in axes:
        if not -n <= a < n:
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(int(a) % n)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis} repeats an axis")
    return tuple(sorted(out)) if ndim else ()


def keepdims_shape(shape, axis):
    """The shape a reduction over ``axis`` (a normalized tuple) has with keepdims=True."""
    return tuple(1 if i in axis else n for i, n in enumerate(shape))


def _reduced_grad(g, x, axis, keepdims):
    """Reinsert the reduced axes into ``g`` so it broadcasts against ``x``."""
    return g if keepdims else g.reshape(keepdims_shape(x.shape, axis))


# ---- elementwise binary: z = f(x, y) with numpy broadcasting ----

ADD = Op("add", np.add,
         lambda g, out, x, y: g,
         lambda g, out, x, y: g,
         reads=())

# Negating after the reduction: for a broadcast y (batch norm's μ) a vector, not a full array.
SUB = Op("sub", np.subtract,
         lambda g, out, x, y: g,
         lambda g, out, x, y: -sum_to(g, y.shape),
         reads=())

def _times(g, a, shape):
    # g * a for an operand of ``shape``; if that operand was broadcast (γ) and ``a`` is full
    # size, the product is summed down in one pass without its full-size temporary.
    if g.shape != shape and a.shape == g.shape:
        return mul_sum_to(g, a, shape)
    return g * a


MUL = Op("mul", np.multiply,
         lambda g, out, x, y: _times(g, y, x.shape),
         lambda g, out, x, y: _times(g, x, y.shape),
         reads=("x", "y"), vjp_reads=(("y",), ("x",)),
         vjps_into=(lambda dst, g, out, x, y: np.multiply(g, y, out=dst),
                    lambda dst, g, out, x, y: np.multiply(g, x, out=dst)))

def _div_vjp_y(g, out, x, y):
    # d(x/y)/dy = -x/y². Written with x, not with the output x/y: then the graph need not keep
    # x/y (batch norm's x̂) alive until this rule runs, one full-size array less at the peak.
    # A broadcast divisor (batch norm's (1, C) √(σ²+ε)): Σ g·x in one pass, then a vector
    # product. A full-size divisor is divided twice instead of squared, so y² cannot overflow;
    # on Tensors the in-place operators fall back to recorded ones, so the rule still records.
    if y.shape != g.shape:
        return mul_sum_to(g, x, y.shape) / (y * -y)
    grad = g * x
    grad /= y
    grad /= -y
    return grad


DIV = Op("div", np.true_divide,
         lambda g, out, x, y: g / y,
         _div_vjp_y,
         reads=("x", "y"), vjp_reads=(("y",), ("x", "y")),
         vjps_into=(lambda dst, g, out, x, y: np.divide(g, y, out=dst), None))

# z = x ** y with a tensor exponent; dz/dy = z log x, taken as 0 where x <= 0.
POW = Op("pow", lambda x, y: x ** y,
         lambda g, out, x, y: g * y * x ** (y - 1),
         lambda g, out, x, y: g * out * log_or_zero(x),
         reads=("x", "y", "out"))


def log_or_zero(x):
    """log(x) where x > 0, else 0."""
    if isinstance(x, np.ndarray):
        return np.log(np.where(x > 0, x, 1))
    return (x * (x > 0) + (x <= 0)).log()


# ---- elementwise unary ----

NEG = Op("neg", np.negative,
         lambda g, out, x: -g,
         reads=(),
         vjps_into=(lambda dst, g, out, x: np.negative(g, out=dst),))

# z = x ** p for a constant p, kept as an attribute so the graph can show it.
def _pow_scalar_vjp(g, out, x, exponent):
    # p x^(p-1) g, with the common square as 2x g; the fresh 2x takes g in place (one
    # full-size temporary fewer; on Tensors *= falls back to a recorded product). When g is a
    # broadcast view (mean's gradient, in batch norm's variance) its small array is doubled
    # instead: one full pass, not two, and the same numbers (doubling is exact).
    if exponent == 2:
        small = compact(g)
        if small is not None and small.ndim == x.ndim:
            return x * (small * 2)
        grad = x * 2
        grad *= g
        return grad
    return g * exponent * x ** (exponent - 1)


def _pow_scalar_vjp_into(dst, g, out, x, exponent):
    # The same products as _pow_scalar_vjp, each operand computed before dst (g or x) is written.
    if exponent == 2:
        small = compact(g)
        if small is not None and small.ndim == x.ndim:
            return np.multiply(x, small * 2, out=dst)
        return np.multiply(x * 2, g, out=dst)
    return np.multiply(g * exponent, x ** (exponent - 1), out=dst)


POW_SCALAR = Op("pow_scalar", lambda x, exponent: x ** exponent,
                _pow_scalar_vjp,
                reads=("x",), vjps_into=(_pow_scalar_vjp_into,))

SQRT = Op("sqrt", np.sqrt,
          lambda g, out, x: g / (out * 2),
          reads=("out",))

EXP = Op("exp", np.exp,
         lambda g, out, x: g * out,
         reads=("out",), vjps_into=(lambda dst, g, out, x: np.multiply(g, out, out=dst),))

LOG = Op("log", np.log,
         lambda g, out, x: g / x,
         reads=("x",))

# relu'(0) is taken as 0, as PyTorch does. The rule reads the output (out > 0 exactly where
# x > 0), which the next layer keeps anyway: the input need not stay alive for backward.
def _relu(x, out=None):
    # Against a vector of zeros, not the scalar 0: numpy's fast loop for maximum needs both
    # operands to advance, so the scalar form is 2.8x slower for float32 (256, 512) and 1.5x
    # for float64 (measured, numpy 2.4.6). The same bits, -0.0 and NaN included. Only for rows
    # long enough to pay for the loop's restart at every row (float32 from 64, float64 from
    # 128: at 16 the vector form is 3x slower), and not for float16 (no fast loop either way).
    if type(x) is np.ndarray and x.ndim:
        n, shortest = x.shape[-1], _RELU_SHORTEST_ROW.get(x.dtype)
        if shortest is not None and shortest <= n <= _MAX_ROWS:
            return np.maximum(x, _filled(0, n, x.dtype), out=out)
    return np.maximum(x, 0, out=out)


_RELU_SHORTEST_ROW = {np.dtype(np.float32): 64, np.dtype(np.float64): 128}


RELU = Op("relu", _relu,
          lambda g, out, x: g * (out > 0),
          reads=("out",), into=lambda out, x: _relu(x, out),
          vjps_into=(lambda dst, g, out, x: np.multiply(g, out > 0, out=dst),))


def _sigmoid(x):
    # 1 / (1 + exp(-x)) keeps full precision in both tails; exp overflows to inf for x << 0,
    # which gives the right limit 0, so that warning is silenced.
    if type(x) is np.ndarray and x.ndim and x.dtype.kind == "f":  # (0-d gives a scalar)
        return _sigmoid_of_negated(np.negative(x))
    with np.errstate(over="ignore"):
        e = np.exp(-x)
    if type(e) is not np.ndarray:  # numpy returns a scalar for 0-d input
        return 1 / (1 + e)
    e += 1
    return np.reciprocal(e, out=e)


def _sigmoid_of_negated(e):
    # 1 / (1 + exp(e)) for e = -x, computed in e's memory
    with np.errstate(over="ignore"):
        np.exp(e, out=e)
    e += 1
    return np.reciprocal(e, out=e)


def _sigmoid_vjp(g, out, x):
    # g σ (1 − σ), built in one fresh array (in place for arrays, recorded for Tensors)
    grad = 1 - out
    grad *= out
    grad *= g
    return grad


SIGMOID = Op("sigmoid", _sigmoid,
             _sigmoid_vjp,
             reads=("out",), into=lambda out, x: _sigmoid_of_negated(np.negative(x, out=out)))


def _tanh_vjp(g, out, x):
    grad = 1 - out * out
    grad *= g
    return grad


TANH = Op("tanh", np.tanh,
          _tanh_vjp,
          reads=("out",))


# z = x converted from ``from_dtype`` (x's) to ``dtype``: x.to(dtype), and type promotion's
# float32 <-> float64; the gradient goes back converted to x's dtype.
CAST = Op("cast", lambda x, dtype, from_dtype: x.astype(dtype),
          lambda g, out, x, dtype, from_dtype: cast(g, from_dtype),
          reads=())


def cast(a, dtype):
    """``a`` (array or Tensor) converted to ``dtype``."""
    return a.astype(dtype) if isinstance(a, (np.ndarray, np.generic)) else a.to(dtype)


# ---- linear algebra: z = x @ y over the last two axes, leading axes broadcast ----

def _matmul_vjp_y(g, out, x, y):
    # The gradient takes the memory layout of y. For Linear's x @ W.T, y is W's transpose:
    # computing (g^T x)^T hands W a C-ordered gradient, so the optimizer does not stride
    # through a transposed array (9x slower for a 784 x 100 weight, measured).
    if type(y) is np.ndarray and y.ndim == 2 and y.flags.f_contiguous and not y.flags.c_contiguous:
        return swap_last(swap_last(g) @ x)
    return swap_last(x) @ g


MATMUL = Op("matmul", np.matmul,
            lambda g, out, x, y: g @ swap_last(y),
            _matmul_vjp_y,
            reads=("x", "y"))


# ---- reductions over ``axis``, a normalized tuple (see normalize_axis) ----

def _count(shape, axis):
    n = 1
    for a in axis:
        n *= shape[a]
    return n


SUM = Op("sum", reduce_sum,
         lambda g, out, x, axis, keepdims: expand(_reduced_grad(g, x, axis, keepdims), x.shape),
         reads=())

def _mean(x, axis, keepdims):
    # sum / n, as ndarray.mean computes it, without its Python-level bookkeeping.
    total = reduce_sum(x, axis, keepdims)
    n = _count(x.shape, axis)
    if type(total) is np.ndarray:
        total /= n
        return total
    return total / n


MEAN = Op("mean", _mean,
          lambda g, out, x, axis, keepdims: expand(
              _reduced_grad(g, x, axis, keepdims) / _count(x.shape, axis), x.shape),
          reads=())


def _max_vjp(g, out, x, axis, keepdims):
    # Ties share the gradient equally (as PyTorch's amax does), so it still sums to g.
    mask = x >= _reduced_grad(out, x, axis, keepdims)
    return mask * (_reduced_grad(g, x, axis, keepdims) / mask.sum(axis=axis, keepdims=True))


MAX = Op("max", lambda x, axis, keepdims: x.max(axis=axis, keepdims=keepdims),
         _max_vjp,
         reads=("x", "out"))


# ---- shape ----

RESHAPE = Op("reshape", lambda x, shape: x.reshape(shape),
             lambda g, out, x, shape: g.reshape(x.shape),
             reads=())

TRANSPOSE = Op("transpose", lambda x, axes: x.transpose(axes),
               lambda g, out, x, axes: g.transpose(_inverse_permutation(axes)),
               reads=())


def _inverse_permutation(axes):
    # Plain Python: np.argsort costs microseconds of array conversion for a 2-tuple.
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a] = i
    return tuple(inverse)

# The engine reduces broadcast axes, so the derivative of a broadcast is the identity.
EXPAND = Op("expand", lambda x, shape: np.broadcast_to(x, shape),
            lambda g, out, x, shape: g,
            reads=())

GETITEM = Op("getitem", lambda x, index: x[index],
             lambda g, out, x, index: scatter_add(g, index, x.shape),
             reads=())


# The table the tests, gradcheck and the renderer iterate over.
PRIMITIVES = (ADD, SUB, MUL, DIV, POW, NEG, POW_SCALAR, SQRT, EXP, LOG, RELU, SIGMOID, TANH,
              CAST, MATMUL, SUM, MEAN, MAX, RESHAPE, TRANSPOSE, EXPAND, GETITEM)
