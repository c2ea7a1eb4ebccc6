"""Claim 6: "Batch norm allows larger learning rates" — measured as curvature (Santurkar et al.).

Santurkar, Tsipras, Ilyas & Madry (2018) credit batch norm's benefit to a smoother loss
landscape. On the paper's 784-100-100-100-10 sigmoid net (5k MNIST subset), trained with and
without BN, this measures at a few checkpoints, on a fixed evaluation batch of training images:

* the sharpness λ_max, the top eigenvalue of the loss's Hessian w.r.t. all parameters, by
  power iteration on Hessian-vector products (double backward, ``tinygrad_bn.hessian``). On the
  local quadratic model, plain gradient descent is stable only for lr < 2/λ_max;
* the gradient's predictiveness: how much the gradient changes over a step along it,
  ||∇L(w) − ∇L(w − η∇L(w))|| / ||∇L(w)||, and the loss there, for a few step sizes η (their
  Figure 4); the effective smoothness β = ||Δ∇L|| / (η ||∇L||), the largest over η.

Then a learning-rate sweep of each variant (the hyperparams claim's protocol, longer rates
added) says which rates train, to set beside 2/λ_max.
"""
import numpy as np

from ... import nn
from ...functional_grad import grad
from ...hessian import top_hessian_eigenvalue
from ...nn import functional as F
from ...tensor import Tensor
from ..mlp import build_mlp, train_run
from ..plots import COLORS, pyplot
from ..threads import one_blas_thread
from .common import BATCH, PAPER_NET

NAME = "curvature"
TITLE = "Batch norm and the loss landscape: sharpness and gradient predictiveness"
# lr 2.0: the paper protocol's rate on this subset (experiments/mnist_bn.py), at which both
# variants train; at 0.5 the net without BN stays on its initial plateau for 1,000 steps.
FULL = {"steps": 1000, "lr": 2.0, "checkpoints": (0, 30, 100, 300, 1000), "eval_batch": 500,
        "hvp_iters": 50, "tol": 1e-3, "etas": (0.25, 0.5, 1.0, 2.0, 4.0),
        "sweep_lrs": (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0), "sweep_steps": 300}
QUICK = {"steps": 40, "lr": 2.0, "checkpoints": (0, 40), "eval_batch": 200, "hvp_iters": 10,
         "tol": 1e-2, "etas": (0.5, 2.0), "sweep_lrs": (2.0, 32.0), "sweep_steps": 20}
VARIANTS = {"no_bn": "without BN", "bn": "with BN"}


def batch_loss(model, params, X, y):
    """fn() -> the loss of ``model`` on (X, y) as a function of ``params`` (its parameters).

    Batch norm normalizes with the batch's own statistics, as in training, through F.batch_norm
    without running statistics: probing never changes the model's buffers."""
    def loss():
        x = Tensor(X)
        for m in model:
            if isinstance(m, nn.BatchNorm1d):
                x = F.batch_norm(x, None, None, m.weight, m.bias, training=True, eps=m.eps)
            else:
                x = m(x)
        return F.cross_entropy(x, y)
    return loss


def _flat(arrays):
    return np.concatenate([a.reshape(-1) for a in arrays])


def probe(model, params, X, y, cfg, seed=0):
    """λ_max, the gradient's change and the loss along a step of the gradient, at the current
    ``params`` (float64 leaves of ``model``); ``share``: the fraction of the top eigenvector in
    each parameter tensor (where the sharpest direction lives)."""
    loss = batch_loss(model, params, X, y)
    top = top_hessian_eigenvalue(loss, params, iters=cfg["hvp_iters"], tol=cfg["tol"], seed=seed)
    share = [float(np.sum(v * v)) for v in top["vector"]]
    value = loss()
    g = [t.data for t in grad(value, params)]
    g_norm = float(np.linalg.norm(_flat(g)))
    w0 = [p.data.copy() for p in params]
    change, losses = [], []
    for eta in cfg["etas"]:
        for p, w, d in zip(params, w0, g):
            p.data = w - eta * d
        step_loss = loss()
        g2 = [t.data for t in grad(step_loss, params)]
        change.append(float(np.linalg.norm(_flat(g2) - _flat(g))) / max(g_norm, 1e-300))
        losses.append(step_loss.item())
    for p, w in zip(params, w0):
        p.data = w
    beta = max(c / eta for c, eta in zip(change, cfg["etas"]))
    return {"lambda_max": top["eigenvalue"], "converged": top["converged"],
            "hvps": top["iterations"], "residual": top["residual"], "loss": value.item(),
            "grad_norm": g_norm, "grad_change": change, "step_loss": losses, "beta": beta,
            "share": share}


