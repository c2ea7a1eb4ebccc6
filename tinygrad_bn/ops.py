"""The op table: every differentiable primitive, its numpy forward and derivatives, side by side.

Each primitive is one block, ``Op(name, forward, *derivatives, reads=..., show=...)``:

* ``forward(*arrays, **attrs) -> array`` runs on numpy arrays.
* one derivative per input, ``vjp(g, out, *inputs, **attrs)``: the gradient for that input,
  given ``g``, the gradient of the output, and ``out``, the forward's result. A derivative may
  return a gradient that only *broadcasts* to its input's shape: the engine sums broadcast axes
  away once, for every op.
* ``reads``: which of ``x``, ``y`` (the inputs, in order) and ``out`` the derivatives read. The
  graph keeps only those alive until backward (PyTorch's saved tensors); an input that is not
  read reaches the derivative as a stand-in with just ``.shape`` and ``.dtype``.
* ``show``: how the renderer draws it: the op as an expression of its inputs, then per input the
  local derivative applied to the incoming gradient, with ``{x}``, ``{y}``, ``{out}`` and the
  attributes as placeholders.

The derivatives use only operations numpy arrays and ``Tensor`` share, so the same rule runs on
Tensors to record the backward pass itself (higher-order gradients). This module knows numpy,
not ``Tensor``. Faster forms of some rules live in ``kernels.py``, each tested equal to the form
written here. Everything not listed here (var, softmax, batch_norm, cross_entropy) is composed
from these primitives and has no derivative of its own.
"""
import numpy as np


class Op:
    """A primitive: name, numpy forward, one derivative per input, what they read, its picture."""

    __slots__ = ("name", "forward", "vjps", "reads", "reads_inputs", "reads_out", "show")

    def __init__(self, name, forward, *vjps, reads=None, show=None):
        names = ("x", "y")[:len(vjps)]
        if reads is None:  # undeclared: keep everything, always correct
            reads = names + ("out",)
        unknown = set(reads) - set(names) - {"out"}
        if unknown:
            raise ValueError(f"Op {name}: reads names {sorted(unknown)}; its derivatives can "
                             f"read {names + ('out',)}")
        self.name, self.forward, self.vjps, self.reads = name, forward, vjps, tuple(reads)
        self.reads_inputs = tuple(n in reads for n in names)
        self.reads_out = "out" in reads
        self.show = show or (name,)  # the renderer draws an op without texts by its name

    def __repr__(self):
        return f"Op({self.name})"


# ---- elementwise binary: z = f(x, y), with numpy broadcasting ----

ADD = Op("add", np.add,
         lambda g, out, x, y: g,
         lambda g, out, x, y: g,
         reads=(), show=("{x} + {y}", "·1", "·1"))

SUB = Op("sub", np.subtract,
         lambda g, out, x, y: g,
         lambda g, out, x, y: -g,
         reads=(), show=("{x} − {y}", "·1", "·(−1)"))

MUL = Op("mul", np.multiply,
         lambda g, out, x, y: g * y,
         lambda g, out, x, y: g * x,
         reads=("x", "y"), show=("{x}·{y}", "·{y}", "·{x}"))

DIV = Op("div", np.true_divide,
         lambda g, out, x, y: g / y,
         lambda g, out, x, y: -g * x / (y * y),
         reads=("x", "y"), show=("{x} / {y}", "÷{y}", "·(−{x} ÷ {y}²)"))

# z = x ** y with a tensor exponent. d/dx is 0 where y = 0 (also at x = 0, as PyTorch: x**0 is
# the constant 1), which the exponent y - 1 + [y = 0] gives without 0 * inf. d/dy = z log x,
# taken as 0 where x <= 0.
POW = Op("pow", np.power,
         lambda g, out, x, y: g * y * x ** (y - 1 + equal(y, 0)),
         lambda g, out, x, y: g * out * log_or_zero(x),
         reads=("x", "y", "out"), show=("{x}^{y}", "·{y}·{x}^({y}−1)", "·{out}·log {x}"))


# ---- elementwise unary ----

