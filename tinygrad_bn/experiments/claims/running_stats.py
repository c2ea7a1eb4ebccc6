"""Claim 4: "At test time, use running averages of mu and sigma²."

A trained BN net is evaluated three ways: (a) the running statistics BatchNorm1d kept during
training, (b) the population statistics of the paper's Algorithm 2 over the whole training set,
E[x] = mean_B mu_B and Var[x] = m/(m-1) mean_B sigma_B² over its minibatches of size m, and (c)
each test batch's own statistics, for several test batch sizes. (a) and (b) do not depend on the
test batch; (c) does, and with one example x - mu_B = 0: every input gives the same output.
"""
import math

import numpy as np

from ... import nn
from ..mlp import build_mlp, train_run
from ..plots import pyplot
from ..threads import one_blas_thread
from .common import BATCH, PAPER_NET, forward_layers, own_batch_stats

NAME, TITLE = "running-stats", "At test time, use running averages of mu and sigma²"
FULL = {"steps": 3000, "lr": 2.0, "batch_sizes": (1, 2, 8, 60, None)}
QUICK = {"steps": 100, "lr": 2.0, "batch_sizes": (1, 2, 60, None)}


def population_stats(model, X, m=BATCH, seed=0, shuffle=True):
    """Algorithm 2: per BN layer, E[x] = mean_B mu_B, Var[x] = m/(m-1) mean_B sigma_B², over the
    minibatches of size m of one pass over X (seeded order; the last short batch dropped), with
    the training network (every BN layer normalizing by its batch).

    ``shuffle=False`` takes X in stored order. load_mnist5k stores it sorted by digit, so those
    batches hold one digit each and mean_B sigma_B² misses the spread between digits.
    """
    if shuffle:
        X = X[np.random.default_rng([seed, 3]).permutation(len(X))]
    sums = {}

    def record(k, x):
        mu, var = own_batch_stats(k, x)
        s = sums.setdefault(k, [0.0, 0.0, 0])
        s[0], s[1], s[2] = s[0] + mu, s[1] + var, s[2] + 1
        return mu, var
    for start in range(0, len(X) - m + 1, m):
        forward_layers(model, X[start:start + m], bn_stats=record)
    return [(s[0] / s[2], s[1] / s[2] * m / (m - 1)) for _, s in sorted(sums.items())]


def accuracy(model, X, y, batch_size=None, bn_stats=None):
    """Accuracy over (X, y) cut into consecutive batches (None: one batch of everything)."""
    size = len(X) if batch_size is None else batch_size
    correct = 0
    for start in range(0, len(X), size):
        logits, _ = forward_layers(model, X[start:start + size], bn_stats)
        correct += int((logits.argmax(axis=1) == y[start:start + size]).sum())
    return correct / len(X)


