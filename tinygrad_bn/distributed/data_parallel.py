"""Data parallelism: every rank holds the whole model and a share of each batch.

Rank 0's parameters and buffers are broadcast at the start, so every rank begins identical;
after each backward the gradients are summed over the ranks in a few large messages (buckets,
as PyTorch's DistributedDataParallel does) and divided by the number of ranks. Each rank then
takes the same optimizer step and the ranks stay bit-identical.
"""
import numpy as np

from ..jit.tape import JitError, Tape
from ..nn.module import Module
from ..tensor import Tensor
from .comm import allreduce_inplace, broadcast_inplace, rank, wait_for_all_ranks, world_size

# PyTorch's default bucket cap: one message per 25 MB of gradients.
BUCKET_BYTES = 25 * 2 ** 20


def _buckets(arrays, bucket_bytes):
    """Indices of ``arrays`` grouped into runs of one dtype and at most ``bucket_bytes`` each
    (an array larger than that is a bucket of its own)."""
    buckets, current, size = [], [], 0
    for i, a in enumerate(arrays):
        if current and (a.dtype != arrays[current[0]].dtype or size + a.nbytes > bucket_bytes):
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += a.nbytes
    if current:
        buckets.append(current)
    return buckets


def _flatten(arrays, bucket):
    flat = np.empty(sum(arrays[i].size for i in bucket), arrays[bucket[0]].dtype)
    offset = 0
    for i in bucket:
        n = arrays[i].size
        flat[offset:offset + n] = arrays[i].reshape(-1)
        offset += n
    return flat


def _pieces(flat, arrays, bucket):
    """(index, the part of ``flat`` that holds arrays[index], shaped like it) per array."""
    offset = 0
    for i in bucket:
        n = arrays[i].size
        yield i, flat[offset:offset + n].reshape(arrays[i].shape)
        offset += n


def broadcast_state(module, root=0, bucket_bytes=BUCKET_BYTES):
    """Overwrite every parameter and buffer of ``module`` with rank ``root``'s values."""
    _broadcast(module.parameters() + module.buffers(), root, bucket_bytes)


def _broadcast(tensors, root, bucket_bytes):
    arrays = [t.data for t in tensors]
    for bucket in _buckets(arrays, bucket_bytes):
        flat = broadcast_inplace(_flatten(arrays, bucket), root)
        for i, piece in _pieces(flat, arrays, bucket):
            arrays[i][...] = piece  # in place, as PyTorch does: the tensors keep their arrays


def average_gradients(parameters, bucket_bytes=BUCKET_BYTES):
    """p.grad = (sum over ranks of p.grad) / world_size() for every parameter, bucketed.

    A parameter without a gradient on this rank counts as zeros (every rank must send the same
    buckets); it gets the average of the others, as DistributedDataParallel's unused parameters.
    """
    parameters = list(parameters)
    ranks = world_size()
    grads = [p.grad.data if p.grad is not None else np.zeros(p.shape, p.dtype)
             for p in parameters]
    buckets = _buckets(grads, bucket_bytes)
    flats = [_flatten(grads, bucket) for bucket in buckets]
    # The ranks finish backward at different times; the early ones wait asleep, then the
    # all-reduces run with every rank present (see wait_for_all_ranks).
    if ranks > 1:
        wait_for_all_ranks()
    for bucket, flat in zip(buckets, flats):
        allreduce_inplace(flat)
        flat /= ranks
        # Views of a bucket made for this step: nothing else holds them (the rule for .grad).
        for i, piece in _pieces(flat, grads, bucket):
            parameters[i].grad = Tensor._wrap(piece)


class DistributedDataParallel(Module):
    """``module`` trained on a batch split over the ranks: each rank calls it on its share.

    At construction every rank takes rank 0's parameters and buffers. In training, each forward
    first copies rank 0's buffers to every rank (``broadcast_buffers``, PyTorch's default): with
    per-rank BatchNorm1d the running statistics are then rank 0's everywhere. After
    ``loss.backward()`` call ``average_gradients()``: the gradients become the mean over ranks,
    which for a per-rank mean loss is the gradient of the global batch's mean loss. (PyTorch
    hooks this into backward; this engine has no hooks, so the call is explicit.)
    """

    def __init__(self, module, broadcast_buffers=True, bucket_bytes=BUCKET_BYTES):
        super().__init__()
        self.module = module
        self.broadcast_buffers, self.bucket_bytes = broadcast_buffers, bucket_bytes
        broadcast_state(module, 0, bucket_bytes)

    def forward(self, *args, **kwargs):
        if Tape.current() is not None:
            raise JitError("DistributedDataParallel inside a jit step is not supported: its "
                           "broadcasts would not be replayed; run the step eagerly")
        if self.broadcast_buffers and self.training and world_size() > 1:
            _broadcast(self.module.buffers(), 0, self.bucket_bytes)
        return self.module(*args, **kwargs)

    def average_gradients(self):
        average_gradients(self.module.parameters(), self.bucket_bytes)

    @property
    def rank(self):
        return rank()

    def mean_loss(self, value):
        """The mean over ranks of each rank's loss: the global batch's mean loss."""
        return mean_over_ranks(value)

    def shard(self, batch):
        """This rank's rows of a global ``batch`` (rank r takes rows r*n/R .. (r+1)*n/R)."""
        return shard(batch)


def check_divides(batch_size, ranks):
    """Raise ValueError unless ``ranks`` (>= 1) splits a global batch of ``batch_size`` evenly."""
    if ranks < 1:
        raise ValueError(f"the number of ranks must be at least 1, got {ranks}")
    if batch_size % ranks:
        divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
        raise ValueError(f"{ranks} ranks do not divide the global batch of {batch_size} evenly; "
                         f"choose a rank count among {divisors}")


def shard(batch):
    """This rank's equal share of the rows of ``batch`` (an array or Tensor)."""
    n, ranks = len(batch), world_size()
    check_divides(n, ranks)
    per = n // ranks
    lo = rank() * per
    return batch[lo:lo + per]


def mean_over_ranks(value):
    """The mean over ranks of a Python number (e.g. each rank's loss, for the log)."""
    if world_size() == 1:
        return value
    total = allreduce_inplace(np.array([value], dtype=np.float64))
    return float(total[0]) / world_size()
