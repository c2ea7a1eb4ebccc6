"""jit: run a training step's array work again without rebuilding its graph.

A training loop builds the same graph at every step: the same ops on arrays of the same shapes.
For small networks the Python work of building and walking it (tensors, nodes, the graph walk,
dictionary bookkeeping: ~5 µs per op) costs as much as the arithmetic. ``jit(step)`` records
the array work of a call on a tape (``tape.py``): every op's forward, every derivative rule,
every gradient sum, the optimizer's updates, batch norm's running statistics. Once two calls in
a row did the same work on the same objects, it compiles the tape into one Python function of
straight-line numpy calls, and later calls with arguments of the same shapes run that function:
the same numpy calls in the same order, so the results are identical to eager execution, bit for
bit. Registers are deleted after their last use, so memory is freed as the eager pass frees it.

What a replay repeats: array work done by the engine on the step's argument arrays, on
parameters and buffers (read live, so in-place updates and replaced ``.data`` are seen) and on
the optimizer's state; the optimizer's hyperparameters are read at every call (a new ``lr``
applies). What it does not repeat: any other Python in the step (printing, counting, ``if``) and
Python values it fixed at capture (batch norm's momentum and eps). After changing those, call
``step.reset()``.

What protects a replay from doing something else than the eager step would:
* every capture call runs under a ``CaptureGuard`` (``guard.py``), which refuses on the
  spot what a replay would freeze or leave out: numpy work on numpy arguments and gradients,
  numpy writes into the arrays of parameters, buffers, gradients, optimizer state and the
  step's variables, assigning ``.data``/``.grad``, drawing random numbers, changing settings
  of the optimizers, modules and objects the step names; and an argument's graph that the
  step's backward runs into;
* two calls in a row must do the same work on the same objects before anything is compiled
  (arrays made outside the engine inside the step differ);
* the compiled step is trusted only after a trial: one call runs eagerly and is replayed from
  the same starting state, and everything both touched (parameters, gradients, buffers,
  optimizer state, outputs) must come out bit for bit the same, which catches numpy work on
  ``.data``/``.grad`` inside the step (``state.py``);
* guards, checked before every replay, capture again when a live tensor changed dtype or shape
  (``model.double()``), a variable the step reads names another object, or a module whose
  ``training`` flag the step read was switched by ``train()``/``eval()`` (``codegen.py``);
* ``JitError`` for what cannot work: reading a value inside the step (``item()``, ``numpy()``,
  ``if t:``), indexing with a boolean mask, returning a tensor whose graph was not used.

    step = jit(train_step)          # or @jit on the definition
    loss = step(Tensor(x), y)       # x, y: arrays of the same shapes at every call
"""
import math
import warnings
import weakref

import numpy as np

from .. import autograd
from ..tensor import Tensor
from .codegen import STALE, _free_variables, assigned_variables, compile_replay, reads_data
from .guard import CaptureGuard, read_only_error
from .state import difference, restore, snapshot
from .tape import JitError, Tape, guarded_view, is_model_tensor

_ATTEMPTS = 4  # calls captured without two in a row agreeing, before giving up
_SIGNATURES = 16  # pending captures kept (a number argument that changes every call...)
_RECAPTURES = 8  # guard failures before warning that the replay keeps going stale


def jit(fn):
    """Wrap training-step function ``fn`` so repeated calls replay its array work (``Jit``)."""
    return Jit(fn)


