"""The seam: the one place where array work runs.

Every array the core computes comes from a function here: an op's forward, a derivative rule,
the engine's gradient sums and casts, storing a gradient, an in-place update (in-place tensor
ops, optimizer steps, batch norm's running statistics), and any other numpy call of the core
(``run``). Reading a value out of a tensor (``item()``, ``numpy()``, ``bool``) is announced here
too (``read``). On arrays the fast forms of ``kernels.py`` run; on Tensors (a recorded backward)
the textbook forms of ``ops.py``.

Layers above the core hook in here and nowhere else: a hook (``set_hook``, per thread) gets every
call instead, with the same arguments, and decides what to do (``jit`` records them on a tape).
The core never knows which layer, if any, is listening.

In-place writes are counted too (PyTorch's version counters): every write through ``update`` is
numbered, and backward refuses a node whose saved arrays were written after it was recorded.
"""
import operator
import threading
import weakref

import numpy as np

from . import kernels, ops


class _HookState(threading.local):
    hook = None


_STATE = _HookState()
_hooked_threads = 0  # how many threads have a hook: the one check on the fast path
_LOCK = threading.Lock()


def set_hook(hook):
    """Send this thread's array work to ``hook`` (None: run it here); returns the previous one."""
    global _hooked_threads
    prev = _STATE.hook
    with _LOCK:
        _hooked_threads += (hook is not None) - (prev is not None)
    _STATE.hook = hook
    return prev


def current_hook():
    """The hook of this thread, or None."""
    return _STATE.hook if _hooked_threads else None


# ---- the work ----

def forward(op, inputs, attrs):
    """``op``'s forward on the arrays of tensors ``inputs``: a new array."""
    if _hooked_threads and _STATE.hook is not None:
        out = _STATE.hook.forward(op, inputs, attrs)
    else:
        fwd = _KERNEL[op].forward
        if len(inputs) == 2 and not attrs:  # spelled out: this runs for every operation
            out = fwd(inputs[0].data, inputs[1].data)
        elif len(inputs) == 1:
            out = fwd(inputs[0].data, **attrs)
        else:
            out = fwd(*[t.data for t in inputs], **attrs)
    if type(out) is not np.ndarray:  # numpy returns scalars for 0-d results
        out = array(out)
    return out


def rules(tensors=False):
    """By op, what one backward pass runs its derivative rules with (their ``vjps``, each
    called ``rule(g, out, *inputs, **attrs)``): on Tensors (``tensors``: create_graph, so the
    rules are recorded) the op itself, the textbook; on arrays its kernel, or this thread's
    hook in its place."""
    if tensors:
        return _TEXTBOOK
    if _hooked_threads and _STATE.hook is not None:
        return _ByOp(lambda op, hook=_STATE.hook: _Hooked(hook, op))
    return _KERNEL


class _Hooked:
    """An op's derivative rules sent to a hook."""

    __slots__ = ("vjps",)

    def __init__(self, hook, op):
        self.vjps = tuple(self._rule(hook, op, i) for i in range(len(op.vjps)))

    @staticmethod
    def _rule(hook, op, i):
        return lambda g, out, *inputs, **attrs: hook.vjp(op, i, g, out, inputs, attrs)


def array(x):
    """``x`` as an ndarray (numpy gives scalars for 0-d results)."""
    return run(np.asarray, x)


def unbroadcast(g, shape, op_name):
    """Sum ``g`` over the axes numpy broadcasting added, so it has ``shape``; else an error."""
    g = run(kernels.sum_to, g, shape) if type(g) is np.ndarray else ops.sum_to(g, shape)
    if g.shape != shape:
        raise RuntimeError(f"backward of '{op_name}' produced a gradient of shape {g.shape} "
                           f"for an input of shape {shape}")
    return g


def cast(a, dtype):
    """``a`` as ``dtype`` (a gradient takes its input's dtype)."""
    if type(a) is not np.ndarray:  # a Tensor (create_graph): a recorded cast, differentiable
        return a.to(dtype)
    return run(_astype, a, dtype)


