"""Tensor: a numpy array that records the operations made from it.

Every differentiable method either applies one primitive of ``ops.py`` through ``_apply`` or is
composed from other methods (``var``, ``softmax``, ``log_softmax``, ``min``) and then has no
derivative of its own: autodiff derives it.
"""
import math
import numbers
import operator

import numpy as np

from . import allocator, autograd, ops
from .tape import JitError, Tape, refuse, run

# Every op allocates a fresh array: let malloc reuse freed blocks instead of refaulting pages.
allocator.keep_freed_memory()


def _to_array(data, dtype):
    """``data`` as a new ndarray, with PyTorch's dtypes: arrays keep theirs (bool, integer or
    float); Python bools become bool, ints int64, floats (and mixed lists) float32."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, (np.ndarray, np.generic)):
        if data.dtype.kind not in "fiub":
            raise TypeError(f"Tensor needs numbers, got an array of dtype {data.dtype}")
        return np.array(data, dtype=dtype)
    if isinstance(data, (bool, numbers.Real, list, tuple)):
        try:
            arr = np.array(data, dtype=dtype)
        except (ValueError, TypeError, OverflowError) as e:
            raise TypeError(f"Tensor needs numbers or nested lists of numbers of equal length, "
                            f"got {_describe(data)}: {e}") from None
        if dtype is None and arr.dtype.kind not in "bi":  # float64 from Python floats
            if arr.dtype.kind != "f":
                raise TypeError(f"Tensor needs numbers, got {_describe(data)} (numpy reads it "
                                f"as {arr.dtype})")
            arr = arr.astype(DEFAULT_FLOAT)
        return arr
    raise TypeError(f"Tensor needs a numpy array, a number or a (nested) list of numbers, "
                    f"got {_describe(data)}")


def _describe(x):
    text = repr(x)
    return f"{type(x).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind not in "fiub":
        raise TypeError(f"Tensor holds bool, integer or floating-point data; dtype {dtype} is "
                        f"not supported (use e.g. np.float32, np.float64, np.int64 or bool)")
    return dtype


def _check_grad_dtype(data, requires_grad):
    """PyTorch's rule: only floating-point tensors take part in differentiation."""
    if requires_grad and data.dtype.kind != "f":
        raise RuntimeError(f"Only Tensors of floating point dtype can require gradients, got "
                           f"dtype {data.dtype}; convert first, e.g. Tensor(x, dtype=np.float32) "
                           f"or t.float()")


# ---- type promotion: PyTorch's rule, the one place it is written ----

# Categories, lowest first. Each operand of an op also has a rank: a tensor or array with
# dimensions says most about the result, then a 0-d tensor or array, then a Python (or numpy)
# number. A lower-ranked operand decides the dtype only if its category is higher.
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}
_NUMBER, _ZERO_DIM, _DIMENSIONED = 0, 1, 2
DEFAULT_FLOAT = np.dtype(np.float32)  # what a Python float becomes (torch's default dtype)
_BOOL, _INT64 = np.dtype(bool), np.dtype(np.int64)
_FLOATS = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))


def result_dtype(*operands):
    """The dtype of an elementwise op on ``operands`` (Tensors, arrays, numbers): torch.result_type.

    Same rank: the usual promotion (int32+int64 -> int64, float32+float64 -> float64, any int
    with a float -> that float). Across ranks, bool < int < float: float32 tensor * 2.5 ->
    float32, float32 tensor * np.array(2.0) -> float32, int32 tensor * 2.5 -> float32 (a Python
    float is float32), bool tensor + 1 -> int64, int32 tensor + 0-d float64 -> float64.
    """
    by_rank = [None, None, None]
    for x in operands:
        rank, dtype = _rank_and_dtype(x)
        prev = by_rank[rank]
        by_rank[rank] = dtype if prev is None else _promote_types(prev, dtype)
    result = None
    for dtype in by_rank:  # numbers first: a higher rank wins unless its category is lower
        if dtype is not None and (result is None or
                                  _CATEGORY[dtype.kind] >= _CATEGORY[result.kind]):
            result = dtype
    return result


def _promote_types(a, b):
    ca, cb = _CATEGORY[a.kind], _CATEGORY[b.kind]
    if ca != cb:
        return a if ca > cb else b  # int64 + float16 -> float16, as torch (numpy: float64)
    return np.promote_types(a, b)


