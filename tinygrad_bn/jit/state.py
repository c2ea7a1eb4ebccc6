"""Snapshots of the state a step touches, to check a trial replay against an eager call.

Before jit trusts a compiled replay it runs the step once eagerly and once replayed from the
same starting state, and compares what each left behind: parameters and their gradients,
buffers, optimizer state, the returned tensors. A step that changes something outside the
engine (``p.data -= ...``, ``p.grad = ...``, numpy on ``.data``) differs there.

A snapshot is a tree: for every object reached, the object itself, the values of its parts
(which object each attribute, item or ``.data`` pointed to) and copies of the arrays, so that
``restore`` can put back both which objects are bound and what is in them.
"""
import numpy as np

from ..tensor import Tensor

# Deep enough for roots -> optimizer -> state list -> a parameter's state dict -> its buffers,
# and optimizer -> params list -> parameter -> its gradient tensor.
_DEPTH = 8


def snapshot(obj, depth=_DEPTH, seen=None):
    seen = {} if seen is None else seen
    if id(obj) in seen:
        return ("seen", obj)
    if isinstance(obj, np.ndarray):
        return ("array", obj, obj.copy())
    if depth == 0 or obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return ("value", obj)
    seen[id(obj)] = obj
    if isinstance(obj, Tensor):
        return ("tensor", obj, obj.data, snapshot(obj.data, depth, seen), obj.grad,
                snapshot(obj.grad, depth - 1, seen))
    if isinstance(obj, dict):
        return ("dict", obj, dict(obj), {k: snapshot(v, depth - 1, seen) for k, v in obj.items()})
    if isinstance(obj, list):
        return ("list", obj, list(obj), [snapshot(v, depth - 1, seen) for v in obj])
    if isinstance(obj, tuple):
        return ("tuple", obj, [snapshot(v, depth - 1, seen) for v in obj])
    attrs = getattr(obj, "__dict__", None)
    if attrs is None or callable(obj) and not hasattr(obj, "parameters"):
        return ("value", obj)
    return ("object", obj, dict(attrs), {k: snapshot(v, depth - 1, seen) for k, v in
                                         attrs.items()})


def restore(snap):
    kind = snap[0]
    if kind == "array":
        if snap[1].flags.writeable:
            snap[1][...] = snap[2]
    elif kind == "tensor":
        _, t, data, data_snap, grad, grad_snap = snap
        t.data, t.grad = data, grad
        restore(data_snap)
        restore(grad_snap)
    elif kind in ("dict", "object"):
        target = snap[1] if kind == "dict" else snap[1].__dict__
        target.clear()
        target.update(snap[2])
        for child in snap[3].values():
            restore(child)
    elif kind == "list":
        snap[1][:] = snap[2]
        for child in snap[3]:
            restore(child)
    elif kind == "tuple":
        for child in snap[2]:
            restore(child)


def difference(a, b, path="state"):
    """None if snapshots ``a`` and ``b`` (of the same objects) hold the same values, else
    where they first differ."""
    if a[0] != b[0]:
        return f"{path} is a {_kind(a)} after one and a {_kind(b)} after the other"
    kind = a[0]
    if kind == "seen":
        return None if a[1] is b[1] else f"{path} refers to another object"
    if kind == "array":
        x, y = a[2], b[2]
        same = x.shape == y.shape and x.dtype == y.dtype and \
            np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")
        return None if same else f"{path} (an array of shape {x.shape}) differs"
    if kind == "value":
        same = a[1] is b[1] or a[1] == b[1] or a[1] != a[1] and b[1] != b[1]
        return None if same else f"{path} is {a[1]!r} after one and {b[1]!r} after the other"
    if kind == "tensor":
        return difference(a[3], b[3], f"{path}.data") or difference(a[5], b[5], f"{path}.grad")
    if kind in ("dict", "object"):
        if a[3].keys() != b[3].keys():
            return f"{path} has keys {sorted(map(str, a[3]))} after one and " \
                   f"{sorted(map(str, b[3]))} after the other"
        fmt = "{}[{!r}]" if kind == "dict" else "{}.{}"
        for k in a[3]:
            why = difference(a[3][k], b[3][k], fmt.format(path, k))
            if why:
                return why
        return None
    children_a, children_b = (a[3], b[3]) if kind == "list" else (a[2], b[2])
    if len(children_a) != len(children_b):
        return f"{path} has {len(children_a)} items after one and {len(children_b)} after the other"
    for i, (x, y) in enumerate(zip(children_a, children_b)):
        why = difference(x, y, f"{path}[{i}]")
        if why:
            return why
    return None


def _kind(snap):
    return "repeated object" if snap[0] == "seen" else snap[0]
