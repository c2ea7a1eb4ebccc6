"""The reverse-mode engine: graph records, grad mode, the graph walk and the backward pass.

The graph is made of ``Node`` records, one per recorded operation (PyTorch's ``grad_fn``). A
tensor points to the node that made it (``_ctx``); a node points to its parents (the nodes of
its inputs, or the input tensors themselves for leaves and constants), never to its output, so
a graph is freed by reference counting as soon as its output is unreachable. A node keeps only
the arrays its derivative reads (``Op.reads``): an intermediate that no derivative reads, like
the square in ``mean((x - mu)**2)``, is freed as soon as the forward pass drops it.

Works on any object with ``data``, ``requires_grad``, ``grad`` and ``_ctx`` (the ``Tensor``);
it never imports ``tensor.py``.
"""
import itertools
import operator
import threading
import weakref

import numpy as np

from .ops import sum_to
from .tape import JitError, ShapeOnly, Tape, run


class Node:
    """How a tensor was made: the primitive, its parents, what its derivative reads, and the
    modules (outermost first) whose forward was running, so the renderer can group by layer.

    args: per input, what the derivative gets for it: the input tensor if ``op`` reads it,
        else that input's parent (only its ``.shape`` is used). None once backward() released
        the node. The edges of the graph (``parents``) are read from it, so a node allocates
        no second tuple: every object that outlives an op counts toward Python's cyclic
        garbage collector, whose full passes dominate long graphs.
    parents: per input, that input's node, or the input tensor itself if it has none (a leaf
        or a constant). These are the edges the graph walk follows.
    out: the output array if ``op`` reads it, else None.
    shape, dtype: of the output, for reducing broadcast gradients without the output's array.
    seq: creation order. A tensor is always made after its inputs, so sorting by ``seq`` is a
        topological order without a depth-first search.
    name, grad, retains: the output tensor's name (labels the graph drawing), and its gradient
        when asked for with ``retain_grad()`` (``retains`` is a weak reference to that tensor,
        or True to keep it on the node, as the renderer does).
    """

    __slots__ = ("op", "args", "out", "attrs", "scope", "seq", "shape", "dtype", "name", "grad",
                 "retains")
    requires_grad = True  # a node exists only if an input needs a gradient

    def __init__(self, op, args, out, attrs, scope, seq, shape, dtype):
        self.op, self.args, self.out, self.attrs = op, args, out, attrs
        self.scope, self.seq, self.shape, self.dtype = scope, seq, shape, dtype
        self.name = self.grad = self.retains = None

    @property
    def parents(self):
        return () if self.args is None else tuple(_parent(a) for a in self.args)

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"Node({self.op.name}, shape={self.shape}, seq={self.seq})"


def _parent(arg):
    """The vertex an entry of ``Node.args`` stands for: a node, or a tensor without one."""
    return arg if type(arg) is Node else (arg._ctx or arg)


def is_node(vertex):
    """Whether a vertex of the graph walk is a recorded operation (else it is a tensor)."""
    return type(vertex) is Node


def is_released(vertex):
    """Whether backward() already freed what this node saved (retain_graph=False)."""
    return type(vertex) is Node and vertex.args is None


_next_seq = itertools.count(1).__next__


class _GradModeState(threading.local):
    # Per thread, as in PyTorch: no_grad() or a module's forward in one thread does not change
    # what another thread records.
    enabled = True
    keep_values = False  # keep_values(): nodes save every array (for drawing)
    scope = ()  # the modules whose forward is running, outermost first


_GradMode = _GradModeState()


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
        wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn
        return wrapper


class no_grad(_SetGradMode):
    """Inside ``with no_grad():`` (or a function decorated with it) no graph is recorded."""

    mode = False


class enable_grad(_SetGradMode):
    """Turns recording back on inside a ``no_grad`` block."""

    mode = True


def record(op, inputs, attrs, out):
    """The one place graph nodes are made: a Node if grad mode is on and an input needs grad.

    ``out`` is the forward result; the node keeps it only if the op's derivative reads it.
    """
    mode = _GradMode  # this thread's: each attribute read costs, so each is read once
    if not mode.enabled:
        return None
    for t in inputs:
        if t.requires_grad:
            break
    else:
        return None
    keep = mode.keep_values
    if keep or op.reads_all:
        args = inputs
    elif len(inputs) == 1:  # spelled out: this runs for every recorded operation
        t = inputs[0]
        args = (t._ctx or t,)
    elif op.reads_none:
        args = tuple([t._ctx or t for t in inputs])
    else:
        args = tuple([t if r else (t._ctx or t) for t, r in zip(inputs, op.reads_inputs)])
    shape = out.shape
    # One tuple per distinct shape: the graph keeps no extra object per op (see Node.args).
    shape = _SHAPES.get(shape) or _intern_shape(shape)
    return Node(op, args, out if op.reads_out or keep else None, attrs, mode.scope, _next_seq(),
                shape, out.dtype)


_SHAPES = {}


