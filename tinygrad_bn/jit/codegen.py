"""Two agreeing tapes (``tape.py``) -> one Python function of straight-line numpy calls.

Every instruction becomes one line ``r7 = F3(r5, X2.data, axis=(0,))``: registers ``r`` for
results, ``d`` for the arrays of the step's arguments, ``X...data`` for a tensor made before the
call (read live), ``E``/``O``/``C`` for fixed arrays, objects and values. A register is deleted
right after its last use, so intermediates are freed as early as the eager pass frees them.

An elementwise op whose input dies at it writes its result over that input (``Op.into``):
``r8 = F9(r7, r7, X4.data)`` is ``r7 + b`` computed in r7's memory, as hand-written numpy
does ``z += b``; a derivative rule writes into its incoming gradient or an input it reads
(``Op.vjps_into``: ``g * γ`` as ``dz *= gamma``). The eager pass cannot (the graph may still
need its arrays); the replay knows every later use. Only arrays no one else can hold are
reused: a new array (not a view, not an argument's) made by an op or a rule, read only by ops
and rules (never by an optimizer, a ``.grad``, a tensor or the caller), of which no later result
is a view, and whose memory layout is the one numpy gave the result at capture (the guards
keep every input's layout as captured, so layouts stay what they were). The bits are the same:
a ufunc computes the same values into any array of that layout. A rule that returns its
gradient unchanged (``add``'s) costs no call at all: ``r9 = r8``.

The function first checks its guards, the assumptions the code was compiled under, and returns
``STALE`` (doing nothing) if one fails, so the caller captures again: every live tensor still
has the dtype, shape and strides it had, and every variable the step function reads from its
closure or its module still names the same object (a new optimizer or model bound to the same
name).
"""
import dis
import operator
import types

import numpy as np

from .. import dispatch, kernels
from ..kernels import is_elementwise_ufunc
from ..ops import PRIMITIVES
from ..optim import Optimizer
from ..tensor import Tensor, _to_array
from .tape import JitError, is_model_tensor

STALE = object()  # what a replay returns when a guard failed: nothing was run


def _gradient_sum_in_place(out, x, y):  # autograd's prev + pg
    return np.add(x, y, out=out)


# What can write into an array that dies: op forwards and the gradient sum (into any input)
# and derivative rules (into the incoming gradient or an input they read; see Op.vjps_into).
_KERNELS = [dispatch.kernel(op) for op in PRIMITIVES]
_INTO = {k.forward: k.into for k in _KERNELS if k.into is not None}
_INTO[operator.add] = _gradient_sum_in_place
_INTO_G = {vjp: into for k in _KERNELS for vjp, into in zip(k.vjps, k.vjps_into)
           if into is not None}
# (by id) functions that keep no reference to their arguments once they return: ops' forwards
# and derivatives and the engine's gradient arithmetic. Not: storing a .grad, an optimizer
# update, a running-statistics update, making a Tensor.
# The first kind never change their arguments either: one that returns an argument returned it
# unchanged, so the replay can skip the call.
_OPS = ({id(k.forward) for k in _KERNELS} | {id(v) for k in _KERNELS for v in k.vjps}
        | {id(kernels.sum_to), id(dispatch._astype)})
_PURE = _OPS | {id(operator.add), id(operator.iadd)}


