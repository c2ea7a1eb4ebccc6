"""Batch norm when the batch is split over MPI ranks: one process vs SyncBatchNorm vs per-rank BN.

The paper's MNIST network (784-100-100-100-10 sigmoid with BN, SGD) is trained three ways from
the same weights on the same sequence of global batches:

* ``single``: one process, the whole global batch (the reference);
* ``sync``: R ranks, SyncBatchNorm: statistics over the global batch, so the same training as
  the reference up to round-off;
* ``local``: R ranks, each rank's BatchNorm1d normalizing its own share (PyTorch's BatchNorm under
  DistributedDataParallel): statistics of G/R examples, noisier as the share shrinks.

Two settings: the paper's batch of 60 over 2 ranks (30 each) and a batch of 8 over 4 ranks (2
each, where a share's normalized values are about ±1 whatever the inputs). ``run_setting`` runs
one setting (the ranks under mpiexec); ``python -m tinygrad_bn.experiments.distributed_bn`` is
the entry of each rank.
"""
import argparse
import json
import os
import sys

import numpy as np

from .mlp import build_mlp, train_run

SETTINGS = ({"batch": 60, "ranks": 2}, {"batch": 8, "ranks": 4})
VARIANTS = ("single", "sync", "local")
LABELS = {"single": "one process", "sync": "SyncBatchNorm", "local": "per-rank BatchNorm1d"}
COLORS = {"single": "#333333", "sync": "#1f77b4", "local": "#d62728"}
# The paper's mnist5k learning rate (2.0 at batch 60), scaled with the batch for batch 8.
BASE_LR, BASE_BATCH = 2.0, 60


def data_parallel(model, sync_bn=False):
    """``model`` (with SyncBatchNorm in place of BatchNorm1d if ``sync_bn``) wrapped for
    data-parallel training over the MPI ranks; starts MPI if needed."""
    from .. import distributed, nn
    distributed.init()
    if sync_bn:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return distributed.DistributedDataParallel(model)


def describe(distributed):
    """What a results file records about a data-parallel run."""
    from .. import distributed as dist
    return {"ranks": dist.world_size(), "sync_bn": bool(distributed.get("sync_bn"))}


def one_run(data, variant, batch, steps, lr=None, eval_every=25, seed=0):
    """Train one variant (``single`` in this process; ``sync``/``local`` on every rank of an
    mpiexec run) and return train_run's curves (empty on ranks other than 0) and, as "state",
    the final parameters."""
    lr = BASE_LR * batch / BASE_BATCH if lr is None else lr
    model = build_mlp(bn=True, n_in=data[0].shape[1], seed=seed)
    ddp = None if variant == "single" else data_parallel(model, sync_bn=variant == "sync")
    result = train_run(model, data, steps, lr, batch_size=batch, eval_every=eval_every, seed=seed,
                       data_parallel=ddp, compiled=ddp is None)
    result.update(variant=variant, batch=batch, lr=lr,
                  ranks=1 if ddp is None else _world_size(),
                  state={k: p.data.copy() for k, p in model.named_parameters()})
    return result


def _world_size():
    from .. import distributed
    return distributed.world_size()


def run_setting(data_name, batch, ranks, steps, eval_every=25, seed=0, timeout=1800):
    """The three variants of one setting: ``single`` here, the others as ``ranks`` MPI ranks
    (one mpiexec run for both). Returns {variant: curves}."""
    from .. import data as datasets
    from ..distributed import check_divides, run_ranks
    check_divides(batch, ranks)
    from .threads import blas_threads
    data = datasets.load_dataset(data_name, log=lambda *a: None)
    with blas_threads(1):  # as each rank has
        single = one_run(data, "single", batch, steps, None, eval_every, seed)
    runs = {"single": _curves(single)}
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ranks.json")
        proc = run_ranks(ranks, [sys.executable, "-m", __name__, "--dataset", data_name,
                                 "--batch", str(batch), "--steps", str(steps),
                                 "--eval-every", str(eval_every), "--seed", str(seed),
                                 "--json", path], timeout=timeout, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the {ranks}-rank run failed (exit {proc.returncode}):\n"
                               f"{proc.stderr[-2000:]}")
        with open(path) as f:
            runs.update(json.load(f))
        for v in ("sync", "local"):  # how far the final weights are from one process's
            with np.load(os.path.join(tmp, f"{v}.npz")) as state:
                runs[v]["weight_gap"] = max(_relative_gap(state[k], a)
                                            for k, a in single["state"].items())
    return runs


def _relative_gap(a, b):
    """max |a - b| / max(1, |b|): absolute below 1, relative above."""
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def _curves(result):
    keep = ("steps", "test_acc", "train_loss", "final_test_acc", "diverged", "seconds", "variant",
            "batch", "lr", "ranks")
    return {k: _plain(result[k]) for k in keep}


def _plain(x):
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def run_all(data_name="mnist5k", steps=(600, 600), eval_every=25, seed=0, log=print):
    """Every setting of SETTINGS (``steps`` per setting): {"config", "settings": [...]}."""
    settings = []
    for setting, n in zip(SETTINGS, steps):
        log(f"global batch {setting['batch']} over {setting['ranks']} ranks, {n} steps ...")
        runs = run_setting(data_name, setting["batch"], setting["ranks"], n, eval_every, seed)
        settings.append(dict(setting, steps=n, runs=runs, differences=differences(runs)))
    return {"schema": "tinygrad_bn.distributed_bn/1",
            "config": {"dataset": data_name, "eval_every": eval_every, "seed": seed,
                       "network": "784-100-100-100-10 sigmoid, BN, SGD, weights N(0, 0.01²)"},
            "settings": settings}


