"""The reverse-mode engine: graph records, grad mode, the graph walk and the backward pass.

Works on any object with ``data``, ``requires_grad``, ``grad``, ``_ctx`` and ``_retains_grad``
(the ``Tensor``); it never imports ``tensor.py``. A ``Node`` points to its inputs only, never to
its output, so a graph is freed by reference counting as soon as its output is unreachable.
"""
import itertools

import numpy as np


class Node:
    """How a tensor was made: the primitive, its input tensors, its attributes, and the modules
    (outermost first) whose forward was running, so the renderer can group nodes by layer.

    ``seq`` numbers nodes in creation order. A tensor is always made after its inputs, so
    sorting by ``seq`` is a topological order without a depth-first search.
    """

    __slots__ = ("op", "inputs", "attrs", "scope", "seq")

    def __init__(self, op, inputs, attrs, scope=(), seq=0):
        self.op, self.inputs, self.attrs, self.scope, self.seq = op, inputs, attrs, scope, seq


_next_seq = itertools.count(1).__next__
_add_reduce = np.add.reduce

# Marks a tensor whose graph backward() has already released (PyTorch's retain_graph=False).
FREED = Node(None, (), {})


class _GradMode:
    enabled = True
    scope = ()  # the modules whose forward is running, outermost first


def enter_scope(module):
    """Tag the nodes recorded from now on with ``module`` too; returns what to restore."""
    prev = _GradMode.scope
    _GradMode.scope = prev + (module,)
    return prev


def exit_scope(prev):
    _GradMode.scope = prev


def is_grad_enabled():
    """Whether new operations are recorded in the graph."""
    return _GradMode.enabled


class _SetGradMode:
    """Context manager and decorator that sets grad mode and restores the previous one."""

    mode = True

    def __enter__(self):
        self._prev = _GradMode.enabled
        _GradMode.enabled = self.mode
        return self

    def __exit__(self, *exc):
        _GradMode.enabled = self._prev
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


class no_grad(_SetGradMode):
    """Inside ``with no_grad():`` (or a function decorated with it) no graph is recorded."""

    mode = False


class enable_grad(_SetGradMode):
    """Turns recording back on inside a ``no_grad`` block."""

    mode = True


def record(op, inputs, attrs):
    """The one place graph nodes are made: a Node if grad mode is on and an input needs grad."""
    if _GradMode.enabled:
        for t in inputs:
            if t.requires_grad:
                return Node(op, inputs, attrs, _GradMode.scope, _next_seq())
    return None


def toposort(root, grad_only=True):
    """Tensors of the graph that made ``root``, every input before the tensors made from it.

    Collects the reachable tensors with an explicit stack (no recursion, so depth is limited by
    memory, not by Python's recursion limit), then sorts them by creation order, which is
    topological (``Node.seq``); leaves come first. ``grad_only`` skips inputs that need no
    gradient (the backward pass); the renderer walks everything.
    """
    seen = {root}
    stack = [root]
    pop, push, add = stack.pop, stack.append, seen.add
    while stack:
        ctx = pop()._ctx
        if ctx is not None:
            for p in ctx.inputs:
                if p not in seen and (p.requires_grad or not grad_only):
                    add(p)
                    push(p)
    return sorted(seen, key=_creation_order)


def _creation_order(t):
    ctx = t._ctx
    return -1 if ctx is None else ctx.seq


def unbroadcast(g, shape, op_name):
    """Sum ``g`` over the axes numpy broadcasting added, so it has ``shape`` again."""
    if g.shape == shape:
        return g
    plan = _REDUCE_PLANS.get((g.shape, shape))
    if plan is None:
        if len(_REDUCE_PLANS) > 4096:  # many distinct shapes (varying batch sizes): start over
            _REDUCE_PLANS.clear()
        plan = _REDUCE_PLANS[(g.shape, shape)] = _reduce_plan(g.shape, shape)
    axes, keepdims = plan
    if axes:
        # ufunc.reduce skips the Python layer of ndarray.sum; Tensors use their own method
        g = _add_reduce(g, axes, None, None, keepdims) if type(g) is np.ndarray \
            else g.sum(axis=axes, keepdims=keepdims)
    if g.shape != shape:
        g = g.reshape(shape) if g.size == int(np.prod(shape)) else g
    if g.shape != shape:
        raise RuntimeError(f"backward of '{op_name}' produced a gradient of shape {g.shape} "
                           f"for an input of shape {shape}")
    return g


# (gradient shape, input shape) -> (axes to sum, keepdims): a training loop meets the same few.
_REDUCE_PLANS = {}


