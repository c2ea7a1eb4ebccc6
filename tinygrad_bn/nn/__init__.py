"""Neural-network layers with PyTorch's names, layouts and defaults."""
from . import functional
from .layers import BatchNorm1d, Flatten, Identity, Linear, ReLU, Sigmoid, Tanh
from .module import Module, Parameter, Sequential
from .sync_batchnorm import SyncBatchNorm

__all__ = ["functional", "Module", "Parameter", "Sequential", "Linear", "BatchNorm1d",
           "SyncBatchNorm", "ReLU", "Sigmoid", "Tanh", "Identity", "Flatten"]
