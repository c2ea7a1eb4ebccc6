"""What the claim demos share: a layer-by-layer forward pass, a probing optimizer, file helpers."""
import json
import os

import numpy as np

from ... import nn
from ...autograd import no_grad
from ...nn import functional as F
from ...tensor import Tensor
from ..mlp import ACTIVATIONS
from ..mnist_bn import jsonable

# The paper's MNIST protocol (experiments/mnist_bn.py): these claims change one thing at a time.
PAPER_NET = {"hidden": (100, 100, 100), "init_std": 0.01, "activation": "sigmoid"}
BATCH = 60


def is_activation(module):
    return isinstance(module, tuple(ACTIVATIONS.values()))


def forward_layers(model, X, bn_stats=None):
    """``model`` on X without a graph: (logits, [(pre-activation, activation) per hidden layer]).

    ``bn_stats(k, x)`` -> (mean, var) chooses what the k-th BatchNorm1d normalizes with:
    y = gamma (x - mean) / sqrt(var + eps) + beta, through F.batch_norm's eval path (the one place
    the formula is written). None: the layer's own mode (running statistics in eval mode).
    """
    layers, pre, k = [], None, 0
    x = Tensor(X)
    with no_grad():
        for module in model:
            if isinstance(module, nn.BatchNorm1d) and bn_stats is not None:
                mean, var = bn_stats(k, x.data)
                x = F.batch_norm(x, Tensor(mean), Tensor(var), module.weight, module.bias,
                                 training=False, eps=module.eps)
                k += 1
            elif isinstance(module, nn.BatchNorm1d):
                x, k = module(x), k + 1
            elif is_activation(module):
                pre = x.data
                x = module(x)
                layers.append((pre, x.data))
            else:
                x = module(x)
    return x.data, layers


def own_batch_stats(k, x):
    """A batch's own statistics, as in training: the mean and the biased variance over axis 0."""
    return x.mean(axis=0), x.var(axis=0)


class ProbingSGD:
    """SGD that also calls ``probe(step)`` every ``every`` steps and at step 0.

    train_run accepts any optimizer, so this records per-layer statistics during the very same
    training loop the main demo uses, without a hook inside it.
    """

    def __init__(self, params, lr, probe, every):
        from ... import optim
        self.sgd, self.probe, self.every = optim.SGD(params, lr=lr), probe, every
        self.step_count = 0
        probe(0)

    def zero_grad(self):
        self.sgd.zero_grad()

    def step(self):
        self.sgd.step()
        self.step_count += 1
        if self.step_count % self.every == 0:
            self.probe(self.step_count)


# ------------------------------------------------------------------------------------ output files

def write_json(doc, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(jsonable(doc), f, indent=1, allow_nan=False)
    return path


def fraction(values, lo, hi):
    values = np.asarray(values)
    return float(((values > lo) & (values < hi)).mean())
