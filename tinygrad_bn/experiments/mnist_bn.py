"""The batch-norm paper's MNIST experiment (Ioffe & Szegedy 2015, section 4.1 and Figure 1).

784-100-100-100-10 sigmoid MLP with and without batch norm, weights N(0, 0.01²), plain SGD at a
constant learning rate, batches of 60, several seeds. ``run_experiment`` returns every curve;
``summarize``/``format_summary`` make the table; ``save_results`` writes the JSON. Numbers only:
``plots`` draws them (and imports this module, never the other way round).
"""
import json
import multiprocessing
import os
import signal

import numpy as np

from .mlp import build_mlp, steps_to_accuracy, train_run

SCHEMA = "tinygrad_bn.mnist_bn/1"
VARIANTS = ("no_bn", "bn")
VARIANT_LABELS = {"no_bn": "without BN", "bn": "with BN"}
THRESHOLDS = (0.90, 0.95)
PERCENTILES = (15, 50, 85)

# The protocol per dataset: learning rate, steps (the paper's 50,000 on full MNIST), and how
# often the test set is evaluated: as often as the PyTorch reference did, so that steps to a
# threshold compare one to one (on full MNIST, 10,000 test images, that is also what keeps
# evaluation a small part of the run).
PRESETS = {
    "mnist5k": {"lr": 2.0, "steps": 10_000, "eval_every": 50},
    "mnist": {"lr": 1.0, "steps": 50_000, "eval_every": 250},
    "fashion": {"lr": 1.0, "steps": 50_000, "eval_every": 250},
}
DEFAULTS = {"hidden": (100, 100, 100), "init_std": 0.01, "activation": "sigmoid",
            "batch_size": 60, "seeds": (0, 1, 2)}

# PyTorch runs of exactly this protocol: mean and sd over 3 seeds; steps to a threshold read
# at the spacing "eval_every". None: no seed reached it; "?": not recorded. On mnist5k,
# benchmarks/pytorch_reference.py (torch 2.13.0, float32, one thread) with the same initial
# weights and batch order as ours; on full MNIST, issue 6's run (its own random numbers).
PYTORCH_REFERENCE = {
    "mnist5k": {"eval_every": 50, "source": "benchmarks/pytorch_reference.py",
                "no_bn": {"final_acc": (0.912, 0.008), "steps_to_90": (2567, 275),
                          "steps_to_95": None},
                "bn": {"final_acc": (0.939, 0.005), "steps_to_90": (650, 87),
                       "steps_to_95": None}},
    "mnist": {"eval_every": 250, "source": "issue 6",
              "no_bn": {"final_acc": (0.9722, 0.0012), "steps_to_90": (4000, "?"),
                        "steps_to_95": "?"},
              "bn": {"final_acc": (0.9804, 0.0011), "steps_to_90": (917, "?"),
                     "steps_to_95": "?"}},
}


def reference_cells(dataset, steps, eval_every):
    """PyTorch's numbers beside a run of this protocol: ({variant: [final acc, steps to 90%,
    steps to 95%] as text}, note), or ({}, note) when no reference applies."""
    ref = PYTORCH_REFERENCE.get(dataset)
    if ref is None or steps != PRESETS[dataset]["steps"]:
        return {}, ""
    cells = {}
    for variant in VARIANTS:
        r = ref[variant]
        row = [f"{r['final_acc'][0]} ± {r['final_acc'][1]}"]
        for key in ("steps_to_90", "steps_to_95"):
            v = r[key]
            row.append("never" if v is None else "not recorded" if v == "?" else
                       f"{v[0]:,}" + (" (sd not recorded)" if v[1] == "?" else f" ± {v[1]:,}"))
        cells[variant] = row
    note = f"PyTorch ({ref['source']}): evaluated every {ref['eval_every']} steps"
    if eval_every != ref["eval_every"]:
        note += (f"; this run every {eval_every}, so its steps to a threshold do not compare "
                 f"(run with --eval-every {ref['eval_every']})")
    return cells, note


