"""The tape: a log of the array work one call of a training step does, for ``jit`` to replay.

A ``Tape`` is the seam's hook (``dispatch.set_hook``) while it records in a thread: every piece
of array work of the core (an op's forward, a derivative rule, a gradient sum, an optimizer
update, batch norm's running statistics, the targets of a loss, ``Tensor(...)``) reaches it as
``forward``, ``vjp`` or ``call(fn, args, kwargs)``. The tape runs the function and writes one
instruction: the function, and for every argument where its value comes from:

* ``in``   the array of the step's i-th argument (a fresh one is bound at every replay);
* ``r``    the result of an earlier instruction (a register of the replay);
* ``x``    the array of a tensor (an op's input; for ``detach()`` copies, the original): if
           the same tensor in both captures, a parameter or buffer, read as ``tensor.data`` at
           every replay, so in-place updates and replaced arrays are seen;
* ``e``    any other array made before the call (jit refuses to freeze it);
* ``c``    a Python or numpy value (number, string, tuple, dtype, shape-only stand-in),
           compared by value;
* ``o``    any other object (a tensor, an optimizer, a function), compared by identity;
* ``arg``  the step's i-th argument object itself.

Op forwards come with their input tensors (``forward``), every other call with plain values.
Arrays are told apart by ``id``; the tape
keeps every one it has seen alive until it is done, so no id is reused in between.

While ``jit`` captures, a ``guard`` (``guard.py``) keeps the arrays the step could change
outside the engine read-only between the tape's own calls (``_run`` opens them for the engine's
work), and the step sees its numpy arguments and its gradients' data as ``GuardedArray`` views
whose numpy work outside the engine raises: such work would be frozen into, or left out of,
every replay.

Two tapes of the same step agree (``same_as``) when they did the same work on the same objects;
``jit`` compiles a step only after two consecutive calls agree. Anything made outside the tape
inside the step (``np.random...``, ``loss.item()``) differs between calls and is caught there.
"""
import numpy as np

from .. import dispatch, ops
from ..autograd import toposort
from ..nn.module import is_model_tensor  # noqa: F401  (the jit's view of the model registry)


class JitError(RuntimeError):
    """A step cannot be captured for replay (jit), or a replay would not repeat it."""


def _refuse_numpy_work(array, what):
    if Tape.current() is not None:  # capturing in this thread, outside the tape's own calls
        raise JitError(
            f"{what} on {array.what} inside a jit step: the value would be computed once, at "
            f"capture, and frozen into every replay. {array.hint}")


