"""The MPI communicator: start-up, rank and size, array collectives, and ending every rank on an
error.

mpi4py is imported only by ``init()``, so ``import tinygrad_bn.distributed`` works without it
(the ``[distributed]`` extra installs mpi4py and MPICH). Under ``mpiexec -n N`` every process is
one rank of the world; a plain ``python`` process is a world of one (MPI's singleton start).
"""
import os
import sys
import time

import numpy as np

# Set by the launchers this project meets: MPICH's Hydra (PMI_*), Open MPI (OMPI_*), PMIx.
_LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")

_STATE = {"comm": None, "MPI": None}


def launched_by_mpiexec():
    """Whether this process was started by mpiexec (as one of possibly several ranks)."""
    return any(v in os.environ for v in _LAUNCHER_VARIABLES)


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError(
            f"tinygrad_bn.distributed needs mpi4py and an MPI library ({e}); install them with "
            f"pip install 'tinygrad_bn[distributed]' (mpi4py and MPICH's wheel)") from None
    return MPI


def init(abort_on_error=True):
    """Start MPI (once) and return the world communicator.

    With ``abort_on_error`` an uncaught exception on any rank prints the error with the rank's
    number and calls MPI_Abort, which ends every rank: the others would otherwise wait forever
    in their next collective for a rank that is gone.
    """
    if _STATE["comm"] is None:
        MPI = _import_mpi()
        _STATE["MPI"], _STATE["comm"] = MPI, MPI.COMM_WORLD
        if abort_on_error and _STATE["comm"].Get_size() > 1:
            sys.excepthook = _abort_all_ranks
    return _STATE["comm"]


def is_initialized():
    return _STATE["comm"] is not None


def comm():
    """The world communicator; raises if ``init()`` was not called."""
    if _STATE["comm"] is None:
        raise RuntimeError("tinygrad_bn.distributed is not initialized: call "
                           "tinygrad_bn.distributed.init() first (under mpiexec -n N for N ranks)")
    return _STATE["comm"]


def rank():
    """This process's rank, 0 .. world_size() - 1 (0 before init())."""
    return _STATE["comm"].Get_rank() if _STATE["comm"] is not None else 0


def world_size():
    """The number of ranks (1 before init())."""
    return _STATE["comm"].Get_size() if _STATE["comm"] is not None else 1


def abort(message, code=1):
    """Print ``message`` (prefixed with the rank) and end every rank with exit code ``code``."""
    sys.stderr.write(f"[rank {rank()}] {message}\n")
    sys.stderr.flush()
    if _STATE["comm"] is not None and world_size() > 1:
        _abort_after_output(code)
    sys.exit(code)


def _abort_all_ranks(kind, value, tb):
    import traceback
    sys.stderr.write(f"[rank {rank()}] " + "".join(traceback.format_exception(kind, value, tb)))
    sys.stderr.flush()
    _abort_after_output(1)


def _abort_after_output(code):
    # mpiexec forwards each rank's output through a pipe and stops forwarding when it ends the
    # job: a moment first, so the message just written reaches the terminal.
    time.sleep(0.2)
    _STATE["comm"].Abort(code)


def wait_for_all_ranks(spin_seconds=2e-4, poll_seconds=5e-5):
    """Return once every rank has called this: polling for ``spin_seconds``, then asleep
    between polls.

    MPI waits by polling, which keeps a core busy: on a machine with more runnable processes
    than cores, a rank that arrives long before the others would take CPU time from the ranks
    it waits for. Ranks that arrive together pay no sleep.
    """
    request = comm().Ibarrier()
    start = time.perf_counter()
    while not request.Test():
        if time.perf_counter() - start > spin_seconds:
            time.sleep(poll_seconds)


def allreduce_array(a):
    """Σ over ranks of ``a`` (the same shape and dtype on every rank), as a fresh array."""
    a = _contiguous(a)
    out = np.empty(a.shape, a.dtype)
    comm().Allreduce(a, out)
    return out


def allreduce_inplace(a):
    """Σ over ranks of the contiguous array ``a``, written over ``a``."""
    comm().Allreduce(_STATE["MPI"].IN_PLACE, a)
    return a


def broadcast_inplace(a, root=0):
    """Overwrite the contiguous array ``a`` with root's copy of it."""
    comm().Bcast(a, root=root)
    return a


def _contiguous(a):
    a = np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")

