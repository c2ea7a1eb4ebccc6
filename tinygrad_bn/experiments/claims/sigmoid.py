"""Claim 3: "If every Z had mean 0 and variance 1, the sigmoid would only work in its near-linear
range (outputs within about (0.2, 0.8)); gamma and beta let the network choose."

The paper's BN net trained three ways: gamma/beta learned, gamma/beta frozen at (1, 0)
(BatchNorm1d(affine=False)), and no BN. At the end: the sigmoid outputs of every hidden layer over
the test set (eval mode), the fraction inside (0.2, 0.8), and test accuracy. If z ~ N(0, 1) then
P(0.2 < sigmoid(z) < 0.8) = P(|z| < ln 4) = 0.834. And the check that gamma = sqrt(sigma² + eps),
beta = mu undoes the normalization: y = sqrt(s² + eps) (x - mu) / sqrt(s² + eps) + mu = x.
"""
import math

import numpy as np

from ...nn import functional as F
from ...tensor import Tensor
from ..mlp import build_mlp, evaluate, train_run
from ..plots import pyplot
from ..threads import one_blas_thread
from .common import BATCH, PAPER_NET, forward_layers, fraction

NAME = "sigmoid"
TITLE = "Gamma and beta let the network leave the sigmoid's near-linear range"
FULL = {"steps": 3000, "lr": 2.0, "n_seeds": 3}
QUICK = {"steps": 100, "lr": 2.0, "n_seeds": 1}
RANGE = (0.2, 0.8)
VARIANTS = {"learned": "BN, gamma/beta learned", "frozen": "BN, gamma/beta frozen at (1, 0)",
            "no_bn": "no BN"}
GAUSSIAN_FRACTION = math.erf(math.log(4) / math.sqrt(2))  # P(|z| < ln 4), z ~ N(0, 1)


def identity_check(n=64, features=5, seed=0, eps=1e-5, dtype=np.float64):
    """max |BN(x; gamma = sqrt(var_B + eps), beta = mu_B) - x| for a batch far from N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, features)) * rng.uniform(0.5, 20, features)
         + rng.uniform(-50, 50, features)).astype(dtype)
    mu, var = x.mean(axis=0), x.var(axis=0)  # the batch's statistics, biased variance
    y = F.batch_norm(Tensor(x), weight=Tensor(np.sqrt(var + eps)), bias=Tensor(mu),
                     training=True, eps=eps).data
    return {"max_abs_error": float(np.abs(y - x).max()), "dtype": np.dtype(dtype).name,
            "batch_mean": mu, "batch_std": np.sqrt(var), "eps": eps}


@one_blas_thread
def run(data, quick=False, seed=0, progress=False):
    """Train the three variants (``n_seeds`` seeds from ``seed``); sigmoid outputs per layer of the
    first seed's nets, fraction in (0.2, 0.8) and test accuracy for every seed."""
    cfg = QUICK if quick else FULL
    X_test = data[2]
    out = {"config": dict(cfg, batch_size=BATCH, seed=seed, range=RANGE, **PAPER_NET),
           "identity": identity_check(), "identity_float32": identity_check(dtype=np.float32),
           "gaussian_fraction": GAUSSIAN_FRACTION}
    for variant, label in VARIANTS.items():
        entry = {"test_acc_seeds": [], "in_range_seeds": [], "seconds": 0.0}
        for s in range(seed, seed + cfg["n_seeds"]):
            model = build_mlp(bn=variant != "no_bn", bn_affine=variant == "learned", seed=s,
                              **PAPER_NET)
            trained = train_run(model, data, cfg["steps"], cfg["lr"], batch_size=BATCH,
                                eval_every=cfg["steps"], seed=s, progress=progress,
                                label=f"{label}, seed {s}")
            model.eval()
            outputs = [a for _, a in forward_layers(model, X_test)[1]]
            entry["test_acc_seeds"].append(evaluate(model, X_test, data[3]))
            entry["in_range_seeds"].append([fraction(a, *RANGE) for a in outputs])
            entry["seconds"] += trained["seconds"]
            if s == seed:  # the pictures: the first seed's nets
                entry["histograms"] = [np.histogram(a, bins=50, range=(0, 1))[0]
                                       for a in outputs]
                if variant == "learned":
                    bns = [m for m in model if hasattr(m, "running_var")]
                    entry["gamma"] = [np.abs(m.weight.data) for m in bns]
                    entry["beta"] = [m.bias.data.copy() for m in bns]
        acc = np.array(entry["test_acc_seeds"])
        entry["test_acc"] = float(acc.mean())
        entry["test_acc_sd"] = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
        entry["in_range"] = np.mean(entry["in_range_seeds"], axis=0)
        out[variant] = entry
    return out