def _astype(a, dtype):
    return a.astype(dtype)


def add(a, b):
    """a + b, a new array (two contributions to one gradient)."""
    return run(operator.add, a, b)


class GradientSums(dict):
    """A backward pass's gradients of intermediates, by vertex: ``add`` sums contributions.

    A sum is written into the first contribution when that is an array this pass made for this
    vertex alone: a fresh result of a derivative rule (not a view, not read-only), not the
    upstream gradient handed on unchanged (which may go to several inputs). One full-size array
    less at the peak than ``a + b`` (batch norm's x feeds its mean and x - μ, so dx is such a
    sum). Whether it is such an array is asked only when a second contribution comes.
    """

    __slots__ = ("_shared",)  # vertices whose array may be held elsewhere too

    def __init__(self, vertex, g):
        """Starts with ``vertex``'s gradient ``g``, the caller's array (never written)."""
        super().__init__({vertex: g})
        self._shared = {vertex}

    def add(self, key, g, handed_on=None):
        """Add ``g`` to ``key``'s gradient (``handed_on``: the gradient of the vertex whose
        rules made ``g``); True if it is the first."""
        prev = self.get(key)
        if prev is None:
            self[key] = g
            if g is handed_on:
                self._shared.add(key)
            return True
        if (type(prev) is np.ndarray and prev.base is None and key not in self._shared
                and prev.flags.writeable):
            run(operator.iadd, prev, g)
        else:  # the sum is a new array, this pass's alone
            self[key] = add(prev, g)
            self._shared.discard(key)
        return False


def store_grad(t, g, take, wrap):
    """``t.grad`` (+)= g as a new array (``take``: g is an array nobody else holds, keep it);
    whether t already has a gradient is read at call time (a jit replay follows zero_grad)."""
    return run(_store_grad, t, g, take, wrap)


def _store_grad(t, g, take, wrap):
    dtype = t.dtype
    # Read, add and write back as one step: threads running backward through one leaf each
    # add their share, as in PyTorch (unlocked, one thread's sum overwrote another's).
    with _GRAD_LOCK:
        if t.grad is not None:
            arr = np.asarray(t.grad.data + g)  # numpy gives a scalar for two 0-d arrays
        else:
            arr = g if take else np.array(g, dtype=dtype)
        if arr.dtype != dtype:
            arr = arr.astype(dtype)
        t.grad = wrap(arr)  # always a plain Tensor, also for a Parameter
    return arr


_GRAD_LOCK = threading.Lock()


def run(fn, *args, **kwargs):
    """Any other array work of the core: ``fn(*args, **kwargs)`` (a hook may record it)."""
    if _hooked_threads and _STATE.hook is not None:
        return _STATE.hook.call(fn, args, kwargs)
    return fn(*args, **kwargs)


def update(fn, *args):
    """An in-place update: ``fn(*args)`` writes into existing arrays (in-place ops, optimizer
    steps, running statistics). ``fn`` counts each write itself (``bump``): a jit replay calls
    ``fn`` without this function, and the count must still go up, or a graph made outside the
    step would differentiate with the new values."""
    if _hooked_threads and _STATE.hook is not None:
        return _STATE.hook.call(fn, args, None)
    return fn(*args)


def update_tensor(t, fn, *args):
    """``update(fn, t.data, *args)``: an in-place op on tensor ``t``, which a hook is told of
    (a tensor kept across calls, such as an average of weights, is then read live by a jit)."""
    if _hooked_threads and _STATE.hook is not None:
        _STATE.hook.writes_into(t)
    return run(fn, t.data, *args)


def read(what):
    """A value is read out of a tensor (``item()``, ``numpy()``, ``bool``): a hook may refuse."""
    if _hooked_threads and _STATE.hook is not None:
        _STATE.hook.read(what)


def alias(out, original):
    """``out`` wraps ``original``'s array (``detach()``)."""
    if _hooked_threads and _STATE.hook is not None:
        _STATE.hook.alias(out, original)


