"""What jit checks while it captures a call, so that work a replay would skip is refused there.

A replay repeats the array work on the tape (``tape.py``) and nothing else. Work of the step's
own Python code that changes state, draws random numbers or reads values is therefore either
frozen at capture or left out of every replay, silently, and a one-call trial cannot see it when
that call happens to do nothing (a clip that did not trigger). So each capture call runs under a
``CaptureGuard``, which decides on the spot:

* the arrays the step could change outside the engine (parameters', buffers' and gradients'
  data, optimizer state, numpy arrays the step's variables hold, the arguments') are read-only
  except inside the tape's own calls: ``p.grad.data *= c`` or ``state["momentum_buffer"] *= 0.5``
  raise numpy's read-only ``ValueError``, which ``jit`` turns into a ``JitError``;
* those tensors get a class whose ``.data``/``.grad`` setters refuse assignment from the step's
  own code (``p.grad = clipped``); the engine's assignments happen inside tape calls;
* numpy arguments and gradients' data are ``GuardedArray`` views (``tape.py``) for the step's
  own code: ``mask.sum()``, ``lw[0]``, a gradient norm computed with numpy refuse;
* the step's modules record who reads their ``training`` flag: those flags are guarded at every
  replay (``model.eval()`` after capture captures the eval-mode step);
* after the call, the random generators (``np.random``, ``random``, any numpy generator the step
  names) must not have moved, and the plain attributes of the step's modules, optimizers and
  other objects it names (``opt.lr``, ``model.training``, a list it appends to) must hold what
  they held before: a replay would keep the capture's value, or not do the change at all.

Everything is found from the step's roots: the variables it reads (closure, globals, those of
its own module's helpers), the instance of a jitted method, its arguments, and what the previous
capture of the same signature touched.
"""
import operator
import pickle
import random
import threading
import types

import numpy as np

from .. import dispatch, kernels
from ..nn.functional import _checked_targets
from ..nn.module import Module
from ..optim import Optimizer
from ..tensor import Tensor, _to_array
from .codegen import _KERNELS
from .tape import GuardedArray, JitError, Tape, guarded_view

_DATA, _GRAD = Tensor.__dict__["data"], Tensor.__dict__["grad"]
_SCALARS = (type(None), bool, int, float, complex, str, bytes, np.generic)
# Objects other threads change while the step runs (an Event it waits on): not watched.
_SHARED = {"threading", "queue", "multiprocessing", "concurrent", "asyncio", "logging"}
_DEPTH = 3  # roots -> a container or object -> its items -> theirs
_WIDTH = 1000  # items of one container looked into (a list of data batches is only watched)


def _set_data(t, value):
    if Tape.current() is not None:  # the step's own code, not the engine inside a tape call
        raise JitError(
            f"assigning .data of a {type(t).__name__} inside a jit step: a replay repeats only "
            f"the engine's array work, so it would not assign it. Use tensor ops and optimizers "
            f"inside the step, or change the tensor outside it")
    _DATA.__set__(t, value)


def _set_grad(t, value):
    if Tape.current() is not None:
        raise JitError(
            f"assigning .grad of a {type(t).__name__} inside a jit step (clipping, scaling or "
            f"clearing gradients by hand): a replay repeats only the engine's array work, so it "
            f"would not do it. Clear gradients with opt.zero_grad() or model.zero_grad(); for "
            f"clipping, end the step after backward() and clip and call opt.step() outside it")
    _GRAD.__set__(t, value)


_GRAD_HINT = ("Compute it with tensor ops on p.grad, or end the step after backward() and do "
              "that work (clipping, a norm, a check) and opt.step() outside it")
_CLASSES = {}
# Functions that write nothing but their result (ops' forwards and derivative rules, the
# engine's broadcast reduction): the arrays stay locked while they run, which saves unlocking
# and locking everything around most of the tape's calls.
_PURE = frozenset([id(k.forward) for k in _KERNELS] + [id(v) for k in _KERNELS for v in k.vjps]
                  + [id(f) for f in (kernels.sum_to, dispatch._astype, operator.add, np.ones,
                                     np.asarray, _to_array, _checked_targets, np.arange,
                                     np.ndarray.max, np.ndarray.argmax, operator.gt, operator.ge,
                                     operator.lt, operator.le, operator.eq, np.logical_not)])


def _guarded_class(cls):
    """``cls`` with setters for ``data`` and ``grad`` that refuse the step's own assignments
    (the same slots, so an instance can switch to it and back)."""
    guarded = _CLASSES.get(cls)
    if guarded is None:
        guarded = _CLASSES[cls] = type(cls.__name__, (cls,), {
            "__slots__": (), "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "data": property(_DATA.__get__, _set_data),
            "grad": property(_GRAD.__get__, _set_grad)})
        guarded._unguarded = cls
    return guarded


