"""Tensor: a numpy array that records the operations made from it.

Every differentiable method either applies one primitive of ``ops.py`` through ``_apply`` or is
composed from other methods (``var``, ``softmax``, ``log_softmax``, ``min``) and then has no
derivative of its own: autodiff derives it.
"""
from __future__ import annotations

import gc
import math
import numbers
import operator
import sys
from typing import Union

import numpy as np

from . import autograd, dispatch, ops
from .dispatch import run

# Names for annotations: inside the class, float, int and bool are Tensor's conversion methods.
Number, Int, Bool = Union[int, float], int, bool


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
    """An n-dimensional array with reverse-mode autodiff (``requires_grad``, ``backward``).

    Operators, with numpy broadcasting (gradients summed back to each input's shape):
    ``+ - * / ** @``, unary ``-``, their reflected forms with numbers and ndarrays, comparisons
    ``> >= < <=`` (boolean masks, no gradient) and indexing ``t[index]``.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_name", "__weakref__")
    # ndarray + Tensor must call Tensor.__radd__, not build an object array element by element.
    __array_ufunc__ = None
    seq = -1  # as a vertex of the graph walk: made before every recorded operation

    def __init__(self, data: np.ndarray | Tensor | Number | list, requires_grad: Bool = False,
                 dtype: np.dtype | type | None = None, name: str | None = None):
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
    shape = property(lambda self: self.data.shape, doc="The shape of the data, a tuple.")
    dtype = property(lambda self: self.data.dtype, doc="The numpy dtype (float32 or float64).")
    ndim = property(lambda self: self.data.ndim, doc="The number of axes.")
    size = property(lambda self: self.data.size, doc="The number of elements.")
    is_leaf = property(lambda self: self._ctx is None,
                       doc="True unless an operation recorded in the graph made this tensor.")
    retains_grad = property(lambda self: self._ctx is not None and self._ctx.retains is not None,
                            doc="True for a non-leaf whose ``.grad`` backward() keeps.")

    @property
    def name(self) -> str | None:
        """A label for the graph renderer (batch norm names its steps μ_B, σ²_B, x̂, ...)."""
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        self._name = name
        if self._ctx is not None:  # the graph outlives this tensor: the node keeps the label
            self._ctx.name = name

    def numpy(self) -> np.ndarray:
        """The data as a numpy array (the same memory; use ``.copy()`` to keep a snapshot)."""
        dispatch.read("numpy()")
        return self.data

    def item(self) -> Number:
        """The value of a one-element tensor as a Python number."""
        dispatch.read("item()")
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self) -> list | Number:
        """The data as (nested) Python lists."""
        dispatch.read("tolist()")
        return self.data.tolist()

    def detach(self) -> Tensor:
        """The same data, cut from the graph (no gradient flows through it)."""
        out = Tensor._wrap(self.data)
        dispatch.alias(out, self)
        return out

    def requires_grad_(self, requires_grad: Bool = True) -> Tensor:
        """Start (or stop) recording operations on this leaf; returns the tensor."""
        if self._ctx is not None and not requires_grad:
            raise RuntimeError("requires_grad_(False) on a tensor computed in a graph; use "
                               ".detach() to get a tensor without history")
        _check_grad_dtype(self.data, requires_grad)
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` on this non-leaf tensor after ``backward()`` (leaves always keep it)."""
        if self._ctx is not None:
            autograd.retain_grad(self)
        return self

    def __array__(self, dtype=None, copy=None):
        dispatch.read("np.asarray(tensor) (or any numpy function given a tensor)")
        return self.data if dtype is None else self.data.astype(dtype)

    def __bool__(self):
        # Without this every Tensor is truthy, so `if loss < 0.1:` would silently always pass.
        dispatch.read("the truth value of a tensor (if/while on a tensor)")
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
    def backward(self, gradient: np.ndarray | Tensor | None = None, retain_graph: Bool = False,
                 create_graph: Bool = False) -> None:
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

    def __invert__(self) -> Tensor:
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

    def eq(self, other: Tensor | np.ndarray | Number) -> Tensor:
        """The elementwise mask self == other (``==`` itself stays identity: tensors are hashed)."""
        return _compare(operator.eq, self, other)

    def ne(self, other: Tensor | np.ndarray | Number) -> Tensor:
        """The elementwise mask self != other."""
        return _compare(operator.ne, self, other)

    # ---- dtype conversion ----
    def to(self, dtype: np.dtype | type | str, copy: Bool = False) -> Tensor:
        """This tensor as ``dtype`` (itself if it has it, unless ``copy``); to a float dtype it is
        recorded (the gradient flows back in this tensor's dtype), to bool or an integer dtype it
        has no gradient."""
        dtype = _check_dtype(dtype)
        if dtype == self.data.dtype and not copy:
            return self
        if dtype.kind == "f":
            return _apply(ops.CAST, self, dtype=dtype)
        return Tensor._wrap(dispatch.cast(self.data, dtype))

    def float(self) -> Tensor:
        """As float32."""
        return self.to(np.float32)

    def double(self) -> Tensor:
        """As float64."""
        return self.to(np.float64)

    def long(self) -> Tensor:
        """As int64 (no gradient)."""
        return self.to(np.int64)

    def int(self) -> Tensor:
        """As int32 (no gradient)."""
        return self.to(np.int32)

    def bool(self) -> Tensor:
        """As bool (no gradient)."""
        return self.to(np.bool_)

    # ---- in place (PyTorch's rules) ----
    # Under no_grad, or when no gradient is involved, the tensor's array is written in place:
    # every tensor and view sharing it sees the change, and its version goes up, so a graph
    # that saved the old values refuses to differentiate with the new ones. A leaf that requires
    # grad cannot be changed in place while grad mode is on (its gradient would mean nothing).
    # Any other tensor with a gradient gets the new value and the op is recorded, as PyTorch.
    def __iadd__(self, other):
        return self._inplace(ops.ADD, other)

    def __isub__(self, other):
        return self._inplace(ops.SUB, other)

    def __imul__(self, other):
        return self._inplace(ops.MUL, other)

    def __itruediv__(self, other):
        return self._inplace(ops.DIV, other)

    def add_(self, other: Tensor | np.ndarray | Number, alpha: Number = 1) -> Tensor:
        """self += alpha * other, in place."""
        return self._inplace(ops.ADD, other if alpha == 1 else other * alpha)

    def sub_(self, other: Tensor | np.ndarray | Number, alpha: Number = 1) -> Tensor:
        """self -= alpha * other, in place."""
        return self._inplace(ops.SUB, other if alpha == 1 else other * alpha)

    def mul_(self, other: Tensor | np.ndarray | Number) -> Tensor:
        """self *= other, in place."""
        return self._inplace(ops.MUL, other)

    def div_(self, other: Tensor | np.ndarray | Number) -> Tensor:
        """self /= other, in place."""
        return self._inplace(ops.DIV, other)

    def zero_(self) -> Tensor:
        """Set every element to 0, in place."""
        return self.fill_(0)

    def fill_(self, value: Number) -> Tensor:
        """Set every element to ``value``, in place (no gradient flows to the old values)."""
        return self._inplace(None, value)

    def copy_(self, src: Tensor | np.ndarray | Number) -> Tensor:
        """Copy ``src`` (broadcast to this shape) into this tensor, in place; d/d(src) flows."""
        return self._inplace(ops.EXPAND, src)

    def clone(self) -> Tensor:
        """A copy with its own memory; gradients flow back to ``self``."""
        # A cast, not self * 1: it saves nothing of self, so self may be changed in place
        # afterwards (the reason to clone), as in PyTorch.
        return _apply(ops.CAST, self, dtype=self.data.dtype)

    def _inplace(self, op, other):
        name = op.name if op is not None and op is not ops.EXPAND else \
            "fill_" if op is None else "copy_"
        compute = result_dtype(self, other)
        if op is ops.SUB and _rank_and_dtype(other)[1].kind == "b":  # as x - mask
            raise TypeError("subtraction (-=, sub_) of a bool operand is not supported (as in "
                            "PyTorch); to invert a mask use ~mask, or convert it with .long()")
        if _CATEGORY[compute.kind] > _CATEGORY[self.data.dtype.kind]:
            raise RuntimeError(f"in-place {name}: result type {compute} can't be cast to the "
                               f"desired output type {self.dtype} (PyTorch refuses it too); use "
                               f"an out-of-place operation, or convert first")
        # A number is handed to numpy as it is (a Python value, which the jit compares by
        # value), not as the cached constant array _const makes of it: same dtype rules.
        number = other.item() if isinstance(other, np.generic) else other
        number = number if type(number) in (int, float) else None
        other = _const(other, compute)
        try:  # the result is written into self: it must keep self's shape
            fits = np.broadcast_shapes(other.shape, self.shape) == self.shape
        except ValueError:
            fits = False
        if not fits:
            raise RuntimeError(f"in-place {name}: the operand of shape {other.shape} does not "
                               f"broadcast to the shape {self.shape} of the tensor written; "
                               f"use the out-of-place form (x = x + y)")
        # fill_(v) and copy_(v) pass v's gradient on, as any other operand's
        grad = autograd.is_grad_enabled() and (self.requires_grad or other.requires_grad)
        if grad and self._ctx is None and self.requires_grad:
            raise RuntimeError("a leaf tensor that requires grad is being used in an in-place "
                               "operation; update it inside `with no_grad():` (as an optimizer "
                               "does), or work on a copy (x.clone())")
        if grad and self.data.base is not None and (self._ctx is None or
                                                    self._ctx.op in _VIEW_OPS):
            # Its memory belongs to another tensor (x[0], x.T, x.reshape(...)), whose graph
            # would not learn of the change: its gradient would be that of the old values.
            raise RuntimeError(f"in-place {name} on a view of another tensor (made by "
                               f"indexing, reshape, transpose or expand) while recording "
                               f"gradients is not supported: the viewed tensor's graph would "
                               f"not see it. Work on a copy (v = v.clone()), or do it under "
                               f"no_grad()")
        if not grad:
            fn = _INPLACE.get(op, _copy_into)
            try:
                dispatch.update_tensor(self, fn, other.data if number is None else number)
            except TypeError as e:  # numpy refuses a cast that loses the kind (float -> int)
                raise RuntimeError(f"in-place {name}: the result of dtype {other.dtype} cannot "
                                   f"be stored in a tensor of dtype {self.dtype} ({e})") from None
            except ValueError as e:  # (checked by numpy, not before: a jit capture locks arrays
                if "read-only" not in str(e):  # outside the seam's calls)
                    raise
                raise RuntimeError(f"in-place {name} on a read-only array of shape "
                                   f"{self.shape} (a broadcast view?); use a copy "
                                   f"(x.clone())") from None
            return self
        # Recorded: the op reads a stand-in for the old self, with its own copy of the values
        # if its derivative reads them, since the memory is overwritten below.
        old = Tensor._wrap(run(np.ndarray.copy, self.data) if op is not None and
                           op.reads_inputs[0] else self.data, self.requires_grad)
        old._ctx = self._ctx
        if op is ops.EXPAND or op is None:  # the old values get no gradient
            # expand() also when the shapes agree: a source that requires grad gets a node
            # of its own, so self does not become that tensor (a leaf) in the graph
            new = other.expand(self.shape)
        else:
            new = _apply(op, old, other)
        if new.dtype != self.dtype:
            new = _cast(new, self.dtype)
        dispatch.update(_copy_into, self.data, new.data)
        # nodes that read self before keep their edge to what self was (old's vertex)
        before = old if old._ctx is None else old._ctx
        self._ctx, self.requires_grad = new._ctx, new.requires_grad
        dispatch.rebind(self, before)
        _refuse_stale_views(self, old, name)
        if old._ctx is not None and callable(old._ctx.retains) and old._ctx.retains() is self:
            old._ctx.retains = None  # retain_grad() follows the tensor to its new value (torch)
            autograd.retain_grad(self)
        return self

    # ---- elementwise functions ----
    def sqrt(self) -> Tensor:
        """sqrt(x), elementwise; d/dx = 1 / (2 sqrt(x))."""
        return _apply(ops.SQRT, _floating(self))

    def exp(self) -> Tensor:
        """exp(x), elementwise; d/dx = exp(x)."""
        return _apply(ops.EXP, _floating(self))

    def log(self) -> Tensor:
        """Natural log, elementwise; d/dx = 1 / x."""
        return _apply(ops.LOG, _floating(self))

    def relu(self) -> Tensor:
        """max(x, 0), elementwise; d/dx = 1 where x > 0, else 0."""
        if self.data.dtype.kind == "b":
            raise TypeError("relu of a bool tensor is not supported (as in PyTorch); convert "
                            "first, e.g. x.float().relu()")
        return _apply(ops.RELU, self)

    def sigmoid(self) -> Tensor:
        """s = 1 / (1 + exp(-x)), elementwise; d/dx = s (1 - s)."""
        return _apply(ops.SIGMOID, _floating(self))

    def tanh(self) -> Tensor:
        """t = tanh(x), elementwise; d/dx = 1 - t²."""
        return _apply(ops.TANH, _floating(self))

    # ---- reductions ----
    def sum(self, axis: Int | tuple[Int, ...] | None = None, keepdims: Bool = False) -> Tensor:
        """Sum over ``axis`` (every axis when None); the gradient copies g to every summed entry."""
        return _apply(ops.SUM, self, axis=ops.normalize_axis(axis, self.data.ndim),
                      keepdims=keepdims)

    def mean(self, axis: Int | tuple[Int, ...] | None = None, keepdims: Bool = False) -> Tensor:
        """sum(x) / n over ``axis`` (every axis when None); d/dx_i = 1 / n."""
        _need_float(self, "mean")
        return _apply(ops.MEAN, self, axis=self._nonempty_axes(axis, "mean"), keepdims=keepdims)

    def max(self, axis: Int | tuple[Int, ...] | None = None, keepdims: Bool = False) -> Tensor:
        """Maximum over ``axis``; the gradient goes to the maxima (shared equally by ties)."""
        return _apply(ops.MAX, self, axis=self._nonempty_axes(axis, "max"), keepdims=keepdims)

    def _nonempty_axes(self, axis, name):
        axes = ops.normalize_axis(axis, self.data.ndim)
        if self.data.size == 0 and any(self.shape[a] == 0 for a in axes):
            raise ValueError(f"{name} over axis {axis} of an empty tensor of shape {self.shape}")
        return axes

    def min(self, axis: Int | tuple[Int, ...] | None = None, keepdims: Bool = False) -> Tensor:
        """min(x) = -max(-x)."""
        return -(-self).max(axis=axis, keepdims=keepdims)

    def var(self, axis: Int | tuple[Int, ...] | None = None, keepdims: Bool = False) -> Tensor:
        """Biased variance: mean((x - mean(x))**2); the graph runs through the mean too."""
        centered = self - self.mean(axis=axis, keepdims=True)
        return (centered ** 2).mean(axis=axis, keepdims=keepdims)

    def argmax(self, axis: Int | None = None) -> np.ndarray:
        """Indices of the maxima (an integer ndarray: it has no gradient)."""
        return run(np.ndarray.argmax, self.data, axis=axis)

    # ---- softmax family (composite; numerically stable) ----
    def softmax(self, axis: Int = -1) -> Tensor:
        """exp(x - max) / sum(exp(x - max)); the shift is a constant, it cancels in the ratio."""
        _need_float(self, "softmax")
        e = (self - self._max_constant(axis)).exp()
        return e / e.sum(axis=axis, keepdims=True)

    def log_softmax(self, axis: Int = -1) -> Tensor:
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
    def reshape(self, *shape: Int | tuple[Int, ...]) -> Tensor:
        """The same data in ``shape`` (one entry may be -1): ``reshape(2, 3)`` or ``((2, 3))``."""
        return _apply(ops.RESHAPE, self, shape=_reshape_target(self.shape, _shape_arg(shape)))

    def transpose(self, *axes: Int | tuple[Int, ...]) -> Tensor:
        """Swap two axes, as PyTorch: ``transpose(0, 1)``. Also numpy's forms: no argument
        reverses the axes, a tuple (or three or more axes) is a full permutation."""
        if not axes and self.data.ndim == 2:  # W.T in every Linear layer: skip the checks
            return _apply(ops.TRANSPOSE, self, axes=(1, 0))
        if len(axes) == 2 and all(isinstance(a, (int, np.integer)) for a in axes):
            return self.swapaxes(*axes)  # torch's transpose(dim0, dim1), also for 2-D tensors
        axes = _shape_arg(axes) or tuple(range(self.ndim))[::-1]
        if sorted(a % max(self.ndim, 1) for a in axes) != list(range(self.ndim)):
            raise ValueError(f"transpose: {axes} is not a permutation of the {self.ndim} axes of "
                             f"shape {self.shape} (to swap two axes use swapaxes(a, b))")
        return _apply(ops.TRANSPOSE, self, axes=tuple(a % self.ndim for a in axes))

    def permute(self, *dims: Int | tuple[Int, ...]) -> Tensor:
        """PyTorch's name for ``transpose(*dims)`` with a full permutation of the axes."""
        return self.transpose(*dims)

    def swapaxes(self, a: Int, b: Int) -> Tensor:
        """Exchange axes ``a`` and ``b``."""
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return self.transpose(axes)

    T = property(lambda self: self.transpose(), doc="``transpose()``: the axes reversed.")

    def expand(self, *shape: Int | tuple[Int, ...]) -> Tensor:
        """Broadcast to ``shape`` (numpy rules) without copying."""
        shape = _shape_arg(shape)
        try:
            np.broadcast_shapes(self.shape, shape)
        except ValueError:
            raise ValueError(f"expand: cannot broadcast shape {self.shape} to {shape}") from None
        return _apply(ops.EXPAND, self, shape=shape)

    def flatten(self, start_dim: Int = 0) -> Tensor:
        """Merge the axes from ``start_dim`` on into one: (2, 3, 4) -> (2, 12) for start_dim 1."""
        return self.reshape(self.shape[:start_dim] + (-1,))

    def __getitem__(self, index):
        return _apply(ops.GETITEM, self, index=_index_arg(index))

    def __setitem__(self, index, value):
        """``x[index] = value``, in place (value cast to x's dtype, as torch), when no gradient
        is being recorded through x or value."""
        if autograd.is_grad_enabled() and (self.requires_grad or
                                           getattr(value, "requires_grad", False)):
            raise RuntimeError(f"x[index] = value on a tensor of shape {self.shape} while "
                               f"recording gradients is not supported; build the result out of "
                               f"place (e.g. x * (1 - mask) + value * mask), or assign under "
                               f"no_grad()")
        value = value.data if isinstance(value, Tensor) else value
        dispatch.update_tensor(self, _set_items, _index_arg(index), value)

    def scatter_add(self, index: object, shape: tuple[Int, ...]) -> Tensor:
        """Zeros of ``shape`` with self added at ``index`` (repeats accumulate): the derivative
        of ``x[index]``, which indexing's rule calls on Tensors (create_graph=True)."""
        shape = _shape_arg((shape,))
        index = _index_arg(index)
        try:
            target = np.empty(shape, dtype=bool)[index].shape
        except IndexError as e:
            raise IndexError(f"scatter_add: index {index!r} does not fit shape {shape}: {e}") \
                from None
        if target != self.shape:
            raise ValueError(f"scatter_add: a tensor of shape {self.shape} cannot be added at "
                             f"an index that selects shape {target} of {shape}")
        return _apply(ops.SCATTER_ADD, self, index=index, shape=shape)