class Jit:
    """A step function that is captured on its first calls and replayed afterwards.

    Calls are grouped by their arguments' kind, shape, dtype (numbers: value) and the grad
    mode; each group is captured (run eagerly, with its work recorded) until two consecutive
    calls agree, checked once by a trial replay, then replayed. ``reset()`` forgets every
    capture. On a method, each instance gets its own.
    """

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "step")
        self.__doc__ = getattr(fn, "__doc__", None)
        self._bound = weakref.WeakKeyDictionary()  # instance -> its own Jit (on a method)
        self._owner = None  # on a method: a weak reference to the instance
        self.reset()

    def reset(self):
        """Capture again on the next calls (after changing what the step fixed at capture)."""
        self._compiled = {}  # signature -> (replay function, trusted)
        self._pending = {}  # signature -> (last tape, its output spec, calls captured)
        self._warned = False
        self._told = set()  # warnings given at capture (once each)
        self.replays = self.recaptures = 0

    @property
    def captured(self):
        """How many argument signatures have a compiled replay."""
        return len(self._compiled)

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        try:
            bound = self._bound.get(obj)
            if bound is None:
                # The bound method holds the instance weakly, so the instance can still go.
                ref = weakref.ref(obj)
                fn = self.fn

                def method(*args, **kwargs):
                    return fn(ref(), *args, **kwargs)
                method.__wrapped__, method.__name__ = fn, self.__name__
                bound = self._bound[obj] = Jit(method)
                bound._owner = ref
        except TypeError:
            raise JitError(f"jit on a method needs instances that can be weakly referenced; "
                           f"{type(obj).__name__} cannot") from None
        return bound

    def __call__(self, *args, **kwargs):
        if Tape.current() is not None:  # inside another jit's capture: part of its tape
            return self.fn(*args, **kwargs)
        names = tuple(kwargs)
        flat = args + tuple(kwargs.values())
        sig = _signature(flat, names)
        entry = self._compiled.get(sig)
        if entry is not None:
            replay, trusted = entry
            if not trusted:
                return self._trial(sig, replay, flat, names)
            out = replay(*flat)
            if out is not STALE:
                self.replays += 1
                return out
            self._stale(sig)
        return self._capture(sig, flat, names)

    def _stale(self, sig):
        """A guard failed: forget the replay, so the next calls capture again."""
        del self._compiled[sig]
        self.recaptures += 1
        if self.recaptures == _RECAPTURES:
            warnings.warn(f"jit({self.__name__}): captured again {_RECAPTURES} times because a "
                          f"guard failed (a variable the step names is rebound, or a tensor it "
                          f"reads changes dtype or shape, between calls): each time costs two "
                          f"eager calls and a trial", RuntimeWarning, stacklevel=3)

    def _run(self, flat, names):
        n = len(flat) - len(names)
        return self.fn(*flat[:n], **dict(zip(names, flat[n:])))

    def _capture(self, sig, flat, names):
        # numpy arguments as views whose numpy work in the step's own code raises
        given = tuple(guarded_view(a) if type(a) is np.ndarray else a for a in flat)
        guard = CaptureGuard(self.__name__, self._roots(sig, given))
        tape = Tape(given, [_array_of(a) for a in flat])
        tape.guard = guard
        guard.start()
        tape.start()
        try:
            try:
                out = self._run(given, names)
            except ValueError as e:
                if not read_only_error(e):
                    raise
                raise JitError(
                    f"jit({self.__name__}): the step writes with numpy into an array that a "
                    f"parameter, buffer, gradient, optimizer, argument or variable of the step "
                    f"holds ({e}): a replay repeats only the engine's array work, so it would "
                    f"not do that write. Use tensor ops and optimizers inside the step, or do "
                    f"that work outside it (this call's step stopped there)") from e
            _refuse_unused_graphs(out, tape, self.__name__)
            _refuse_argument_graphs(flat, tape, self.__name__)
            out_spec = tape.output_spec(out)
            guard.check()
        finally:
            tape.stop()
            guard.stop()
            tape.finish()
        self._warn_unguarded(tape, guard)
        prev = self._pending.pop(sig, None)
        if prev is not None:
            why = tape.same_as(prev[0])
            if why is None and prev[1] == out_spec:
                kinds = [k[0] for k in sig[2:]]
                if len(self._compiled) >= _SIGNATURES:  # keep the most recent ones
                    self._compiled.pop(next(iter(self._compiled)))
                self._compiled[sig] = (compile_replay(prev[0], tape, prev[1], out_spec, kinds,
                                                      self.fn, flat,
                                                      guard.training_read.values()),
                                       False)
                return out
            if prev[2] + 1 >= _ATTEMPTS:
                raise JitError(
                    f"jit({self.__name__}): {prev[2] + 1} calls in a row did different work, so "
                    f"there is nothing fixed to replay (this call's step was applied): "
                    f"{why or 'the returned value comes from different places'}. Arrays made "
                    f"outside the engine inside the step, or Python branching on data, do this")
        if len(self._pending) >= _SIGNATURES:
            self._pending.pop(next(iter(self._pending)))
            if not self._warned:
                self._warned = True
                warnings.warn(f"jit({self.__name__}): {_SIGNATURES} argument signatures are "
                              f"waiting for a second call; a number argument that changes at "
                              f"every call is captured anew each time (pass it as an array)",
                              RuntimeWarning, stacklevel=3)
        self._pending[sig] = (tape, out_spec, 1 if prev is None else prev[2] + 1)
        return out

    def _roots(self, sig, flat):
        """(label, object) for everything the step reaches (``CaptureGuard``)."""
        roots = [(f"argument {i}", a) for i, a in enumerate(flat)]
        owner = self._owner() if self._owner is not None else None
        if owner is not None:
            roots.append(("self", owner))
        roots += [(name, value) for _, _, value, name in _free_variables(self.fn)]
        pending = self._pending.get(sig)
        if pending is not None:  # what the previous capture touched, however it got there
            for _, spec, kwspec, _ in pending[0].instrs:
                for s in _objects_of(spec + tuple(s for _, s in kwspec)):
                    roots.append((f"a {type(s).__name__} the step uses", s))
        return roots

    def _warn_unguarded(self, tape, guard):
        """Warn once about what the guards cannot see (README: "Fixed at capture")."""
        written = assigned_variables(self.fn)
        if written and "assigns" not in self._told:
            self._told.add("assigns")
            warnings.warn(f"jit({self.__name__}): the step assigns {', '.join(written)}: Python "
                          f"code of the step runs only on the calls jit captures, not on "
                          f"replays", RuntimeWarning, stacklevel=4)
        if reads_data(self.fn) and "data" not in self._told:
            self._told.add("data")
            warnings.warn(f"jit({self.__name__}): the step reads .data: a number computed with "
                          f"numpy from a tensor's .data in the step is fixed at capture (jit "
                          f"cannot see it); compute it with tensor ops", RuntimeWarning,
                          stacklevel=4)
        if "modules" in self._told:
            return
        for _, spec, kwspec, _ in tape.instrs:
            for t in _objects_of(spec + tuple(s for _, s in kwspec)):
                if isinstance(t, Tensor) and is_model_tensor(t) and id(t) not in guard.tensors:
                    self._told.add("modules")
                    warnings.warn(
                        f"jit({self.__name__}): the step uses a module that it does not name "
                        f"in its variables (reached through another module's function): jit "
                        f"cannot watch its train()/eval() mode or its settings; call "
                        f"{self.__name__}.reset() after changing them", RuntimeWarning,
                        stacklevel=4)
                    return

    def _trial(self, sig, replay, flat, names):
        """Run the step eagerly, then the replay from the same starting state; trust the replay
        only if both leave the same state behind."""
        roots = {_label(i, obj): obj for i, obj in enumerate(
            list(replay.objects) + [a for a in flat if isinstance(a, (Tensor, np.ndarray))])}
        before = snapshot(roots)
        out_eager = self._run(flat, names)
        after_eager, returned_eager = snapshot(roots), snapshot(out_eager)
        restore(before)
        try:
            out = replay(*flat)
        except BaseException as e:
            restore(after_eager)
            del self._compiled[sig]
            if not isinstance(e, Exception):  # KeyboardInterrupt: as eager left it, then stop
                raise
            raise JitError(f"jit({self.__name__}): the trial replay failed ({type(e).__name__}: "
                           f"{e}); this call's step was applied eagerly") from e
        if out is STALE:  # the eager call itself changed what a guard checks
            restore(after_eager)
            self._stale(sig)
            return out_eager
        why = difference(after_eager, snapshot(roots), "the state") or \
            difference(returned_eager, snapshot(out), "the returned value")
        if why is not None:
            restore(after_eager)
            del self._compiled[sig]
            raise JitError(
                f"jit({self.__name__}): a replay would not do what the step does: after an eager "
                f"call and a replay from the same state, {why}. The step changes something "
                f"outside the engine (numpy on .data or .grad, assigning p.data or p.grad, "
                f"branching on values); use tensor ops and optimizers inside a jit step, or do "
                f"that outside it (this call's step was applied eagerly)")
        self._compiled[sig] = (replay, True)
        self.replays += 1
        return out


