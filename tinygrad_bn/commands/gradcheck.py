"""``tinygrad-bn gradcheck``: autodiff vs central differences for every primitive and batch norm.

``full_report(...)`` computes everything as JSON-ready data, ``format_report(report)`` turns it
into the table the command prints; the demo's report.html calls the same two functions.
"""
import argparse
import json
import textwrap

import numpy as np

from ..gradcheck import (
    FLOAT32_NOTE,
    batch_norm_backward_chain_rule,
    batch_norm_backward_closed_form,
    batch_norm_fn,
    default_upstream,
    eps_sweep,
    gradcheck_report,
    numeric_vjp,
)
from ..samples import SAMPLES, make_inputs
from ..tensor import Tensor
from . import seed

HELP = "check every gradient against float64 central differences; batch norm three ways"

INPUT_NAMES = "xyzw"
BN_PARAMS = ("x", "gamma", "beta")


def add_arguments(parser):
    parser.add_argument("--shape", default="8,3", type=_shape,
                        help="batch-norm input shape N,C (default 8,3; N >= 2)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                        help="dtype of the generated inputs; checks always run on float64 copies")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args):
    report = full_report(shape=args.shape, seed=args.seed, dtype=args.dtype)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["passed"] else 1


def _shape(text):
    # ArgumentTypeError, not ValueError: argparse shows its message instead of a generic one.
    try:
        n, c = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be two integers N,C such as 8,3; got {text!r}") from None
    if n < 2 or c < 1:
        raise argparse.ArgumentTypeError(
            f"{text}: batch norm in training needs N >= 2 (a batch) and C >= 1")
    return (n, c)


def full_report(shape=(8, 3), seed=0, dtype="float64", eps=1e-6, atol=1e-5, rtol=1e-3):
    """Every check the command runs, as a JSON-serializable dict; "passed" is the overall verdict.

    Keys: "settings", "primitives" (one row per sample and input), "batch_norm" (x, gamma, beta
    four ways), "eps_sweep" (rows of eps_sweep), "failures" (short descriptions), "passed".
    """
    shape = tuple(int(n) for n in shape)
    settings = {"shape": list(shape), "seed": seed, "dtype": str(np.dtype(dtype)), "eps": eps,
                "atol": atol, "rtol": rtol}
    primitives = _primitive_rows(seed, dtype, eps, atol, rtol)
    bn = _batch_norm_section(shape, seed, dtype, eps, atol, rtol)
    failures = [f"{r['op']}: {r['sample']} (input {r['input']})"
                for r in primitives if not r["passed"]]
    failures += [f"batch norm d{r['param']}: {', '.join(r['failed'])}"
                 for r in bn["rows"] if r["failed"]]
    return {"settings": settings, "primitives": primitives, "batch_norm": bn,
            "eps_sweep": eps_sweep(shape, seed), "failures": failures, "passed": not failures}


def _primitive_rows(seed, dtype, eps, atol, rtol):
    rng = np.random.default_rng(seed)
    rows = []
    for op, samples in SAMPLES.items():
        for s in samples:
            tensors = [Tensor(a, requires_grad=True, name=INPUT_NAMES[k])
                       for k, a in enumerate(make_inputs(s, rng, np.dtype(dtype)))]
            rep = gradcheck_report(s.fn, tensors, eps, atol, rtol, seed=seed)
            for r in rep["inputs"]:
                rows.append({"op": op, "sample": s.label, "input": INPUT_NAMES[r["position"]],
                             "shape": r["shape"], "max_abs_err": r["max_abs_err"],
                             "max_rel_err": r["max_rel_err"], "passed": r["passed"],
                             "full_jacobian": rep["full_jacobian"], "worst": r["worst"][:1],
                             "warnings": rep["warnings"], "notes": rep["notes"]})
    return rows


def _batch_norm_section(shape, seed, dtype, eps, atol, rtol):
    """d/dx, d/dgamma, d/dbeta of sum(dy * BN(x)) by autodiff (A), the paper's chain rule (P),
    the closed form (C) and central differences (FD), plus gradcheck's verdict (full Jacobian)."""
    rng = np.random.default_rng(seed + 1)
    # Not standardized already, so that normalizing really changes x.
    x = (rng.standard_normal(shape) * 2.0 + 1.0).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, shape[1]).astype(dtype)
    beta = rng.standard_normal(shape[1]).astype(dtype)
    dy = default_upstream(shape, seed)
    x64, g64, b64 = (a.astype(np.float64) for a in (x, gamma, beta))
    fn = batch_norm_fn()

    ts = [Tensor(a.copy(), requires_grad=True) for a in (x64, g64, b64)]
    fn(*ts).backward(dy)
    auto = [t.grad.data for t in ts]
    chain = batch_norm_backward_chain_rule(dy, x64, g64)
    closed = batch_norm_backward_closed_form(dy, x64, g64)
    fd = numeric_vjp(fn, [x64.copy(), g64.copy(), b64.copy()], dy, eps)
    check = gradcheck_report(fn, [Tensor(a, requires_grad=True, name=n)
                                  for a, n in zip((x, gamma, beta), BN_PARAMS)],
                             eps, atol, rtol, upstream=dy)

    def close(a, b):
        return bool(np.all(np.abs(a - b) <= atol + rtol * np.abs(b)))

    rows = []
    for k, name in enumerate(BN_PARAMS):
        a, p, c, f = auto[k], chain[k], closed[k], fd[k]
        failed = [label for label, ok in (("autodiff vs closed form", close(a, c)),
                                          ("chain rule vs closed form", close(p, c)),
                                          ("gradcheck", check["inputs"][k]["passed"])) if not ok]
        first = (0,) * a.ndim
        rows.append({"param": name, "shape": list(a.shape),
                     "autodiff_vs_closed": _maxdiff(a, c), "chain_vs_closed": _maxdiff(p, c),
                     "autodiff_vs_chain": _maxdiff(a, p), "fd_vs_autodiff": _maxdiff(f, a),
                     "fd_max_rel_err": check["inputs"][k]["max_rel_err"],
                     "jacobian_max_abs_err": (check["inputs"][k]["jacobian"] or {}).get(
                         "max_abs_err"),
                     "values": {"index": list(first), "autodiff": float(a[first]),
                                "chain_rule": float(p[first]), "closed_form": float(c[first]),
                                "finite_diff": float(f[first])},
                     "failed": failed, "passed": not failed})
    # What a check through .sum() alone would see: the gradient of a constant.
    ts = [Tensor(x64.copy(), requires_grad=True), Tensor(g64), Tensor(b64)]
    fn(*ts).sum().backward()
    return {"shape": list(shape), "rows": rows, "notes": check["notes"],
            "warnings": check["warnings"], "full_jacobian": check["full_jacobian"],
            "sum_only_max_abs_dx": float(np.max(np.abs(ts[0].grad.data)))}


