"""SyncBatchNorm: batch norm over a batch split across processes (PyTorch's nn.SyncBatchNorm).

The layer knows nothing of MPI: it hands ``F.batch_norm`` a process group, any object with a
differentiable ``all_reduce(tensor)`` (the sum over the group's processes). ``init()`` of
``tinygrad_bn.distributed`` registers the world as the default group.
"""
import numpy as np

from .layers import BatchNorm1d


class SyncBatchNorm(BatchNorm1d):
    """Batch norm whose training statistics are those of the global batch, over every process.

    mu = sum_ranks sum_B x / M,  sigma2 = sum_ranks sum_B (x - mu)**2 / M  (M: the global count),
    the same ``F.batch_norm`` formula with its batch sums all-reduced, so gradients (including
    the cross-process terms PyTorch writes by hand) come from autodiff. Running statistics are
    updated from the global mu and unbiased sigma2 * M / (M - 1): identical on every process.
    Outside training it is BatchNorm1d (running statistics, no communication).
    """

    # The group used when none is given; tinygrad_bn.distributed.init() sets it to the world.
    default_group = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, dtype=np.float32):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, dtype=dtype)
        self._group = process_group

    @property
    def process_group(self):
        group = self._group if self._group is not None else SyncBatchNorm.default_group
        if group is None:
            raise RuntimeError(
                f"SyncBatchNorm({self.num_features}) in training needs a process group: call "
                f"tinygrad_bn.distributed.init() first (under mpiexec -n N; a plain process is a "
                f"group of one), pass process_group=, or use BatchNorm1d for one process")
        return group

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm1d replaced by a SyncBatchNorm sharing its parameters,
        buffers and mode (the same Tensor objects, so an optimizer made before still applies).
        Returns the new module if ``module`` itself is a BatchNorm1d, else ``module``."""
        if type(module) is BatchNorm1d:
            return _sync_copy(cls, module, process_group)
        for _, parent in module.named_modules():
            for name, child in parent._modules.items():
                if type(child) is BatchNorm1d:
                    # Assigned in the table itself: setattr would move the child to the end,
                    # and a Sequential runs its children in table order.
                    new = _sync_copy(cls, child, process_group)
                    parent._modules[name] = new
                    object.__setattr__(parent, name, new)
        return module


def _sync_copy(cls, bn, process_group):
    sync = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
               track_running_stats=bn.track_running_stats, process_group=process_group)
    if bn.affine:
        sync.weight, sync.bias = bn.weight, bn.bias
    if bn.track_running_stats:
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(sync, name, getattr(bn, name))
    sync.train(bn.training)
    return sync


def convert_sync_batchnorm(module, process_group=None):
    """SyncBatchNorm.convert_sync_batchnorm as a function."""
    return SyncBatchNorm.convert_sync_batchnorm(module, process_group)