class _CheckpointSGD:
    """SGD that calls ``probe(step)`` after the steps listed in ``checkpoints`` (and at 0)."""

    def __init__(self, params, lr, checkpoints, probe_at):
        from ... import optim
        self.sgd, self.checkpoints, self.probe_at = optim.SGD(params, lr=lr), checkpoints, probe_at
        self.step_count = 0
        if 0 in checkpoints:
            probe_at(0)

    def zero_grad(self):
        self.sgd.zero_grad()

    def step(self):
        self.sgd.step()
        self.step_count += 1
        if self.step_count in self.checkpoints:
            self.probe_at(self.step_count)


def track(data, bn, cfg, seed=0, progress=False):
    """Train one variant at cfg["lr"], probing at cfg["checkpoints"] on a float64 copy."""
    model = build_mlp(bn=bn, seed=seed, **PAPER_NET)
    twin = build_mlp(bn=bn, seed=seed, dtype=np.float64, **PAPER_NET)
    params, twin_params = list(model.parameters()), list(twin.parameters())
    rng = np.random.default_rng([seed, 2])
    pick = rng.choice(len(data[0]), cfg["eval_batch"], replace=False)
    X, y = data[0][pick].astype(np.float64), data[1][pick]
    rows = []

    def probe_at(step):
        for p, q in zip(params, twin_params):
            q.data = p.data.astype(np.float64)
        norms = [float(np.linalg.norm(p.data)) for p in params if p.ndim == 2]
        rows.append(dict(probe(twin, twin_params, X, y, cfg, seed), step=step,
                         weight_norms=norms))

    opt = _CheckpointSGD(params, cfg["lr"], set(cfg["checkpoints"]), probe_at)
    result = train_run(model, data, cfg["steps"], cfg["lr"], batch_size=BATCH,
                       eval_every=cfg["steps"], seed=seed, optimizer=opt, progress=progress,
                       label=VARIANTS["bn" if bn else "no_bn"])
    out = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    out.update(test_acc=result["final_test_acc"], seconds=result["seconds"],
               diverged=result["diverged"], names=[n for n, _ in twin.named_parameters()])
    return out


def sweep(data, bn, lrs, steps, seed=0):
    """Final training loss (mean of the last 20 steps) and test accuracy per learning rate."""
    rows = []
    for lr in lrs:
        model = build_mlp(bn=bn, seed=seed, **PAPER_NET)
        r = train_run(model, data, steps, lr, batch_size=BATCH, eval_every=min(20, steps),
                      seed=seed)
        losses = [v for v in r["train_loss"] if v is not None]
        rows.append({"lr": lr, "final_loss": float(losses[-1]) if losses and
                     np.isfinite(losses[-1]) else None,
                     "test_acc": r["final_test_acc"], "diverged": r["diverged"]})
    return rows


CHANCE = float(np.log(10))  # the loss of a uniform guess over 10 classes


def stable(row):
    """Training stayed bounded: its final loss is finite and not above chance (+ 0.1)."""
    return not row["diverged"] and row["final_loss"] is not None and \
        row["final_loss"] <= CHANCE + 0.1


def trains(row):
    """Training made progress: the final loss is clearly below chance (ln 10 - 0.2)."""
    return stable(row) and row["final_loss"] < CHANCE - 0.2


def _limits(rows, ok):
    """(largest lr with ok(row), smallest larger lr without), None where there is none."""
    good = [r["lr"] for r in rows if ok(r)]
    best = max(good) if good else None
    bad = [r["lr"] for r in rows if not ok(r) and r["lr"] > (best or 0)]
    return best, (min(bad) if bad else None)