def _label(i, obj):
    shape = getattr(obj, "shape", None)
    return f"#{i} {type(obj).__name__}" + ("" if shape is None else f" of shape {shape}")


def _refuse_unused_graphs(out, tape, name):
    for t in out if isinstance(out, (tuple, list)) else (out,):
        if isinstance(t, (tuple, list)):  # nested, as output_spec allows
            _refuse_unused_graphs(t, tape, name)
            continue
        ctx = getattr(t, "_ctx", None)
        if (ctx is not None and autograd.is_node(ctx) and not autograd.is_released(ctx)
                and ctx not in tape.backpropagated):
            raise JitError(f"jit({name}): the step returns a tensor whose graph it did not "
                           f"backpropagate, but replays build no graph. Call backward() inside "
                           f"the step, or compute under no_grad() (inference)")


def _refuse_argument_graphs(flat, tape, name):
    for i, a in enumerate(flat):
        ctx = getattr(a, "_ctx", None) if isinstance(a, Tensor) else None
        if ctx is not None and ctx in tape.backpropagated:
            raise JitError(f"jit({name}): argument {i} carries a graph (it was computed from "
                           f"tensors that require gradients, outside the step) and the step's "
                           f"backward() runs into it: a replay builds no graph, so gradients "
                           f"would not reach those tensors. Compute it inside the step from its "
                           f"inputs, or pass it detached (x.detach())")


