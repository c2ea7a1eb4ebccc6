"""``tinygrad-bn train --ranks N``: the experiment data-parallel over N MPI ranks.

Started by hand (``tinygrad-bn train --ranks 2``), this process checks the flags and runs
``mpiexec -n 2`` on ``python -m tinygrad_bn.commands.train_ranks ARGS``, the parsed arguments
as JSON, so every rank sees exactly what was parsed here. Started under mpiexec
(``mpiexec -n 2 python -m tinygrad_bn train``), each process is one rank. Only rank 0 shows
progress and writes files; an error on any rank ends them all.
"""
import argparse
import json
import sys

from ..experiments.mnist_bn import DEFAULTS

PROG = "tinygrad-bn train"


def use_ranks(args):
    """Whether this train command is (or must start) a multi-rank run."""
    from ..distributed.comm import launched_by_mpiexec
    return args.ranks != 1 or args.sync_bn or launched_by_mpiexec()


def check_ranks(ranks):
    """The error message for a bad --ranks, or None."""
    from ..distributed.data_parallel import check_divides
    if ranks < 1:
        return f"--ranks must be at least 1, got {ranks}"
    try:
        check_divides(DEFAULTS["batch_size"], ranks)
    except ValueError as e:
        return str(e)
    return None


def run_with_ranks(args):
    from ..distributed.comm import launched_by_mpiexec
    problem = check_ranks(args.ranks)
    if problem is None and args.sync_bn and args.no_bn:
        problem = "--sync-bn needs a network with batch norm; drop --no-bn"
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 2
    if launched_by_mpiexec():
        return _run_rank(args)
    return _launch(args)


def _launch(args):
    from ..distributed.launch import run_ranks
    rank_args = dict(vars(args), launched_ranks=args.ranks)
    try:
        proc = run_ranks(args.ranks, [sys.executable, "-m", __name__, json.dumps(rank_args)])
    except RuntimeError as e:  # mpiexec missing
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    return proc.returncode


def _run_rank(args):
    from .. import distributed
    from ..data import DataUnavailableError, DownloadError, IDXFormatError
    from ..experiments.optional import MissingDependencyError
    from .train import check_requirements, train_and_write
    distributed.init()
    ranks, main = distributed.world_size(), distributed.rank() == 0
    expected = getattr(args, "launched_ranks", None) or (args.ranks if args.ranks != 1 else None)
    problem = check_ranks(ranks)
    if problem is None and expected is not None and expected != ranks:
        problem = f"--ranks {expected} given, but mpiexec started {ranks} ranks"
    if problem is not None:  # every rank finds it: rank 0 says it and ends them all
        if main:
            distributed.abort(f"{PROG}: {problem}", 2)
        distributed.comm.comm().Barrier()  # ended there by rank 0's abort
    if not main:
        args.no_progress = True
    bn = "SyncBatchNorm (statistics of the whole batch)" if args.sync_bn else \
        "per-rank BatchNorm1d (statistics of each rank's share)"
    log = print if main else _quiet
    log(f"{ranks} ranks, a global batch of {DEFAULTS['batch_size']} "
        f"({DEFAULTS['batch_size'] // ranks} per rank), {bn}")
    try:
        check_requirements(args.dataset, progress=not args.no_progress, figure=main)
        _, paths = train_and_write(args, args.out, log=log,
                                   distributed={"sync_bn": args.sync_bn}, write=main)
    except (MissingDependencyError, DataUnavailableError, DownloadError, IDXFormatError) as e:
        distributed.abort(f"{PROG}: {e}", 2)  # every rank must stop, not wait for this one
    if main:
        print("\nwrote " + ", ".join(paths[k] for k in ("json", "figure", "summary")))
    return 0


def _quiet(*args, **kwargs):
    pass


if __name__ == "__main__":
    sys.exit(_run_rank(argparse.Namespace(**json.loads(sys.argv[1]))))