# ---- helpers: the one place ops are applied ----

_new = object.__new__
_record = autograd.record


def _apply(op, *inputs, **attrs):
    """Run ``op``'s forward on the inputs' arrays (through the seam) and record it in the graph
    (``autograd.record`` decides whether)."""
    try:
        out = dispatch.forward(op, inputs, attrs)
    except ValueError as e:
        shapes = " and ".join(str(t.shape) for t in inputs)
        raise ValueError(f"{op.name}: cannot apply to shapes {shapes}: {e}") from None
    t = _new(Tensor)
    t.data, t.grad, t._name = out, None, None
    ctx = _record(op, inputs, attrs, out)
    t._ctx, t.requires_grad = ctx, ctx is not None
    return t


apply_op = _apply  # for layers above the core (distributed's all_reduce)


# The writers of in-place updates count their own write (dispatch.bump): a jit replay calls
# them without the seam's update(), and a graph made outside the step must still see it.
def _copy_into(dst, src):
    np.copyto(dst, src, casting="same_kind")
    dispatch.bump(dst)


def _write_with(ufunc):
    def write(a, b):
        ufunc(a, b, out=a)
        dispatch.bump(a)
    write.__name__ = f"{ufunc.__name__}_in_place"
    return write


def _set_items(a, index, value):
    a[index] = value
    dispatch.bump(a)