def compile_replay(first, second, first_out, out_spec, arg_kinds, fn, args, modules=()):
    """The replay function for tapes ``first`` and ``second`` (which agree; ``second`` is the
    latest) and their output specs. ``arg_kinds``: per argument, "tensor", "array" or "value";
    ``args``: the arguments of the latest capture. ``fn``: the step function, whose closure and
    globals are guarded. ``modules``: those whose ``training`` flag (train()/eval()) must stay
    as it is now (a layer's forward branches on it). Returns the function, with ``.source``
    (its text) and ``.objects`` (what it reads: for checking a trial replay).
    """
    ns = {"W": Tensor._wrap, "STALE": STALE, "IS": operator.is_}
    names = {}
    objects = {}

    def bind(prefix, obj):
        key = (prefix, id(obj))
        if key not in names:
            names[key] = f"{prefix}{len(names)}"
            ns[names[key]] = obj
        return names[key]

    # A tensor that is the same object in both captures was there before both: read it live.
    # Its array may also reach an op through a new wrapper each call (x * p.data): live too.
    persistent = {}
    for a, b in zip(_specs(first), _specs(second)):
        if b[0] == "x" and a[1] == b[1]:
            persistent[id(b[2].obj)] = b[1].obj

    def expr(a, b):
        kind = b[0]
        if kind == "r":
            return f"r{b[1]}"
        if kind == "in":
            return f"d{b[1]}"
        if kind == "arg":
            return f"a{b[1]}"
        if kind == "x":
            owner = b[1].obj if a[1] == b[1] else persistent.get(id(b[2].obj))
            if owner is None:
                _refuse_fixed_array(b[2].obj)
            objects[id(owner)] = owner
            return f"{bind('X', owner)}.data"
        if kind == "e":
            _refuse_fixed_array(b[1].obj)
        if kind == "o":
            objects[id(b[1].obj)] = b[1].obj
            return bind("O", b[1].obj)
        if kind == "c":
            v = b[2]
            return repr(v) if v is None or type(v) in (bool, int, str) else bind("C", v)
        if kind in ("t", "l"):
            items = "".join(expr(x, y) + ", " for x, y in zip(a[1], b[1]))
            return f"({items})" if kind == "t" else f"[{items}]"
        if kind == "tensor":
            return f"W({expr(a[1], b[1])})"
        raise AssertionError(f"unknown spec {b!r}")

    body = []
    last_use = {}
    for k, (_, spec, kwspec, _) in enumerate(second.instrs):
        for reg in _registers(_operands(spec, kwspec)):
            last_use[reg] = k
    kept = set(_registers((out_spec,)))
    dies_after = {}  # instruction -> registers read for the last time there
    for reg, k in last_use.items():
        if reg not in kept:
            dies_after.setdefault(k, []).append(f"r{reg}")
    donated = _donations(first, second, last_use, kept)
    for k, ((_, spec_a, kw_a, _), (f, spec_b, kw_b, reg)) in enumerate(
            zip(first.instrs, second.instrs)):
        call_args = [expr(x, y) for x, y in zip(spec_a, spec_b)]
        call_args += [f"{key}={expr(x, y)}" for (_, x), (key, y) in zip(kw_a, kw_b)]
        if k in donated and is_elementwise_ufunc(f):  # np.add(x, b, out=x)
            call_args.append(f"out=r{donated[k]}")
        elif k in donated:  # an in-place form: the array to write into comes first
            call_args.insert(0, f"r{donated[k]}")
            f = _INTO[f] if f in _INTO else _INTO_G[f]
        same = second.same.get(reg)
        if (same is not None and first.same.get(reg) == same and id(f) in _OPS
                and same in _registers(spec_b)):
            call = f"r{same}"  # the rule handed its argument back: no call needed
        else:
            call = f"{bind('F', f)}({', '.join(call_args)})"
        body.append(f"    r{reg} = {call}" if reg is not None and (reg in last_use or reg in kept)
                    else f"    {call}")
        if k in dies_after:
            body.append(f"    del {', '.join(dies_after[k])}")
    body.append(f"    return {expr(first_out, out_spec)}")

    guards = []
    for key, name in list(names.items()):
        if key[0] == "X":
            tensor = ns[name]
            guards.append(f"{name}.data.dtype is not {bind('C', tensor.data.dtype)} or "
                          f"{name}.data.shape != {tensor.data.shape!r} or "
                          f"{name}.data.strides != {tensor.data.strides!r} or "
                          f"{name}.requires_grad is not {bool(tensor.requires_grad)}")
    free = _free_variables(fn)
    for holder, read, value, _ in free:
        guards.append(f"{read.format(bind('H', holder))} is not {bind('O', value)}")
    named = [value for _, _, value, _ in free]
    guards += _identity_guards(second, args, arg_kinds, names, ns, objects, bind, named)
    guards += [f"{bind('O', m)}.training is not {bool(m.training)}" for m in modules]
    head = [f"    d{i} = a{i}.data" if kind == "tensor" else f"    d{i} = a{i}"
            for i, kind in enumerate(arg_kinds) if kind in ("tensor", "array")]
    if guards:
        # a closure variable deleted since the capture reads as ValueError: capture again
        head = ["    try:", "        if (" + "\n                or ".join(guards) + "):",
                "            return STALE", "    except ValueError:", "        return STALE"] + head
    args = ", ".join(f"a{i}" for i in range(len(arg_kinds)))
    src = f"def replay({args}):\n" + "\n".join(head + body) + "\n"
    exec(compile(src, "<jit replay>", "exec"), ns)
    replay = ns["replay"]
    replay.source = src
    replay.objects = list(objects.values())
    return replay


