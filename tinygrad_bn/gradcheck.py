"""Gradient checking: autodiff against float64 central differences, and the batch-norm references.

``gradcheck(fn, inputs)`` compares the engine's vector-Jacobian product with central differences
(and, for small problems, the full Jacobian), in float64, and raises ``GradcheckError`` naming the
input, the worst indices and both values. ``gradcheck_report`` returns the same comparison as
JSON-ready data. The batch-norm backward is also written out twice in plain numpy — the paper's
step-by-step chain rule and the simplified closed form — as references independent of the engine.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

from . import ops
from .autograd import enable_grad, is_node, keep_values, no_grad, toposort
from .functional_grad import grad
from .nn import functional as F
from .tensor import Tensor

# Full Jacobians are checked when (output size) x (total input size) is at most this, and the
# output has at most FULL_JACOBIAN_MAX_OUTPUTS elements (one backward pass per output element).
FULL_JACOBIAN_MAX_ENTRIES = 20_000
FULL_JACOBIAN_MAX_OUTPUTS = 256
WORST_SHOWN = 3

FLOAT32_NOTE = (
    "{name} was {dtype}; it was checked on a float64 copy, because central differences "
    "divide a round-off error of ~1e-7 (float32) by a step of ~1e-6: on a batch-norm loss they "
    "are off by ~0.2 in float32, where float64 gives ~1e-9")


class GradcheckError(AssertionError):
    """A gradient check failed: autodiff and central differences disagree beyond the tolerance.

    An AssertionError (not RuntimeError) because it is a verdict on the code under test, as
    numpy.testing's failures are: in pytest it shows as a failed test with this message, and
    ``pytest.raises(AssertionError)`` catches it. It is raised explicitly, so ``python -O`` keeps
    it. Misuse of ``gradcheck`` itself raises ValueError or TypeError instead.
    """


class GradcheckWarning(UserWarning):
    """The check ran but proves little: a vacuous (all ~0) gradient, or an input on a kink."""


# ---------------------------------------------------------------------------------------------
# The two sides of the comparison
# ---------------------------------------------------------------------------------------------

def default_upstream(shape, seed=0):
    """A fixed random upstream gradient u of ``shape``: |u| in [0.5, 1.5], random signs.

    Never all ones: sum(batch_norm(x)) is constant in x (x_hat sums to zero over the batch), so
    a check through .sum() sees a zero gradient whatever the backward computes, and a backward
    that forgets the variance term passes. Bounded away from zero so every output element counts.
    """
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)


def numeric_vjp(fn, arrays, upstream, eps=1e-6, jacobian=False):
    """Central differences of L = sum(fn(*arrays) * upstream) w.r.t. each array, in their dtype.

    dL/da[i] ~ (L(a + h e_i) - L(a - h e_i)) / (2h). ``fn`` takes Tensors; it runs in no_grad on
    Tensors wrapping ``arrays``, which are perturbed in place and restored element by element.
    With ``jacobian=True`` also returns, per array, d fn / d a as (output size, a.size).
    """
    u = np.asarray(upstream, dtype=np.float64)
    tensors = [Tensor._wrap(a) for a in arrays]
    grads, jacs = [], []
    with no_grad():
        for a in arrays:
            g = np.zeros(a.shape, dtype=np.float64)
            jac = None
            for j, i in enumerate(np.ndindex(a.shape)):
                orig = a[i]
                a[i] = orig + eps
                # np.array copies: reshape, transpose, expand and slicing return views of ``a``,
                # which the next perturbation would silently change.
                hi, x_hi = np.array(fn(*tensors).data, dtype=np.float64), a[i]
                a[i] = orig - eps
                lo, x_lo = np.array(fn(*tensors).data, dtype=np.float64), a[i]
                a[i] = orig
                # The step actually taken (orig + eps is rounded): a little more accurate. In
                # float32 a tiny eps can vanish entirely; the result is then NaN, not a guess.
                step = float(x_hi) - float(x_lo)
                col = (hi - lo) / step if step else np.full(hi.shape, np.nan)
                g[i] = np.sum(col * u)
                if jacobian:
                    if jac is None:
                        jac = np.zeros((col.size, a.size))
                    jac[:, j] = col.reshape(-1)
            grads.append(g)
            jacs.append(jac if jac is not None else np.zeros((u.size, 0)))
    return (grads, jacs) if jacobian else grads


def analytic_vjp(fn, arrays, upstream, jacobian=False):
    """The engine's gradient of sum(fn(*arrays) * upstream) w.r.t. each array (reverse mode).

    Runs on fresh Tensors over copies of ``arrays``. With ``jacobian=True`` also returns the
    full Jacobians, one backward pass per output element.
    """
    tensors = [Tensor(np.array(a), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    _check_output(out, upstream)
    return _backward(out, tensors, np.asarray(upstream, dtype=np.float64), jacobian)


def _check_output(out, upstream):
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if np.shape(upstream) != out.shape:
        raise ValueError(f"gradcheck: upstream gradient has shape {np.shape(upstream)}, "
                         f"but fn returns shape {out.shape}")


def _backward(out, tensors, u, jacobian):
    """Gradients of sum(out * u) for ``tensors`` (and Jacobians), restoring every other leaf's
    .grad afterwards, so tensors that ``fn`` captured (module parameters) keep theirs."""
    grads = [np.zeros(t.shape) for t in tensors]
    jacs = [np.zeros((out.size, t.size)) for t in tensors] if jacobian else None
    if not out.requires_grad:  # fn ignores its inputs: every gradient is zero
        return (grads, jacs) if jacobian else grads
    mine = {id(t) for t in tensors}
    others = [t for t in toposort(out) if not is_node(t) and id(t) not in mine]
    saved = [t.grad for t in others]

    def run(g, retain):
        for t in tensors:
            t.grad = None
        out.backward(g, retain_graph=retain)
        return [np.zeros(t.shape) if t.grad is None else np.array(t.grad.data, np.float64)
                for t in tensors]

    try:
        if jacobian:
            for k in range(out.size):
                e = np.zeros(out.size)
                e[k] = 1.0
                for jac, g in zip(jacs, run(e.reshape(out.shape), retain=True)):
                    jac[k] = g.reshape(-1)
        grads = run(u, retain=False)
    finally:
        for t in tensors:
            t.grad = None
        for t, g in zip(others, saved):
            t.grad = g
    return (grads, jacs) if jacobian else grads


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------

def gradcheck(fn: Callable[..., Tensor],
              inputs: Tensor | np.ndarray | Sequence[Tensor | np.ndarray], eps: float = 1e-6,
              atol: float = 1e-5, rtol: float = 1e-3, *, seed: int = 0) -> bool:
    """True if autodiff matches float64 central differences for every input, else GradcheckError.

    Checks |analytic - numeric| <= atol + rtol * |numeric| elementwise, for the gradient of
    sum(fn(*inputs) * u) with a fixed random u (see default_upstream), and for the full Jacobian
    d fn / d input when the problem is small. Inputs: Tensors with requires_grad=True (checked),
    other Tensors (constants), or numpy arrays (checked). Warns (GradcheckWarning) when a
    numeric gradient is ~0 everywhere (the check is vacuous) or an input sits on a kink.
    Never modifies the caller's tensors: it works on float64 copies.
    """
    report = gradcheck_report(fn, inputs, eps, atol, rtol, seed=seed)
    for w in report["warnings"]:
        warnings.warn(w, GradcheckWarning, stacklevel=2)
    if not report["passed"]:
        raise GradcheckError(format_failure(report))
    return True


def gradcheck_report(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, *, seed=0, upstream=None):
    """The comparison gradcheck makes, as JSON-ready data (it raises and warns nothing).

    Returns {"passed", "eps", "atol", "rtol", "output_shape", "full_jacobian", "notes",
    "warnings", "inputs": [{"name", "position", "shape", "passed", "max_abs_err",
    "max_rel_err", "max_abs_grad", "vacuous", "worst": [{"index", "analytic", "numeric",
    "abs_err", "rel_err"}], "jacobian": None or {"passed", "max_abs_err", "max_rel_err",
    "worst": [... "output_index" ...]}}]}. rel_err = |a - n| / max(|a|, |n|), taken only
    where max(|a|, |n|) >= atol (tinier values are judged by the absolute error alone).
    """
    if eps <= 0 or atol < 0 or rtol < 0:
        raise ValueError(f"gradcheck needs eps > 0, atol >= 0, rtol >= 0; "
                         f"got eps={eps}, atol={atol}, rtol={rtol}")
    arrays, checked, names, notes = _prepare(inputs)
    # The analytic pass: fresh float64 Tensors over copies (nothing recorded on the caller's).
    tensors = [Tensor(a.copy(), requires_grad=c, name=getattr(x, "name", None))
               for a, c, x in zip(arrays, checked, _as_list(inputs))]
    with keep_values():  # every node keeps its input, so _kinks can look at relu's
        out = fn(*tensors)
    u = default_upstream(getattr(out, "shape", ()), seed) if upstream is None else upstream
    _check_output(out, u)
    u = np.asarray(u, dtype=np.float64)
    if out.dtype != np.float64:
        notes.append(f"fn returned {out.dtype}, not float64: it casts down somewhere (a "
                     f"captured {out.dtype} tensor or constant?), so the numeric side is "
                     f"only as accurate as {out.dtype}")
    total = sum(a.size for a, c in zip(arrays, checked) if c)
    full = (out.size <= FULL_JACOBIAN_MAX_OUTPUTS and out.size * total <= FULL_JACOBIAN_MAX_ENTRIES)
    warns = [_kink_message(k, eps) for k in _kinks(out, eps)]
    mine = [t for t, c in zip(tensors, checked) if c]
    analytic, a_jacs = _backward(out, mine, u, jacobian=True) if full else (
        _backward(out, mine, u, jacobian=False), None)
    del out, tensors  # free the graph before the numeric pass

    # The numeric pass: perturb only the checked inputs; the others stay constants.
    idx = [k for k, c in enumerate(checked) if c]

    def fn_of_checked(*ts):
        full_args = [Tensor._wrap(a) for a in arrays]
        for k, t in zip(idx, ts):
            full_args[k] = t
        return fn(*full_args)

    work = [arrays[k].copy() for k in idx]
    numeric, n_jacs = numeric_vjp(fn_of_checked, work, u, eps, jacobian=True) if full else (
        numeric_vjp(fn_of_checked, work, u, eps), None)

    results = []
    for j, k in enumerate(idx):
        cmp = _compare(analytic[j], numeric[j], atol, rtol)
        r = {"name": names[k], "position": k, "shape": list(arrays[k].shape), **cmp,
             "vjp_passed": cmp["passed"], "jacobian": None}
        if full:
            r["jacobian"] = _compare_jacobian(a_jacs[j], n_jacs[j], u.shape, arrays[k].shape,
                                              atol, rtol)
            r["passed"] = r["passed"] and r["jacobian"]["passed"]
        if r["vacuous"]:
            warns.append(_vacuous_message(names[k], r["max_abs_grad"], atol))
        results.append(r)
    return {"passed": all(r["passed"] for r in results), "eps": eps, "atol": atol, "rtol": rtol,
            "dtype": "float64", "output_shape": list(u.shape),
            "upstream_seed": seed if upstream is None else None, "full_jacobian": full,
            "notes": notes, "warnings": warns, "inputs": results}


def _as_list(inputs):
    return [inputs] if isinstance(inputs, (Tensor, np.ndarray)) else list(inputs)


def _prepare(inputs):
    """float64 copies of the inputs, which ones to check, their names, and notes on dtypes."""
    inputs = _as_list(inputs)
    arrays, checked, names, notes = [], [], [], []
    for k, x in enumerate(inputs):
        if isinstance(x, Tensor):
            data, check = x.data, x.requires_grad
            name = f"'{x.name}' (input {k})" if x.name else f"input {k}"
        elif isinstance(x, np.ndarray):
            data, check, name = x, True, f"input {k}"
        else:
            raise TypeError(f"gradcheck: input {k} is a {type(x).__name__}; pass Tensors "
                            f"(requires_grad=True for those to check) or numpy float arrays")
        if data.dtype.kind != "f":
            raise TypeError(f"gradcheck: {name} has dtype {data.dtype}; gradients are "
                            f"checked for floating-point inputs only")
        if check and data.dtype != np.float64:
            notes.append(FLOAT32_NOTE.format(name=name, dtype=data.dtype))
        arrays.append(np.array(data, dtype=np.float64))
        checked.append(check)
        names.append(name)
    if not any(checked):
        raise ValueError("gradcheck: no input to check; give the inputs to differentiate "
                         "requires_grad=True (or pass them as numpy arrays)")
    return arrays, checked, names, notes


def _errors(a, n, atol, rtol):
    """Elementwise abs error, rel error (NaN where both are below atol) and error / tolerance."""
    abs_err = np.abs(a - n)
    scale = np.maximum(np.abs(a), np.abs(n))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_err = np.where(scale >= max(atol, np.finfo(np.float64).tiny), abs_err / scale, np.nan)
        ratio = abs_err / (atol + rtol * np.abs(n))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)  # a NaN gradient is a failure, not a pass
    return abs_err, rel_err, ratio


def _worst(ratio, count):
    flat = np.argsort(-ratio.reshape(-1), kind="stable")[:count]
    return [np.unravel_index(i, ratio.shape) for i in flat]


def _compare(a, n, atol, rtol):
    abs_err, rel_err, ratio = _errors(a, n, atol, rtol)
    worst = [{"index": [int(i) for i in ix], "analytic": _num(a[ix]), "numeric": _num(n[ix]),
              "abs_err": _num(abs_err[ix]), "rel_err": _num(rel_err[ix])}
             for ix in _worst(ratio, WORST_SHOWN)] if a.size else []
    max_grad = float(np.max(np.abs(n))) if n.size else 0.0
    return {"passed": bool(np.all(ratio <= 1.0)), "max_abs_err": _max(abs_err),
            "max_rel_err": _max(rel_err), "max_abs_grad": _num(max_grad),
            "vacuous": bool(n.size and max_grad <= atol), "worst": worst}


def _compare_jacobian(a, n, out_shape, in_shape, atol, rtol):
    abs_err, rel_err, ratio = _errors(a, n, atol, rtol)
    worst = []
    for o, i in (_worst(ratio, WORST_SHOWN) if a.size else []):
        worst.append({"output_index": [int(v) for v in np.unravel_index(o, out_shape)],
                      "index": [int(v) for v in np.unravel_index(i, in_shape)],
                      "analytic": _num(a[o, i]), "numeric": _num(n[o, i]),
                      "abs_err": _num(abs_err[o, i]), "rel_err": _num(rel_err[o, i])})
    return {"passed": bool(np.all(ratio <= 1.0)), "max_abs_err": _max(abs_err),
            "max_rel_err": _max(rel_err), "worst": worst}


def _num(x):
    """A float for JSON: None for NaN/inf (JSON has neither)."""
    x = float(x)
    return x if np.isfinite(x) else None


def _max(x):
    x = x[~np.isnan(x)]
    return _num(x.max()) if x.size else 0.0


def _kinks(out, eps):
    """(op name, count) for relu inputs within 10 eps of 0 and max reductions with near-ties.

    Within that distance a perturbation of the inputs can cross the kink, and the central
    difference then averages the slopes of both sides: it matches neither one-sided derivative.
    """
    found = []
    for node in toposort(out):
        if not is_node(node):
            continue
        # relu and max read their input, so the node still holds it (ops.Op.reads)
        if node.op is ops.RELU:
            n = int(np.sum(np.abs(node.args[0].data) <= 10 * eps))
            if n:
                found.append(("relu", n))
        elif node.op is ops.MAX:
            x, axis = node.args[0].data, node.attrs["axis"]
            top = x.max(axis=axis, keepdims=True)
            near = np.sum(x >= top - 10 * eps, axis=axis)
            n = int(np.sum(near > 1))
            if n:
                found.append(("max", n))
    return found


def _kink_message(kink, eps):
    op, n = kink
    if op == "relu":
        what = f"{n} input value(s) of relu within {10 * eps:.0e} of 0, where relu has a kink"
    else:
        what = f"{n} max reduction(s) with two or more values within {10 * eps:.0e} of the " \
               f"maximum (a tie: the maximum is not differentiable there)"
    return (f"an input sits on a kink: {what}. Central differences there average the slopes "
            f"of both sides, so a mismatch (or a match) proves little; move the inputs away "
            f"from the kink (e.g. add a small random offset)")


def _vacuous_message(name, max_grad, atol):
    return (f"the numeric gradient for {name} is ~0 everywhere (max |.| = {max_grad:.1e} <= "
            f"atol = {atol:g}): fn does not depend on it, so the check cannot tell a correct "
            f"backward from a wrong one. If fn ends in .sum() of a batch-normalized output, "
            f"that sum is constant (x_hat sums to zero over the batch): weight the output by "
            f"random values instead, e.g. (y * r).sum() with a fixed random r")


def format_failure(report, max_inputs=None):
    """The GradcheckError message: every failing input, its worst elements, both values."""
    lines = ["gradcheck failed: autodiff and central differences disagree (tolerance "
             f"|analytic - numeric| <= atol + rtol*|numeric| with atol={report['atol']:g}, "
             f"rtol={report['rtol']:g}; eps={report['eps']:g}, float64)."]
    failing = [r for r in report["inputs"] if not r["passed"]][:max_inputs]
    for r in failing:
        lines.append(f"{r['name']}, shape {tuple(r['shape'])}: max abs error "
                     f"{_fmt(r['max_abs_err'])}, max rel error {_fmt(r['max_rel_err'])}")
        if not r["vjp_passed"]:
            lines.append(f"  gradient of sum(fn(...) * u), u a fixed random upstream gradient of "
                         f"shape {tuple(report['output_shape'])}; worst elements:")
            lines += _table(r["worst"], with_output=False)
        if r["jacobian"] is not None and not r["jacobian"]["passed"]:
            lines.append("  full Jacobian d out[o] / d input[i]; worst entries:")
            lines += _table(r["jacobian"]["worst"], with_output=True)
    lines.append("If this is a new primitive, check its derivative in ops.py (a missing factor "
                 "or sign); if fn is composed, the engine or one of the ops it uses is wrong.")
    lines += [f"note: {n}" for n in report["notes"]]
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def _table(rows, with_output):
    head = f"    {'output' if with_output else '':>10} {'index':>10} {'analytic':>14} " \
           f"{'numeric':>14} {'abs err':>9} {'rel err':>9}"
    out = [head]
    for w in rows:
        o = str(tuple(w["output_index"])) if with_output else ""
        out.append(f"    {o:>10} {str(tuple(w['index'])):>10} {_fmt(w['analytic'], 14, '.7g')} "
                   f"{_fmt(w['numeric'], 14, '.7g')} {_fmt(w['abs_err'], 9)} "
                   f"{_fmt(w['rel_err'], 9)}")
    return out


def _fmt(x, width=0, spec=".1e"):
    return f"{'nan' if x is None else format(x, spec):>{width}}"


# ---------------------------------------------------------------------------------------------
# Second derivatives: gradcheck of the gradient
# ---------------------------------------------------------------------------------------------

def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, *, seed=0):
    """True if second derivatives match central differences of the first, else GradcheckError.

    The first derivative G(x, u) = d<u, fn(x)>/dx, with a random cotangent u (or
    ``grad_outputs``), is computed with create_graph=True and checked like any function by
    gradcheck: its derivative w.r.t. each input x (the Hessian of <u, fn>; in full when small)
    and w.r.t. u (the Jacobian again, as the recorded rules compute it) against float64
    central differences of G. Inputs as for gradcheck.
    """
    report = gradgradcheck_report(fn, inputs, grad_outputs, eps, atol, rtol, seed=seed)
    for w in report["warnings"]:
        warnings.warn(w, GradcheckWarning, stacklevel=2)
    if not report["passed"]:
        lines = [line.replace("gradient of sum(fn(...) * u), u a fixed random upstream gradient",
                              "derivative of sum(G(x, u) * w), w a fixed random weight")
                 for line in format_failure(report).splitlines()]
        lines[0] = lines[0].replace("gradcheck failed: autodiff and central differences",
                                    "gradgradcheck failed: the derivatives of the gradient and "
                                    "central differences of the gradient")
        lines.insert(1, "The function checked is the gradient G(x, u) = d<u, fn(x)>/dx, its "
                        "entries (input k, index i) in output order; u is the cotangent "
                        "(grad_outputs).")
        lines[-1:-1] = ["If only the inputs (not grad_outputs) fail, a derivative rule is right "
                        "in value but wrong as a function: check how it runs on Tensors "
                        "(create_graph=True)."]
        raise GradcheckError("\n".join(lines))
    return True


def gradgradcheck_report(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, *,
                         seed=0):
    """The comparison gradgradcheck makes, as gradcheck_report's JSON-ready data."""
    arrays, checked, names, notes = _prepare(inputs)
    idx = [k for k, c in enumerate(checked) if c]
    with no_grad():
        out = fn(*[Tensor._wrap(a) for a in arrays])
    _check_output(out, np.zeros(out.shape) if grad_outputs is None else grad_outputs)
    rng_seed = seed + 1  # a cotangent other than gradcheck's upstream of the gradient
    u = default_upstream(out.shape, rng_seed) if grad_outputs is None else grad_outputs
    u = np.array(getattr(u, "data", u), dtype=np.float64)
    sizes = [arrays[k].size for k in idx]
    offsets = np.cumsum([0] + sizes)

    def first_derivative(*ts):
        """The gradients of <u, fn> for the checked inputs, flattened and joined (scatter_add)."""
        *xs, cot = ts
        record = any(t.requires_grad for t in ts)
        with enable_grad():
            # The numeric pass hands in constants: differentiate w.r.t. leaves over their data.
            xs = [t if t.requires_grad else Tensor._wrap(t.data, True) for t in xs]
            args = [Tensor._wrap(a) for a in arrays]
            for k, t in zip(idx, xs):
                args[k] = t
            y = fn(*args)
            if not y.requires_grad:
                return Tensor._wrap(np.zeros(offsets[-1]))
            gs = grad(y, xs, cot, create_graph=record, allow_unused=True)
        joined = None
        for g, lo, hi in zip(gs, offsets[:-1], offsets[1:]):
            if g is None:
                continue
            part = g.reshape(-1).scatter_add(slice(lo, hi), (int(offsets[-1]),))
            joined = part if joined is None else joined + part
        return Tensor._wrap(np.zeros(offsets[-1])) if joined is None else joined

    cot_name = "grad_outputs" if grad_outputs is not None else "the cotangent u"
    report = gradcheck_report(first_derivative, [arrays[k] for k in idx] + [u], eps, atol, rtol,
                              seed=seed)
    entry = [(k, arrays[k].shape) for k in idx]  # per part of the joined gradient
    for r in report["inputs"]:
        j = r["position"]
        r["position"] = idx[j] if j < len(idx) else None
        r["name"] = names[idx[j]] if j < len(idx) else f"{cot_name} (shape {u.shape})"
        if r["jacobian"] is not None:
            for w in r["jacobian"]["worst"]:
                (o,) = w["output_index"]
                j_out = int(np.searchsorted(offsets, o, side="right")) - 1
                k, shape = entry[j_out]
                w["output_index"] = [k, *np.unravel_index(o - offsets[j_out], shape)]
                w["output_index"] = [int(v) for v in w["output_index"]]
    # A zero second derivative is a fact about fn (it is linear in that input), not a vacuous
    # check: the cotangent's row still checks the recorded rules.
    vacuous = [r["name"] for r in report["inputs"] if r["vacuous"] and r["position"] is not None]
    report["warnings"] = [w for w in report["warnings"] if "~0 everywhere" not in w]
    report["notes"] = notes + [f"the second derivative w.r.t. {n} is ~0 (fn is linear in it)"
                               for n in vacuous]
    report["check"] = "second derivative"
    return report


