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

In-place writes also count versions (PyTorch's version counters): every write through ``update``
bumps the version of the array written to, and backward compares the versions of the arrays a
node saved with those it saw when it was recorded (``version``).
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
        fwd = _FORWARD.get(op) or _kernel(op).forward
        if len(inputs) == 2 and not attrs:  # spelled out: this runs for every operation
            out = fwd(inputs[0].data, inputs[1].data)
        else:
            out = fwd(*[t.data for t in inputs], **attrs)
    if type(out) is not np.ndarray:  # numpy returns scalars for 0-d results
        out = run(np.asarray, out)
    return out


def vjp(op, i, g, out, inputs, attrs):
    """``op``'s derivative for input ``i``: arrays get the kernel, Tensors the textbook rule."""
    if type(g) is not np.ndarray and not isinstance(g, np.generic):  # a Tensor: record it
        return op.vjps[i](g, out, *inputs, **attrs)
    if _hooked_threads and _STATE.hook is not None:
        pg = _STATE.hook.vjp(op, i, g, out, inputs, attrs)
    else:
        rule = _kernel(op).vjps[i]
        pg = rule(g, out, *inputs, **attrs) if attrs else rule(g, out, *inputs)
    if type(pg) is not np.ndarray:  # a numpy scalar from 0-d arithmetic
        pg = run(np.asarray, pg)
    return pg


def unbroadcast(g, shape, op_name):
    """Sum ``g`` over the axes numpy broadcasting added, so it has ``shape``; else an error."""
    g = run(kernels.sum_to, g, shape) if type(g) is np.ndarray else ops.sum_to(g, shape)
    if g.shape != shape:
        raise RuntimeError(f"backward of '{op_name}' produced a gradient of shape {g.shape} "
                           f"for an input of shape {shape}")
    return g


def cast(a, dtype):
    """``a`` as ``dtype`` (a gradient takes its input's dtype)."""
    return run(_astype, a, dtype)


def _astype(a, dtype):
    return a.astype(dtype)


def add(a, b):
    """a + b, a new array (two contributions to one gradient)."""
    return run(operator.add, a, b)


def store_grad(t, g, take, wrap):
    """``t.grad`` (+)= g as a new array (``take``: g is an array nobody else holds, keep it);
    whether t already has a gradient is read at call time (a jit replay follows zero_grad)."""
    return run(_store_grad, t, g, take, wrap)


def _store_grad(t, g, take, wrap):
    dtype = t.dtype
    if t.grad is not None:
        arr = t.grad.data + g
    else:
        arr = g if take else np.array(g, dtype=dtype)
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    t.grad = wrap(arr)  # always a plain Tensor, also for a Parameter
    return arr


def run(fn, *args, **kwargs):
    """Any other array work of the core: ``fn(*args, **kwargs)`` (a hook may record it)."""
    if _hooked_threads and _STATE.hook is not None:
        return _STATE.hook.call(fn, args, kwargs)
    return fn(*args, **kwargs)


def update(fn, written, *args):
    """An in-place update: ``fn(*args)`` writes into the arrays of the tensors ``written``
    (in-place ops, optimizer steps, running statistics). ``fn`` counts each write itself
    (``bump``): a jit replay calls ``fn`` without this function, and the versions must still
    go up, or a graph made outside the step would differentiate with the new values."""
    return run(fn, *args)


def read(what):
    """A value is read out of a tensor (``item()``, ``numpy()``, ``bool``): a hook may refuse."""
    if _hooked_threads and _STATE.hook is not None:
        _STATE.hook.read(what)


def alias(out, original):
    """``out`` wraps ``original``'s array (``detach()``)."""
    if _hooked_threads and _STATE.hook is not None:
        _STATE.hook.alias(out, original)


def backward_started(vertices, create_graph):
    """A backward pass is about to run through ``vertices``."""
    if _hooked_threads and _STATE.hook is not None:
        _STATE.hook.backward_started(vertices, create_graph)


# ---- kernels by op ----

_FORWARD = {}


def _kernel(op):
    """The fast forms of ``op`` (its textbook forms where kernels.py has none)."""
    k = kernels.KERNELS.get(op)
    if k is None:  # an op without overrides (also ops defined outside ops.py)
        k = kernels.KERNELS[op] = kernels.Kernel(op)
    _FORWARD[op] = k.forward
    return k


def kernel(op):
    """The fast forms of ``op``, as they run on arrays (for layers that record them)."""
    return _kernel(op)


# ---- versions of arrays written in place ----

# id(array owning the memory) -> (weak reference to it, version). Only arrays written in place
# are here; every other array is at version 0.
_VERSIONS = {}


def _owner(a):
    base = a.base
    return a if base is None else base


def has_versions():
    """Whether any array was written in place or any tensor rebound (else all are at 0)."""
    return bool(_VERSIONS) or bool(_REBINDS)


def version(a):
    """How often the memory of array ``a`` was written in place through ``update``."""
    if not _VERSIONS:
        return 0
    entry = _VERSIONS.get(id(_owner(a)))
    return 0 if entry is None or entry[0]() is None else entry[1]


def bump(a):
    """Count one in-place write to the memory of ``a``."""
    owner = _owner(a)
    key = id(owner)
    entry = _VERSIONS.get(key)
    if entry is None or entry[0]() is not owner:
        if len(_VERSIONS) >= _PRUNE_AT[0]:
            _prune()
        try:
            ref = weakref.ref(owner)
        except TypeError:  # memory not owned by an ndarray (a buffer): not tracked
            return
        _VERSIONS[key] = (ref, 1)
    else:
        _VERSIONS[key] = (entry[0], entry[1] + 1)


_PRUNE_AT = [1024]


def _prune():
    for table in (_VERSIONS, _REBINDS):
        for key in [k for k, (ref, _) in table.items() if ref() is None]:
            del table[key]
    _PRUNE_AT[0] = max(1024, 2 * len(_VERSIONS), 2 * len(_REBINDS))


# id(tensor) -> (weak reference to it, count): tensors that a recorded in-place op gave a new
# node, or load_state_dict a new array. A node that read such a tensor before reaches it
# through the tensor, so it would send its gradient to the new node or differentiate with the
# new values: backward refuses instead.
_REBINDS = {}


def rebinds(t):
    """How often tensor ``t`` got a new node or a new array (``rebind``)."""
    if not _REBINDS:
        return 0
    entry = _REBINDS.get(id(t))
    return 0 if entry is None or entry[0]() is not t else entry[1]


def rebind(t):
    """Count that tensor ``t`` got a new node (a recorded in-place op) or a new array."""
    entry = _REBINDS.get(id(t))
    if entry is None or entry[0]() is not t:
        if len(_REBINDS) >= _PRUNE_AT[0]:
            _prune()
        _REBINDS[id(t)] = (weakref.ref(t), 1)
    else:
        _REBINDS[id(t)] = (entry[0], entry[1] + 1)
