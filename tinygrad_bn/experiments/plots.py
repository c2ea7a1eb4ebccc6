"""Figure 1 of the batch-norm paper, redrawn from ``run_experiment`` results (needs matplotlib)."""
import numpy as np

from .mnist_bn import VARIANT_LABELS, typical_unit, unit_drift
from .optional import require

COLORS = {"no_bn": "#d62728", "bn": "#1f77b4"}


def pyplot():
    matplotlib = require("matplotlib", "drawing the figure")
    matplotlib.use("Agg")  # files only: no display needed, works over ssh and in CI
    import matplotlib.pyplot as plt
    return plt


def plot_figure(results, path, seed=None):
    """(a) test accuracy vs steps, mean and min–max band over seeds; (b), (c) the 15/50/85th
    percentiles of one typical last-layer sigmoid input without / with BN (run ``seed``, default
    the first); (d) over all units and seeds: how far each unit's median wandered during
    training, max_t p50 - min_t p50 in units of its final 15–85 width (``unit_drift``).
    Writes ``path`` (PNG) and returns it."""
    plt = pyplot()
    runs = results["runs"]
    variants = [v for v in VARIANT_LABELS if any(r["variant"] == v for r in runs)]
    seed = runs[0]["seed"] if seed is None else seed
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.9))
    ax_acc, ax_nobn, ax_bn, ax_drift = axes

    for variant in variants:
        vruns = [r for r in runs if r["variant"] == variant]
        steps = np.asarray(vruns[0]["steps"])
        n = min(len(r["test_acc"]) for r in vruns)  # a diverged run may have stopped early
        acc = np.array([r["test_acc"][:n] for r in vruns], dtype=np.float64)
        ax_acc.plot(steps[:n], acc.mean(axis=0), color=COLORS[variant],
                    label=f"{VARIANT_LABELS[variant]} ({len(vruns)} seeds)")
        ax_acc.fill_between(steps[:n], acc.min(axis=0), acc.max(axis=0), color=COLORS[variant],
                            alpha=0.25, linewidth=0)
    # The paper's 0.7..1 window, unless a short or failed run never gets there.
    late = [np.mean([r["test_acc"][len(r["test_acc"]) // 2] for r in runs if r["variant"] == v])
            for v in variants]
    ax_acc.set_ylim(min(0.7, max(0.0, min(late) - 0.05)), 1.0)
    ax_acc.set_title("(a) test accuracy")
    ax_acc.set_xlabel("training steps")
    ax_acc.legend(loc="lower right")
    ax_acc.grid(alpha=0.3)

    for ax, variant, letter in ((ax_nobn, "no_bn", "b"), (ax_bn, "bn", "c")):
        run = next((r for r in runs if r["variant"] == variant and r["seed"] == seed), None)
        if run is None:
            ax.text(0.5, 0.5, f"no run {VARIANT_LABELS[variant]}", ha="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        p = np.asarray(run["percentiles"], dtype=np.float64)
        unit = typical_unit(p)
        steps = np.asarray(run["steps"])
        for k, style in zip(range(3), (":", "-", ":")):
            ax.plot(steps, p[:, k, unit], style, color=COLORS[variant])
        ax.fill_between(steps, p[:, 0, unit], p[:, 2, unit], color=COLORS[variant], alpha=0.12,
                        linewidth=0)
        ax.set_title(f"({letter}) {VARIANT_LABELS[variant]}: sigmoid input, unit {unit}")
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
    ax_nobn.set_ylabel("15th / 50th / 85th percentile")
    ax_nobn.sharey(ax_bn)

    # One number per unit, no time axis: how far its median wandered while training (the same
    # measure that picks the "typical" unit of (b) and (c), and the summary's median unit drift).
    drifts = {v: np.concatenate([unit_drift(r["percentiles"]) for r in runs if r["variant"] == v])
              for v in variants}
    top = max(float(np.percentile(np.concatenate(list(drifts.values())), 99)), 1e-3)
    bins = np.linspace(0.0, top * 1.05, 41)
    for variant in variants:
        d = drifts[variant]
        ax_drift.hist(np.minimum(d, bins[-1]), bins=bins, color=COLORS[variant], alpha=0.45,
                      label=f"{VARIANT_LABELS[variant]}: median {np.median(d):.2f}")
        ax_drift.axvline(np.median(d), color=COLORS[variant], linestyle="--", linewidth=1.2)
    ax_drift.set_title("(d) how far each unit's median wandered")
    ax_drift.set_xlabel("max − min of the 50th pct, in final 15–85 widths")
    n_seeds = len({r["seed"] for r in runs})
    ax_drift.set_ylabel(f"units ({np.shape(runs[0]['percentiles'])[-1]} × {n_seeds} seeds)")
    ax_drift.legend(loc="upper right")
    ax_drift.grid(alpha=0.3)

    cfg = results["config"]
    fig.suptitle(f"{cfg['dataset']}: 784-{'-'.join(map(str, cfg['hidden']))}-10 {cfg['activation']}"
                 f" MLP, SGD lr {cfg['lr']}, batch {cfg['batch_size']}, {cfg['steps']:,} steps "
                 f"(bands: (a) min–max over seeds, (b)(c) 15–85th pct)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