def run_experiment(data, dataset="mnist5k", steps=None, lr=None, seeds=DEFAULTS["seeds"],
                   variants=VARIANTS, eval_every=None,
                   batch_size=DEFAULTS["batch_size"], hidden=DEFAULTS["hidden"],
                   init_std=DEFAULTS["init_std"], activation=DEFAULTS["activation"],
                   progress=True, jobs=1, compiled=True, distributed=None):
    """Train every (variant, seed) pair on ``data`` and return {"schema", "config", "runs"}.

    ``steps``, ``lr`` and ``eval_every`` default to ``PRESETS[dataset]``. Both variants of a
    seed share the initial weights and the batch order, so their difference is batch norm alone.
    ``jobs`` > 1 trains that many runs at once in worker processes (one BLAS thread each); every
    run is deterministic, so the results are the same as with ``jobs=1``. ``compiled=False`` builds
    the graph at every step instead of replaying it with ``jit`` (same numbers, slower).
    ``distributed`` ({"sync_bn": bool}, under mpiexec): every run is data-parallel over the MPI
    ranks (see ``experiments.distributed_bn``); only rank 0's results hold curves.
    """
    preset = PRESETS.get(dataset, PRESETS["mnist"])
    steps = preset["steps"] if steps is None else int(steps)
    lr = preset["lr"] if lr is None else float(lr)
    eval_every = preset["eval_every"] if eval_every is None else int(eval_every)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"run_experiment: unknown variants {unknown}; choose from {VARIANTS}")
    config = {"dataset": dataset, "steps": steps, "lr": lr, "seeds": [int(s) for s in seeds],
              "variants": list(variants), "eval_every": eval_every, "batch_size": batch_size,
              "hidden": list(hidden), "init_std": init_std, "activation": activation,
              "optimizer": "SGD (no momentum, constant lr)", "percentiles": list(PERCENTILES),
              "probe": "input to each unit of the last hidden activation, over the test set; "
                       "BN layers use the test set's own batch statistics",
              "n_train": int(len(data[0])), "n_test": int(len(data[2]))}
    if distributed is not None:
        from .distributed_bn import describe
        config["distributed"] = describe(distributed)
        jobs = 1
    settings = dict(steps=steps, lr=lr, batch_size=batch_size, eval_every=eval_every,
                    hidden=hidden, init_std=init_std, activation=activation, compiled=compiled,
                    distributed=distributed)
    pairs = [(seed, variant) for seed in seeds for variant in variants]
    jobs = max(1, min(int(jobs), len(pairs)))
    runs = [None] * len(pairs)  # filled as runs finish, so Ctrl-C keeps the finished ones
    try:
        if jobs == 1 or "fork" not in multiprocessing.get_all_start_methods():
            # (without fork, e.g. on Windows, workers could not share the data cheaply)
            for i, (seed, variant) in enumerate(pairs):
                runs[i] = _one_run(data, seed, variant, settings, progress)
        else:
            _parallel_runs(data, pairs, settings, jobs, progress, runs)
    except KeyboardInterrupt:
        finished = [r for r in runs if r is not None]
        config.update(interrupted=True, runs_planned=len(pairs),
                      variants=[v for v in variants if any(r["variant"] == v for r in finished)])
        raise ExperimentInterrupted({"schema": SCHEMA, "config": config,
                                     "runs": finished}) from None
    return {"schema": SCHEMA, "config": config, "runs": runs}


class ExperimentInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``run_experiment``; ``.results`` holds the runs that had finished."""

    def __init__(self, results):
        super().__init__(f"interrupted after {len(results['runs'])} finished runs")
        self.results = results


def _one_run(data, seed, variant, settings, progress, on_eval=None):
    model = build_mlp(bn=variant == "bn", hidden=settings["hidden"],
                      init_std=settings["init_std"], activation=settings["activation"],
                      n_in=data[0].shape[1], seed=seed)
    ddp = None
    if settings.get("distributed") is not None:
        from .distributed_bn import data_parallel
        ddp = data_parallel(model, **settings["distributed"])
        progress = progress and ddp.rank == 0
    result = train_run(model, data, settings["steps"], settings["lr"],
                       batch_size=settings["batch_size"], eval_every=settings["eval_every"],
                       seed=seed, percentiles=PERCENTILES, progress=progress,
                       label=_label(seed, variant), on_eval=on_eval,
                       compiled=settings["compiled"], data_parallel=ddp)
    result.update(variant=variant, seed=int(seed))
    for t in THRESHOLDS:
        result[f"steps_to_{round(t * 100)}"] = steps_to_accuracy(
            result["steps"], result["test_acc"], t)
    return result


def _label(seed, variant):
    return f"{VARIANT_LABELS[variant]}, seed {seed}"


# Handed to forked workers by inheritance: the data set (rather than pickled once per run) and
# the queue on which they report each evaluation for the parent's progress bars.
_WORKER_DATA = None
_WORKER_QUEUE = None


def _worker_init():
    # Ctrl-C reaches every process of the terminal's group: the parent alone handles it (it
    # keeps the finished runs and terminates the workers), so no worker prints a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker(index, seed, variant, settings):
    from .threads import blas_threads

    def report(step, loss, acc):
        _WORKER_QUEUE.put((index, step, loss, acc))
    with blas_threads(1):  # one thread per process: the processes are the parallelism
        return _one_run(_WORKER_DATA, seed, variant, settings, progress=False,
                        on_eval=report if _WORKER_QUEUE is not None else None)


def _parallel_runs(data, pairs, settings, jobs, progress, runs):
    """The runs in ``jobs`` forked worker processes, each result stored into ``runs[i]`` as it
    arrives; the parent shows each run's progress from the time it starts."""
    import queue as queue_module

    from .progress import RunBoard
    global _WORKER_DATA, _WORKER_QUEUE
    ctx = multiprocessing.get_context("fork")
    _WORKER_DATA, _WORKER_QUEUE = data, ctx.Queue() if progress else None
    board = RunBoard(settings["steps"], [_label(s, v) for s, v in pairs]) if progress else None
    pool = ctx.Pool(jobs, initializer=_worker_init)
    try:
        pending = {i: pool.apply_async(_worker, (i, seed, variant, settings))
                   for i, (seed, variant) in enumerate(pairs)}
        while pending:
            if board is None:
                next(iter(pending.values())).wait(0.2)
            else:
                try:
                    board.report(*_WORKER_QUEUE.get(timeout=0.2))
                except queue_module.Empty:
                    pass
            for i in [i for i, r in pending.items() if r.ready()]:
                runs[i] = pending.pop(i).get()  # a worker's exception is raised here
                if board is not None:
                    board.finish(i, runs[i])
        pool.close()
    finally:  # done, failed or interrupted: no worker outlives this call
        if board is not None:
            board.close_all()
        pool.terminate()
        pool.join()
        _WORKER_DATA = _WORKER_QUEUE = None


def unit_drift(percentiles):
    """Per unit: how far the median wandered, in units of its final 15–85 percentile width.

    drift_u = (max_t p50_u(t) - min_t p50_u(t)) / (p85_u(T) - p15_u(T)), t over evaluations
    after the first (so the jump away from the initialization is included, the init is not).
    """
    p = np.asarray(percentiles, dtype=np.float64)[1:] if len(percentiles) > 1 else \
        np.asarray(percentiles, dtype=np.float64)
    width = np.maximum(p[-1, 2] - p[-1, 0], 1e-12)
    return (p[:, 1].max(axis=0) - p[:, 1].min(axis=0)) / width


def distance_to_final(percentiles):
    """(evals, units): how far each unit's input distribution still is from where it ends,
    mean_k |p_k,u(t) - p_k,u(T)| / (p85_u(T) - p15_u(T)) over the percentiles k (15, 50, 85):
    moves of the centre and changes of the spread both count, in units of the final width."""
    p = np.asarray(percentiles, dtype=np.float64)
    width = np.maximum(p[-1, 2] - p[-1, 0], 1e-12)
    return np.abs(p - p[-1]).mean(axis=1) / width