NEG = Op("neg", np.negative,
         lambda g, out, x: -g,
         reads=(), show=("−{x}", "·(−1)"))

# z = x ** p for a constant p (an attribute, so the graph can show it); x**0 is the constant 1.
POW_SCALAR = Op("pow_scalar", lambda x, exponent: x ** exponent,
                lambda g, out, x, exponent:
                    g * exponent * x ** (exponent - 1) if exponent != 0 else g * 0,
                reads=("x",), show=("{x}^{exponent}", "·{exponent}·{x}^({exponent}−1)"))

SQRT = Op("sqrt", np.sqrt,
          lambda g, out, x: g / (2 * out),
          reads=("out",), show=("√{x}", "÷(2·{out})"))

EXP = Op("exp", np.exp,
         lambda g, out, x: g * out,
         reads=("out",), show=("exp({x})", "·{out}"))

LOG = Op("log", np.log,
         lambda g, out, x: g / x,
         reads=("x",), show=("log({x})", "÷{x}"))

# relu'(0) = 0, as PyTorch; written as "not out <= 0" so a NaN passes g through, as PyTorch.
# It reads the output, which the next layer keeps anyway: the input need not stay alive.
RELU = Op("relu", lambda x: np.maximum(x, 0),
          lambda g, out, x: g * ~(out <= 0),
          reads=("out",), show=("relu({x})", "·[{x} > 0]"))


def _sigmoid(x):
    # 1 / (1 + exp(-x)): for x << 0, exp overflows to inf and the result is the right limit 0.
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


SIGMOID = Op("sigmoid", _sigmoid,
             lambda g, out, x: g * (out * (1 - out)),
             reads=("out",), show=("σ({x})", "·σ(1 − σ)"))

TANH = Op("tanh", np.tanh,
          lambda g, out, x: g * (1 - out * out),
          reads=("out",), show=("tanh({x})", "·(1 − tanh²)"))


# ---- linear algebra: z = x @ y over the last two axes, leading axes broadcast ----

MATMUL = Op("matmul", np.matmul,
            lambda g, out, x, y: g @ swap_last(y),
            lambda g, out, x, y: swap_last(x) @ g,
            reads=("x", "y"), show=("{x} @ {y}", "@ {y}ᵀ", "{x}ᵀ @"))


# ---- reductions over ``axis``, a sorted tuple of axes (see normalize_axis) ----

SUM = Op("sum", lambda x, axis, keepdims: np.add.reduce(x, axis, keepdims=keepdims),
         lambda g, out, x, axis, keepdims: broadcast_to(unreduce(g, x, axis, keepdims), x.shape),
         reads=(), show=("sum({x})", "copy {spread}"))

MEAN = Op("mean", lambda x, axis, keepdims: np.add.reduce(x, axis, keepdims=keepdims)
          / count(x.shape, axis),
          lambda g, out, x, axis, keepdims:
              broadcast_to(unreduce(g, x, axis, keepdims) / count(x.shape, axis), x.shape),
          reads=(), show=("mean({x})", "÷{n}, copy {spread}"))


# Ties share the gradient equally (as PyTorch's amax does), so it still sums to g.
def _max_vjp(g, out, x, axis, keepdims):
    mask = equal(x, unreduce(out, x, axis, keepdims))
    return mask * (unreduce(g, x, axis, keepdims) / mask.sum(axis=axis, keepdims=True))


MAX = Op("max", lambda x, axis, keepdims: np.maximum.reduce(x, axis, keepdims=keepdims),
         _max_vjp,
         reads=("x", "out"), show=("max({x})", "to the max entries"))


# ---- shape ----

RESHAPE = Op("reshape", lambda x, shape: x.reshape(shape),
             lambda g, out, x, shape: g.reshape(x.shape),
             reads=(), show=("{x}", "reshape to {in_shape}"))

TRANSPOSE = Op("transpose", lambda x, axes: x.transpose(axes),
               lambda g, out, x, axes: g.transpose(tuple(np.argsort(axes))),
               reads=(), show=("{x}ᵀ", "transpose back"))