def _rank_and_dtype(x):
    if isinstance(x, (Tensor, np.ndarray)):
        dtype = x.dtype
        if dtype.kind not in _CATEGORY:
            raise TypeError(f"cannot combine a Tensor with an array of dtype {dtype}")
        return (_DIMENSIONED if x.ndim else _ZERO_DIM), dtype
    # numpy scalars (x.data[0], np.float64(2)) count as numbers, as in torch
    if isinstance(x, (bool, np.bool_)):
        return _NUMBER, _BOOL
    if isinstance(x, numbers.Integral):
        return _NUMBER, _INT64
    if isinstance(x, numbers.Real):
        return _NUMBER, DEFAULT_FLOAT
    raise TypeError(f"cannot combine a Tensor with {_describe(x)}")


class Tensor:
    """An n-dimensional array with reverse-mode autodiff (``requires_grad``, ``backward``)."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_name", "__weakref__")
    # ndarray + Tensor must call Tensor.__radd__, not build an object array element by element.
    __array_ufunc__ = None
    seq = -1  # as a vertex of the graph walk: made before every recorded operation

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        self.data = run(_to_array, data, None if dtype is None else _check_dtype(dtype))
        _check_grad_dtype(self.data, requires_grad)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._name = name

    @staticmethod
    def _wrap(data, requires_grad=False):
        """A Tensor around an existing ndarray, skipping conversion (the engine's fast path)."""
        t = _new(Tensor)
        t.data, t.grad, t.requires_grad = data, None, requires_grad
        t._ctx, t._name = None, None
        return t

    # ---- attributes ----
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._ctx is None)
    retains_grad = property(lambda self: self._ctx is not None and self._ctx.retains is not None)

    @property
    def name(self):
        """A label for the graph renderer (batch norm names its steps μ_B, σ²_B, x̂, ...)."""
        return self._name

    @name.setter
    def name(self, name):
        self._name = name
        if self._ctx is not None:  # the graph outlives this tensor: the node keeps the label
            self._ctx.name = name

    def numpy(self):
        """The data as a numpy array (the same memory; use ``.copy()`` to keep a snapshot)."""
        refuse("numpy()")
        return self.data

    def item(self):
        refuse("item()")
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        refuse("tolist()")
        return self.data.tolist()

    def detach(self):
        """The same data, cut from the graph (no gradient flows through it)."""
        out = Tensor._wrap(self.data)
        tape = Tape.current()
        if tape is not None:  # a jit replay reads self.data, which may be replaced
            tape.alias(out, self)
        return out

    def requires_grad_(self, requires_grad=True):
        """Start (or stop) recording operations on this leaf; returns the tensor."""
        if self._ctx is not None and not requires_grad:
            raise RuntimeError("requires_grad_(False) on a tensor computed in a graph; use "
                               ".detach() to get a tensor without history")
        _check_grad_dtype(self.data, requires_grad)
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after ``backward()`` (leaves always keep it)."""
        if self._ctx is not None:
            autograd.retain_grad(self)
        return self

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __bool__(self):
        # Without this every Tensor is truthy, so `if loss < 0.1:` would silently always pass.
        refuse("the truth value of a tensor (if/while on a tensor)")
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                             f"use (t > 0).data.any() or .all()")
        return bool(self.data.item())

    def __float__(self):
        return float(self.item())

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.data, precision=4, separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    # ---- autodiff ----
    def backward(self, gradient=None, retain_graph=False, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` is the upstream gradient (same shape as ``self``); it may be left out only
        for a single-element tensor, where it is 1. ``retain_graph`` keeps the graph for another
        backward; ``create_graph`` records the backward pass too, so ``.grad`` can be
        differentiated again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: no input of "
                               "the computation had requires_grad=True (or it ran in no_grad)")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() on a tensor of shape {self.shape} needs a gradient of that shape; "
                    f"reduce it to a scalar first (e.g. y.sum().backward()) or pass "
                    f"y.backward(np.ones({self.shape}))")
            grad = run(np.ones, self.shape, dtype=self.dtype)
        else:
            g = gradient.data if isinstance(gradient, Tensor) else gradient
            grad = run(np.asarray, g, dtype=self.dtype)  # not copied: the engine never writes to it
            if grad.shape != self.shape:
                raise ValueError(f"backward() gradient has shape {grad.shape}, "
                                 f"but the tensor has shape {self.shape}")
        autograd.backward(self, grad, retain_graph, create_graph)

    # ---- elementwise arithmetic (numpy broadcasting, PyTorch's type promotion) ----
    def __add__(self, other):
        a, b = _operands(self, other, "add")
        return _apply(ops.ADD, a, b)

    def __radd__(self, other):
        b, a = _operands(self, other, "add")
        return _apply(ops.ADD, a, b)

    def __sub__(self, other):
        a, b = _operands(self, other, "sub")
        return _apply(ops.SUB, a, b)

    def __rsub__(self, other):
        b, a = _operands(self, other, "sub")
        return _apply(ops.SUB, a, b)

    def __mul__(self, other):
        a, b = _operands(self, other, "mul")
        return _apply(ops.MUL, a, b)

    def __rmul__(self, other):
        b, a = _operands(self, other, "mul")
        return _apply(ops.MUL, a, b)

    def __truediv__(self, other):
        a, b = _operands(self, other, "div")
        return _apply(ops.DIV, a, b)

    def __rtruediv__(self, other):
        b, a = _operands(self, other, "div")
        return _apply(ops.DIV, a, b)

    def __neg__(self):
        if self.data.dtype.kind == "b":
            raise TypeError("negation (-x) of a bool tensor is not supported (as in PyTorch); "
                            "to invert a mask use ~mask")
        return _apply(ops.NEG, self)

    def __invert__(self):
        """~mask: logical not of a bool tensor (bitwise not of an integer one); no gradient."""
        if self.data.dtype.kind not in "biu":
            raise TypeError(f"~x needs a bool or integer tensor, got dtype {self.dtype}")
        return Tensor._wrap(run(np.invert, self.data))

    def __pow__(self, exponent):
        if type(exponent) is float or type(exponent) is int or (
                isinstance(exponent, numbers.Real) and not isinstance(exponent, (bool, np.bool_))):
            if self.data.dtype.kind == "f":  # x ** 2: the exponent is an attribute of the node
                if type(exponent) is not int and type(exponent) is not float:
                    exponent = _python_number(exponent)  # np.float64(2): not a float64 result
                return _apply(ops.POW_SCALAR, self, exponent=exponent)
        a, b = _operands(self, exponent, "pow")
        return _apply(ops.POW, a, b)

    def __rpow__(self, base):
        b, a = _operands(self, base, "pow")
        return _apply(ops.POW, a, b)

    def __matmul__(self, other):
        a, b = _operands(self, other, "matmul")
        return _matmul(a, b)

    def __rmatmul__(self, other):
        b, a = _operands(self, other, "matmul")
        return _matmul(a, b)

    # Comparisons give boolean masks without a gradient (on a jit tape like any array work),
    # computed in the promoted dtype as torch does. == stays identity so tensors remain
    # hashable (the graph walk keeps them in sets): eq() and ne() compare elementwise.
    def __gt__(self, other):
        return _compare(operator.gt, self, other)

    def __ge__(self, other):
        return _compare(operator.ge, self, other)

    def __lt__(self, other):
        return _compare(operator.lt, self, other)

    def __le__(self, other):
        return _compare(operator.le, self, other)

    def eq(self, other):
        return _compare(operator.eq, self, other)

    def ne(self, other):
        return _compare(operator.ne, self, other)

    # ---- dtype conversion ----
    def to(self, dtype):
        """A new tensor of ``dtype``; to a float dtype it is recorded (the gradient flows back
        converted to this tensor's dtype), to bool or an integer dtype it has no gradient."""
        dtype = _check_dtype(dtype)
        if dtype.kind == "f":
            return _apply(ops.CAST, self, dtype=dtype, from_dtype=self.data.dtype)
        return Tensor._wrap(run(_astype, self.data, dtype))

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def long(self):
        return self.to(np.int64)

    def int(self):
        return self.to(np.int32)

    def bool(self):
        return self.to(np.bool_)

    # ---- elementwise functions ----
    def sqrt(self):
        return _apply(ops.SQRT, self if self.data.dtype.kind == "f" else _to_float(self))

    def exp(self):
        return _apply(ops.EXP, self if self.data.dtype.kind == "f" else _to_float(self))

    def log(self):
        return _apply(ops.LOG, self if self.data.dtype.kind == "f" else _to_float(self))

    def relu(self):
        if self.data.dtype.kind == "b":
            raise TypeError("relu of a bool tensor is not supported (as in PyTorch); convert "
                            "first, e.g. x.float().relu()")
        return _apply(ops.RELU, self)

    def sigmoid(self):
        return _apply(ops.SIGMOID, self if self.data.dtype.kind == "f" else _to_float(self))

    def tanh(self):
        return _apply(ops.TANH, self if self.data.dtype.kind == "f" else _to_float(self))

    # ---- reductions ----
    def sum(self, axis=None, keepdims=False):
        return _apply(ops.SUM, self, axis=ops.normalize_axis(axis, self.data.ndim),
                      keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        _need_float(self, "mean")
        return _apply(ops.MEAN, self, axis=self._nonempty_axes(axis, "mean"), keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _apply(ops.MAX, self, axis=self._nonempty_axes(axis, "max"), keepdims=keepdims)

    def _nonempty_axes(self, axis, name):
        axes = ops.normalize_axis(axis, self.data.ndim)
        if self.data.size == 0 and any(self.shape[a] == 0 for a in axes):
            raise ValueError(f"{name} over axis {axis} of an empty tensor of shape {self.shape}")
        return axes

    def min(self, axis=None, keepdims=False):
        """min(x) = -max(-x)."""
        return -(-self).max(axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False):
        """Biased variance: mean((x - mean(x))**2); the graph runs through the mean too."""
        centered = self - self.mean(axis=axis, keepdims=True)
        return (centered ** 2).mean(axis=axis, keepdims=keepdims)

    def argmax(self, axis=None):
        """Indices of the maxima (an integer ndarray: it has no gradient)."""
        return run(np.ndarray.argmax, self.data, axis=axis)

    # ---- softmax family (composite; numerically stable) ----
    def softmax(self, axis=-1):
        """exp(x - max) / sum(exp(x - max)); the shift is a constant, it cancels in the ratio."""
        _need_float(self, "softmax")
        e = (self - self._max_constant(axis)).exp()
        return e / e.sum(axis=axis, keepdims=True)

    def log_softmax(self, axis=-1):
        """(x - max) - log(sum(exp(x - max)))."""
        _need_float(self, "log_softmax")
        shifted = self - self._max_constant(axis)
        shifted.name = "x − max"  # a label for the graph renderer
        return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()

    def _max_constant(self, axis):
        # The shift that keeps exp() finite; a constant, not a recorded max (it cancels).
        axis = ops.normalize_axis(axis, self.data.ndim)  # () for a 0-d tensor: itself
        return run(np.ndarray.max, self.data, axis=axis, keepdims=True)

    # ---- shape ----
    def reshape(self, *shape):
        return _apply(ops.RESHAPE, self, shape=_reshape_target(self.shape, _shape_arg(shape)))

    def transpose(self, *axes):
        """Permute axes (numpy's convention: no argument reverses them, else a full permutation)."""
        if not axes and self.data.ndim == 2:  # W.T in every Linear layer: skip the checks
            return _apply(ops.TRANSPOSE, self, axes=(1, 0))
        axes = _shape_arg(axes) or tuple(range(self.ndim))[::-1]
        if sorted(a % max(self.ndim, 1) for a in axes) != list(range(self.ndim)):
            raise ValueError(f"transpose: {axes} is not a permutation of the {self.ndim} axes of "
                             f"shape {self.shape} (to swap two axes use swapaxes(a, b))")
        return _apply(ops.TRANSPOSE, self, axes=tuple(a % self.ndim for a in axes))

    def permute(self, *dims):
        return self.transpose(*dims)

    def swapaxes(self, a, b):
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return self.transpose(axes)

    T = property(lambda self: self.transpose())

    def expand(self, *shape):
        """Broadcast to ``shape`` (numpy rules) without copying."""
        shape = _shape_arg(shape)
        try:
            np.broadcast_shapes(self.shape, shape)
        except ValueError:
            raise ValueError(f"expand: cannot broadcast shape {self.shape} to {shape}") from None
        return _apply(ops.EXPAND, self, shape=shape)

    def flatten(self, start_dim=0):
        return self.reshape(self.shape[:start_dim] + (-1,))

    def __getitem__(self, index):
        return _apply(ops.GETITEM, self, index=_index_arg(index))

    # The derivative rules call this when they run on Tensors (create_graph=True).
    def scatter_add(self, index, shape):
        raise NotImplementedError("higher-order gradients through indexing (x[index]) are not "
                                  "supported yet; use create_graph=False for graphs with indexing")


# ---- helpers: the one place ops are applied ----

_new = object.__new__
_record = autograd.record


def _apply(op, *inputs, **attrs):
    """Run ``op``'s numpy forward and record it in the graph (``autograd.record`` decides)."""
    try:
        # Spelled out for one and two inputs: this line runs for every operation.
        # Tape.recording first: one attribute read when no step is captured anywhere.
        if Tape.recording and Tape.current() is not None:  # capturing in this thread
            out = Tape.current().forward(op, inputs, attrs)
        elif len(inputs) == 2 and not attrs:  # unpacking even an empty ** costs 60 ns
            out = op.forward(inputs[0].data, inputs[1].data)
        else:
            out = op.forward(*[t.data for t in inputs], **attrs)
    except ValueError as e:
        shapes = " and ".join(str(t.shape) for t in inputs)
        raise ValueError(f"{op.name}: cannot apply to shapes {shapes}: {e}") from None
    if type(out) is not np.ndarray:
        out = run(np.asarray, out)  # numpy returns scalars for 0-d results
    t = _new(Tensor)
    t.data, t.grad, t._name = out, None, None
    ctx = _record(op, inputs, attrs, out)
    t._ctx, t.requires_grad = ctx, ctx is not None
    return t


def _operands(t, other, op):
    """(t, other) as Tensors of the dtype ``op`` computes in: PyTorch's promotion
    (``result_dtype``), and float32 for a division of integers. Converting a tensor that
    needs a gradient is recorded, so the gradient flows back in its own dtype."""
    dtype = t.data.dtype
    # the common cases first: x * 0.5, and x + y of one float dtype (numpy's dtypes of one
    # kind are one object, so `is` finds them; any other dtype takes the general rule)
    if type(other) is float or type(other) is int:
        if dtype in _FLOATS:
            return t, _scalar(other, dtype)
    elif isinstance(other, Tensor) and other.data.dtype is dtype and dtype in _FLOATS:
        return t, other
    if isinstance(other, (list, tuple)):
        other = Tensor(other)
    compute = result_dtype(t, other)
    if op == "sub" and (dtype.kind == "b" or _rank_and_dtype(other)[1].kind == "b"):
        raise TypeError("subtraction (-) with a bool operand is not supported (as in PyTorch); "
                        "to invert a mask use ~mask, or convert it first with .long() / .float()")
    if compute.kind == "b" and op == "pow":
        raise TypeError("bool ** bool is not supported (as in PyTorch); convert with .long()")
    if compute.kind != "f" and op == "div":
        compute = DEFAULT_FLOAT  # true division of integers gives floats, as in torch
    return _cast(t, compute), _const(other, compute)


def _cast(t, dtype):
    if t.data.dtype == dtype:
        return t
    return _apply(ops.CAST, t, dtype=dtype, from_dtype=t.data.dtype)


def _const(x, dtype):
    """Operand ``x`` (Tensor, array or number) as a Tensor of ``dtype``."""
    if isinstance(x, Tensor):
        return _cast(x, dtype)
    if isinstance(x, np.ndarray):
        return Tensor._wrap(x if x.dtype == dtype else run(_astype, x, dtype))
    return _scalar(_python_number(x), dtype)


def _python_number(x):
    # numpy scalars as Python numbers: numpy would let np.float64(2) widen a float32 result
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (bool, int, float)):
        return x
    return int(x) if isinstance(x, numbers.Integral) else float(x)  # Fraction, Decimal-like


def _astype(a, dtype):
    return a.astype(dtype)


def _to_float(t):
    """An integer or bool tensor as float32 (sqrt, exp, ... of integers give floats in torch)."""
    return _apply(ops.CAST, t, dtype=DEFAULT_FLOAT, from_dtype=t.data.dtype)


def _need_float(t, name):
    if t.data.dtype.kind != "f":
        raise TypeError(f"{name} of a tensor of dtype {t.dtype} is not defined (PyTorch refuses "
                        f"it too); convert first: x.float().{name}(...)")


def _compare(fn, t, other):
    if (type(other) is float or type(other) is int) and t.data.dtype.kind == "f":
        return Tensor._wrap(run(fn, t.data, other))  # x > 0: numpy compares in x's dtype
    a, b = _operands(t, other, "compare")
    # A number stays a number (numpy compares it in a's dtype, which is the promoted one): a
    # jit tape keeps it as a constant, not as an array made outside the step.
    b = b.data if isinstance(other, (Tensor, np.ndarray)) else _python_number(other)
    return Tensor._wrap(run(fn, a.data, b))


# Scalar constants are shared between graphs: they never change and never get a gradient, and
# not allocating one per operation keeps the garbage collector away from long graphs.
_SCALARS = {}


def _scalar(x, dtype):
    # 0.0 == -0.0 as keys, but not as values: the sign of a zero is part of its key.
    key = (x, dtype) if x != 0 else (x, dtype, math.copysign(1.0, x))
    t = _SCALARS.get(key)
    if t is None:
        try:
            value = np.array(x, dtype=dtype)
        except OverflowError:
            raise OverflowError(f"{x} does not fit in the tensor's dtype {dtype} (PyTorch would "
                                f"wrap it around silently); convert the tensor first, e.g. "
                                f"t.long() or t.double()") from None
        t = Tensor._wrap(value)
        if len(_SCALARS) > 1024:
            _SCALARS.clear()
        _SCALARS[key] = t
    return t


def _matmul(a, b):
    if a.data.ndim == 2 and b.data.ndim == 2 and a.data.shape[1] == b.data.shape[0]:
        return _apply(ops.MATMUL, a, b)  # the common case, checked in one line
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least one dimension, "
                         f"got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match: "
                         f"{a.shape[-1]} columns against {b.shape[-2 if b.ndim > 1 else 0]} rows")
    # 1-D operands become matrices for the primitive, then lose that axis again (numpy's rule).
    a2 = a.reshape(1, a.shape[0]) if a.ndim == 1 else a
    b2 = b.reshape(b.shape[0], 1) if b.ndim == 1 else b
    out = _apply(ops.MATMUL, a2, b2)
    if a.ndim == 1 and b.ndim == 1:
        return out.reshape(())
    if a.ndim == 1:
        return out.reshape(out.shape[:-2] + out.shape[-1:])
    if b.ndim == 1:
        return out.reshape(out.shape[:-1])
    return out


def _shape_arg(shape):
    """Accept both f(2, 3) and f((2, 3))."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(n) for n in shape)


def _reshape_target(old, new):
    """``new`` with a -1 resolved, or a ValueError naming both shapes."""
    size = int(np.prod(old))
    known = int(np.prod([n for n in new if n != -1]))
    unknown = [i for i, n in enumerate(new) if n == -1]
    if len(unknown) == 1 and known and size % known == 0:
        new = new[:unknown[0]] + (size // known,) + new[unknown[0] + 1:]
    if len(unknown) > 1 or any(n < 0 for n in new) or int(np.prod(new)) != size:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {old} ({size} elements) "
                         f"to {new}")
    return new


def _index_arg(index):
    """Tensor indices become integer arrays; everything else is numpy indexing as is."""
    if isinstance(index, tuple):
        return tuple(_index_arg(i) for i in index)
    if isinstance(index, Tensor):
        index = index.data
    if isinstance(index, list):
        index = run(np.asarray, index)
    if isinstance(index, np.ndarray) and index.dtype.kind == "b" and Tape.current() is not None:
        raise JitError("indexing with a boolean mask inside a jit step: the result's shape "
                       "depends on the mask's values, which a replay cannot follow")
    if isinstance(index, np.ndarray) and index.dtype.kind not in "biu":
        raise IndexError(f"tensors used as indices must be integer or bool, got dtype "
                         f"{index.dtype} (as in PyTorch); convert with .long()")
    return index