def _identity_guards(second, args, arg_kinds, names, ns, objects, bind, named):
    """Guards on which tensors the arguments and the optimizers' parameters are.

    The tape knows a tensor argument only as "the i-th argument", also where the step reached
    the same tensor another way (a model's own weight or buffer passed in). So an argument must
    not be one of the tensors the replay reads live; and one that was the model's at capture
    must be that very tensor at every call: a parameter or buffer of any module
    (``is_model_tensor``), a tensor an optimizer of the step holds, or one the step hands to a
    call that changes it (zero_grad, batch norm's running statistics). A fresh input each call,
    wrapped in a Tensor or given a gradient, is none of these. An optimizer's parameter list
    must hold the same tensors: its updates and zero_grad() were recorded per parameter.
    ``named``: the values of the variables the step names (its closure and globals)."""
    persistent = [ns[name] for key, name in names.items() if key[0] == "X"]
    optimizers = [o for o in objects.values() if isinstance(o, Optimizer)]
    optimizers += [o for o in named if isinstance(o, Optimizer) and o not in optimizers]
    held = {id(p) for o in optimizers for p in o.params}
    changed = set()
    for f, spec, kwspec, _ in second.instrs:
        # those read or give a gradient only
        if f is not dispatch._store_grad and f is not _to_array:
            changed.update(s[1] for s in _flat_specs(_operands(spec, kwspec)) if s[0] == "arg")
    guards = []
    for i, (kind, a) in enumerate(zip(arg_kinds, args)):
        if kind != "tensor":
            continue
        if id(a) in held or i in changed or is_model_tensor(a):
            guards.append(f"a{i} is not {bind('O', a)}")
        elif persistent:
            guards.append(f"id(a{i}) in {bind('C', frozenset(map(id, persistent)))}")
    for o in optimizers:
        name = bind("O", o)
        guards.append(f"len({name}.params) != {len(o.params)} or not all(map(IS, {name}.params, "
                      f"{bind('C', tuple(o.params))}))")
    return guards


def _operands(spec, kwspec):
    """An instruction's argument specs, positional and keyword, as one tuple."""
    return spec + tuple(s for _, s in kwspec)


def _flat_specs(specs):
    """Every spec in ``specs``, those nested in tuples and lists included."""
    for s in specs:
        if type(s) is tuple and s:
            if s[0] in ("t", "l"):
                yield from _flat_specs(s[1])
            else:
                yield s


def _refuse_fixed_array(array):
    raise JitError(
        f"the step reads an array of shape {array.shape} that is neither an argument nor the "
        f"data of a tensor made before the call (a numpy array in a global or an attribute, "
        f"wrapped anew at every call): a replay would keep reading this one even after it is "
        f"replaced. Pass it as an argument of the step, or wrap it once in a Tensor outside "
        f"the step (this call's step was applied eagerly)")


def _specs(tape):
    """Every top-level argument spec of every instruction, in order."""
    for _, spec, kwspec, _ in tape.instrs:
        yield from spec
        for _, s in kwspec:
            yield s


def _donations(first, second, last_use, kept):
    """{instruction: the register its result is written into} (see the module docstring).

    Registers that are the same array (a rule handed its gradient back) are one value here:
    it dies at the last use of any of them, and every instruction reading any of them counts.
    """
    if first.same != second.same:
        return {}
    root = {}
    for reg in range(second.n_regs):
        root[reg] = root[second.same[reg]] if reg in second.same else reg
    producer, readers, last, blocked = {}, {}, {}, set()
    for k, (f, spec, kwspec, reg) in enumerate(second.instrs):
        if reg is not None and reg not in second.same:
            producer[reg] = f
        for s in spec:
            if type(s) is tuple and s and s[0] == "r":
                readers.setdefault(root[s[1]], []).append(f)
            else:
                blocked.update(root[r] for r in _registers((s,)))
        blocked.update(root[r] for r in _registers(_operands((), kwspec)))
    # Registers whose memory layout may differ from the capture's: results of calls given an
    # object (``o``, compared by identity: what is inside is not guarded) and everything
    # computed from them. _add_grad(t, g) keeps g itself (any layout) or makes t.grad + g (C
    # order), by whether t has a gradient at the call; Tensor(p) copies p's array in its
    # layout. An op writing into an array must see the layouts of the capture.
    unstable = set()
    for f, spec, kwspec, reg in second.instrs:
        specs = _operands(spec, kwspec)
        if reg is not None and (any(s[0] == "o" for s in _flat_specs(specs)) or any(
                root[r] in unstable for r in _registers(specs))):
            unstable.add(root[reg])
    for reg, k in last_use.items():
        last[root[reg]] = max(k, last.get(root[reg], k))
    blocked.update(root[r] for r in kept)
    blocked.update(root[r] for r in second.viewed | first.viewed)

    def reusable(r, k, layout):
        # layout: the result's (shape, dtype, strides) as numpy made it. Strides too: writing
        # into a Fortran-ordered array would hand later reductions another summation order.
        r = root[r]
        return (last[r] == k and r not in blocked
                and second.reg_meta[r] == first.reg_meta[r] == layout + (True,)
                and id(producer.get(r)) in _PURE and all(id(g) in _PURE for g in readers[r]))

    out = {}
    for k, (f, spec, kwspec, reg) in enumerate(second.instrs):
        if reg is None or not _hashable(f):
            continue
        layout = second.reg_meta[reg][:3]
        if root[reg] in unstable:  # then some operand's layout may differ from the capture's
            continue
        if f in _INTO:
            candidates = spec
        elif f in _INTO_G:  # a rule (g, out, *inputs): g or an input it reads, never out
            candidates = spec[:1] + spec[2:]
        else:
            continue
        for s in candidates:
            if type(s) is tuple and s and s[0] == "r" and reusable(s[1], k, layout):
                out[k] = s[1]
                break
    return out


