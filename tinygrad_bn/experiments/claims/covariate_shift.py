"""Claim 5: "Batch norm reduces internal covariate shift."

The paper's Figure 1(b, c), for every hidden layer and summarized over all units: the mean and
std over the test images of each sigmoid's input, recorded every few steps during training, with
and without BN. With BN the probe normalizes by the test set's own statistics (the training
network, as the paper plots), so a unit's mean is its beta and its std its |gamma| (up to eps).
Santurkar et al. 2018 ("How does batch normalization help optimization?") find that BN's benefit
survives when shift is injected back, and credit a smoother loss landscape instead; this demo
shows the measurement, not which explanation is right.
"""
import numpy as np

from ..mlp import build_mlp, train_run
from ..plots import pyplot
from ..threads import one_blas_thread
from .common import (
    BATCH,
    PAPER_NET,
    ProbingSGD,
    forward_layers,
    own_batch_stats,
)

NAME, TITLE = "covariate-shift", "Batch norm and internal covariate shift: the measurement"
FULL = {"steps": 3000, "lr": 2.0, "probe_every": 50}
QUICK = {"steps": 100, "lr": 2.0, "probe_every": 20}
SANTURKAR = ("Santurkar, Tsipras, Ilyas & Madry (2018), 'How does batch normalization help "
             "optimization?', dispute how much of BN's benefit this explains: networks with "
             "noise injected after BN (more shift) still train about as well as with plain BN, "
             "and they credit a smoother loss landscape. This shows the measurement, not a "
             "verdict.")


def train_probed(data, bn, steps, lr, probe_every, seed=0, progress=False):
    """Train with train_run; every ``probe_every`` steps record, per hidden layer and unit, the
    mean and std over the test images of the sigmoid input; arrays (probes, layers, units)."""
    model = build_mlp(bn=bn, seed=seed, **PAPER_NET)
    X_probe = data[2]
    rec = {"steps": [], "mean": [], "std": []}

    def probe(step):
        _, layers = forward_layers(model, X_probe, bn_stats=own_batch_stats)
        rec["steps"].append(step)
        rec["mean"].append([pre.mean(axis=0) for pre, _ in layers])
        rec["std"].append([pre.std(axis=0) for pre, _ in layers])

    opt = ProbingSGD(model.parameters(), lr, probe, probe_every)
    result = train_run(model, data, steps, lr, batch_size=BATCH, eval_every=steps, seed=seed,
                       optimizer=opt, progress=progress, label="with BN" if bn else "without BN")
    return {"steps": np.array(rec["steps"]), "mean": np.array(rec["mean"]),
            "std": np.array(rec["std"]), "test_acc": result["final_test_acc"],
            "seconds": result["seconds"]}


def drift(mean, std):
    """Per layer, the median over units of (max_t mean_u - min_t mean_u) / std_u(T), t after the
    first probe (the move away from the initialization counts, the init itself does not)."""
    m = mean[1:] if len(mean) > 1 else mean
    return np.median((m.max(axis=0) - m.min(axis=0)) / np.maximum(std[-1], 1e-12), axis=-1)


@one_blas_thread
def run(data, quick=False, seed=0, progress=False):
    """Both variants, probed during training; drift per layer."""
    cfg = QUICK if quick else FULL
    out = {"config": dict(cfg, batch_size=BATCH, seed=seed, **PAPER_NET)}
    for name, bn in (("no_bn", False), ("bn", True)):
        rec = train_probed(data, bn, cfg["steps"], cfg["lr"], cfg["probe_every"], seed, progress)
        rec["drift"] = drift(rec["mean"], rec["std"])
        out[name] = rec
    return out


def conclusion(r):
    c = r["config"]
    lines = [f"Paper's MNIST net, {c['steps']:,} SGD steps at lr {c['lr']}, sigmoid inputs over "
             f"the test set every {c['probe_every']} steps; drift = median over units of "
             f"(max - min over training of the unit's mean) / its final std:"]
    for name, label in (("no_bn", "without BN"), ("bn", "with BN")):
        k = r[name]
        lines.append(f"  {label:>10}: drift per layer " + ", ".join(
            f"{d:.2f}" for d in k["drift"]) + f"; final test acc {k['test_acc']:.4f}")
    lines.append("  " + SANTURKAR)
    return "\n".join(lines)


def plot(r, path, units=8):
    """Rows: per-unit mean, per-unit std (``units`` units), drift to the final mean (all units);
    columns: hidden layers; red without BN, blue with."""
    plt = pyplot()
    n_layers = np.asarray(r["bn"]["mean"]).shape[1]
    fig, axes = plt.subplots(3, n_layers, figsize=(5 * n_layers, 9.5), sharex=True)
    colors = {"no_bn": "#d62728", "bn": "#1f77b4"}
    labels = {"no_bn": "without BN", "bn": "with BN"}
    for name in ("no_bn", "bn"):
        k = r[name]
        steps, mean, std = (np.asarray(k[f]) for f in ("steps", "mean", "std"))
        for layer in range(n_layers):
            shown = np.linspace(0, mean.shape[2] - 1, units).astype(int)
            for j, u in enumerate(shown):
                label = labels[name] if j == 0 else None
                axes[0, layer].plot(steps, mean[:, layer, u], color=colors[name], lw=0.8,
                                    alpha=0.8, label=label)
                axes[1, layer].plot(steps, std[:, layer, u], color=colors[name], lw=0.8,
                                    alpha=0.8, label=label)
            dist = np.abs(mean[:, layer] - mean[-1, layer]) / np.maximum(std[-1, layer], 1e-12)
            ax = axes[2, layer]
            ax.plot(steps, np.median(dist, axis=1), color=colors[name],
                    label=f"{labels[name]} (drift {k['drift'][layer]:.2f})")
            ax.fill_between(steps, np.percentile(dist, 25, axis=1),
                            np.percentile(dist, 75, axis=1), color=colors[name], alpha=0.2,
                            linewidth=0)
    for layer in range(n_layers):
        axes[0, layer].set_title(f"hidden layer {layer + 1}: mean of sigmoid input "
                                 f"({units} units)", fontsize=9)
        axes[1, layer].set_title(f"hidden layer {layer + 1}: std of sigmoid input", fontsize=9)
        axes[2, layer].set_title(f"layer {layer + 1}, all units: |mean - final mean| / final "
                                 f"std", fontsize=9)
        axes[1, layer].set_yscale("log")
        axes[2, layer].set_yscale("symlog", linthresh=0.1)
        axes[2, layer].set_ylim(bottom=0)
        axes[2, layer].set_xlabel("training steps")
        for row in range(3):
            axes[row, layer].grid(alpha=0.3)
            axes[row, layer].legend(fontsize=7)
    c = r["config"]
    fig.suptitle(f"{TITLE} ({c['steps']:,} steps, lr {c['lr']}; median and 25-75% band of "
                 f"units in the last row). Santurkar et al. 2018 dispute how much this explains.",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
