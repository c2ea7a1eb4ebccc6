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
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after ``backward()`` (leaves always keep it)."""
        if self._ctx is not None:
            autograd.retain_grad(self)
        return self

    def __array__(self, dtype=None, copy=None):
        refuse("np.asarray(tensor) (or any numpy function given a tensor)")
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
    if isinstance(index, np.ndarray) and index.dtype.kind == "b" and Tape.current() is not None:
        raise JitError("indexing with a boolean mask inside a jit step: the result's shape "
                       "depends on the mask's values, which a replay cannot follow")
    if isinstance(index, np.ndarray) and index.dtype.kind == "f":
        index = run(_integer_index, index)
    return index


def _integer_index(index):
    if not np.all(index == np.round(index)):
        raise IndexError("tensor index has non-integer values")
    return index.astype(np.intp)
