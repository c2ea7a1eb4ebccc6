"""Starting N ranks: the mpiexec command line, found where the [distributed] extra puts it."""
import os
import shutil
import subprocess
import sys

# Harmless for MPICH (the implementation this project installs); they let an Open MPI mpiexec
# found first on PATH run as root and start more ranks than cores, as MPICH does by default.
_OPEN_MPI_PERMISSIONS = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                         "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def find_mpiexec():
    """The mpiexec beside this Python (where the mpich wheel installs it, matching the MPI
    library mpi4py loads), else the one on PATH, else None."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("mpiexec")


def mpiexec_command(ranks, args):
    """``mpiexec -n ranks args...``; RuntimeError saying what to install if mpiexec is missing."""
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise RuntimeError("mpiexec not found: install MPI with pip install "
                           "'tinygrad_bn[distributed]' (mpi4py and MPICH's wheel, which brings "
                           "mpiexec), or your system's MPICH or Open MPI")
    return [mpiexec, "-n", str(int(ranks)), *args]


def run_ranks(ranks, args, timeout=None, env=None, **kwargs):
    """Run command ``args`` as ``ranks`` MPI ranks and wait; returns the CompletedProcess.

    ``env``: variables added to this process's environment. Each rank gets one BLAS thread
    unless told otherwise: the ranks are the parallelism (and share the cores).
    """
    env = dict(os.environ, **_OPEN_MPI_PERMISSIONS, **(env or {}))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return subprocess.run(mpiexec_command(ranks, args), env=env, timeout=timeout, **kwargs)