@one_blas_thread
def run(data, quick=False, seed=0, progress=False):
    cfg = QUICK if quick else FULL
    out = {"config": dict(cfg, batch_size=BATCH, seed=seed, **PAPER_NET)}
    for variant in VARIANTS:
        bn = variant == "bn"
        entry = track(data, bn, cfg, seed, progress)
        entry["sweep"] = sweep(data, bn, cfg["sweep_lrs"], cfg["sweep_steps"], seed)
        entry["stable_lr"], entry["unstable_lr"] = _limits(entry["sweep"], stable)
        entry["training_lr"], _ = _limits(entry["sweep"], trains)
        out[variant] = entry
    return out


def _g(x):
    return "none" if x is None else f"{x:g}"


def conclusion(r):
    c = r["config"]
    lines = [f"Paper's MNIST net, SGD at lr {c['lr']} (batch {c['batch_size']}), measured at "
             f"steps {list(c['checkpoints'])} on a fixed batch of {c['eval_batch']} training "
             f"images in float64: lambda_max, the top Hessian eigenvalue (power iteration on "
             f"HVPs, <= {c['hvp_iters']}, tol {c['tol']:g}), and the gradient's relative change "
             f"over a step eta along it (eta in {list(c['etas'])}; Santurkar et al. 2018)."]
    for variant, label in VARIANTS.items():
        k = r[variant]
        lam, change = np.asarray(k["lambda_max"]), np.asarray(k["grad_change"])
        share = np.asarray(k["share"])[-1]
        top = int(np.argmax(share))
        flag = "" if np.all(k["converged"]) else \
            f" ({int(np.sum(~np.asarray(k['converged'], bool)))} not converged)"
        lines.append(
            f"  {label:>10}: lambda_max {', '.join(f'{v:.3g}' for v in lam)}{flag}; loss "
            f"{', '.join(f'{v:.2f}' for v in k['loss'])}; gradient change (median over eta) "
            f"{', '.join(f'{v:.2f}' for v in np.median(change, axis=1))}; test acc "
            f"{k['test_acc']:.3f}. At the end the sharpest direction is "
            f"{share[top]:.0%} in {k['names'][top]}.")
    for variant, label in VARIANTS.items():
        k = r[variant]
        lam = np.asarray(k["lambda_max"])
        sweep_text = ", ".join(f"{row['lr']:g}: " + (
            "diverged" if row["diverged"] or row["final_loss"] is None
            else f"{row['final_loss']:.2f}") for row in k["sweep"])
        lines.append(
            f"  {label:>10}, lr sweep ({c['sweep_steps']} steps, final loss): {sweep_text}. "
            f"Stable up to lr {_g(k['stable_lr'])} (unstable from {_g(k['unstable_lr'])}); "
            f"trains (loss < ln 10 - 0.2) up to {_g(k['training_lr'])}. 2/lambda_max "
            f"{2 / lam.max():.3g}-{2 / lam.min():.3g} over training, {2 / lam[0]:.3g} at init.")
    lines.append(_verdict(r))
    return "\n".join(lines)


def _verdict(r):
    no, bn = r["no_bn"], r["bn"]
    steps = [int(v) for v in no["step"]]
    ratio = np.asarray(no["lambda_max"]) / np.asarray(bn["lambda_max"])
    sharper = [s for s, q in zip(steps, ratio) if q < 1]
    smoother = [s for s, q in zip(steps, ratio) if q >= 1]
    text = (f"  As measured: lambda_max without BN / with BN = "
            f"{', '.join(f'{v:.2g}' for v in ratio)}: with BN the loss is sharper (larger "
            f"lambda_max) at steps {sharper or 'none'} and smoother at steps "
            f"{smoother or 'none'}. The largest stable lr of the sweep is "
            f"{_g(bn['stable_lr'])} with BN and {_g(no['stable_lr'])} without.")
    for variant, label in VARIANTS.items():
        k = r[variant]
        bound = 2 / np.asarray(k["lambda_max"])
        lo, hi = k["stable_lr"], k["unstable_lr"]
        if lo is None or hi is None:
            continue
        text += (f" {label[0].upper() + label[1:]}: the stability limit lies in [{lo:g}, "
                 f"{hi:g}] and "
                 f"2/lambda_max along the lr-{r['config']['lr']:g} run is {bound.min():.3g}-"
                 f"{bound.max():.3g}, so the limit is {lo / bound.max():.2g}-"
                 f"{lo / bound.min():.2g} x 2/lambda_max.")
    text += (" 2/lambda_max bounds full-batch GD on the local quadratic; SGD on batches of 60, "
             "whose curvature changes as it trains, follows it only roughly (it can train "
             "above it, 'at the edge of stability'). With BN the loss is invariant to the "
             "scale of the weights before each BN layer, so their curvature scales as "
             "1/||W||^2: ")
    w = np.asarray(bn["weight_norms"])
    text += (f"with BN the first layer's ||W|| went from {w[0, 0]:.3g} to {w[-1, 0]:.3g} "
             f"(without BN {np.asarray(no['weight_norms'])[0, 0]:.3g} to "
             f"{np.asarray(no['weight_norms'])[-1, 0]:.3g}).")
    return text