# Ops whose result is a view of their input's memory (when numpy can make one).
_VIEW_OPS = (ops.GETITEM, ops.RESHAPE, ops.TRANSPOSE, ops.EXPAND)


def _refuse_stale_views(t, old, name):
    """After a recorded in-place ``name`` on ``t`` (``old``: its stand-in before): the views of
    t made before (x[0], x.T, x.reshape(..), x.expand(..)) show the new values, but their graph
    is the old one, where PyTorch moves them onto the new one. Each gets a node that backward
    refuses, and keeps its old vertex for the graphs made before it (as t does).

    Making a view costs nothing for this: nothing lists an array's views. Each numpy view holds
    a reference to the array that owns the memory, so if nothing but t (and old) does, no view
    lives: the common case, one call. Else the views are found among the live objects (gc), a
    rare path whose cost grows with the number of objects."""
    if t.data.base is None:
        # the references beyond t.data's (old.data's too if it is the same array)
        count = _references(t) - _REFERENCES_OF_ONE
        owner = t.data
        if count <= (old.data is owner):
            return
        # and the stand-ins for what t was before earlier ops, if graphs keep them (acc += x)
        stand_ins = {id(b) for b in dispatch.vertices_before(t) + [old]
                     if not autograd.is_node(b) and b.data is owner}
        if count <= len(stand_ins):
            return
    else:
        owner = t.data.base
    before = old._ctx if old._ctx is not None else old
    # (type(v), not isinstance: that would ask proxies and lazy modules for __class__)
    stale = [v for v in gc.get_objects() if issubclass(type(v), Tensor) and v is not t
             and v.data.base is owner and _taken_from(v, t, before)]
    for v in stale:
        op = v._ctx.op if v._ctx is not None else None
        what = f"a view of shape {v.shape}" + (f" ({op.name})" if op is not None else "")
        was = v._ctx if v._ctx is not None else Tensor._wrap(v.data)  # a constant before
        if t.requires_grad:
            v._ctx = autograd.refused(op or ops.GETITEM, v, (
                f"{what} of a tensor of shape {t.shape} was taken before the in-place {name} on "
                f"that tensor and used after it: it shows the new values, but its gradient "
                f"would follow the old values' graph (PyTorch moves the view onto the new "
                f"one). Take the view after the in-place operation, or clone() it"))
        else:  # t has no graph now (fill_ with a number): neither has its view
            v._ctx = None
        v.requires_grad = t.requires_grad
        dispatch.rebind(v, was)