def _reduce_plan(gshape, shape):
    extra = len(gshape) - len(shape)
    if extra < 0:
        return (), False
    inner = tuple(i + extra for i, n in enumerate(shape) if n == 1 and gshape[i + extra] != 1)
    # Only leading axes to drop: no keepdims, and the result already has ``shape``.
    return tuple(range(extra)) + inner, bool(inner)


def backward(root, grad, retain_graph=False, create_graph=False):
    """Reverse-mode pass from ``root`` with upstream gradient ``grad`` (an array of root's shape).

    Gradients of intermediates live in a local dict and are dropped once used; leaf gradients
    (and those of tensors that called ``retain_grad()``) are accumulated into ``.grad`` as new
    arrays. Unless ``retain_graph``, each node's record is released as soon as its derivative
    has run, so saved arrays are freed during the pass rather than after it.

    With ``create_graph`` the derivative rules run on Tensors instead of arrays, so the
    gradients are themselves recorded and can be differentiated again (higher order).
    """
    if create_graph:
        with enable_grad():
            return _backward(root, root._wrap(grad), True, True)
    return _backward(root, grad, retain_graph, False)


def _backward(root, grad, retain_graph, create_graph):
    order = toposort(root)
    grads = {root: grad}
    # Tensors whose entry in ``grads`` is an array only this pass holds (a fresh result of a
    # derivative rule): further contributions are added into it in place, saving an allocation.
    owned = set()
    # Buffers stored in some .grad during this pass, never to be stored twice; the caller's
    # gradient counts as one, so a leaf gets a copy of it, never the caller's array itself.
    handed_out = {_buffer_id(grad)}
    while order:
        t = order.pop()
        g = grads.pop(t, None)
        if g is None:
            continue
        owned.discard(t)
        ctx = t._ctx
        if ctx is FREED:
            raise RuntimeError(
                "backward through a graph whose saved values were already freed by an earlier "
                "backward(); call backward(retain_graph=True) the first time if you need a "
                "second pass")
        if ctx is None or t._retains_grad:
            if create_graph:
                t.grad = g if t.grad is None else t.grad + g
            else:
                _accumulate(t, g, handed_out)
        if ctx is None:
            continue
        inputs = ctx.inputs
        if create_graph:
            arrays, out = inputs, t
        elif len(inputs) == 1:  # spelled out: this runs once per node of every graph
            arrays, out = (inputs[0].data,), t.data
        elif len(inputs) == 2:
            arrays, out = (inputs[0].data, inputs[1].data), t.data
        else:
            arrays, out = [p.data for p in inputs], t.data
        attrs = ctx.attrs
        # Last input first: it is usually the broadcast one (γ, β, μ, √(σ²+ε), a bias), whose
        # full-size temporary is summed down and freed before the first input's full-size
        # gradient is allocated, one array less at the peak.
        for p, vjp in zip(reversed(inputs), reversed(ctx.op.vjps)):
            if not p.requires_grad:
                continue
            pg = vjp(g, out, *arrays, **attrs)
            pdata = p.data
            if pg.shape != pdata.shape:
                pg = unbroadcast(pg, pdata.shape, ctx.op.name)
            if pg.dtype != pdata.dtype and type(pg) is np.ndarray:
                pg = pg.astype(pdata.dtype)
            prev = grads.get(p)
            if prev is None:
                grads[p] = pg
                if pg is not g and type(pg) is np.ndarray and pg.base is None:
                    owned.add(p)
            elif p in owned:
                prev += pg
            else:
                grads[p] = prev + pg
                if type(prev) is np.ndarray:
                    owned.add(p)
        if not retain_graph:
            t._ctx = FREED


def _accumulate(t, g, handed_out):
    """Add ``g`` into ``t.grad``, always as an array no other tensor or caller holds.

    ``handed_out`` holds the ids of the buffers already stored in some ``.grad`` in this pass.
    A writeable result of a derivative rule (or a view of one, like a transposed matmul result)
    whose buffer is not among them is taken as it is; anything else is copied.
    """
    if t.grad is not None:
        arr = t.grad.data + g
    elif type(g) is np.ndarray and g.flags.writeable and _buffer_id(g) not in handed_out:
        arr = g
    else:
        arr = np.array(g, dtype=t.data.dtype)
    if arr.dtype != t.data.dtype:
        arr = arr.astype(t.data.dtype)
    handed_out.add(_buffer_id(arr))
    t.grad = t._wrap(arr)  # always a plain Tensor, also for a Parameter


def _buffer_id(a):
    """The id of the array that owns ``a``'s memory (numpy points every view at its owner)."""
    return id(a if type(a) is not np.ndarray or a.base is None else a.base)