# ---------------------------------------------------------------------------------------------
# Batch norm: two independent references for the backward pass, in plain numpy, (N, C) input
# ---------------------------------------------------------------------------------------------

def batch_norm_forward(x, gamma, beta, eps=1e-5):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta, mu and (biased) var over the batch axis 0."""
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def batch_norm_backward_chain_rule(dy, x, gamma, eps=1e-5):
    """(dx, dgamma, dbeta) by the chain rule step by step, as in Ioffe & Szegedy 2015, section 3.

    dl/dx_hat = dy * gamma
    dl/dvar   = sum(dl/dx_hat * (x - mu)) * -1/2 (var + eps)^(-3/2)
    dl/dmu    = sum(dl/dx_hat * -1/sqrt(var + eps)) + dl/dvar * sum(-2 (x - mu)) / m
    dl/dx     = dl/dx_hat / sqrt(var + eps) + dl/dvar * 2 (x - mu) / m + dl/dmu / m
    dl/dgamma = sum(dy * x_hat),  dl/dbeta = sum(dy)   (sums over the batch axis)
    """
    _check_bn_shapes(dy, x, gamma)
    m = x.shape[0]
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv_std
    d_xhat = dy * gamma
    d_var = np.sum(d_xhat * (x - mu), axis=0) * -0.5 * (var + eps) ** -1.5
    # The paper keeps the second term although sum(x - mu) = 0; so do we, to follow it literally.
    d_mu = np.sum(d_xhat * -inv_std, axis=0) + d_var * np.sum(-2.0 * (x - mu), axis=0) / m
    dx = d_xhat * inv_std + d_var * 2.0 * (x - mu) / m + d_mu / m
    return dx, np.sum(dy * x_hat, axis=0), np.sum(dy, axis=0)


def batch_norm_backward_closed_form(dy, x, gamma, eps=1e-5):
    """(dx, dgamma, dbeta) from the simplified closed form.

    dx = gamma / (m sqrt(var + eps)) * (m dy - sum(dy) - x_hat * sum(dy * x_hat)),
    dgamma = sum(dy * x_hat), dbeta = sum(dy)   (sums over the batch axis, m = batch size).
    The last term is the one that flows through the variance.
    """
    _check_bn_shapes(dy, x, gamma)
    m = x.shape[0]
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    dbeta = dy.sum(axis=0)
    dgamma = (dy * x_hat).sum(axis=0)
    dx = gamma / (m * np.sqrt(var + eps)) * (m * dy - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def _check_bn_shapes(dy, x, gamma):
    if x.ndim != 2 or dy.shape != x.shape or np.shape(gamma) not in ((x.shape[1],), ()):
        raise ValueError(f"batch-norm reference backward needs x and dy of shape (N, C) and gamma "
                         f"of shape (C,); got x {x.shape}, dy {dy.shape}, gamma {np.shape(gamma)}")
    if x.shape[0] < 2:
        raise ValueError(f"batch-norm backward needs a batch of at least 2, got x {x.shape}")


def batch_norm_fn(eps=1e-5):
    """fn(x, gamma, beta) = F.batch_norm in training mode (batch statistics), for gradcheck."""
    return lambda x, gamma, beta: F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


# ---------------------------------------------------------------------------------------------
# The choice of eps, made visible
# ---------------------------------------------------------------------------------------------

EPS_SWEEP = tuple(10.0 ** -k for k in range(1, 11))


def eps_sweep(shape=(8, 3), seed=0, eps_values=EPS_SWEEP, dtypes=("float64", "float32")):
    """Max abs error of central differences vs the closed form for d/dx of sum(u * BN(x)).

    One row per eps: {"eps", "<dtype>": error, ...}, with the forward run in each dtype. The error
    is truncation (~eps^2 f''') plus round-off (~ulp * |f| / eps): it falls, then rises again.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2.0 + 1.0
    gamma, beta = rng.uniform(0.5, 1.5, shape[1]), rng.standard_normal(shape[1])
    u = default_upstream(shape, seed)
    exact = batch_norm_backward_closed_form(u, x, gamma)[0]
    scale = float(np.max(np.abs(exact)))
    fn = batch_norm_fn()
    rows = []
    for eps in eps_values:
        row = {"eps": float(eps)}
        for dt in dtypes:
            g, b = Tensor(gamma, dtype=dt), Tensor(beta, dtype=dt)
            (num,) = numeric_vjp(lambda t: fn(t, g, b), [x.astype(dt)], u, eps)
            err = float(np.max(np.abs(num - exact)))
            row[dt] = _num(err)
            row[dt + "_rel"] = _num(err / scale)
        rows.append(row)
    return rows