# The engine sums broadcast axes away, so the derivative of a broadcast is the identity.
EXPAND = Op("expand", lambda x, shape: np.broadcast_to(x, shape),
            lambda g, out, x, shape: g,
            reads=(), show=("{x}", "identity"))

# A change of dtype; the engine gives every gradient its input's dtype, so d/dx is g.
CAST = Op("cast", lambda x, dtype: x.astype(dtype),
          lambda g, out, x, dtype: g,
          reads=(), show=("{x}", "·1"))

def element_view(x, index):
    """x[index]; one element as a 0-d view of x, as PyTorch's x[i] (numpy gives a copy)."""
    out = x[index]
    if isinstance(out, np.generic):  # x[(i, None)] is a view of shape (1,)
        out = x[(*index, None) if type(index) is tuple else (index, None)].reshape(())
    return out


GETITEM = Op("getitem", element_view,
             lambda g, out, x, index: scatter_add(g, index, x.shape),
             reads=(), show=("{x}[{index}]", "scatter into {in_shape}"))

# Indexing's derivative as a primitive of its own, so it can be differentiated again
# (create_graph): zeros of ``shape`` with x added at ``index``. Its derivative is indexing.
SCATTER_ADD = Op("scatter_add", lambda x, index, shape: scatter_add(x, index, shape),
                 lambda g, out, x, index, shape: g[index],
                 reads=(), show=("scatter into {shape}", "[{index}]"))


# The table the tests, gradcheck and the renderer iterate over.
PRIMITIVES = (ADD, SUB, MUL, DIV, POW, NEG, POW_SCALAR, SQRT, EXP, LOG, RELU, SIGMOID, TANH,
              MATMUL, SUM, MEAN, MAX, RESHAPE, TRANSPOSE, EXPAND, CAST, GETITEM, SCATTER_ADD)


# ---- helpers of the rules: the same call on an ndarray and on a Tensor ----

def swap_last(a):
    """Swap the last two axes (the matrix transpose of a stack of matrices)."""
    axes = tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2)
    return a.transpose(axes)


def broadcast_to(g, shape):
    """``g`` repeated to ``shape`` without copying."""
    if isinstance(g, (np.ndarray, np.generic)):
        return np.broadcast_to(g, shape)
    return g.expand(shape)


def unreduce(g, x, axis, keepdims):
    """Put the axes a reduction removed back into ``g`` (as length 1), so it broadcasts to x."""
    return g if keepdims else g.reshape(keepdims_shape(x.shape, axis))


def count(shape, axis):
    """How many elements a reduction over ``axis`` adds up into each result."""
    n = 1
    for a in axis:
        n *= shape[a]
    return n


def scatter_add(g, index, shape):
    """Zeros of ``shape`` with ``g`` added at ``index``; repeated indices accumulate."""
    if isinstance(g, (np.ndarray, np.generic)):  # (numpy gives scalars for 0-d arithmetic)
        out = np.zeros(shape, dtype=g.dtype)
        np.add.at(out, index, g)
        return out
    return g.scatter_add(index, shape)  # a Tensor: the SCATTER_ADD primitive, recorded


def equal(a, b):
    """The elementwise mask a == b (``==`` on a Tensor is identity, so tensors stay hashable)."""
    return a == b if isinstance(a, np.ndarray) else a.eq(b)


def sum_to(g, shape):
    """``g`` summed over the axes broadcasting added to an operand of ``shape``."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra < 0:  # not a broadcast of shape: the engine's shape check reports it
        return g
    inner = tuple(i + extra for i, n in enumerate(shape) if n == 1 and g.shape[i + extra] != 1)
    g = g.sum(axis=tuple(range(extra)) + inner, keepdims=True) if extra or inner else g
    return g.reshape(shape) if g.shape != shape else g


def log_or_zero(x):
    """log(x) where x > 0, else 0."""
    if isinstance(x, np.ndarray):
        return np.log(np.where(x > 0, x, 1))
    return (x * (x > 0) + (x <= 0)).log()


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