def _intern_shape(shape):
    if len(_SHAPES) > 4096:
        _SHAPES.clear()
    _SHAPES[shape] = shape
    return shape


class keep_values(_SetGradMode):
    """Inside ``with keep_values():`` nodes keep every input and output array, not only what
    their derivative reads, so the renderer can show every intermediate value."""

    def __enter__(self):
        self._prev = _GradMode.keep_values
        _GradMode.keep_values = True
        return self

    def __exit__(self, *exc):
        _GradMode.keep_values = self._prev
        return False


def saved_arrays(node):
    """(out, per-input arguments) exactly as backward() calls ``node``'s derivative rules with
    them: the arrays the op reads, stand-ins with a ``.shape`` for the rest."""
    return node.out, [a.data if r else a for a, r in zip(node.args, node.op.reads_inputs)]


def toposort(root, grad_only=True):
    """The vertices of the graph that made tensor ``root``, every input before its consumers.

    A vertex is a ``Node`` (a recorded operation, standing for the tensor it made) or a tensor
    without a node (a leaf or a constant); the root's vertex is ``root._ctx`` unless root is a
    leaf. Collects the reachable vertices with an explicit stack (no recursion, so depth is
    limited by memory, not by Python's recursion limit), then sorts them by creation order,
    which is topological (``Node.seq``); leaves come first. ``grad_only`` skips inputs that need
    no gradient (the backward pass); the renderer walks everything.
    """
    start = root._ctx or root
    # A dict, not a set: leaves tie on ``seq`` and keep the order they were found in, the same
    # for the same graph (a set's order depends on the nodes' addresses), so a jit tape agrees.
    seen = {start: None}
    stack = [start]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        if type(v) is Node and v.args is not None:
            for a in v.args:
                p = a if type(a) is Node else (a._ctx or a)  # _parent(a), inlined
                if p not in seen and (p.requires_grad or not grad_only):
                    seen[p] = None
                    push(p)
    return sorted(seen, key=_creation_order)


# Tensors answer ``seq`` too (-1: leaves and constants come first), so the sort key is C code.
_creation_order = operator.attrgetter("seq")


def unbroadcast(g, shape, op_name):
    """Sum ``g`` over the axes numpy broadcasting added, so it has ``shape`` again."""
    g = sum_to(g, shape)
    if g.shape != shape:
        raise RuntimeError(f"backward of '{op_name}' produced a gradient of shape {g.shape} "
                           f"for an input of shape {shape}")
    return g


def backward(root, grad, retain_graph=False, create_graph=False):
    """Reverse-mode pass from tensor ``root`` with upstream gradient ``grad`` (an array of root's
    shape).

    Gradients of intermediates live in a local dict and are dropped once used; leaf gradients
    (and those of tensors that called ``retain_grad()``) are accumulated into ``.grad``. Unless
    ``retain_graph``, each node releases what it saved as soon as its derivative has run, so
    saved arrays are freed during the pass rather than after it.

    With ``create_graph`` the derivative rules run on Tensors instead of arrays, so the
    gradients are themselves recorded and can be differentiated again (higher order).
    """
    wrap = root._wrap
    if create_graph:
        with enable_grad():
            return _backward(root, wrap(grad), True, True, wrap)
    return _backward(root, grad, retain_graph, False, wrap)