@one_blas_thread
def run(data, quick=False, seed=0, progress=False):
    """Train the BN net, then test accuracy with running, population and per-batch statistics."""
    cfg = QUICK if quick else FULL
    X_train, _, X_test, y_test = data
    model = build_mlp(bn=True, seed=seed, **PAPER_NET)
    trained = train_run(model, data, cfg["steps"], cfg["lr"], batch_size=BATCH,
                        eval_every=max(cfg["steps"] // 10, 1), seed=seed, progress=progress,
                        label="BN net")
    model.eval()
    bns = [m for m in model if isinstance(m, nn.BatchNorm1d)]
    running = [(m.running_mean.data.astype(np.float64), m.running_var.data.astype(np.float64))
               for m in bns]
    population = population_stats(model, X_train, seed=seed)
    sorted_batches = population_stats(model, X_train, shuffle=False)
    # Shuffle the test set once: sorted by digit, a small batch would hold a single class.
    order = np.random.default_rng([seed, 2]).permutation(len(X_test))
    X_test, y_test = X_test[order], y_test[order]
    per_batch = {}
    for b in cfg["batch_sizes"]:
        per_batch["all" if b is None else str(b)] = accuracy(model, X_test, y_test, b,
                                                             own_batch_stats)
    momentum = bns[0].momentum
    return {
        "config": dict(cfg, batch_size=BATCH, seed=seed, momentum=momentum,
                       n_train=len(X_train), n_test=len(X_test), **PAPER_NET),
        "seconds": trained["seconds"],
        "acc_running": accuracy(model, X_test, y_test),
        "acc_population": accuracy(model, X_test, y_test,
                                   bn_stats=lambda k, x: population[k]),
        "acc_batch": per_batch,
        "acc_population_sorted_batches": accuracy(model, X_test, y_test,
                                                  bn_stats=lambda k, x: sorted_batches[k]),
        "var_ratio_sorted_batches": [float(np.median(s[1] / p[1]))
                                     for s, p in zip(sorted_batches, population)],
        "single_example_predictions": int(len(np.unique(
            [forward_layers(model, X_test[i:i + 1], own_batch_stats)[0].argmax()
             for i in range(min(50, len(X_test)))]))),
        "running": running, "population": population,
        # Per layer, over units: |running mean - population mean| / population std, and
        # |running var / population var - 1|; median and max.
        "rel_diff_mean": [_median_max(np.abs(r[0] - p[0]) / np.sqrt(p[1]))
                          for r, p in zip(running, population)],
        "rel_diff_var": [_median_max(np.abs(r[1] / p[1] - 1))
                         for r, p in zip(running, population)],
        "half_life_batches": math.log(2) / -math.log(1 - momentum),
    }


def _median_max(x):
    return [float(np.median(x)), float(np.max(x))]


def momentum_note(momentum, half_life):
    return (f"Momentum convention (PyTorch's, used here): momentum = {momentum} is the weight of "
            f"the NEW batch: running <- {1 - momentum:g} * running + {momentum:g} * batch (the "
            f"variance unbiased, m/(m-1)). Keras and Flax write momentum = 0.99 for the weight of "
            f"the OLD average, which is momentum = 0.01 here. With {momentum} a batch's weight "
            f"halves every {half_life:.1f} batches, so the running statistics describe the last "
            f"few dozen steps' weights; Algorithm 2 describes the final weights exactly.")


def conclusion(r):
    c = r["config"]
    lines = [f"BN net trained {c['steps']:,} steps (lr {c['lr']}, batch {c['batch_size']}); test "
             f"accuracy on {c['n_test']} images:",
             f"  (a) running averages (eval mode):            {r['acc_running']:.4f}",
             f"  (b) population statistics, Algorithm 2:      {r['acc_population']:.4f}   "
             f"(one shuffled pass: {c['n_train'] // c['batch_size']} batches of "
             f"{c['batch_size']})",
             f"      (Algorithm 2 over batches in stored order, one digit each: "
             f"{r['acc_population_sorted_batches']:.4f}; its variances are "
             + ", ".join(f"{v:.2f}" for v in r["var_ratio_sorted_batches"])
             + "x the shuffled ones, median per layer)",
             "  (c) each test batch's own statistics, batch size: " + ", ".join(
                 f"{b}: {a:.4f}" for b, a in r["acc_batch"].items())]
    lines.append(f"  Batch size 1: x - mu_B = 0, so every image gets the same output "
                 f"({r['single_example_predictions']} distinct prediction(s) over 50 images); "
                 f"accuracy = that digit's share of the test set.")
    lines.append("  running vs population per layer, median (max) over units: |mean diff| / "
                 "pop. std " + ", ".join(f"{a:.3f} ({b:.2f})" for a, b in r["rel_diff_mean"])
                 + "; |var ratio - 1| " + ", ".join(f"{a:.3f} ({b:.2f})"
                                                    for a, b in r["rel_diff_var"]))
    lines.append("  " + momentum_note(c["momentum"], r["half_life_batches"]))
    return "\n".join(lines)


def plot(r, path):
    """Accuracy vs test batch size for (c), with (a) and (b) as lines; running vs population."""
    plt = pyplot()
    c = r["config"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    ax = axes[0]
    labels = list(r["acc_batch"])
    xs = [c["n_test"] if b == "all" else int(b) for b in labels]
    ax.semilogx(xs, list(r["acc_batch"].values()), "o-", color="#d62728",
                label="(c) the test batch's own statistics")
    ax.axhline(r["acc_running"], color="#1f77b4", label=f"(a) running averages "
               f"{r['acc_running']:.3f}")
    ax.axhline(r["acc_population"], color="#2ca02c", ls="--", label=f"(b) population "
               f"(Algorithm 2) {r['acc_population']:.3f}")
    for x, b, a in zip(xs, labels, r["acc_batch"].values()):
        ax.annotate(f"{a:.3f}", (x, a), textcoords="offset points", fontsize=8,
                    xytext=(-30 if x == xs[-1] else 4, -12))  # the last one: inside the axes
    ax.set_xticks(xs, [f"{b}" for b in labels])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("test batch size")
    ax.set_ylabel("test accuracy")
    ax.set_title("which mu, sigma² normalize at test time")
    ax.legend(loc="center right", fontsize=8)
    for ax, i, name in ((axes[1], 0, "mean"), (axes[2], 1, "variance")):
        for layer, (run_s, pop_s) in enumerate(zip(r["running"], r["population"])):
            ax.scatter(np.asarray(pop_s[i]), np.asarray(run_s[i]), s=7, alpha=0.6,
                       label=f"layer {layer + 1}")
        lim = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]
        ax.plot(lim, lim, "k-", lw=0.6)
        if name == "variance":
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(f"population {name} (Algorithm 2)")
        ax.set_ylabel(f"running {name} (momentum {c['momentum']})")
        ax.set_title(f"per unit: running vs population {name}")
        ax.legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(f"{TITLE}: BN net after {c['steps']:,} steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
