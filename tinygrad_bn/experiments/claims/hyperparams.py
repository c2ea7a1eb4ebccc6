"""Claim 2: "Batch norm lets you set hyperparameters more easily."

The paper's 784-100-100-100-10 sigmoid net on the 5k MNIST subset, trained for a fixed budget at
every (learning rate, weight-init std) pair of a grid, with and without BN; test accuracy at the
end. BN makes each layer's output invariant to the scale of its weights, so the init std no longer
decides whether the sigmoids saturate (std 1) or pass a vanishing signal (std 0.001).
"""
import os

import numpy as np

from ..mlp import build_mlp, train_run
from ..plots import pyplot
from ..threads import one_blas_thread
from .common import BATCH, PAPER_NET

NAME, TITLE = "hyperparams", "Batch norm makes hyperparameters easier to set"
FULL = {"lrs": (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0), "init_stds": (0.001, 0.01, 0.1, 1.0),
        "steps": 1000}
QUICK = {"lrs": (0.5, 4.0), "init_stds": (0.01, 1.0), "steps": 60}
THRESHOLD = 0.90


def _one(args):
    """One training run (a picklable unit of work for the process pool)."""
    data, bn, lr, init_std, steps, seed = args
    model = build_mlp(bn=bn, init_std=init_std, seed=seed, hidden=PAPER_NET["hidden"],
                      activation=PAPER_NET["activation"])
    result = train_run(model, data, steps, lr, batch_size=BATCH, eval_every=steps, seed=seed)
    return result["final_test_acc"], result["diverged"], result["seconds"]


@one_blas_thread
def run(data, quick=False, seed=0, jobs=1, progress=False):
    """Test accuracy after ``steps`` SGD steps for every (variant, init std, lr) of the grid."""
    cfg = QUICK if quick else FULL
    grid = [(bn, lr, s) for bn in (False, True) for s in cfg["init_stds"] for lr in cfg["lrs"]]
    work = [(data, bn, lr, s, cfg["steps"], seed) for bn, lr, s in grid]
    if jobs > 1:
        # Forked workers share ``data`` copy-on-write; each run is independent and seeded.
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(min(jobs, os.cpu_count() or 1)) as pool:
            results = pool.map(_one, work, chunksize=1)
    else:
        results = []
        for i, item in enumerate(work):
            results.append(_one(item))
            if progress:
                print(f"  [{i + 1}/{len(work)}] bn={item[1]} lr={item[2]} init_std={item[3]}: "
                      f"{results[-1][0]:.3f}", flush=True)
    shape = (len(cfg["init_stds"]), len(cfg["lrs"]))
    out = {"config": dict(cfg, threshold=THRESHOLD, batch_size=BATCH, seed=seed, **PAPER_NET)}
    for bn, name in ((False, "no_bn"), (True, "bn")):
        rows = [r for (b, _, _), r in zip(grid, results) if b == bn]
        acc = np.array([r[0] for r in rows]).reshape(shape)
        out[name] = {"test_acc": acc, "diverged": np.array([r[1] for r in rows]).reshape(shape),
                     "reached": int((acc >= THRESHOLD).sum()), "n_settings": int(acc.size),
                     "seconds": float(sum(r[2] for r in rows))}
    return out


def conclusion(r):
    c = r["config"]
    lines = [f"Paper's MNIST net, {c['steps']:,} SGD steps of batch {c['batch_size']} per setting, "
             f"lr in {list(c['lrs'])} x init std in {list(c['init_stds'])}:"]
    for name, label in (("no_bn", "without BN"), ("bn", "with BN")):
        k = r[name]
        acc = np.asarray(k["test_acc"])
        lines.append(f"  {label:>10}: {k['reached']}/{k['n_settings']} settings reach "
                     f"{THRESHOLD:.0%} test accuracy; median {np.median(acc):.3f}, best "
                     f"{acc.max():.3f}; {int(np.asarray(k['diverged']).sum())} diverged")
    paper_row = list(c["init_stds"]).index(0.01) if 0.01 in c["init_stds"] else None
    if paper_row is not None:
        row = {name: np.asarray(r[name]["test_acc"])[paper_row] for name in ("no_bn", "bn")}
        reached = {name: int((acc >= THRESHOLD).sum()) for name, acc in row.items()}
        lines.append(f"  At the paper's init std 0.01: without BN {reached['no_bn']}"
                     f"/{len(c['lrs'])} learning rates reach {THRESHOLD:.0%}, with BN "
                     f"{reached['bn']}/{len(c['lrs'])}. (A PyTorch run of "
                     f"this net on the same subset: without BN lr 0.1 stays at chance for "
                     f"10,000 steps; with BN every lr from 0.1 to 2 works.)")
    return "\n".join(lines)


def plot(r, path):
    """Two heatmaps of test accuracy over (init std, lr), cells at >= 90% outlined."""
    plt = pyplot()
    c = r["config"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"wspace": 0.3})
    for ax, (name, label) in zip(axes, (("no_bn", "without BN"), ("bn", "with BN"))):
        acc = np.asarray(r[name]["test_acc"], dtype=float)
        im = ax.imshow(acc, vmin=0.0, vmax=1.0, cmap="viridis", origin="lower", aspect="auto")
        for i in range(acc.shape[0]):
            for j in range(acc.shape[1]):
                good = acc[i, j] >= THRESHOLD
                ax.text(j, i, f"{acc[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="black" if acc[i, j] > 0.6 else "white",
                        fontweight="bold" if good else "normal")
                if good:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                               edgecolor="red", lw=2))
        ax.set_xticks(range(len(c["lrs"])), [f"{v:g}" for v in c["lrs"]])
        ax.set_yticks(range(len(c["init_stds"])), [f"{v:g}" for v in c["init_stds"]])
        ax.set_xlabel("learning rate")
        ax.set_ylabel("weight init std")
        ax.set_title(f"{label}: {r[name]['reached']}/{r[name]['n_settings']} settings "
                     f">= {THRESHOLD:.0%} (red)")
    fig.colorbar(im, ax=axes, label=f"test accuracy after {c['steps']:,} steps")
    fig.suptitle(f"{TITLE}: 784-100-100-100-10 sigmoid MLP, MNIST 5k, SGD batch "
                 f"{c['batch_size']}, {c['steps']:,} steps per cell", fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
