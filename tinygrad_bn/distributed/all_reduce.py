"""all_reduce as a primitive: y = sum over ranks of x, whose derivative is itself an all-reduce.

Every rank gets the same y = x_0 + ... + x_{R-1}. What data-parallel training differentiates is
the sum of the ranks' own losses, L = L_0(y) + ... + L_{R-1}(y), so dL/dx_s = sum_r dL_r/dy for
every s: the gradients arriving at y on each rank, summed over the ranks — the same operation.
Written with the op itself when the gradient is a Tensor, so a recorded backward (create_graph)
records it too and second derivatives come out.

Collectives must be called by every rank in the same order: the backward pass visits nodes in
creation order, the same on every rank when every rank runs the same program.
"""
from ..jit.tape import JitError, Tape
from ..ops import Op
from ..tensor import Tensor, apply_op
from .comm import allreduce_array


def _all_reduce_vjp(g, out, x):
    if isinstance(g, Tensor):  # a recorded backward: the derivative is recorded as well
        return all_reduce(g)
    return allreduce_array(g)


ALL_REDUCE = Op("all_reduce", allreduce_array, _all_reduce_vjp, reads=())


def all_reduce(t):
    """Sum over ranks of Tensor ``t`` (the same shape and dtype on every rank), differentiable."""
    if Tape.current() is not None:
        # jit calls a step several ways (two captures, a trial, replays); every rank would have
        # to make the same calls in the same order, or the collectives hang. Not checked yet.
        raise JitError("all_reduce inside a jit step is not supported: run the step eagerly "
                       "(SyncBatchNorm and data-parallel training do not use jit yet)")
    return apply_op(ALL_REDUCE, t)