def _objects_of(specs):
    """The tensors (``x``) and objects (``o``) a tape's specs name."""
    for s in specs:
        if type(s) is not tuple or not s:
            continue
        if s[0] in ("x", "o"):
            yield s[1].obj
        elif s[0] in ("t", "l"):
            yield from _objects_of(s[1])


def _array_of(a):
    if isinstance(a, Tensor):
        return a.data
    return a if isinstance(a, np.ndarray) else None


def _signature(flat, names):
    """What a compiled replay assumes of its arguments: kinds, shapes, dtypes, memory layouts
    (strides: a replay writes into arrays of the layout numpy gave them at capture), which ones
    are the same object, numbers' values; and the grad mode and keyword names."""
    sig = [autograd.is_grad_enabled(), names]
    first = {}
    for i, a in enumerate(flat):
        if isinstance(a, Tensor):
            # a._ctx: an argument that carries a graph is captured apart (and refused if the
            # step backpropagates into it)
            sig.append(("tensor", a.data.shape, a.data.dtype, a.data.strides, a.requires_grad,
                        a._ctx is None, first.setdefault(id(a), i),
                        first.setdefault(id(a.data), i)))
        elif isinstance(a, np.ndarray):
            sig.append(("array", a.shape, a.dtype, a.strides, first.setdefault(id(a), i)))
        elif isinstance(a, (float, np.floating)):  # 0.0 == -0.0, but they compute apart
            sig.append(("value", type(a), a, math.copysign(1.0, a)))
        elif a is None or isinstance(a, (bool, int, str, np.generic)):
            sig.append(("value", type(a), a))
        else:
            raise JitError(f"jit step arguments must be tensors, arrays, numbers or strings, got "
                           f"{type(a).__name__}: convert it with np.asarray")
    return tuple(sig)
