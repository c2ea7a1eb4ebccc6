"""Claim 1: "Normalizing inputs speeds up learning."

Logistic regression on two centered features, one ``scale`` times larger than the other, trained
by full-batch gradient descent (our Tensor and optim.SGD) on the raw and on the standardized
features. The loss is a bowl over (w1, w2); its curvature along w_i is proportional to var(x_i),
so raw features give a bowl ``scale``² times steeper one way than the other: the step size must
fit the steep direction (lr < 2 / lambda_max) and the flat one then crawls.
"""
import numpy as np

from ... import optim
from ...nn import functional as F
from ...tensor import Tensor
from ..plots import pyplot
from ..threads import one_blas_thread

NAME, TITLE = "inputs", "Normalizing inputs speeds up learning"
FULL = {"n": 400, "scale": 10.0, "max_steps": 3000, "n_lrs": 10}
QUICK = {"n": 200, "scale": 10.0, "max_steps": 600, "n_lrs": 5}
TARGET_GAP = 0.01  # "reached": loss within 0.01 nats of the optimum
STABLE_STEPS = 100


def make_data(n, scale, seed=0):
    """Features u ~ N(0, 1), exactly centered and unit-variance; raw = u * (1, scale);
    labels y ~ Bernoulli(sigmoid(1.5 u1 - 1.0 u2))."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, 2))
    u = (u - u.mean(axis=0)) / u.std(axis=0)
    y = (rng.random(n) < 1 / (1 + np.exp(-(u @ np.array([1.5, -1.0]))))).astype(np.int64)
    return {"standardized": u, "raw": u * np.array([1.0, scale])}, y


def loss_fn(X, y):
    """L(w) = mean -log p(y | x), p(1 | x) = sigmoid(w . x): 2-class cross-entropy of logits
    (0, w . x). The features are centered, so no bias: the loss is a surface over (w1, w2)."""
    two_logits = np.array([[0.0, 1.0]])

    def loss(w):
        return F.cross_entropy((Tensor(X) @ w).reshape(-1, 1) * two_logits, y)
    return loss


def loss_grid(X, y, w1, w2):
    """The same loss on a grid of (w1, w2), in numpy: log(1 + e^z) - y z with z = X w."""
    W = np.stack([w1.ravel(), w2.ravel()])          # (2, grid)
    z = X @ W
    return (np.logaddexp(0, z) - y[:, None] * z).mean(axis=0).reshape(w1.shape)


def gradient_descent(loss, lr, steps, target=None):
    """w_{t+1} = w_t - lr * grad L(w_t) from w = 0; stops at ``target`` or a non-finite loss."""
    w = Tensor(np.zeros(2), requires_grad=True)
    opt = optim.SGD([w], lr=lr)
    path, losses = [w.data.copy()], []
    for _ in range(steps):
        value = loss(w)
        losses.append(value.item())
        if not np.isfinite(losses[-1]) or (target is not None and losses[-1] <= target):
            break
        opt.zero_grad()
        value.backward()
        opt.step()
        path.append(w.data.copy())
    return {"path": np.array(path), "losses": losses,
            "steps_to_target": len(losses) - 1 if target is not None and losses[-1] <= target
            else None}


def largest_stable_lr(loss, lo=1e-3, hi=1e3, iters=30):
    """Bisection (in log lr) for the largest lr whose loss never rises during 100 steps."""
    def stable(lr):
        losses = gradient_descent(loss, lr, STABLE_STEPS)["losses"]
        # Never up by more than rounding: at the optimum the differences are ~1e-16, not < 0.
        return bool(np.all(np.isfinite(losses)) and np.all(np.diff(losses) <= 1e-12))
    for _ in range(iters):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return lo


def optimum(X, y, iters=50):
    """Newton's method in numpy (independent of the engine): the minimum loss and its w."""
    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) / len(y)
        hess = (X * (p * (1 - p))[:, None]).T @ X / len(y)
        w = w - np.linalg.solve(hess, grad)
    return w, float(loss_grid(X, y, w[:1, None], w[1:, None])[0, 0])