def _hashable(f):
    try:
        hash(f)
    except TypeError:
        return False
    return True


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


# ---- guards on the variables the step function reads ----

def _free_variables(fn):
    """(holder, read, value, name) for each closure cell and module global ``fn`` reads, except
    modules: ``read`` formats the holder's name in the generated code into an expression for
    the variable's current value, which is ``value`` now. Rebinding any of them (a new
    optimizer, model, function or number under the same name) makes the replay stale. The
    same for the functions of the step's own module it calls (a helper reading a global
    ``opt``), and theirs in turn."""
    fn = _unwrap(fn)
    if getattr(fn, "__code__", None) is None:
        return []
    out, seen, todo = [], {id(fn)}, [fn]
    while todo:
        f = todo.pop()
        values = []
        for name, cell in zip(f.__code__.co_freevars, f.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # not bound yet
                continue
            if not isinstance(value, types.ModuleType):
                out.append((cell, "{}.cell_contents", value, name))
                values.append(value)
        module_globals = f.__globals__
        read, written = _globals_of(f.__code__)
        for var in sorted(read - written):  # a global the step assigns is its own counter
            value = module_globals.get(var)
            if var in module_globals and not isinstance(value, types.ModuleType):
                out.append((module_globals, "{}.get(" + repr(var) + ")", value, var))
                values.append(value)
        for value in values:  # helpers written next to the step, not library functions
            for helper in _own_functions(value, fn.__globals__):
                if id(helper) not in seen:
                    seen.add(id(helper))
                    todo.append(helper)
    return out


def _unwrap(fn):
    # functools.partial, a bound method, a jit method's wrapper: the function inside
    while hasattr(fn, "func") or hasattr(fn, "__func__") or hasattr(fn, "__wrapped__"):
        fn = getattr(fn, "func", None) or getattr(fn, "__func__", None) or fn.__wrapped__
    return fn


def assigned_variables(fn):
    """The globals and enclosing functions' variables ``fn`` assigns (``global steps;
    steps += 1``): Python work a replay skips, which no check can see."""
    fn = _unwrap(fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    written = set(_globals_of(code)[1])
    for ins in dis.get_instructions(code):
        if ins.opname in ("STORE_DEREF", "DELETE_DEREF") and ins.argval in code.co_freevars:
            written.add(ins.argval)
    return sorted(written)


def reads_data(fn):
    """Whether the code of ``fn`` (or code nested in it) reads an attribute ``.data``: numpy
    values computed from a tensor's array there are fixed at capture, and no guard sees them."""
    code = getattr(_unwrap(fn), "__code__", None)
    todo = [] if code is None else [code]
    while todo:
        code = todo.pop()
        if any(ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and ins.argval == "data"
               for ins in dis.get_instructions(code)):
            return True
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return False


def _own_functions(value, module_globals):
    """The functions of the module ``module_globals`` that ``value`` is, or that it wraps: a
    decorator's wrapper (``__wrapped__``, or the functions in the wrapper's closure)."""
    while (hasattr(value, "__wrapped__") or hasattr(value, "func")) and type(value) is not type:
        value = getattr(value, "func", None) or value.__wrapped__  # a decorator, a partial
    if type(value) is not types.FunctionType:
        return []
    if value.__globals__ is module_globals:
        return [value]
    inner = []
    for cell in value.__closure__ or ():
        try:
            f = cell.cell_contents
        except ValueError:
            continue
        if type(f) is types.FunctionType and f.__globals__ is module_globals:
            inner.append(f)
    return inner


def _globals_of(code):
    """(names read as globals, names assigned as globals) by ``code`` and the code nested in
    it (comprehensions, inner functions); attribute names are not globals."""
    read, written = set(), set()
    for ins in dis.get_instructions(code):
        if ins.opname == "LOAD_GLOBAL":
            read.add(ins.argval)
        elif ins.opname in ("STORE_GLOBAL", "DELETE_GLOBAL"):
            written.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            r, w = _globals_of(const)
            read |= r
            written |= w
    return read, written

