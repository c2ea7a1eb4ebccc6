"""Tensor: a numpy array that records the operations made from it.

Every differentiable method either applies one primitive of ``ops.py`` through ``_apply`` or is
composed from other methods (``var``, ``softmax``, ``log_softmax``, ``min``) and then has no
derivative of its own: autodiff derives it.
"""
import math
import numbers
import operator

import numpy as np

from . import autograd, dispatch, ops
from .dispatch import run


def _to_array(data, dtype):
    """``data`` as a new float ndarray; lists and ints become float32 (PyTorch's default)."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, (np.ndarray, np.generic)):
        if dtype is None:
            dtype = data.dtype if data.dtype.kind == "f" else np.float32
        if data.dtype.kind not in "fiub":
            raise TypeError(f"Tensor needs numbers, got an array of dtype {data.dtype}")
        return np.array(data, dtype=dtype)
    if isinstance(data, (bool, numbers.Real, list, tuple)):
        try:
            arr = np.array(data, dtype=np.float32 if dtype is None else dtype)
        except (ValueError, TypeError) as e:
            raise TypeError(f"Tensor needs numbers or nested lists of numbers of equal length, "
                            f"got {_describe(data)}: {e}") from None
        return arr
    raise TypeError(f"Tensor needs a numpy array, a number or a (nested) list of numbers, "
                    f"got {_describe(data)}")


def _describe(x):
    text = repr(x)
    return f"{type(x).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"Tensor holds floating-point data; dtype {dtype} is not supported "
                        f"(use np.float32 or np.float64)")
    return dtype


class Tensor:
    """An n-dimensional array with reverse-mode autodiff (``requires_grad``, ``backward``)."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_name", "__weakref__")
    # ndarray + Tensor must call Tensor.__radd__, not build an object array element by element.
    __array_ufunc__ = None
    seq = -1  # as a vertex of the graph walk: made before every recorded operation

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        self.data = run(_to_array, data, None if dtype is None else _check_dtype(dtype))
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
        dispatch.read("numpy()")
        return self.data

    def item(self):
        dispatch.read("item()")
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        dispatch.read("tolist()")
        return self.data.tolist()

    def detach(self):
        """The same data, cut from the graph (no gradient flows through it)."""
        out = Tensor._wrap(self.data)
        dispatch.alias(out, self)
        return out

    def requires_grad_(self, requires_grad=True):
        """Start (or stop) recording operations on this leaf; returns the tensor."""
        if self._ctx is not None and not requires_grad:
            raise RuntimeError("requires_grad_(False) on a tensor computed in a graph; use "
                               ".detach() to get a tensor without history")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after ``backward()`` (leaves always keep it)."""
        if self._ctx is not None:
            autograd.retain_grad(self)
        return self

    def __array__(self, dtype=None, copy=None):
        dispatch.read("np.asarray(tensor)")
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

    # ---- elementwise arithmetic (numpy broadcasting) ----
    def __add__(self, other):
        return _apply(ops.ADD, self, _const(other, self))

    def __radd__(self, other):
        return _apply(ops.ADD, _const(other, self), self)

    def __sub__(self, other):
        return _apply(ops.SUB, self, _const(other, self))

    def __rsub__(self, other):
        return _apply(ops.SUB, _const(other, self), self)

    def __mul__(self, other):
        return _apply(ops.MUL, self, _const(other, self))

    def __rmul__(self, other):
        return _apply(ops.MUL, _const(other, self), self)

    def __truediv__(self, other):
        return _apply(ops.DIV, self, _const(other, self))

    def __rtruediv__(self, other):
        return _apply(ops.DIV, _const(other, self), self)

    def __neg__(self):
        return _apply(ops.NEG, self)

    def __pow__(self, exponent):
        if isinstance(exponent, numbers.Real) and not isinstance(exponent, bool):
            return _apply(ops.POW_SCALAR, self, exponent=exponent)
        return _apply(ops.POW, self, _const(exponent, self))

    def __rpow__(self, base):
        return _apply(ops.POW, _const(base, self), self)

    def __matmul__(self, other):
        return _matmul(self, _const(other, self))

    def __rmatmul__(self, other):
        return _matmul(_const(other, self), self)

    # Comparisons give constant (bool) tensors: masks carry no gradient. == stays identity so
    # tensors remain hashable (the graph walk keeps them in sets).
    # Comparisons give boolean masks without a gradient (on a jit tape like any array work).
    def __gt__(self, other):
        return Tensor._wrap(run(operator.gt, self.data, _data(other)))

    def __ge__(self, other):
        return Tensor._wrap(run(operator.ge, self.data, _data(other)))

    def __lt__(self, other):
        return Tensor._wrap(run(operator.lt, self.data, _data(other)))

    def __le__(self, other):
        return Tensor._wrap(run(operator.le, self.data, _data(other)))

    def eq(self, other):
        """The elementwise mask self == other (``==`` itself stays identity: tensors are hashed)."""
        return Tensor._wrap(run(operator.eq, self.data, _data(other)))

    def __invert__(self):
        """Logical not of a boolean mask."""
        if self.data.dtype != np.bool_:
            raise TypeError(f"~ needs a boolean tensor, got dtype {self.dtype}")
        return Tensor._wrap(run(np.logical_not, self.data))

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

    def add_(self, other, alpha=1):
        """self += alpha * other, in place."""
        return self._inplace(ops.ADD, other if alpha == 1 else other * alpha)

    def sub_(self, other, alpha=1):
        """self -= alpha * other, in place."""
        return self._inplace(ops.SUB, other if alpha == 1 else other * alpha)

    def mul_(self, other):
        """self *= other, in place."""
        return self._inplace(ops.MUL, other)

    def div_(self, other):
        """self /= other, in place."""
        return self._inplace(ops.DIV, other)

    def zero_(self):
        """Set every element to 0, in place."""
        return self.fill_(0)

    def fill_(self, value):
        """Set every element to ``value``, in place (no gradient flows to the old values)."""
        return self._inplace(None, value)

    def copy_(self, src):
        """Copy ``src`` (broadcast to this shape) into this tensor, in place; d/d(src) flows."""
        return self._inplace(ops.EXPAND, src)

    def to(self, dtype, copy=False):
        """This tensor as ``dtype`` (itself if it has it, unless ``copy``); gradients flow back
        in self's dtype."""
        return self if np.dtype(dtype) == self.dtype and not copy else _cast(self, dtype)

    def float(self):
        """As float32."""
        return self.to(np.float32)

    def double(self):
        """As float64."""
        return self.to(np.float64)

    def clone(self):
        """A copy with its own memory; gradients flow back to ``self``."""
        # A cast, not self * 1: it saves nothing of self, so self may be changed in place
        # afterwards (the reason to clone), as in PyTorch.
        return _cast(self, self.dtype)

    def _inplace(self, op, other):
        name = op.name if op is not None and op is not ops.EXPAND else \
            "fill_" if op is None else "copy_"
        if self.data.dtype.kind != "f":  # a comparison's mask: PyTorch refuses float results too
            raise RuntimeError(f"in-place {name} on a tensor of dtype {self.dtype}: only "
                               f"floating-point tensors are updated in place; make a float "
                               f"tensor first (mask * 1.0)")
        # A number is handed to numpy as it is (a Python value, which the jit compares by
        # value), not as the cached constant array _const makes of it: same dtype rules.
        number = other.item() if isinstance(other, np.generic) else other
        number = number if type(number) in (int, float) else None
        other = _const(other, self)
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
        if not self.data.flags.writeable:
            raise RuntimeError(f"in-place {name} on a read-only array of shape {self.shape} "
                               f"(a broadcast view?); use a copy (x.clone())")
        if not grad:
            fn = _INPLACE.get(op, _copy_into)
            try:
                dispatch.update(fn, (self,), self.data,
                                other.data if number is None else number)
            except TypeError as e:  # numpy refuses a cast that loses the kind (float -> int)
                raise RuntimeError(f"in-place {name}: the result of dtype {other.dtype} cannot "
                                   f"be stored in a tensor of dtype {self.dtype} ({e})") from None
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
        dispatch.update(_copy_into, (self,), self.data, new.data)
        self._ctx, self.requires_grad = new._ctx, new.requires_grad
        dispatch.rebind(self)  # nodes that read self before: their edge is stale now
        return self

    # ---- elementwise functions ----
    def sqrt(self):
        return _apply(ops.SQRT, self)

    def exp(self):
        return _apply(ops.EXP, self)

    def log(self):
        return _apply(ops.LOG, self)

    def relu(self):
        return _apply(ops.RELU, self)

    def sigmoid(self):
        return _apply(ops.SIGMOID, self)

    def tanh(self):
        return _apply(ops.TANH, self)

    # ---- reductions ----
    def sum(self, axis=None, keepdims=False):
        return _apply(ops.SUM, self, axis=ops.normalize_axis(axis, self.data.ndim),
                      keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
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
        e = (self - self._max_constant(axis)).exp()
        return e / e.sum(axis=axis, keepdims=True)

    def log_softmax(self, axis=-1):
        """(x - max) - log(sum(exp(x - max)))."""
        shifted = self - self._max_constant(axis)
        shifted.name = "x − max"  # a label for the graph renderer
        return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()

    def _max_constant(self, axis):
        # The shift that keeps exp() finite; a constant, not a recorded max (it cancels).
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


# Ops whose result is a view of their input's memory (when numpy can make one).
_VIEW_OPS = (ops.GETITEM, ops.RESHAPE, ops.TRANSPOSE, ops.EXPAND)

_INPLACE = {ops.ADD: _write_with(np.add), ops.SUB: _write_with(np.subtract),
            ops.MUL: _write_with(np.multiply), ops.DIV: _write_with(np.true_divide)}


def _cast(t, dtype):
    """``t`` as ``dtype``, keeping its gradient."""
    return _apply(ops.CAST, t, dtype=np.dtype(dtype))


def _const(x, like):
    """A non-Tensor operand as a constant Tensor; Python numbers take ``like``'s dtype."""
    if isinstance(x, Tensor):
        return x
    if type(x) is float or type(x) is int:  # the common case, before the slower ABC checks
        return _scalar(x, like.data.dtype)
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiub":
            raise TypeError(f"cannot combine a Tensor with an array of dtype {x.dtype}")
        return Tensor._wrap(x)
    if isinstance(x, numbers.Real):  # numpy scalars, Fractions, ...: shared like Python numbers
        return _scalar(x.item() if isinstance(x, np.generic) else float(x), like.data.dtype)
    if isinstance(x, (list, tuple)):
        return Tensor(x, dtype=like.data.dtype)
    raise TypeError(f"cannot combine a Tensor with {_describe(x)}")


# Scalar constants are shared between graphs: they never change and never get a gradient, and
# not allocating one per operation keeps the garbage collector away from long graphs.
_SCALARS = {}


def _scalar(x, dtype):
    # 0.0 == -0.0 as keys, but not as values: the sign of a zero is part of its key.
    key = (x, dtype) if x != 0 else (x, dtype, math.copysign(1.0, x))
    t = _SCALARS.get(key)
    if t is None:
        t = Tensor._wrap(np.array(x, dtype=dtype))
        if len(_SCALARS) > 1024:
            _SCALARS.clear()
        _SCALARS[key] = t
    return t


def _data(x):
    return x.data if isinstance(x, Tensor) else x


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
    if isinstance(index, np.ndarray) and index.dtype.kind == "f":
        index = run(_integer_index, index)
    return index


def _integer_index(index):
    if not np.all(index == np.round(index)):
        raise IndexError("tensor index has non-integer values")
    return index.astype(np.intp)