def backward_started(root, recorded):
    """A backward pass from tensor ``root`` is about to run (``recorded``: create_graph, or
    gradients returned by grad() rather than stored)."""
    if _hooked_threads and _STATE.hook is not None:
        _STATE.hook.backward_started(root, recorded)


# ---- kernels by op ----

class _ByOp(dict):
    """A table by op, each entry made by ``make(op)`` on first use."""

    __slots__ = ("make",)

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, op):
        value = self[op] = self.make(op)
        return value


# ops without overrides (also ops defined outside ops.py) run their textbook forms
_KERNEL = _ByOp(lambda op: kernels.KERNELS.get(op) or kernels.Kernel(op))
_TEXTBOOK = _ByOp(lambda op: op)


def kernel(op):
    """The fast forms of ``op`` as they run on arrays (its textbook forms where kernels.py has
    none); layers that record work (jit) look them up here too."""
    return _KERNEL[op]


# ---- versions: which arrays were written in place, and when ----

# Every in-place write (``bump``) and every tensor given a new node or array (``rebind``) counts
# one. A graph node remembers the count when it was made
# (``Node.epoch``); an array it saved and later written has its last write after that.
WRITES = 0
# id(array owning the memory) -> [weak reference to it, WRITES at its last write]. Only arrays
# written in place are here, and only while they live (the reference's callback removes them,
# before their id can be reused).
_LAST_WRITE = {}


def written_since(a, epoch):
    """Whether the memory of array ``a`` was written in place after write count ``epoch``."""
    base = a.base
    entry = _LAST_WRITE.get(id(a if base is None else base))
    return entry is not None and entry[1] > epoch


def bump(a):
    """Count one in-place write to the memory of ``a``."""
    global WRITES
    WRITES += 1
    owner = a if a.base is None else a.base
    entry = _LAST_WRITE.get(id(owner))
    if entry is not None:
        entry[1] = WRITES
    else:
        _track(_LAST_WRITE, owner)


def _track(table, obj):
    key = id(obj)
    try:
        table[key] = [weakref.ref(obj, lambda _, key=key: table.pop(key, None)), WRITES]
    except TypeError:  # memory not owned by an ndarray (a buffer): not tracked
        pass


def rebind(t, before=None):
    """Count that tensor ``t`` got a new node (a recorded in-place op) or a new array
    (load_state_dict): a node that read ``t`` before reaches it through the tensor, so it would
    send its gradient to the new node or differentiate with the new values. ``before``: for a
    recorded in-place op, the vertex ``t`` stood for until now (``vertex_at``)."""
    global WRITES, LAST_REBIND
    WRITES += 1
    LAST_REBIND = WRITES
    entry = _REBOUND.get(id(t))
    if entry is not None:
        entry[1] = WRITES
    else:
        _track(_REBOUND, t)
    if before is not None or t in _BEFORE:
        _BEFORE.setdefault(t, []).append((WRITES, before))


LAST_REBIND = 0  # WRITES at the last rebind: a node made after it reaches its inputs as they are

# tensor -> [(WRITES at each rebind, the vertex it stood for before it, or None for new arrays)]
_BEFORE = weakref.WeakKeyDictionary()


def vertex_at(t, epoch):
    """The graph vertex tensor ``t`` stood for at write count ``epoch``, if since then only
    recorded in-place ops rebound it (as PyTorch, a node keeps the edge it was made with);
    None if it got new arrays (load_state_dict) or was never rebound."""
    later = [before for count, before in _BEFORE.get(t, ()) if count > epoch]
    return later[0] if later and None not in later else None


def vertices_before(t):
    """The vertices tensor ``t`` stood for before each recorded in-place op rebound it."""
    return [before for _, before in _BEFORE.get(t, ())]


def rebound_since(t, epoch):
    """Whether tensor ``t`` got a new node or array after write count ``epoch``."""
    entry = _REBOUND.get(id(t))
    return entry is not None and entry[1] > epoch


# id(tensor) -> [weak reference to it, WRITES when it was last rebound], while it lives
_REBOUND = {}
