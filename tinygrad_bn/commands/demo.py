"""tinygrad-bn demo: the paper's experiment, the batch-norm graph and the gradient checks in one
folder, with a self-contained report.html. Each part that cannot run leaves a note instead."""
import argparse
import json
import os
import sys
import time

from .. import report
from . import train
from .args import output_dir, positive_int, seed_list

HELP = "run the main demo: MNIST with and without batch norm, graph, gradchecks, report.html"


def add_arguments(parser):
    parser.add_argument("--out", type=output_dir, default="out", metavar="DIR",
                        help="output folder (default out); report.html is written into it")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {train.QUICK['steps']} steps, "
                             f"{len(train.QUICK['seeds'])} seeds")
    parser.add_argument("--steps", type=positive_int, metavar="N",
                        help="training steps per run (default 10,000)")
    parser.add_argument("--seeds", type=seed_list, default=None, metavar="S,S,...",
                        help="the seeds, one run per seed and variant (default 0,1,2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                        help="train N runs at once (default: CPU cores, at most 2)")


def run(args):
    out = args.out
    os.makedirs(out, exist_ok=True)
    _clear_own_notes(out)
    t0 = time.perf_counter()
    status = {}
    try:
        status["experiment"] = _experiment(args, out)
        status["graph"] = _graph(out)
        status["gradcheck"] = _gradcheck(out)
    except KeyboardInterrupt:  # Ctrl-C: a report of what finished, then exit 130
        path = report.build_report(out)
        print(f"\ntinygrad-bn demo: interrupted; report of what finished: "
              f"{os.path.abspath(path)}", file=sys.stderr)
        return 130
    path = report.build_report(out)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    for part, (state, text) in status.items():
        print(f"  {part:<11}{state}: {text}")
    print(f"\nreport: {os.path.abspath(path)}")
    # A part that could not run (missing package or binary) is a note in the report; a part
    # that ran and found a problem (a failed gradient check) makes the exit code non-zero.
    return 0 if status["experiment"][0] == "ok" and status["gradcheck"][0] != "FAILED" else 1


def _experiment(args, out):
    from ..data import DataUnavailableError
    from ..experiments.optional import MissingDependencyError
    targs = argparse.Namespace(dataset="mnist5k", data_dir=None, download=False,
                               steps=args.steps, seeds=args.seeds, lr=None, no_bn=False,
                               bn_only=False, eval_every=None, quick=args.quick,
                               no_progress=args.no_progress, jobs=args.jobs)
    print("1/3 the MNIST experiment (Ioffe & Szegedy 2015, Fig. 1)")
    try:
        train.check_requirements("mnist5k", progress=not args.no_progress)
        results, paths = train.train_and_write(targs, out)
    except (MissingDependencyError, DataUnavailableError) as e:
        _note(out, "experiment", "The MNIST experiment did not run", str(e))
        print(f"tinygrad-bn demo: {e}", file=sys.stderr)
        return "SKIPPED", str(e)
    return "ok", paths["figure"]


def _graph(out):
    print("\n2/3 the batch-norm computation graph")
    try:
        from ..viz import render_batchnorm_graph
    except ImportError as e:  # the renderer (or the graphviz package) is not there
        return _skip(out, "graph", "Computation graph not rendered",
                     f"the graph renderer could not be imported ({e}); "
                     f"pip install graphviz, then run tinygrad-bn demo again")
    written = []
    for name, model in (("bn_graph.svg", "bn"), ("mlp_graph.svg", "mlp")):
        try:
            written.append(render_batchnorm_graph(os.path.join(out, name), model=model))
        except Exception as e:  # noqa: BLE001 - any failure here must not lose the experiment
            return _skip(out, "graph", "Computation graph not rendered",
                         f"{type(e).__name__}: {e}")
    return "ok", ", ".join(written)


def _gradcheck(out):
    print("\n3/3 the gradient checks")
    try:
        from .gradcheck import format_report, full_report
    except ImportError as e:
        return _skip(out, "gradcheck", "Gradient checks not run",
                     f"the gradcheck module could not be imported ({e})")
    try:
        rep = full_report()
    except Exception as e:  # noqa: BLE001 - as above: note it, keep the rest of the demo
        return _skip(out, "gradcheck", "Gradient checks not run", f"{type(e).__name__}: {e}")
    with open(os.path.join(out, report.GRADCHECK_JSON), "w") as f:
        json.dump(rep, f, indent=1)
    text = format_report(rep)
    with open(os.path.join(out, report.GRADCHECK_TXT), "w") as f:
        f.write(text + "\n")
    print(text.splitlines()[-1])
    if rep["passed"]:
        return "ok", "all pass"
    return "FAILED", "; ".join(rep["failures"])


NOTE_PREFIX = "demo-missing-"


def _note(out, part, title, text):
    report.add_section(out, NOTE_PREFIX + part, title, text, order=90, kind="note")


def _skip(out, part, title, text):
    _note(out, part, title, text)
    print(f"  skipped: {text}", file=sys.stderr)
    return "SKIPPED", text


def _clear_own_notes(out):
    """Notes from an earlier run of the demo in the same folder are stale; other sections stay."""
    folder = os.path.join(out, report.SECTIONS_DIR)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(NOTE_PREFIX):
                os.remove(os.path.join(folder, name))