def _maxdiff(a, b):
    return float(np.max(np.abs(a - b)))


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

def format_report(report):
    """The report as the plain-text tables ``tinygrad-bn gradcheck`` prints."""
    s = report["settings"]
    out = [f"tinygrad-bn gradcheck: autodiff vs float64 central differences, eps={s['eps']:g}",
           f"pass if |analytic - numeric| <= {s['atol']:g} + {s['rtol']:g}*|numeric|",
           f"inputs {s['dtype']} (seed {s['seed']}), checked on float64 copies; outputs weighted "
           f"by a fixed random", "upstream gradient (never .sum() alone)", ""]
    out += _primitive_table(report["primitives"])
    out += [""] + _batch_norm_table(report["batch_norm"], s)
    out += [""] + _sweep_table(report["eps_sweep"], s["shape"])
    notes = {n for r in report["primitives"] for n in r["notes"]} | set(
        report["batch_norm"]["notes"])
    warns = {w for r in report["primitives"] for w in r["warnings"]} | set(
        report["batch_norm"]["warnings"])
    if notes:  # the same float32 note for every input: say it once
        out += ["", _wrap("note: " + FLOAT32_NOTE.format(name="every input", dtype=s["dtype"]))]
    out += [_wrap(f"warning: {w}") for w in sorted(warns)]
    n_checks = len(report["primitives"]) + len(report["batch_norm"]["rows"])
    out.append("")
    if report["passed"]:
        out.append(f"PASSED: all {n_checks} gradient checks agree.")
    else:
        out.append(f"FAILED: {len(report['failures'])} of {n_checks} checks disagree:")
        out += [f"  - {f}" for f in report["failures"]]
    return "\n".join(out)


def _wrap(text):
    return textwrap.fill(text, width=100, subsequent_indent="    ")


def _e(x):
    return "nan" if x is None else f"{x:.1e}"


