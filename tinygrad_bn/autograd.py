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
from heapq import heappop, heappush

import numpy as np

from . import dispatch


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
    epoch: how many in-place writes had happened when it was made (``dispatch.WRITES``);
        backward refuses to use a saved array written in place since.
    """

    __slots__ = ("op", "args", "out", "attrs", "scope", "seq", "shape", "dtype", "name", "grad",
                 "retains", "epoch")
    requires_grad = True  # a node exists only if an input needs a gradient

    def __init__(self, op, args, out, attrs, scope, seq, shape, dtype, epoch):
        self.op, self.args, self.out, self.attrs = op, args, out, attrs
        self.scope, self.seq, self.shape, self.dtype = scope, seq, shape, dtype
        self.epoch = epoch
        self.name = self.grad = self.retains = None

    @property
    def parents(self):
        return () if self.args is None else tuple(_parent_at(a, self.epoch) for a in self.args)

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"Node({self.op.name}, shape={self.shape}, seq={self.seq})"


def _parent(arg):
    """The vertex an entry of ``Node.args`` stands for: a node, or a tensor without one."""
    return arg if type(arg) is Node else (arg._ctx or arg)


def _parent_at(arg, epoch):
    """``_parent(arg)`` as it was when a node of write count ``epoch`` was made: a tensor
    rebound since by a recorded in-place op still stands for its vertex before that op."""
    if type(arg) is not Node and dispatch.rebound_since(arg, epoch):
        before = dispatch.vertex_at(arg, epoch)
        if before is not None:
            return before
    return _parent(arg)


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


def is_grad_enabled() -> bool:
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
    reads = op.reads_inputs
    if keep:
        args = inputs
    elif len(inputs) == 2:  # spelled out: this runs for every recorded operation
        a, b = inputs
        args = (a if reads[0] else (a._ctx or a), b if reads[1] else (b._ctx or b))
    elif len(inputs) == 1:
        t = inputs[0]
        args = (t,) if reads[0] else (t._ctx or t,)
    else:
        args = tuple([t if r else (t._ctx or t) for t, r in zip(inputs, reads)])
    shape = out.shape
    # One tuple per distinct shape: the graph keeps no extra object per op (see Node.args).
    shape = _SHAPES.get(shape) or _intern_shape(shape)
    return Node(op, args, out if op.reads_out or keep else None, attrs, mode.scope, _next_seq(),
                shape, out.dtype, dispatch.WRITES)


def _check_saved(node):
    """Refuse to differentiate with an array ``node`` saved that was written in place since,
    if a rule that will run reads it (as PyTorch: x * w with a constant x saves only x), or
    with an input tensor that got a new node or array since (``node`` reaches its inputs
    through the tensors)."""
    written_since, epoch, args = dispatch.written_since, node.epoch, node.args
    reads = node.op.reads_inputs
    for i in range(len(reads)):
        if reads[i]:
            if epoch < dispatch.LAST_REBIND and dispatch.rebound_since(args[i], epoch) and \
                    dispatch.vertex_at(args[i], epoch) is None:
                raise RuntimeError(
                    f"input {i} of '{node.op.name}' (shape {node.shape}) was changed after "
                    f"'{node.op.name}' read it, by a recorded in-place operation (its gradient "
                    f"would go to that operation) or by load_state_dict (new arrays). Do the "
                    f"in-place operation on a copy (x = x.clone()), or either after backward()")
            if written_since(args[i].data, epoch) and _needed(node, i):
                _refuse_written(node, f"input {i}", args[i].data)
    if node.out is not None and written_since(node.out, epoch):
        _refuse_written(node, "its output", node.out)


def _needed(node, i):
    """Whether a rule that backward will run (of an input that needs a gradient) reads input i."""
    rule_reads = dispatch.kernel(node.op).vjp_reads  # per rule, per input
    return any(_parent_at(a, node.epoch).requires_grad and reads[i]
               for a, reads in zip(node.args, rule_reads))


def _refuse_written(node, what, a):
    raise RuntimeError(
        f"one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: {what} (shape {a.shape}, {a.dtype}) of '{node.op.name}', saved for "
        f"its derivative, was written in place after it was saved. Do the in-place update "
        f"after backward(), or update a copy (x = x.clone()) instead")


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
    # for the same graph (a set's order depends on the nodes' addresses).
    seen = {start: None}
    stack = [start]
    pop, push = stack.pop, stack.append
    last_rebind = dispatch.LAST_REBIND
    while stack:
        v = pop()
        if type(v) is Node and v.args is not None:
            stale = v.epoch < last_rebind  # an input may have been rebound since
            for a in v.args:
                p = a if type(a) is Node else (_parent_at(a, v.epoch) if stale else
                                               (a._ctx or a))  # _parent(a), inlined
                if p not in seen and (p.requires_grad or not grad_only):
                    seen[p] = None
                    push(p)
    return sorted(seen, key=_creation_order)


# Tensors answer ``seq`` too (-1: leaves and constants come first), so the sort key is C code.
_creation_order = operator.attrgetter("seq")


def backward(root, grad, retain_graph=False, create_graph=False, inputs=None):
    """Reverse-mode pass from tensor ``root`` with upstream gradient ``grad`` (root's shape).

    Visits the graph in reverse topological order; each node's gradient is complete when it is
    reached, its derivative rules send a share to each input, broadcast axes are summed away
    once, and shapes are checked. Gradients of intermediates live in a local dict. Without
    ``inputs``, leaf gradients (and those asked for with ``retain_grad()``) are added into
    ``.grad``; with ``inputs`` (vertices), nothing is stored and their gradients are returned
    in a dict instead (``tinygrad_bn.grad``). Unless ``retain_graph``, each node frees what it
    saved once its rules have run. With ``create_graph`` the rules run on Tensors, so the
    gradients are recorded too and can be differentiated again (higher order); backward() then
    keeps the graph, grad() keeps it only with ``retain_graph``, as PyTorch.
    """
    wrap = root._wrap
    if create_graph:
        grad = wrap(grad) if type(grad) is np.ndarray else grad
        # backward() keeps the recorded graph: ``.grad`` is differentiated through it later
        keep = True if inputs is None else retain_graph
        with enable_grad():
            return _backward(root, grad, keep, True, inputs, wrap)
    return _backward(root, grad, retain_graph, False, inputs, wrap)


def _backward(root, grad, retain_graph, create_graph, inputs, wrap):
    dispatch.backward_started(root, create_graph or inputs is not None)
    start = root._ctx or root
    grads = dispatch.GradientSums(start, grad)
    # The nodes that have a gradient, latest made first (as PyTorch's engine orders its ready
    # queue by sequence number): a node is made after its inputs, so every consumer of a node
    # has sent its share before the node is taken. Leaves wait in ``grads`` until the end.
    queue = [(-start.seq, start)] if type(start) is Node else []
    found = reach = None
    if inputs is not None:  # grad(); reach: whether a vertex leads to an input, when asked
        found, reach = {}, {}
    # Arrays stored in some .grad during this pass: never stored twice (no two gradients share
    # memory); the caller's gradient counts as one, so a leaf gets a copy of it.
    handed_out = {_buffer_id(grad)}
    rules = dispatch.rules(create_graph)  # by op
    # in-place writes and rebinds so far (backward makes none): a node made after them needs
    # no check of what it saved
    writes, last_rebind = dispatch.WRITES, dispatch.LAST_REBIND
    while queue:
        v = heappop(queue)[1]
        g = grads.pop(v)
        if found is not None:
            if v in inputs:
                found[v] = g
        elif v.retains is not None:
            holder = _grad_holder(v)
            if holder is not None:  # else the tensor is gone: nobody can read its gradient
                _store(holder, g, create_graph, handed_out, wrap)
        args = v.args
        if args is None:
            raise RuntimeError(v.attrs.get(_REFUSED, _FREED))
        op, attrs, out, epoch = v.op, v.attrs, v.out, v.epoch
        # something was written in place (or rebound) since v was recorded, and v saved arrays
        if epoch != writes and op.reads:
            if found is not None and not _leads_to(v, inputs, reach):
                continue  # as PyTorch's grad(), a node that leads to no input is not run
            _check_saved(v)
        stale = epoch < last_rebind  # an input may have been rebound since
        if create_graph:  # the rules get Tensors of this graph, to be differentiated again
            arrays = args
            if out is not None:
                out = wrap(out, True)
                out._ctx = v
        else:  # spelled out for two and one inputs: this runs once per node of every graph
            reads = op.reads_inputs
            if len(args) == 2:
                a, b = args
                arrays = (a.data if reads[0] else a, b.data if reads[1] else b)
            elif len(args) == 1:
                arrays = (args[0].data,) if reads[0] else args
            else:
                arrays = [a.data if r else a for a, r in zip(args, reads)]
        vjps = rules[op].vjps
        # Last input first: it is usually the broadcast one (γ, β, μ, a bias), whose full-size
        # temporary is summed down and freed before the first input's gradient is made.
        for i in range(len(args) - 1, -1, -1):
            a = args[i]
            p = a if type(a) is Node else (_parent_at(a, epoch) if stale else
                                           (a._ctx or a))  # _parent(a), inlined
            if not p.requires_grad:
                continue
            pg = vjps[i](g, out, *arrays, **attrs) if attrs else vjps[i](g, out, *arrays)
            if type(pg) is not np.ndarray and isinstance(pg, np.generic):  # from 0-d arithmetic
                pg = dispatch.array(pg)
            if type(p) is Node:
                shape, dtype = p.shape, p.dtype
            else:
                data = p.data
                shape, dtype = data.shape, data.dtype
            if pg.shape != shape:
                pg = dispatch.unbroadcast(pg, shape, op.name)
            if pg.dtype != dtype:
                pg = dispatch.cast(pg, dtype)
            if grads.add(p, pg, g) and type(p) is Node:  # p's first share
                heappush(queue, (-p.seq, p))
        if not retain_graph:
            # Drop the saved arrays and the edges: a released node raises if reached again.
            v.args = v.out = None
    # what is left are the leaves' gradients, complete
    for v, g in grads.items():
        if found is None:
            _store(v, g, create_graph, handed_out, wrap)
        elif v in inputs:
            found[v] = g
    return found


_FREED = ("backward through a graph whose saved values were already freed by an earlier "
          "backward(); call backward(retain_graph=True) the first time if you need a second pass")
_REFUSED = "refused"  # the attribute of a node that backward refuses, with the reason


def refused(op, tensor, reason):
    """A node of ``op`` for ``tensor`` that backward refuses with ``reason`` (a RuntimeError)
    when a gradient reaches it. It saves nothing, like a released node: a view whose base got a
    new graph by an in-place op, where the view's own graph would give the old one's gradient."""
    return Node(op, None, None, {_REFUSED: reason}, _GradMode.scope, _next_seq(), tensor.shape,
                tensor.dtype, dispatch.WRITES)


def _leads_to(node, inputs, memo):
    """Whether a path of edges goes from ``node`` to a vertex of ``inputs``; ``memo`` keeps the
    answers by vertex. A released node counts as leading to one, so reaching it still says
    the graph was freed."""
    stack = [node]
    while stack:
        v = stack[-1]
        if v in memo:
            stack.pop()
            continue
        parents = [p for p in v.parents if p.requires_grad] if type(v) is Node else []
        pending = [p for p in parents if p not in memo and p not in inputs]
        if pending:
            stack += pending
            continue
        memo[v] = is_released(v) or any(p in inputs or memo[p] for p in parents)
        stack.pop()
    return memo[node]


def _grad_holder(node):
    """Where ``retain_grad()`` asked a node's gradient to go: the node itself, its output
    tensor while that is alive, or None."""
    return node if node.retains is True else node.retains()


def retained_grad(node):
    """The gradient kept for a node's output by retain_grad() or retain_node_grad(), or None."""
    holder = None if node.retains is None else _grad_holder(node)
    return None if holder is None else holder.grad


def _store(holder, g, create_graph, handed_out, wrap):
    """Add ``g`` into ``holder.grad``: recorded Tensors with create_graph, else arrays. A
    gradient never shares memory with another gradient or with the caller's array."""
    if create_graph:
        g = g if holder.grad is None else holder.grad + g
        holder.grad = g * 1 if g.is_leaf or _buffer_id(g.data) in handed_out else g
        handed_out.add(_buffer_id(holder.grad.data))
        return
    # A writeable result of a derivative rule (or a view of one) that no .grad holds yet is
    # taken as it is; anything else is copied.
    take = type(g) is np.ndarray and g.flags.writeable and _buffer_id(g) not in handed_out
    arr = dispatch.store_grad(holder, g, take, wrap)
    # g's buffer counts as handed out even when it was added, not taken: whether the holder
    # had a gradient is decided at call time (a jit replay), so no later one may take it either.
    handed_out.add(_buffer_id(g))
    handed_out.add(_buffer_id(arr))


def retain_grad(tensor):
    """Keep the gradient of a non-leaf tensor in its ``.grad`` after backward()."""
    tensor._ctx.retains = weakref.ref(tensor)


def retain_node_grad(node):
    """Keep the gradient of a node's output on the node itself (``node.grad``), also when no
    tensor of it is alive any more: how the renderer captures every intermediate gradient."""
    node.retains = True


def _buffer_id(a):
    """The id of the array that owns ``a``'s memory (numpy points every view at its owner)."""
    return id(a if type(a) is not np.ndarray or a.base is None else a.base)