class GuardedArray(np.ndarray):
    """While jit captures: an array the step's own code may not compute with (its values would
    be frozen into every replay), as the step sees it: a numpy argument, a gradient's data.
    Numpy work on it raises ``JitError``; the engine gets ``.plain``, the array itself."""

    what = "a numpy argument"
    hint = ("Wrap the argument in a Tensor and use tensor ops (Tensor(mask).sum()), or compute "
            "the value outside the step and pass it in as an argument")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_numpy_work(self, f"np.{ufunc.__name__}" + ("" if method == "__call__" else
                                                            f".{method}"))
        inputs = tuple(_plain(x) for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(_plain(x) for x in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        _refuse_numpy_work(self, f"np.{func.__name__}")
        return super().__array_function__(func, types, args, kwargs)


def _guarded_method(name):
    method = getattr(np.ndarray, name)

    def guarded(self, *args, **kwargs):
        _refuse_numpy_work(self, f"{name}()" if not name.startswith("__") else name)
        return method(self, *args, **kwargs)
    guarded.__name__ = name
    return guarded


# Ways to read values that are not numpy functions (those go through the two hooks above).
for _name in ("__getitem__", "__iter__", "__float__", "__int__", "__index__", "__bool__",
              "__complex__", "item", "tolist", "tobytes", "copy", "astype", "dot", "argmax",
              "argmin", "argsort", "sort", "nonzero", "cumsum", "cumprod", "searchsorted",
              "choose", "compress", "take", "repeat", "put", "fill", "itemset", "setfield",
              "partition", "argpartition", "trace", "diagonal"):
    if hasattr(np.ndarray, _name):
        setattr(GuardedArray, _name, _guarded_method(_name))


def guarded_view(array, what=None, hint=None):
    """``array`` as the step's own code sees it while jit captures (``GuardedArray``)."""
    view = array.view(GuardedArray)
    view.plain = array
    if what is not None:
        view.what, view.hint = what, hint
    return view


def _plain(x):
    return x.plain if type(x) is GuardedArray else x


class ShapeOnly:
    """What a derivative rule gets for an input it does not read: its shape and dtype."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype

    ndim = property(lambda self: len(self.shape))

    def __eq__(self, other):
        return type(other) is ShapeOnly and (self.shape, self.dtype) == (other.shape, other.dtype)

    def __hash__(self):
        return hash(self.shape)

    def __repr__(self):
        return f"ShapeOnly({self.shape}, {self.dtype})"


class _Ref:
    """An object compared by identity (arrays and tensors compare elementwise with ==)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return type(other) is _Ref and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


# Python values compared by value; anything else is an object compared by identity.
_VALUE_TYPES = (type(None), bool, int, float, complex, str, bytes, slice, type(Ellipsis),
                np.dtype, type, ShapeOnly)


class Tape:
    """One call's instructions: ``(fn, arg specs, kwarg specs, result register or None)``."""

    @staticmethod
    def current():
        """The tape recording in this thread, or None."""
        hook = dispatch.current_hook()
        return hook if isinstance(hook, Tape) else None

    def start(self):
        """Record this thread's array work on this tape (the seam's hook), until ``stop()``."""
        self._outer = dispatch.set_hook(self)

    def stop(self):
        dispatch.set_hook(self._outer)

    def __init__(self, arg_objects, arg_arrays):
        self.instrs = []
        self.n_regs = 0
        # per register: (shape, dtype, strides, fresh), fresh meaning an array no other name
        # held when it was made (not a view, not an argument's or an earlier result's array)
        self.reg_meta = []
        self.viewed = set()  # registers of which a later result is a view
        self.same = {}  # register -> the earlier register whose very array it is
        self.backpropagated = set()  # graph vertices a backward() of the step went through
        self._args = {id(a): i for i, a in enumerate(arg_objects)}
        self._inputs = {id(a): i for i, a in enumerate(arg_arrays) if a is not None}
        self._regs = {}  # id(array) -> register holding it
        self._owners = {}  # id(array) -> the first tensor seen holding it
        self._aliases = {}  # id(tensor) -> the tensor it was detached from
        self._alive = list(arg_objects)  # everything whose id is in a map above
        self.guard = None  # while jit captures: locks arrays between the tape's calls

    # ---- recording ----

    def call(self, fn, args, kwargs=None):
        """Run ``fn(*args, **kwargs)`` (untaped inside) and write it down; returns its result."""
        return self._run(fn, tuple(self._spec(a) for a in args), args, kwargs)

    def forward(self, op, inputs, attrs):
        """An op's forward on tensors ``inputs``; the arrays of persistent tensors (parameters,
        buffers) are read live at replay."""
        if op is ops.GETITEM and _has_mask(attrs["index"]):
            raise JitError("indexing with a boolean mask inside a jit step: the result's shape "
                           "depends on the mask's values, which a replay cannot follow")
        spec = tuple(self._spec(t.data, t) for t in inputs)
        if self.guard is not None and any(t.requires_grad for t in inputs):
            # backward reads the inputs' arrays (a numpy argument the step wrapped, x * mask,
            # or a gradient): give them the plain array
            prev = dispatch.set_hook(None)  # the engine's assignment, not the step's
            try:
                for t in inputs:
                    if type(t.data) is GuardedArray:
                        t.data = t.data.plain
                        self.guard.released.add(id(t.data))
            finally:
                dispatch.set_hook(prev)
        return self._run(dispatch.kernel(op).forward, spec, [t.data for t in inputs], attrs)

    def vjp(self, op, i, g, out, inputs, attrs):
        """A derivative rule; the inputs it does not read are recorded by shape only, so a
        replay can free them before it runs."""
        k = dispatch.kernel(op)
        inputs = [a if type(a) is np.ndarray and r else ShapeOnly(a.shape, a.dtype)
                  for a, r in zip(inputs, k.vjp_reads[i])]
        return self.call(k.vjps[i], (g, out, *inputs), attrs)

    def read(self, what):
        """A value read out of a tensor inside the step: refused (it would be frozen)."""
        refuse(what)

    def backward_started(self, root, recorded):
        if recorded:
            raise JitError("backward(create_graph=True) and grad() inside a jit step are not "
                           "supported; call loss.backward() in the step")
        self.backpropagated.update(toposort(root))

    def _plain_of(self, a):
        """``a`` as the engine gets it: GuardedArrays (also in a tuple or list) as the array."""
        if type(a) in (tuple, list):
            return type(a)(self._plain_of(x) for x in a)
        return a.plain if type(a) is GuardedArray else a

    def _run(self, fn, spec, args, kwargs):
        kwspec = tuple((k, self._spec(v)) for k, v in kwargs.items()) if kwargs else ()
        guard = self.guard
        if guard is not None:
            args = [self._plain_of(a) for a in args]
            if kwargs:
                kwargs = {k: self._plain_of(v) for k, v in kwargs.items()}
            if guard.writes(fn, args):
                guard.open()
            else:
                guard = None
        dispatch.set_hook(None)  # work inside fn is part of this instruction
        try:
            result = fn(*args, **kwargs) if kwargs else fn(*args)
        except ValueError as e:
            if self.guard is None or guard is not None or "read-only" not in str(e):
                raise
            raise RuntimeError(  # the engine's own mistake, not the step's
                f"jit: {describe(fn)} writes into an array, but the capture guard runs it with "
                f"the arrays locked: remove it from guard._PURE") from e
        finally:
            dispatch.set_hook(self)
            if guard is not None:
                guard.close()
        reg = None
        if isinstance(result, (np.ndarray, np.generic)):
            key = id(result)
            fresh = (type(result) is np.ndarray and result.base is None and key not in self._regs
                     and key not in self._inputs and key not in self._args
                     and key not in self._owners)
            self.reg_meta.append((result.shape, result.dtype, result.strides, fresh))
            reg = self.n_regs
            if key in self._regs:
                self.same[reg] = self._regs[key]
            base = getattr(result, "base", None)
            while type(base) is np.ndarray:
                if id(base) in self._regs:
                    self.viewed.add(self._regs[id(base)])
                base = base.base
            self.n_regs += 1
            self._regs[id(result)] = reg
            self._alive.append(result)
        self.instrs.append((fn, spec, kwspec, reg))
        return result

    def _spec(self, v, tensor=None):
        """Where value ``v`` comes from (see the module docstring); ``tensor`` owns ``v``."""
        t = type(v)
        if t is GuardedArray:
            v = v.plain
            t = type(v)
        if t is np.ndarray or isinstance(v, np.generic):
            key = id(v)
            if key in self._regs:
                return ("r", self._regs[key])
            if key in self._inputs:
                # An argument's array, unless read through a parameter other than that
                # argument (p passed in as p.detach()): a module's tensor or a leaf that needs
                # a gradient. Then it is that tensor's, read live, as the next call may pass
                # another array. (A wrapper the step makes around the argument is not.)
                owner = None if tensor is None else self._aliases.get(id(tensor), tensor)
                if owner is None or id(owner) in self._args or not (
                        is_model_tensor(owner) or owner.requires_grad and owner._ctx is None):
                    return ("in", self._inputs[key])
            elif key in self._args:  # a numpy scalar argument
                return ("arg", self._args[key])
            if t is not np.ndarray:  # a numpy scalar made by Python code: a value, like 0.5
                return ("c", t, v)
            self._alive.append(v)
            if tensor is not None:
                tensor = self._aliases.get(id(tensor), tensor)
                self._owners.setdefault(key, tensor)
            else:
                tensor = self._owners.get(key)
            if tensor is not None:
                self._alive.append(tensor)
                return ("x", _Ref(tensor), _Ref(v))
            return ("e", _Ref(v))
        if t is tuple or t is list:
            return ("t" if t is tuple else "l", tuple(self._spec(x) for x in v))
        if id(v) in self._args:
            return ("arg", self._args[id(v)])
        if isinstance(v, _VALUE_TYPES):
            return ("c", t, v)
        self._alive.append(v)
        return ("o", _Ref(v))

    def writes_into(self, tensor):
        """An in-place op writes into ``tensor``'s array: if it was made before the call (an
        average of weights beside the model), it is that tensor's, read live at replay."""
        self._spec(tensor.data, tensor)

    def alias(self, tensor, original):
        """``tensor`` wraps ``original``'s array (``detach()``): read it as ``original.data``."""
        self._aliases[id(tensor)] = self._aliases.get(id(original), original)
        self._alive += [tensor, original]

    def output_spec(self, value):
        """Where the step's return value comes from: a tensor's array, None, or a tuple."""
        if value is None:
            return ("c", type(None), None)
        if isinstance(value, (tuple, list)):
            return ("t", tuple(self.output_spec(v) for v in value))
        data = _plain(getattr(value, "data", None))
        if type(data) is not np.ndarray:
            raise JitError(f"a jit step must return tensors (or None, or a tuple of them), got "
                           f"{type(value).__name__}: a Python value would be frozen at capture; "
                           f"return the tensor and call .item() on the result")
        if id(value) in self._args:
            return ("arg", self._args[id(value)])
        spec = self._spec(data, value)
        return ("tensor", spec) if spec[0] in ("r", "in") else ("o", _Ref(value))

    def finish(self):
        """Stop holding the arrays of this call (the instructions keep what replay needs)."""
        self._alive = self._regs = self._inputs = self._args = None
        self._owners = self._aliases = None
        self.backpropagated = None

    # ---- comparing two captures ----

    def same_as(self, other):
        """None if ``other`` did the same work, else a sentence saying where they differ."""
        if len(self.instrs) != len(other.instrs):
            return (f"one call did {len(other.instrs)} array operations and the next "
                    f"{len(self.instrs)}")
        for i, (a, b) in enumerate(zip(other.instrs, self.instrs)):
            if a[0] is not b[0] or a[3] != b[3] or not (_agree(a[1], b[1]) and
                                                        _agree_kwargs(a[2], b[2])):
                return f"operation {i} ({describe(b[0])}) differs: {_diff(a, b)}"
        return None


def _agree(a, b):
    """Two specs stand for the same value at replay (``x``: the same tensor or array)."""
    if type(a) is not tuple or type(b) is not tuple:
        return a == b
    if a and a[0] == "x" and b and b[0] == "x":
        return a[1] == b[1] or a[2] == b[2]
    if len(a) != len(b):
        return False
    if a and a[0] == "c":
        return a[1] is b[1] and (a[2] == b[2] or a[2] != a[2] and b[2] != b[2])  # NaN == NaN
    return all(_agree(x, y) for x, y in zip(a, b))


def _agree_kwargs(a, b):
    """The same keywords, standing for the same values (keywords are not spec kinds)."""
    return len(a) == len(b) and all(ka == kb and _agree(x, y) for (ka, x), (kb, y) in zip(a, b))


def _diff(a, b):
    if not _agree(a[1], b[1]):
        return f"its arguments were {_show(a[1])} on one call and {_show(b[1])} on the next"
    if not _agree_kwargs(a[2], b[2]):
        shown = [", ".join(f"{k}={_show(s)}" for k, s in kw) for kw in (a[2], b[2])]
        return f"its keyword arguments were ({shown[0]}) on one call and ({shown[1]}) on the next"
    return "its result is used differently"


def _show(spec):
    if type(spec) is not tuple or not spec:
        return repr(spec)
    kind = spec[0]
    if kind in ("t", "l"):
        return "(" + ", ".join(_show(s) for s in spec[1]) + ")"
    if kind == "e":
        return f"an array {getattr(spec[1].obj, 'shape', '')} made outside the tape"
    if kind == "x":
        owner = spec[1].obj
        return (f"the array {getattr(spec[2].obj, 'shape', '')} of a {type(owner).__name__} "
                f"at {id(owner):#x}")
    if kind == "o":
        return f"{type(spec[1].obj).__name__} object at {id(spec[1].obj):#x}"
    if kind == "c":
        return repr(spec[2])
    if isinstance(kind, str) and len(spec) == 2 and isinstance(spec[1], int):
        return f"{kind}{spec[1]}"
    return "(" + ", ".join(_show(s) for s in spec) + ")"


def describe(fn):
    """A readable name for a taped function: ops' forwards and derivatives are lambdas."""
    if not _OP_PARTS:
        for op in ops.PRIMITIVES:
            k = dispatch.kernel(op)
            _OP_PARTS[k.forward] = f"{op.name} forward"
            if k.into is not None:
                _OP_PARTS[k.into] = f"{op.name} forward, in place"
            for i, (vjp, into) in enumerate(zip(k.vjps, k.vjps_into)):
                _OP_PARTS.setdefault(vjp, f"{op.name} derivative for input {i}")
                if into is not None:
                    _OP_PARTS[into] = f"{op.name} derivative for input {i}, in place"
    name = _OP_PARTS.get(fn)
    return name or getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


_OP_PARTS = {}


def refuse(what):
    """Raise if a tape is recording: ``what`` would be frozen into every replay."""
    if Tape.current() is not None:
        raise JitError(f"{what} inside a jit step: the value would be read once, at capture, "
                       f"and frozen into every replay. Return the tensor from the step and read "
                       f"it outside")


def _has_mask(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, np.ndarray) and i.dtype.kind == "b" for i in items)