def differences(runs):
    """Per data-parallel variant: its test accuracy minus the single process's, at the end and
    the largest over the evaluations (the same steps in every run)."""
    ref = np.asarray(runs["single"]["test_acc"])
    out = {}
    for v in ("sync", "local"):
        acc = np.asarray(runs[v]["test_acc"])
        n = min(len(acc), len(ref))
        gap = acc[:n] - ref[:n]
        out[v] = {"final": float(gap[-1]), "max_abs": float(np.max(np.abs(gap))),
                  "mean": float(np.mean(gap)), "weight_gap": runs[v].get("weight_gap")}
    return out


def summary_rows(results):
    """One table row per (setting, variant): final accuracy and the gaps to one process."""
    rows = []
    for s in results["settings"]:
        for v in VARIANTS:
            r = s["runs"][v]
            d = s["differences"].get(v)
            rows.append([f"{s['batch']} over {s['ranks']} ranks", LABELS[v],
                         f"{r['final_test_acc']:.4f}",
                         "—" if d is None else f"{d['final']:+.4f}",
                         "—" if d is None else f"{d['max_abs']:.4f}",
                         "—" if d is None else f"{d['weight_gap']:.2g}"])
    return {"columns": ["global batch", "batch norm", "final test accuracy",
                        "minus one process", "largest |gap| on the curve",
                        "largest weight gap at the end"], "rows": rows}


def plot(results, path):
    """Test accuracy vs step, one panel per setting; writes the PNG and returns ``path``."""
    from .plots import pyplot
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results["settings"]), figsize=(11, 3.8), squeeze=False)
    for ax, s in zip(axes[0], results["settings"]):
        for v in VARIANTS:
            r = s["runs"][v]
            ax.plot(r["steps"], r["test_acc"], color=COLORS[v], label=LABELS[v],
                    linestyle="--" if v == "sync" else "-", linewidth=1.4)
        per = s["batch"] // s["ranks"]
        ax.set_title(f"global batch {s['batch']} over {s['ranks']} ranks ({per} per rank)")
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(max(0.0, min(min(s["runs"][v]["test_acc"][1:] or [0]) for v in VARIANTS)
                        - 0.02), 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def conclusion(results):
    """The measured differences in two sentences per setting."""
    lines = []
    for s in results["settings"]:
        d = s["differences"]
        lines.append(
            f"Global batch {s['batch']} over {s['ranks']} ranks: SyncBatchNorm's test accuracy "
            f"ends {d['sync']['final']:+.4f} from one process's (largest gap on the curve "
            f"{d['sync']['max_abs']:.4f}; final weights within {d['sync']['weight_gap']:.1g}: "
            f"float32 sums taken in another order); per-rank BatchNorm1d's ends "
            f"{d['local']['final']:+.4f} (largest gap {d['local']['max_abs']:.4f}; weights "
            f"apart by up to {d['local']['weight_gap']:.2g}).")
    return "\n".join(lines)


def write_outputs(results, out_dir):
    """distributed_bn.json, distributed_bn.png and the report section; returns {kind: path}."""
    from .. import report
    from .mnist_bn import jsonable
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "distributed_bn.json"),
             "figure": plot(results, os.path.join(out_dir, "distributed_bn.png"))}
    with open(paths["json"], "w") as f:
        json.dump(jsonable(results), f, separators=(",", ":"))
    paths["section"] = report.add_section(
        out_dir, "distributed_bn", "Batch norm over MPI ranks: whose batch statistics?",
        text=SECTION_TEXT + "\n\n" + conclusion(results), image="distributed_bn.png",
        table=summary_rows(results), order=60)
    return paths


SECTION_TEXT = (
    "The paper's MNIST network trained data-parallel: each global batch is split over MPI ranks, "
    "gradients are averaged over the ranks after every backward pass. With SyncBatchNorm the mean "
    "and variance are summed over the ranks by a differentiable all_reduce, whose derivative is "
    "again an all_reduce, so the backward pass through the statistics comes from the chain rule; "
    "training is then the one-process training up to float32 round-off. With per-rank "
    "BatchNorm1d each rank normalizes by its own share: 30 examples are nearly as good as 60, "
    "but with 2 examples per rank the normalized values are about ±1 whatever the input, and "
    "the network learns far less. Same initial weights and batch order in every run.")


def _rank_main(argv=None):
    """One rank of ``run_setting``: the ``sync`` and ``local`` runs; rank 0 writes the JSON."""
    from .. import data as datasets
    from .. import distributed
    from .threads import blas_threads
    p = argparse.ArgumentParser(description="one rank of the distributed batch-norm experiment")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    distributed.init()
    data = datasets.load_dataset(args.dataset, log=lambda *a: None)
    with blas_threads(1):
        runs = {v: one_run(data, v, args.batch, args.steps, None, args.eval_every, args.seed)
                for v in ("sync", "local")}
    if distributed.rank() == 0:
        with open(args.json, "w") as f:
            json.dump({v: _curves(r) for v, r in runs.items()}, f)
        for v, r in runs.items():
            np.savez(os.path.join(os.path.dirname(args.json), f"{v}.npz"), **r["state"])


if __name__ == "__main__":
    _rank_main()
