"""One BLAS thread for the experiments: their matrices are small and the machines shared."""
import contextlib
import functools
import os


@contextlib.contextmanager
def blas_threads(n=1):
    """Limit BLAS to ``n`` threads inside the block, if threadpoolctl is installed.

    The matrices here are small ((60, 784) @ (784, 100)), so threads gain little, and on a
    shared 2-core machine OpenBLAS threads spin waiting for each other: one such matmul took
    48 ms instead of 0.4 ms, and 1,500 training steps 30-80 s instead of 2 s (measured). An
    explicit OPENBLAS_NUM_THREADS or OMP_NUM_THREADS in the environment wins.
    """
    if os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"):
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def one_blas_thread(run):
    """Decorator: ``run`` under ``blas_threads(1)``, for the demos as well as the CLI."""
    @functools.wraps(run)
    def wrapped(*args, **kwargs):
        with blas_threads(1):
            return run(*args, **kwargs)
    return wrapped
