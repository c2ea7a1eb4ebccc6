"""Layers: Linear, BatchNorm1d and the activations, with PyTorch's layouts and defaults."""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import dispatch
from ..dispatch import update
from ..tensor import Tensor
from . import functional as F
from .module import Module, Parameter


class Linear(Module):
    """y = x @ W.T + b with W of shape (out_features, in_features).

    Initialized as PyTorch does: W and b uniform in (-1/sqrt(in_features), 1/sqrt(in_features)),
    drawn from numpy's global generator (``np.random.seed`` makes it repeatable).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = Parameter(np.random.uniform(-bound, bound, (out_features, in_features)),
                                dtype=dtype)
        self.bias = Parameter(np.random.uniform(-bound, bound, out_features), dtype=dtype) \
            if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """y = x @ W.T + b, x of shape (..., in_features)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) expects input "
                             f"with {self.in_features} features in the last axis, got shape "
                             f"{x.shape}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


def _count_batch(counter):
    counter.data = np.asarray(counter.data + 1)  # a 0-d array, not the numpy scalar + gives


class BatchNorm1d(Module):
    """Batch normalization over (N, C) or (N, C, L) input (Ioffe & Szegedy 2015).

    weight (gamma) starts at ones, bias (beta) at zeros; running_mean at zeros and running_var
    at ones are buffers: saved in the state dict, never learned. ``momentum`` is the weight of
    the NEW batch in the running averages (PyTorch's convention); ``momentum=None`` makes them
    cumulative averages, the n-th batch weighing 1/n (``num_batches_tracked`` counts them).
    """

    optional_state = ("num_batches_tracked",)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm1d: momentum must be in [0, 1] or None (a cumulative "
                             f"average), got {momentum}")
        if momentum is not None and momentum > 0.5:
            warnings.warn(
                f"BatchNorm1d momentum={momentum}: in PyTorch's convention (used here) momentum "
                f"is the weight of the NEW batch, so the usual value is 0.1. Keras and Flax use "
                f"0.99 as the weight of the OLD average; that corresponds to momentum=0.01 here.",
                stacklevel=2)
        if eps <= 0:
            raise ValueError(f"BatchNorm1d: eps must be positive, got {eps}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(num_features), dtype=dtype) if affine else None
        self.bias = Parameter(np.zeros(num_features), dtype=dtype) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features), dtype=dtype))
            self.register_buffer("running_var", Tensor(np.ones(num_features), dtype=dtype))
            self.register_buffer("num_batches_tracked", Tensor._wrap(np.array(0, np.int64)))
        else:
            self.running_mean = self.running_var = None

    # Over whose batch training statistics are taken: None, this process's (SyncBatchNorm: a
    # group of processes, each holding part of the batch).
    process_group = None

    def forward(self, x: Tensor) -> Tensor:
        """y = gamma * (x - mu) / sqrt(var + eps) + beta: batch statistics in training, running
        ones in eval (see ``F.batch_norm``)."""
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            expected = f"(N, {self.num_features}) or (N, {self.num_features}, L)"
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects input of shape "
                             f"{expected}, got {x.shape}")
        use_batch_stats = self.training or not self.track_running_stats
        momentum = self.momentum
        if self.training and self.track_running_stats:
            update(_count_batch, self.num_batches_tracked)
            if momentum is None:  # a cumulative average: the n-th batch weighs 1/n
                # the count is read as a number (a jit step refuses it: it changes every step)
                dispatch.read("BatchNorm1d(momentum=None)'s batch count (use a fixed momentum "
                              "such as 0.1 in a jit step)")
                momentum = 1.0 / float(self.num_batches_tracked.data)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch_stats, momentum=momentum or 0.0, eps=self.eps,
                            process_group=self.process_group if use_batch_stats else None)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}")


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x: Tensor) -> Tensor:
        """max(x, 0)."""
        return x.relu()


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x: Tensor) -> Tensor:
        """1 / (1 + exp(-x))."""
        return x.sigmoid()


class Tanh(Module):
    """tanh(x)."""

    def forward(self, x: Tensor) -> Tensor:
        """tanh(x)."""
        return x.tanh()


class Identity(Module):
    """x."""

    def forward(self, x: Tensor) -> Tensor:
        """x, unchanged."""
        return x


class Flatten(Module):
    """Collapse every axis after the first: (N, ...) -> (N, -1)."""

    def forward(self, x: Tensor) -> Tensor:
        """x.reshape(N, -1)."""
        return x.reshape(x.shape[0], -1)