def table(r):
    """The measurements per checkpoint, both variants side by side (report.html's table)."""
    no, bn = r["no_bn"], r["bn"]
    rows = []
    for i, step in enumerate(no["step"]):
        rows.append([int(step)] + [f"{v:.3g}" for k in (no, bn) for v in (
            k["loss"][i], k["lambda_max"][i], 2 / k["lambda_max"][i],
            float(np.median(k["grad_change"][i])))])
    columns = ["step"] + [f"{what} ({label})" for label in ("no BN", "BN") for what in (
        "loss", "lambda_max", "2/lambda_max", "grad change")]
    return {"columns": columns, "rows": rows}


def plot(r, path):
    """λ_max against steps and against the loss, the gradient's change over a step, and the
    learning-rate sweep with 2/λ_max."""
    plt = pyplot()
    c = r["config"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4))
    ax_lam, ax_lam_loss, ax_pred, ax_sweep = axes
    for variant, label in VARIANTS.items():
        k, color = r[variant], COLORS[variant]
        steps = np.maximum(np.asarray(k["step"]), 1)
        lam = np.asarray(k["lambda_max"])
        ax_lam.plot(steps, lam, "o-", color=color, label=label)
        ax_lam_loss.plot(k["loss"], lam, "o-", color=color, label=label)
        for step, x, y in zip(k["step"], k["loss"], lam):
            ax_lam_loss.annotate(f"{int(step)}", (x, y), fontsize=7, xytext=(3, 3),
                                 textcoords="offset points", color=color)
        change = np.asarray(k["grad_change"])
        ax_pred.fill_between(steps, change.min(axis=1), change.max(axis=1), color=color,
                             alpha=0.25)
        ax_pred.plot(steps, np.median(change, axis=1), "o-", color=color,
                     label=f"{label} (median; band over eta {min(c['etas']):g}-"
                           f"{max(c['etas']):g})")
        rows = k["sweep"]
        ax_sweep.plot([row["lr"] for row in rows],
                      [row["final_loss"] if stable(row) else np.nan for row in rows],
                      "o-", color=color, label=f"{label}: stable")
        bad = [row for row in rows if not stable(row)]
        ax_sweep.plot([row["lr"] for row in bad], [CHANCE + 0.35] * len(bad), "x", color=color,
                      ms=9, label=f"{label}: unstable (loss > ln 10 + 0.1)")
        ax_sweep.axvspan(2 / lam.max(), 2 / lam.min(), color=color, alpha=0.12,
                         label=f"2/lambda_max over training ({label})")
    ax_lam.set(xscale="log", yscale="log", xlabel="training step (0 drawn at 1)",
               ylabel="lambda_max of the loss Hessian", title="sharpness during training")
    ax_lam_loss.set(xscale="log", yscale="log", xlabel="loss on the evaluation batch",
                    ylabel="lambda_max", title="sharpness at equal loss (labels: step)")
    ax_lam_loss.invert_xaxis()
    ax_pred.set(xscale="log", yscale="log", xlabel="training step (0 drawn at 1)",
                ylabel="||grad L(w) - grad L(w - eta grad L(w))|| / ||grad L(w)||",
                title="gradient change over a step (lower: more predictive)")
    ax_sweep.axhline(CHANCE, color="gray", lw=0.8, ls=":")
    ax_sweep.set(xscale="log", xlabel="learning rate",
                 ylabel=f"training loss after {c['sweep_steps']} steps",
                 title="learning-rate sweep (same net and init)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right" if ax is ax_sweep else "best")
    fig.suptitle(f"{TITLE} (784-100-100-100-10 sigmoid MLP, init std {c['init_std']}, MNIST 5k, "
                 f"SGD lr {c['lr']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