_LOCAL = threading.local()  # .guard: the guard of the capture running in this thread
_MODULE_CLASSES = {}


def _read_training(m):
    guard = getattr(_LOCAL, "guard", None)
    if guard is not None:
        guard.training_read[id(m)] = m
    return m.__dict__["training"]


def _set_training(m, value):
    m.__dict__["training"] = value


def _watched_module_class(cls):
    """``cls`` whose ``training`` flag records who reads it (only those are guarded at every
    replay: a batch norm's, not a ReLU's)."""
    watched = _MODULE_CLASSES.get(cls)
    if watched is None:
        watched = _MODULE_CLASSES[cls] = type(cls.__name__, (cls,), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "training": property(_read_training, _set_training)})
        watched._unguarded = cls
    return watched


def read_only_error(e):
    """Whether ``e`` is numpy's refusal to write into an array a guard locked."""
    return isinstance(e, ValueError) and "read-only" in str(e)


class CaptureGuard:
    """The checks around one capture call (see the module docstring): ``start()`` before the
    call, ``open()``/``close()`` around each tape call, ``check()`` after it, ``stop()``."""

    def __init__(self, name, roots):
        self.name = name
        self.tensors = {}  # id -> tensor (parameters, buffers, arguments, their gradients)
        self.modules = {}  # id -> module of the step (its settings are watched)
        self.optimizers = {}
        self.arrays = {}  # id -> array the step's variables or arguments hold
        self.generators = {}
        self.watched = {}  # id -> (label, object): attributes or items compared after the call
        self._locked = []
        self._swapped = []
        self._views = []  # (gradient tensor, its array) whose .data is a GuardedArray for now
        self.training_read = {}  # id -> module whose ``training`` the call read
        # ids of arrays an op of the graph holds (a gradient used in a differentiable op):
        # plain again, so backward reads them as arrays
        self.released = set()
        for label, obj in roots:
            self._collect(label, obj, 0)

    def _collect(self, label, obj, depth):
        if isinstance(obj, Tensor):
            self.tensors.setdefault(id(obj), obj)
            return
        if isinstance(obj, np.ndarray):
            self.arrays.setdefault(id(obj), obj)
            return
        if isinstance(obj, (np.random.Generator, np.random.RandomState)):
            self.generators.setdefault(id(obj), (label, obj))
            return
        if (id(obj) in self.watched or depth > _DEPTH or isinstance(obj, _SCALARS)
                or isinstance(obj, (type, types.ModuleType, types.FunctionType,
                                    types.BuiltinFunctionType, types.MethodType, property))):
            return
        if isinstance(obj, Module):
            for name, m in obj.named_modules(label):
                self.modules.setdefault(id(m), m)
                self.watched.setdefault(id(m), (name, m))
                for t in list(m._parameters.values()) + list(m._buffers.values()):
                    if isinstance(t, Tensor):
                        self.tensors.setdefault(id(t), t)
            return
        if isinstance(obj, Optimizer):
            self.optimizers.setdefault(id(obj), obj)
            self.watched[id(obj)] = (label, obj)
            for p in obj.params:
                self.tensors.setdefault(id(p), p)
            return
        if isinstance(obj, (list, dict)):
            self.watched[id(obj)] = (label, obj)
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        elif isinstance(obj, tuple):
            items = enumerate(obj)
        elif (isinstance(getattr(obj, "__dict__", None), dict) and not callable(obj)
              and type(obj).__module__.partition(".")[0] not in _SHARED):
            self.watched[id(obj)] = (label, obj)
            items = vars(obj).items()
        else:
            return
        for i, (key, value) in enumerate(list(items)):
            if i == _WIDTH:
                break
            self._collect(f"{label}[{key!r}]" if not hasattr(obj, "__dict__") or
                          isinstance(obj, (list, dict, tuple)) else f"{label}.{key}",
                          value, depth + 1)

    # ---- around the call ----

    def start(self):
        self._random = _random_states(self.generators.values())
        self._before = {k: _contents(obj) for k, (_, obj) in self.watched.items()}
        self._grad_flags = {k: t.requires_grad for k, t in self.tensors.items()}
        for t in self.tensors.values():
            self._swap(t)
        for m in self.modules.values():
            if "_unguarded" not in type(m).__dict__ and "training" in m.__dict__:
                m.__class__ = _watched_module_class(type(m))
                self._swapped.append(m)
        _LOCAL.guard = self
        self.close()

    def stop(self):
        _LOCAL.guard = None
        self.open()
        for g, array in self._views:
            if type(_DATA.__get__(g)) is GuardedArray:
                _DATA.__set__(g, array)
        self._views.clear()
        for t in self._swapped:
            t.__class__ = type(t)._unguarded
        self._swapped.clear()

    def _swap(self, t):
        cls = type(t)
        if "_unguarded" not in cls.__dict__:
            t.__class__ = _guarded_class(cls)
            self._swapped.append(t)

    def writes(self, fn, args):
        """Whether tape call ``fn(*args)`` may write into arrays (then ``open()`` first);
        ``zero_grad()``'s ``setattr(p, "grad", None)`` makes no array."""
        return id(fn) not in _PURE and not (fn is setattr and args[2] is None)

    def open(self):
        """Let the engine write: a tape call starts."""
        locked = self._locked
        for a in locked:  # owners before views (a view of a read-only owner stays read-only)
            if a.base is None:
                a.flags.writeable = True
        for a in locked:
            if a.base is not None:
                a.flags.writeable = True
        locked.clear()

    def close(self):
        """A tape call ended: lock every array the step's own code could change."""
        lock = self._lock
        for t in list(self.tensors.values()):
            lock(_DATA.__get__(t))
            g = _GRAD.__get__(t)
            if isinstance(g, Tensor):  # gradients appear during the call: guard them too
                self._swap(g)
                view = _DATA.__get__(g)
                if type(view) is np.ndarray and id(view) not in self.released:
                    # a new gradient: the step's own code sees a GuardedArray
                    array = view
                    view = guarded_view(array, "a gradient (.grad.data)", _GRAD_HINT)
                    _DATA.__set__(g, view)
                    self._views.append((g, array))
                if type(view) is GuardedArray:  # both, so the engine can write through either
                    lock(view.plain)
                lock(view)
        for o in self.optimizers.values():
            for state in o.state:
                for v in state.values():
                    lock(v)
        for a in self.arrays.values():
            lock(a)

    def _lock(self, a):
        if (type(a) is np.ndarray or type(a) is GuardedArray) and a.flags.writeable:
            a.flags.writeable = False
            self._locked.append(a)

    def check(self):
        """After the call: refuse what a replay would freeze or leave out."""
        if _random_states(self.generators.values()) != self._random:
            raise JitError(
                f"jit({self.name}): the step draws random numbers (np.random, random, or a numpy "
                f"generator it uses): a replay would repeat the capture's numbers and its "
                f"decisions on them forever. Draw them outside the step and pass them in as "
                f"arguments (this call's step was applied)")
        for k, (label, obj) in self.watched.items():
            why = _changed(self._before[k], _contents(obj), isinstance(obj, (list, dict)))
            if why is not None:
                raise JitError(
                    f"jit({self.name}): the step changes {label}{why}: a replay repeats only the "
                    f"engine's array work, so it would keep the value of the last capture (or "
                    f"not make the change at all). Make the change outside the step: optimizers' "
                    f"and modules' settings are read at every replay (this call's step was "
                    f"applied)")
        for k, t in self.tensors.items():
            if t.requires_grad != self._grad_flags[k]:
                raise JitError(f"jit({self.name}): the step changes requires_grad of a "
                               f"{type(t).__name__}: set it outside the step")


