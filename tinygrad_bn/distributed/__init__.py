"""Data-parallel training over MPI: a differentiable all_reduce, SyncBatchNorm's default group,
gradient averaging and the mpiexec launcher. Sits on top of the core, which never imports it."""
from .all_reduce import ALL_REDUCE, all_reduce
from .comm import abort, is_initialized, launched_by_mpiexec, rank, world_size
from .data_parallel import (
    DistributedDataParallel,
    average_gradients,
    broadcast_state,
    check_divides,
    mean_over_ranks,
    shard,
)
from .group import WORLD, init
from .launch import find_mpiexec, mpiexec_command, run_ranks

__all__ = ["init", "is_initialized", "rank", "world_size", "all_reduce", "ALL_REDUCE", "WORLD",
           "DistributedDataParallel", "average_gradients", "broadcast_state", "shard",
           "check_divides", "mean_over_ranks", "abort", "launched_by_mpiexec",
           "find_mpiexec", "mpiexec_command", "run_ranks"]