def _references(t):
    """sys.getrefcount of ``t.data``, read the same way for every tensor."""
    owner = t.data
    return sys.getrefcount(owner)


# What _references gives for an array only its tensor holds: the count includes this code's own
# references (a local, the call's argument), which interpreters count differently (3.14 borrows
# stack references), so it is measured here rather than assumed.
_REFERENCES_OF_ONE = _references(Tensor._wrap(np.empty(0)))


def _taken_from(v, t, before):
    """Whether view ``v`` was taken from ``t`` (or from a view of it) when t stood for vertex
    ``before``, as far as v's graph tells; a view without one (of a tensor without a gradient,
    or made under no_grad) counts as t's: refused, never a wrong gradient."""
    vertex = v._ctx
    if vertex is None:
        return True
    while autograd.is_node(vertex) and vertex.op in _VIEW_OPS:
        if vertex.args is None:  # released, or refused already: nothing tells
            return True
        vertex = vertex.args[0]
    return vertex is before or vertex is t


_INPLACE = {ops.ADD: _write_with(np.add), ops.SUB: _write_with(np.subtract),
            ops.MUL: _write_with(np.multiply), ops.DIV: _write_with(np.true_divide)}


def _operands(t, other, op):
    """(t, other) as Tensors of the dtype ``op`` computes in: PyTorch's promotion
    (``result_dtype``), and float32 for a division of integers. Converting a tensor that
    needs a gradient is recorded, so the gradient flows back in its own dtype."""
    dtype = t.data.dtype
    # the common cases first: x * 0.5, and x + y of one float dtype (numpy's dtypes of one
    # kind are one object, so `is` finds them; any other dtype takes the general rule)
    if isinstance(other, Tensor):
        if other.data.dtype is dtype and dtype in _FLOATS:
            return t, other
    elif type(other) is float or type(other) is int:
        if dtype in _FLOATS:
            return t, _scalar(other, dtype)
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
    """``t`` as ``dtype`` (itself if it has it), keeping its gradient."""
    dtype = np.dtype(dtype)
    return t if t.data.dtype == dtype else _apply(ops.CAST, t, dtype=dtype)


def _const(x, dtype):
    """Operand ``x`` (Tensor, array or number) as a Tensor of ``dtype``."""
    if isinstance(x, Tensor):
        return _cast(x, dtype)
    if isinstance(x, np.ndarray):
        return Tensor._wrap(x if x.dtype == dtype else dispatch.cast(x, dtype))
    return _scalar(_python_number(x), dtype)


def _python_number(x):
    # numpy scalars as Python numbers: numpy would let np.float64(2) widen a float32 result
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (bool, int, float)):
        return x
    return int(x) if isinstance(x, numbers.Integral) else float(x)  # Fraction, Decimal-like


def _floating(t):
    """``t`` itself if it holds floats, else as float32 (sqrt, exp, ... of integers give floats
    in torch)."""
    return t if t.data.dtype.kind == "f" else _cast(t, DEFAULT_FLOAT)


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
    if isinstance(index, np.ndarray):
        if index.dtype.kind not in "biu":
            raise IndexError(f"tensors used as indices must be integer or bool, got dtype "
                             f"{index.dtype} (as in PyTorch); convert with .long()")
        # the node keeps the index for its derivative: a copy, so that idx += 1 afterwards
        # cannot send the gradient to other positions
        index = run(np.array, index)
    return index