def _random_states(generators):
    states = [np.random.get_state(), random.getstate()]
    for _, g in generators:
        states.append(g.get_state() if isinstance(g, np.random.RandomState)
                      else g.bit_generator.state)
    return pickle.dumps(states)  # nested tuples, dicts and arrays, compared as bytes


def _contents(obj):
    """What a watched object holds: its items or attributes (the objects, not copies)."""
    if isinstance(obj, list):
        return list(obj)
    return dict(obj if isinstance(obj, dict) else vars(obj))


def _changed(before, after, items):
    """None if a watched object holds the same things, else a phrase saying what changed."""
    if type(before) is list:
        if len(before) != len(after):
            return f" (a list of {len(before)} items before the call, {len(after)} after)"
        keys = range(len(before))
    else:
        if before.keys() != after.keys():
            new = sorted(map(str, after.keys() - before.keys()))
            gone = sorted(map(str, before.keys() - after.keys()))
            return f" (added {new}, removed {gone})"
        keys = before.keys()
    for k in keys:
        a, b = before[k], after[k]
        if a is b or (type(a) is type(b) and isinstance(a, _SCALARS) and
                      (a == b or a != a and b != b) and
                      (not isinstance(a, float) or np.copysign(1, a) == np.copysign(1, b))):
            continue
        where = f"[{k!r}]" if items else f".{k}"
        if isinstance(a, _SCALARS) and isinstance(b, _SCALARS):
            return f"{where} (from {a!r} to {b!r})"
        return f"{where} (it names another {type(b).__name__} after the call)"
    return None
