"""Curvature by double backward: Hessian-vector products and the top Hessian eigenvalue.

H v = d<∇f(x), v>/dx: the gradient is recorded (create_graph=True), then differentiated once
more along v, at the cost of about two backward passes and without forming H. The top
eigenvalue follows by power iteration on such products (Pearlmutter 1994; the sharpness of a
loss, λ_max, of which 2/λ_max is the largest stable step of gradient descent on its quadratic
model).
"""
import numpy as np

from .functional_grad import grad
from .tensor import Tensor


def hvp(fn, inputs, v, create_graph=False):
    """(fn(*inputs), H v) with H the Hessian of the scalar fn at ``inputs`` (torch's conventions).

    ``inputs`` and ``v``: a Tensor (or array), or sequences of them of the same shapes; the
    product has the structure of ``inputs``. Works on copies: the caller's tensors and their
    ``.grad`` are untouched. The output and the product are detached unless ``create_graph``.
    """
    single = isinstance(inputs, (Tensor, np.ndarray))
    xs = [inputs] if single else list(inputs)
    vs = [v] if isinstance(v, (Tensor, np.ndarray)) else list(v)
    if len(vs) != len(xs):
        raise ValueError(f"hvp: v has {len(vs)} entries for {len(xs)} inputs; give one vector "
                         f"per input")
    xs = [_leaf(x, create_graph) for x in xs]
    vs = [np.asarray(getattr(t, "data", t), dtype=x.dtype) for t, x in zip(vs, xs)]
    for k, (t, x) in enumerate(zip(vs, xs)):
        if t.shape != x.shape:
            raise ValueError(f"hvp: v[{k}] has shape {t.shape}, but inputs[{k}] has shape "
                             f"{x.shape}")
    out = fn(*xs)
    if not isinstance(out, Tensor) or out.size != 1:
        raise RuntimeError(f"hvp: fn must return a one-element Tensor (a loss), got "
                           f"{getattr(out, 'shape', type(out).__name__)}")
    products = _hessian_times(out, xs, vs, create_graph)
    out = out if create_graph else out.detach()
    return out, products[0] if single else tuple(products)


def _leaf(x, keep_graph):
    """A leaf that requires grad over ``x``'s data (``x`` itself if it may stay in a graph)."""
    if isinstance(x, Tensor):
        return x if keep_graph and x.requires_grad else Tensor._wrap(x.data, True)
    return Tensor(np.asarray(x), requires_grad=True)


def _hessian_times(out, xs, vs, create_graph=False, first=None):
    """[H v] per input by double backward; ``first`` = grad(out, xs, create_graph=True) if
    already computed (it is then kept for the next product)."""
    if first is None:
        first = grad(out, xs, create_graph=True, allow_unused=True)
    live = [(g, v) for g, v in zip(first, vs) if g is not None and g.requires_grad]
    if not live:  # fn is at most linear in every input: H = 0
        return [Tensor._wrap(np.zeros(x.shape, x.dtype)) for x in xs]
    products = grad([g for g, _ in live], xs, [v for _, v in live], retain_graph=True,
                    create_graph=create_graph, allow_unused=True)
    return [Tensor._wrap(np.zeros(x.shape, x.dtype)) if p is None else p
            for p, x in zip(products, xs)]


def top_hessian_eigenvalue(fn, params, iters=50, tol=1e-4, seed=0):
    """λ_max of the Hessian of the scalar ``fn()`` w.r.t. ``params``, by power iteration on HVPs.

    ``fn`` takes no arguments and computes the loss from ``params`` (e.g. a model on a fixed
    batch); the gradient graph is built once and every iteration is one more backward pass.
    Power iteration finds the eigenvalue of largest magnitude; if that one is negative, it runs
    again on H - λ I to find the largest. Converged when the Rayleigh quotient changes by at
    most ``tol`` (relative) between iterations. Returns {"eigenvalue", "converged",
    "iterations" (HVPs used), "residual": ||H v - λ v|| / |λ|, "history", "vector": the
    eigenvector estimate, one unit-norm-overall array per parameter}. No ``.grad`` is touched.
    """
    params = list(params)
    for k, p in enumerate(params):
        if not (isinstance(p, Tensor) and p.requires_grad):
            raise ValueError(f"top_hessian_eigenvalue: params[{k}] must be a Tensor with "
                             f"requires_grad=True")
    if not (iters >= 1 and tol > 0):
        raise ValueError(f"top_hessian_eigenvalue: need iters >= 1 and tol > 0, got iters={iters}, "
                         f"tol={tol}")
    loss = fn()
    if not isinstance(loss, Tensor) or loss.size != 1:
        raise RuntimeError("top_hessian_eigenvalue: fn() must return a one-element Tensor")
    first = grad(loss, params, create_graph=True, allow_unused=True)

    def times(vs):
        return [p.data.astype(np.float64) for p in
                _hessian_times(loss, params, vs, first=first)]

    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(p.shape) for p in params]
    result = _power_iteration(times, start, iters, tol, shift=0.0)
    if result["eigenvalue"] < 0:  # the most negative one dominates: find the top of H - λ I
        shifted = _power_iteration(times, start, iters, tol, shift=result["eigenvalue"])
        shifted["iterations"] += result["iterations"]
        shifted["history"] = result["history"] + shifted["history"]
        result = shifted
    return result


def _power_iteration(times, v, iters, tol, shift):
    """Power iteration on (H - shift I); returns the eigenvalue of H it converges to."""
    v = _normalized(v)
    history, lam, converged, it = [], None, False, 0
    for it in range(1, iters + 1):
        hv = [h - shift * x for h, x in zip(times(v), v)]
        new = float(sum(np.vdot(x, h) for x, h in zip(v, hv)))  # Rayleigh quotient, |v| = 1
        history.append(new + shift)
        residual = np.sqrt(sum(np.sum((h - new * x) ** 2) for h, x in zip(hv, v)))
        done = lam is not None and abs(new - lam) <= tol * abs(new)
        lam = new
        if _norm(hv) == 0:  # v is in the null space: H - shift I vanishes along it
            break
        v = _normalized(hv)
        if done:
            converged = True
            break
    return {"eigenvalue": lam + shift, "converged": converged, "iterations": it,
            "residual": float(residual / max(abs(lam + shift), np.finfo(float).tiny)),
            "history": history, "vector": v}


def _norm(vs):
    return float(np.sqrt(sum(np.sum(x * x) for x in vs)))


def _normalized(vs):
    n = _norm(vs)
    return [x / n for x in vs] if n > 0 else vs