def _backward(root, grad, retain_graph, create_graph, wrap):
    # jit is capturing in this thread: every array computed below goes on the tape
    tape = Tape.current()
    if tape is not None and create_graph:
        raise JitError("backward(create_graph=True) inside a jit step is not supported")
    order = toposort(root)
    if tape is not None:
        tape.backpropagated.update(order)
    grads = {order[-1]: grad}
    # Vertices whose entry in ``grads`` is an array only this pass holds (a fresh result of a
    # derivative rule): further contributions are added into it in place, saving an allocation.
    owned = set()
    # Buffers stored in some .grad during this pass, never to be stored twice; the caller's
    # gradient counts as one, so a leaf gets a copy of it, never the caller's array itself.
    handed_out = {_buffer_id(grad)}
    while order:
        v = order.pop()
        g = grads.pop(v, None)
        if g is None:
            continue
        if type(v) is not Node:  # a leaf
            _store(v, g, v.data.dtype, create_graph, handed_out, wrap)
            continue
        args = v.args
        if args is None:
            raise RuntimeError(
                "backward through a graph whose saved values were already freed by an earlier "
                "backward(); call backward(retain_graph=True) the first time if you need a "
                "second pass")
        if v.retains is not None:
            holder = _grad_holder(v)
            if holder is not None:  # else the tensor is gone: nobody can read its gradient
                _store(holder, g, v.dtype, create_graph, handed_out, wrap)
        op = v.op
        if create_graph:
            arrays = args
            out = v.out
            if out is not None:  # the output as a tensor of this graph, for second derivatives
                out = wrap(out, True)
                out._ctx = v
        else:
            reads = op.reads_inputs
            if len(args) == 2:  # spelled out: this runs once per node of every graph
                a, b = args
                arrays = (a.data if reads[0] else a, b.data if reads[1] else b)
            elif len(args) == 1:
                arrays = (args[0].data,) if reads[0] else args
            else:
                arrays = saved_arrays(v)[1]
            out = v.out
        attrs = v.attrs
        # Last input first: it is usually the broadcast one (γ, β, μ, √(σ²+ε), a bias), whose
        # full-size temporary is summed down and freed before the first input's full-size
        # gradient is allocated, one array less at the peak.
        for i in range(len(args) - 1, -1, -1):
            a = args[i]
            p = a if type(a) is Node else (a._ctx or a)  # _parent(a), inlined
            if not p.requires_grad:
                continue
            if tape is None:
                pg = op.vjps[i](g, out, *arrays, **attrs) if attrs else \
                    op.vjps[i](g, out, *arrays)
            else:  # only what this rule reads, so a replay can free the rest before it runs
                pg = tape.call(op.vjps[i], (g, out, *_shape_only(arrays, op.vjp_reads[i])),
                               attrs)
            if type(p) is Node:
                pshape, pdtype = p.shape, p.dtype
            else:
                pdata = p.data
                pshape, pdtype = pdata.shape, pdata.dtype
            if pg.shape != pshape:
                pg = run(unbroadcast, pg, pshape, op.name)
            if pg.dtype != pdtype and type(pg) is np.ndarray:
                pg = run(_astype, pg, pdtype)
            prev = grads.get(p)
            if prev is None:
                grads[p] = pg
                if pg is not g and type(pg) is np.ndarray and pg.base is None:
                    owned.add(p)
            elif p in owned:
                if tape is None:
                    prev += pg
                else:
                    tape.call(operator.iadd, (prev, pg))
            else:
                grads[p] = run(operator.add, prev, pg)
                if type(prev) is np.ndarray:
                    owned.add(p)
        if not retain_graph:
            # Drop the saved arrays and the edges: a released node raises if reached again.
            v.args = v.out = None


def _shape_only(arrays, reads):
    # What a tape records for the inputs a rule does not read: their shape, not the array.
    return [a if type(a) is np.ndarray and r else ShapeOnly(a.shape, a.dtype)
            for a, r in zip(arrays, reads)]


def _astype(a, dtype):
    return a.astype(dtype)


def _grad_holder(node):
    """Where ``retain_grad()`` asked a node's gradient to go: the node itself, its output
    tensor while that is alive, or None."""
    return node if node.retains is True else node.retains()


def retained_grad(node):
    """The gradient kept for a node's output by retain_grad() or retain_node_grad(), or None."""
    holder = None if node.retains is None else _grad_holder(node)
    return None if holder is None else holder.grad


def _store(holder, g, dtype, create_graph, handed_out, wrap):
    """Add ``g`` into ``holder.grad``: recorded Tensors with create_graph, else arrays."""
    if create_graph:
        holder.grad = g if holder.grad is None else holder.grad + g
    else:
        _accumulate(holder, g, dtype, handed_out, wrap)


def retain_grad(tensor):
    """Keep the gradient of a non-leaf tensor in its ``.grad`` after backward()."""
    tensor._ctx.retains = weakref.ref(tensor)


def retain_node_grad(node):
    """Keep the gradient of a node's output on the node itself (``node.grad``), also when no
    tensor of it is alive any more: how the renderer captures every intermediate gradient."""
    node.retains = True


def _accumulate(t, g, dtype, handed_out, wrap):
    """Add ``g`` into ``t.grad``, always as an array no other tensor or caller holds.

    ``handed_out`` holds the ids of the buffers already stored in some ``.grad`` in this pass.
    A writeable result of a derivative rule (or a view of one, like a transposed matmul result)
    whose buffer is not among them is taken as it is; anything else is copied.
    """
    take = type(g) is np.ndarray and g.flags.writeable and _buffer_id(g) not in handed_out
    arr = run(_add_grad, t, g, dtype, take, wrap)
    # g's buffer counts as handed out even when it was added, not taken: whether t had a
    # gradient is decided at call time (a jit replay), so no later tensor may take it either.
    handed_out.add(_buffer_id(g))
    handed_out.add(_buffer_id(arr))


def _add_grad(t, g, dtype, take, wrap):
    """``t.grad`` (+)= g, deciding at call time whether t already has a gradient, so a jit
    replay follows zero_grad() and accumulation done outside the step; returns the array."""
    if t.grad is not None:
        arr = np.asarray(t.grad.data + g)  # numpy gives a scalar for two 0-d arrays
    else:
        arr = g if take else np.array(g, dtype=dtype)
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    t.grad = wrap(arr)  # always a plain Tensor, also for a Parameter
    return arr


def _buffer_id(a):
    """The id of the array that owns ``a``'s memory (numpy points every view at its owner)."""
    return id(a if type(a) is not np.ndarray or a.base is None else a.base)