def conclusion(r):
    c, ident = r["config"], r["identity"]
    lines = [f"Paper's MNIST net, {c['steps']:,} SGD steps at lr {c['lr']}, {c['n_seeds']} seed(s) "
             f"(mean +- sd); sigmoid outputs over the test set in eval mode; N(0, 1) inputs "
             f"would put {r['gaussian_fraction']:.1%} of outputs in {RANGE}."]
    for variant, label in VARIANTS.items():
        k = r[variant]
        fr = ", ".join(f"{f:.1%}" for f in k["in_range"])
        lines.append(f"  {label:>32}: test acc {k['test_acc']:.4f} +- {k['test_acc_sd']:.4f}; "
                     f"in {RANGE} per layer: {fr}")
    if "gamma" in r["learned"]:
        for i, (g, b) in enumerate(zip(r["learned"]["gamma"], r["learned"]["beta"])):
            g, b = np.asarray(g), np.asarray(b)
            lines.append(f"  learned, seed {c['seed']}, layer {i + 1}: |gamma| median "
                         f"{np.median(g):.2f} (range {g.min():.2f}-{g.max():.2f}), beta range "
                         f"{b.min():+.2f} to {b.max():+.2f}")
    lines.append(f"  gamma = sqrt(sigma_B^2 + eps), beta = mu_B gives back x: max |y - x| = "
                 f"{ident['max_abs_error']:.1e} in float64, "
                 f"{r['identity_float32']['max_abs_error']:.1e} in float32 (|x| up to ~100).")
    return "\n".join(lines)


def plot(r, path):
    """Histograms of sigmoid outputs, one panel per hidden layer, the three variants overlaid."""
    plt = pyplot()
    n_layers = len(r["learned"]["in_range"])
    fig, axes = plt.subplots(1, n_layers + 1, figsize=(4.2 * (n_layers + 1), 3.9))
    colors = {"learned": "#1f77b4", "frozen": "#2ca02c", "no_bn": "#d62728"}
    edges = np.linspace(0, 1, 51)
    for i, ax in enumerate(axes[:n_layers]):
        for variant, label in VARIANTS.items():
            h = np.asarray(r[variant]["histograms"][i], dtype=float)
            # The legend's number is the conclusion's (mean over seeds, open interval), so the
            # picture and the text beside it never disagree; the curve is the first seed's.
            ax.stairs(h / h.sum(), edges, color=colors[variant], lw=1.4,
                      label=f"{label}: {r[variant]['in_range'][i]:.1%} inside")
        ax.axvspan(*RANGE, color="gray", alpha=0.12)
        ax.set_yscale("log")
        ax.set_xlabel("sigmoid output")
        ax.set_title(f"hidden layer {i + 1} (shaded: {RANGE})")
        ax.set_ylim(top=ax.get_ylim()[1] * 15)  # headroom on the log axis for the legend
        ax.legend(fontsize=7, loc="upper center")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"fraction of (test image, unit) pairs, seed {r['config']['seed']}")
    ax = axes[-1]
    names = list(VARIANTS)
    acc = [r[v]["test_acc"] for v in names]
    bars = ax.bar(range(len(names)), acc, color=[colors[v] for v in names])
    sd = [r[v]["test_acc_sd"] for v in names]
    ax.errorbar(range(len(names)), acc, yerr=sd, fmt="none", ecolor="black", capsize=4)
    ax.bar_label(bars, [f"{a:.3f}" for a in acc], padding=6)
    ax.set_xticks(range(len(names)), ["learned", "frozen (1, 0)", "no BN"])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"test accuracy (mean, sd over {r['config']['n_seeds']} seed(s))")
    fig.suptitle(f"{TITLE} ({r['config']['steps']:,} steps, lr {r['config']['lr']}; "
                 f"% inside: mean over {r['config']['n_seeds']} seed(s); "
                 f"N(0,1) inputs give {r['gaussian_fraction']:.1%} inside)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
