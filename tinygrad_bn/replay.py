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
Python values it fixed at capture (batch norm's momentum and eps, ``train()``/``eval()``, which
parameters had a gradient). After changing those, call ``step.reset()``. Reading a tensor's
value inside the step (``item()``, ``numpy()``, ``if t:``) raises ``JitError``; arrays made
outside the engine inside the step (``np.random`` noise, ``Tensor`` wrappers are fine) are
caught when two calls are compared.

    step = jit(train_step)          # or @jit on the definition
    loss = step(Tensor(x), y)       # x, y: arrays of the same shapes at every call
"""
import numpy as np

from . import autograd
from .tape import JitError, Tape
from .tensor import Tensor

_ATTEMPTS = 4  # calls captured without two in a row agreeing, before giving up


def jit(fn):
    """Wrap training-step function ``fn`` so repeated calls replay its array work (``Jit``)."""
    return Jit(fn)


class Jit:
    """A step function that is captured on its first calls and replayed afterwards.

    Calls are grouped by their arguments' kind, shape and dtype (and the grad mode); each group
    is captured (run eagerly, with its work recorded) until two consecutive calls agree, then
    replayed. ``reset()`` forgets every capture.
    """

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "step")
        self.__doc__ = getattr(fn, "__doc__", None)
        self.reset()

    def reset(self):
        """Capture again on the next calls (after changing what the step fixed at capture)."""
        self._compiled = {}  # signature -> replay function
        self._pending = {}  # signature -> (last tape, its output spec, calls captured)
        self.replays = 0

    @property
    def captured(self):
        """How many argument signatures have a compiled replay."""
        return len(self._compiled)

    def __call__(self, *args):
        if Tape.active is not None:  # called inside another jit's capture: part of its tape
            return self.fn(*args)
        sig = _signature(args)
        replay = self._compiled.get(sig)
        if replay is not None:
            self.replays += 1
            return replay(*args)
        return self._capture(sig, args)

    def _capture(self, sig, args):
        tape = Tape(args, [_array_of(a) for a in args])
        Tape.active = tape
        try:
            out = self.fn(*args)
            out_spec = tape.output_spec(out)
        finally:
            Tape.active = None
            tape.finish()
        prev = self._pending.get(sig)
        if prev is not None:
            why = tape.same_as(prev[0])
            if why is None and prev[1] == out_spec:
                self._compiled[sig] = _compile(prev[0], tape, prev[1], out_spec, sig[1:])
                del self._pending[sig]
                return out
            if prev[2] + 1 >= _ATTEMPTS:
                del self._pending[sig]
                raise JitError(
                    f"jit({self.__name__}): {prev[2] + 1} calls in a row did different work, so "
                    f"there is nothing fixed to replay (this call's step was applied): "
                    f"{why or 'the returned value comes from different places'}. Arrays made "
                    f"outside the engine inside the step, or Python branching on data, do this")
        self._pending[sig] = (tape, out_spec, 1 if prev is None else prev[2] + 1)
        return out


def _array_of(a):
    if isinstance(a, Tensor):
        return a.data
    return a if isinstance(a, np.ndarray) else None


def _signature(args):
    sig = [autograd.is_grad_enabled()]
    for a in args:
        if isinstance(a, Tensor):
            sig.append(("tensor", a.data.shape, a.data.dtype, a.requires_grad))
        elif isinstance(a, np.ndarray):
            sig.append(("array", a.shape, a.dtype))
        elif a is None or isinstance(a, (bool, int, float, str)):
            sig.append(("value", type(a), a))
        else:
            raise JitError(f"jit step arguments must be tensors, arrays, numbers or strings, got "
                           f"{type(a).__name__}: convert it with np.asarray")
    return tuple(sig)


# ---- compiling two agreeing tapes into a Python function ----

def _compile(first, second, first_out, out_spec, arg_sig):
    """The replay function: one line per instruction of ``second`` (which agrees with
    ``first``; where they read a tensor's array through different tensors but the same array,
    the array is fixed, else the tensor's ``.data`` is read live). ``arg_sig``: the arguments'
    part of the signature, which says which are tensors and which arrays."""
    ns = {"W": Tensor._wrap}
    names = {}
    n_args = len(arg_sig)
    lines = [f"    d{i} = a{i}.data" if kind[0] == "tensor" else f"    d{i} = a{i}"
             for i, kind in enumerate(arg_sig) if kind[0] in ("tensor", "array")]

    def bind(prefix, obj):
        key = (prefix, id(obj))
        if key not in names:
            names[key] = f"{prefix}{len(names)}"
            ns[names[key]] = obj
        return names[key]

    def expr(a, b):
        kind = b[0]
        if kind == "r":
            return f"r{b[1]}"
        if kind == "in":
            return f"d{b[1]}"
        if kind == "arg":
            return f"a{b[1]}"
        if kind == "x":
            return f"{bind('X', b[1].obj)}.data" if a[1] == b[1] else bind("E", b[2].obj)
        if kind in ("e", "o"):
            return bind(kind.upper(), b[1].obj)
        if kind == "c":
            v = b[2]
            return repr(v) if v is None or type(v) in (bool, int, str) else bind("C", v)
        if kind in ("t", "l"):
            items = "".join(expr(x, y) + ", " for x, y in zip(a[1], b[1]))
            return f"({items})" if kind == "t" else f"[{items}]"
        if kind == "tensor":
            return f"W({expr(a[1], b[1])})"
        raise AssertionError(f"unknown spec {b!r}")

    last_use = {}
    for k, (_, spec, kwspec, _) in enumerate(second.instrs):
        for reg in _registers(spec) + _registers(tuple(s for _, s in kwspec)):
            last_use[reg] = k
    kept = set(_registers((out_spec,)))
    dies_after = {}  # instruction -> registers read for the last time there
    for reg, k in last_use.items():
        if reg not in kept:
            dies_after.setdefault(k, []).append(f"r{reg}")
    for k, ((_, spec_a, kw_a, _), (fn, spec_b, kw_b, reg)) in enumerate(
            zip(first.instrs, second.instrs)):
        call_args = [expr(x, y) for x, y in zip(spec_a, spec_b)]
        call_args += [f"{key}={expr(x, y)}" for (_, x), (key, y) in zip(kw_a, kw_b)]
        call = f"{bind('F', fn)}({', '.join(call_args)})"
        lines.append(f"    r{reg} = {call}" if reg is not None and (reg in last_use or reg in kept)
                     else f"    {call}")
        if k in dies_after:
            lines.append(f"    del {', '.join(dies_after[k])}")
    lines.append(f"    return {expr(first_out, out_spec)}")
    args = ", ".join(f"a{i}" for i in range(n_args))
    src = f"def replay({args}):\n" + "\n".join(lines) + "\n"
    exec(compile(src, "<jit replay>", "exec"), ns)
    replay = ns["replay"]
    replay.source = src
    return replay


def _registers(specs):
    """The registers a tuple of specs reads."""
    out = []
    for s in specs:
        if type(s) is not tuple or not s:
            continue
        if s[0] == "r":
            out.append(s[1])
        elif s[0] in ("t", "l"):
            out += _registers(s[1])
        elif s[0] == "tensor":
            out += _registers((s[1],))
    return out