@one_blas_thread
def run(quick=False, seed=0, progress=False):
    """Per input kind: largest stable lr, steps to (optimum + 0.01) over lrs, the GD path."""
    cfg = QUICK if quick else FULL
    features, y = make_data(cfg["n"], cfg["scale"], seed)
    out = {"config": dict(cfg, target_gap=TARGET_GAP, stable_steps=STABLE_STEPS, seed=seed),
           "y": y}
    for kind, X in features.items():
        loss = loss_fn(X, y)
        w_star, l_star = optimum(X, y)
        hess_eig = np.linalg.eigvalsh(X.T @ X / len(y) / 4)  # Hessian at w = 0: X^T X / (4n)
        lr_max = largest_stable_lr(loss)
        lrs = lr_max * np.geomspace(0.02, 1.0, cfg["n_lrs"])
        target = l_star + TARGET_GAP
        sweep = [gradient_descent(loss, lr, cfg["max_steps"], target)["steps_to_target"]
                 for lr in lrs]
        reached = [(s, lr) for s, lr in zip(sweep, lrs) if s is not None]
        best_steps, best_lr = min(reached) if reached else (None, lr_max)
        shown = gradient_descent(loss, best_lr, cfg["max_steps"], target)
        out[kind] = {"X": X, "w_star": w_star, "loss_star": l_star, "target": target,
                     "lr_max": lr_max, "lr_max_theory": 2 / hess_eig[-1],
                     "condition_number": hess_eig[-1] / hess_eig[0], "lrs": lrs,
                     "steps_to_target": sweep, "best_steps": best_steps, "best_lr": best_lr,
                     "path": shown["path"], "losses": shown["losses"]}
    raw, std = out["raw"]["best_steps"], out["standardized"]["best_steps"]
    out["speedup"] = raw / std if raw and std else None
    return out


def conclusion(r):
    lines = [f"Logistic regression, {r['config']['n']} examples, feature 2 is "
             f"{r['config']['scale']:g}x feature 1; full-batch GD from w = 0; target = optimum "
             f"+ {TARGET_GAP} nats."]
    for kind in ("raw", "standardized"):
        k = r[kind]
        steps = "not within " + f"{r['config']['max_steps']:,}" if k["best_steps"] is None \
            else f"{k['best_steps']:,}"
        lines.append(f"  {kind:>12}: Hessian condition number {k['condition_number']:7.1f}, "
                     f"largest stable lr {k['lr_max']:8.3f} (2/lambda_max at w=0: "
                     f"{k['lr_max_theory']:.3f}), steps to target at the best lr "
                     f"({k['best_lr']:.3g}): {steps}")
    lines.append("  (stable = the loss never rises in 100 steps from w = 0; 2/lambda_max is the "
                 "bound for a quadratic, and the logistic loss flattens away from w = 0, so "
                 "slightly larger steps still work)")
    if r["speedup"]:
        lines.append(f"  Standardizing: {r['speedup']:.0f}x fewer steps, and a "
                     f"{r['standardized']['lr_max'] / r['raw']['lr_max']:.0f}x larger stable lr.")
    return "\n".join(lines)


def plot(r, path):
    """Contours with the GD path, raw and standardized; loss vs steps; steps-to-target vs lr."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.3),
                             gridspec_kw={"width_ratios": [1.25, 1.25, 1, 1]})
    y = r["y"]
    colors = {"raw": "#d62728", "standardized": "#1f77b4"}
    for ax, kind in zip(axes[:2], ("raw", "standardized")):
        k = r[kind]
        track, ws = np.asarray(k["path"]), np.asarray(k["w_star"])
        # A square window around the path and the optimum, so the bowl's true shape shows.
        pts = np.concatenate([track, ws[None]])
        center, half = (pts.max(0) + pts.min(0)) / 2, (pts.max(0) - pts.min(0)).max() * 0.65
        w1, w2 = np.meshgrid(np.linspace(center[0] - half, center[0] + half, 240),
                             np.linspace(center[1] - half, center[1] + half, 240))
        L = loss_grid(np.asarray(k["X"]), y, w1, w2)
        levels = k["loss_star"] + np.geomspace(0.003, max(L.max() - k["loss_star"], 0.01), 14)
        ax.contour(w1, w2, L, levels=levels, cmap="viridis", linewidths=0.8)
        ax.plot(track[:, 0], track[:, 1], ".-", color=colors[kind], ms=2.5, lw=0.8,
                label=f"GD, lr {k['best_lr']:.3g}: {len(track) - 1:,} step(s)")
        ax.plot(*ws, "k*", ms=10, label="optimum")
        ax.set_aspect("equal")
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.set_title(f"{kind} inputs (condition number at w = 0: {k['condition_number']:.0f})")
        ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    for kind in ("raw", "standardized"):
        k = r[kind]
        ax.semilogy(np.asarray(k["losses"]) - k["loss_star"] + 1e-12, color=colors[kind],
                    label=kind)
    ax.axhline(TARGET_GAP, color="gray", ls="--", lw=0.8, label="target")
    ax.set_xlabel("gradient-descent steps (each at its best lr)")
    ax.set_title("loss - optimal loss")
    ax.legend()
    ax = axes[3]
    for kind in ("raw", "standardized"):
        k = r[kind]
        steps = [np.nan if s is None else s for s in k["steps_to_target"]]
        ax.loglog(k["lrs"], steps, "o-", color=colors[kind], label=kind)
        ax.axvline(k["lr_max"], color=colors[kind], ls=":", lw=1)
    ax.set_xlabel("learning rate (dotted: largest stable)")
    ax.set_title(f"steps to target (max {r['config']['max_steps']:,})")
    ax.legend()
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(TITLE + ": the raw bowl is elongated, so the step size that is safe across it "
                 "crawls along it", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
