"""The world as a process group, and ``init()``, which makes it SyncBatchNorm's default."""
from ..nn.sync_batchnorm import SyncBatchNorm
from . import comm
from .all_reduce import all_reduce


class World:
    """The group of every rank, as ``nn.SyncBatchNorm`` uses it: a differentiable sum."""

    def all_reduce(self, t):
        return all_reduce(t)

    def __repr__(self):
        return f"World(size={comm.world_size()})"


WORLD = World()


def init(abort_on_error=True):
    """Start MPI (under ``mpiexec -n N``: N ranks; a plain process: one) and make the world the
    default group of ``nn.SyncBatchNorm``. Returns the mpi4py communicator.

    With ``abort_on_error`` an uncaught exception on any rank ends every rank (MPI_Abort) with
    the error printed, instead of leaving the others waiting in a collective forever.
    """
    world = comm.init(abort_on_error)
    SyncBatchNorm.default_group = WORLD
    return world