def _primitive_table(rows):
    out = ["1. Every primitive op (J = full Jacobian checked too)",
           f"   {'op':<11}{'sample':<31}{'input':<6}{'shape':<11}{'max abs err':>12}"
           f"{'max rel err':>12}  result"]
    for r in rows:
        verdict = "ok" if r["passed"] else "FAIL"
        if r["warnings"]:
            verdict += " (warning)"
        out.append(f"   {r['op']:<11}{r['sample'][:30]:<31}{r['input']:<6}"
                   f"{str(tuple(r['shape'])):<11}{_e(r['max_abs_err']):>12}"
                   f"{_e(r['max_rel_err']):>12}  {verdict}{'  J' if r['full_jacobian'] else ''}")
        if not r["passed"] and r["worst"]:
            w = r["worst"][0]
            out.append(f"      worst at {tuple(w['index'])}: analytic {w['analytic']:.7g}, "
                       f"numeric {w['numeric']:.7g}")
    return out


def _batch_norm_table(bn, settings):
    n, c = bn["shape"]
    out = [f"2. Batch norm, training mode, x of shape ({n}, {c}), gamma and beta of shape ({c},)",
           "   y = gamma * (x - mu) / sqrt(var + 1e-5) + beta, loss = sum(dy * y), dy random.",
           "   The same gradients four ways:",
           "     A  = autodiff through the composed graph of primitives",
           "     P  = the paper's step-by-step chain rule (Ioffe & Szegedy 2015, section 3)",
           "     C  = the closed form dx = gamma/(m*std) * (m*dy - sum(dy) - x_hat*sum(dy*x_hat))",
           "     FD = float64 central differences",
           "   Largest absolute difference over all elements (rel (FD): largest relative one):",
           f"   {'grad':<8}{'shape':<9}{'|A - C|':>10}{'|P - C|':>10}{'|A - P|':>10}"
           f"{'|FD - A|':>10}{'rel (FD)':>10}  result"]
    for r in bn["rows"]:
        out.append(f"   d{r['param']:<7}{str(tuple(r['shape'])):<9}"
                   f"{_e(r['autodiff_vs_closed']):>10}{_e(r['chain_vs_closed']):>10}"
                   f"{_e(r['autodiff_vs_chain']):>10}{_e(r['fd_vs_autodiff']):>10}"
                   f"{_e(r['fd_max_rel_err']):>10}  {'ok' if r['passed'] else 'FAIL'}")
    out.append("   Side by side, the first element of each gradient:")
    for r in bn["rows"]:
        v = r["values"]
        ix = ",".join(str(i) for i in v["index"])
        out.append(f"     d{r['param']}[{ix}]".ljust(16) +
                   f"A {v['autodiff']:+.12f}  P {v['chain_rule']:+.12f}  "
                   f"C {v['closed_form']:+.12f}  FD {v['finite_diff']:+.12f}")
    if bn["full_jacobian"]:
        out.append("   (gradcheck also compared the full Jacobian dy/dx, dy/dgamma, dy/dbeta.)")
    out.append(f"   Why dy is random: with dy = 1 (a check through .sum()), autodiff gives "
               f"max |dx| = {bn['sum_only_max_abs_dx']:.0e},")
    out.append("   because x_hat sums to zero over the batch, so sum(y) does not depend on x; "
               "a backward")
    out.append("   that forgot the variance term would pass such a check.")
    return out


def _sweep_table(rows, shape):
    dts = [k for k in rows[0] if k != "eps" and not k.endswith("_rel")]
    best = {dt: min((r[dt] for r in rows if r[dt] is not None), default=None) for dt in dts}
    out = [f"3. Choosing eps: max |FD - closed form| of dloss/dx for batch norm {tuple(shape)}",
           "   " + f"{'eps':<9}" + "".join(f"{dt:>22}" for dt in dts)]
    for r in rows:
        cells = []
        for dt in dts:
            v = r[dt]
            text = "step lost" if v is None else _e(v) + (" <- best" if v == best[dt] else "")
            cells.append(f"{text:>22}")
        out.append(f"   {r['eps']:<9.0e}" + "".join(cells))
    out += ["   Truncation error (~eps^2) falls as eps shrinks; round-off (~ulp/eps) rises. "
            "float64 bottoms out",
            "   near eps = 1e-5..1e-6 (gradcheck's default is 1e-6); float32 never gets close,",
            "   so every check runs in float64.",
            "   (step lost: x + eps rounds back to x in float32 for some elements.)"]
    return out


__all__ = ["HELP", "add_arguments", "run", "full_report", "format_report"]