def typical_unit(percentiles):
    """The unit whose drift is the median drift: a fair 'typical sigmoid' to plot."""
    drift = unit_drift(percentiles)
    return int(np.argsort(drift)[len(drift) // 2])


def summarize(results):
    """Per variant: final accuracy and steps to each threshold, mean ± sd over seeds (ddof=1)."""
    summary = {}
    for variant in results["config"]["variants"]:
        runs = [r for r in results["runs"] if r["variant"] == variant]
        row = {"n_seeds": len(runs),
               "final_acc": _mean_sd([r["final_test_acc"] for r in runs]),
               "median_unit_drift": float(np.median(
                   [np.median(unit_drift(r["percentiles"])) for r in runs])),
               "seconds_per_run": float(np.mean([r["seconds"] for r in runs]))}
        for t in THRESHOLDS:
            key = f"steps_to_{round(t * 100)}"
            reached = [r[key] for r in runs if r[key] is not None]
            row[key] = _mean_sd(reached)
            row[key]["reached"] = len(reached)
        summary[variant] = row
    return summary


def _mean_sd(values):
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"mean": None, "sd": None}
    sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "sd": sd}


def format_summary(summary, dataset=None, steps=None, eval_every=None):
    """The summary as a text table, with PyTorch's rows under ours when we have them."""
    def cells_line(label, cells):
        return f"{label:12} " + " ".join(f"{c:>16}" for c in cells)
    lines = [f"{'':12} {'final test acc':>16} {'steps to 90%':>16} {'steps to 95%':>16}"]
    for variant, row in summary.items():
        n = row["n_seeds"]
        cells = [_fmt(row["final_acc"], "{:.4f}")]
        for key in ("steps_to_90", "steps_to_95"):
            cell = _fmt(row[key], "{:,.0f}")
            if row[key]["reached"] < n:
                cell += f" ({row[key]['reached']}/{n})"
            cells.append(cell)
        lines.append(cells_line(VARIANT_LABELS[variant], cells))
    reference, note = reference_cells(dataset, steps, eval_every)
    if reference:
        lines.append(note + ":")
        lines += [cells_line(VARIANT_LABELS[v], reference[v]) for v in summary if v in reference]
    n = max(r["n_seeds"] for r in summary.values())
    lines.append(f"mean ± sd over {n} seed{'s' if n != 1 else ''}; "
                 f"(k/n) = only k of n seeds reached the threshold")
    return "\n".join(lines)


def _fmt(stat, pattern):
    if stat["mean"] is None:
        return "never"
    return f"{pattern.format(stat['mean'])} ± {pattern.format(stat['sd'])}"


def save_results(results, out_dir, name="mnist_bn.json"):
    """Write ``results`` (plus its summary) as JSON into ``out_dir``; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    doc = dict(results, summary=summarize(results))
    # 4 decimals are plenty for sigmoid inputs of order 1 and keep the file a few MB, not ten.
    doc["runs"] = [dict(r, percentiles=np.round(np.asarray(r["percentiles"], np.float64), 4))
                   for r in results["runs"]]
    path = os.path.join(out_dir, name)
    with open(path, "w") as f:
        json.dump(jsonable(doc), f, separators=(",", ":"), allow_nan=False)
    return path


def load_results(path):
    """Read a JSON written by ``save_results``; percentiles come back as ndarrays."""
    with open(path) as f:
        doc = json.load(f)
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {doc.get('schema')!r}, expected {SCHEMA!r}")
    for run in doc["runs"]:
        run["percentiles"] = np.array(run["percentiles"], dtype=np.float64)
    return doc


def jsonable(x):
    """Arrays to lists, numpy scalars to Python, NaN/inf to None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_outputs(results, out_dir):
    """The JSON and the summary table (text); returns {kind: path}. The figure is
    ``plots.plot_figure``'s."""
    paths = {"json": save_results(results, out_dir)}
    cfg = results["config"]
    table = format_summary(summarize(results), cfg["dataset"], cfg["steps"], cfg["eval_every"])
    paths["summary"] = os.path.join(out_dir, "summary.txt")
    with open(paths["summary"], "w") as f:
        f.write(table + "\n")
    return paths
