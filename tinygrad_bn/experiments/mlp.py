"""Reusable pieces of the MLP experiments: build the network, train it, evaluate it, probe it.

Everything returns numbers (dicts of lists and arrays); nothing here writes files or plots.
"""
import math
import time

import numpy as np

from .. import nn, optim
from ..autograd import no_grad
from ..jit import jit
from ..nn import functional as F
from ..tensor import Tensor
from .progress import progress_bar

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


def build_mlp(bn, hidden=(100, 100, 100), init_std=0.01, activation="sigmoid", n_in=784,
              n_out=10, seed=0, bn_affine=True, dtype=np.float32):
    """Linear → (BatchNorm1d) → activation per hidden layer, then Linear to the logits.

    Weights ~ N(0, init_std²) and biases 0 (the paper's MNIST setup); ``init_std=None`` keeps
    PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases instead. With
    ``bn`` the hidden Linear layers have no bias: BN subtracts the batch mean, so a bias would
    cancel and beta takes its place. ``bn_affine=False`` fixes gamma = 1, beta = 0.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"build_mlp: activation must be one of {sorted(ACTIVATIONS)}, "
                         f"got {activation!r}")
    if init_std is not None and not init_std > 0:
        raise ValueError(f"build_mlp: init_std must be positive (or None for PyTorch's default "
                         f"init), got {init_std}")
    rng = np.random.default_rng([seed, 0])  # stream 0 of this seed: weights (1 is batch order)
    layers, fan_in = [], n_in
    for width in hidden:
        layers.append(_linear(fan_in, width, bias=not bn, init_std=init_std, rng=rng, dtype=dtype))
        if bn:
            layers.append(nn.BatchNorm1d(width, eps=1e-5, momentum=0.1, affine=bn_affine,
                                         dtype=dtype))
        layers.append(ACTIVATIONS[activation]())
        fan_in = width
    layers.append(_linear(fan_in, n_out, bias=True, init_std=init_std, rng=rng, dtype=dtype))
    return nn.Sequential(*layers)


def _linear(n_in, n_out, bias, init_std, rng, dtype):
    layer = nn.Linear(n_in, n_out, bias=bias, dtype=dtype)
    if init_std is None:
        bound = 1 / math.sqrt(n_in)
        layer.weight.data = rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype)
        if bias:
            layer.bias.data = rng.uniform(-bound, bound, n_out).astype(dtype)
    else:
        layer.weight.data = rng.normal(0.0, init_std, (n_out, n_in)).astype(dtype)
        if bias:
            layer.bias.data = np.zeros(n_out, dtype=dtype)
    return layer


def evaluate(model, X, y, batch_size=10000):
    """Accuracy of ``model`` on (X, y) in eval mode (population statistics), recording no graph."""
    correct = 0
    for start in range(0, len(X), batch_size):
        logits = numpy_forward(model, X[start:start + batch_size], batch_stats=False)
        correct += int((logits.argmax(axis=1) == y[start:start + batch_size]).sum())
    return correct / len(X)


def numpy_forward(modules, x, batch_stats=False):
    """The output of ``modules`` (applied in order) for the array ``x``, computed in plain numpy
    from the layers' ``.data`` arrays: no graph, no per-op bookkeeping, the cost of the same
    network written by hand. Batch norm normalizes with the running statistics, or, with
    ``batch_stats``, with x's own (biased) ones, and never updates them. Layers other than
    Linear, BatchNorm1d, ReLU, Sigmoid and Tanh run as Tensors under ``no_grad``."""
    owned = False  # whether x is an array made here, which the next layer may overwrite
    for module in modules:
        if isinstance(module, nn.Linear):
            x = x @ module.weight.data.T
            if module.bias is not None:
                x += module.bias.data
        elif isinstance(module, nn.BatchNorm1d) and x.ndim == 2:
            if batch_stats or not module.track_running_stats:
                mean, var = x.mean(axis=0), x.var(axis=0)
            else:
                mean, var = module.running_mean.data, module.running_var.data
            scale = 1 / np.sqrt(var + module.eps)
            shift = -mean * scale
            if module.affine:  # gamma * (x - mean) / std + beta, as one scale and one shift
                scale, shift = scale * module.weight.data, shift * module.weight.data
                shift += module.bias.data
            x = x * scale if not owned else np.multiply(x, scale, out=x)
            x += shift
        elif isinstance(module, nn.Sigmoid):
            x = np.negative(x) if not owned else np.negative(x, out=x)
            with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives the right 0
                np.exp(x, out=x)
            x += 1
            np.reciprocal(x, out=x)
        elif isinstance(module, nn.ReLU):
            x = np.maximum(x, 0, out=x if owned else None)
        elif isinstance(module, nn.Tanh):
            x = np.tanh(x, out=x if owned else None)
        else:
            with no_grad():
                x = module(Tensor(x)).data
            owned = False
            continue
        owned = True
    return x


def evaluate_and_probe(model, X, y, probe_layer=-1):
    """(test accuracy in eval mode, the inputs of hidden activation ``probe_layer`` with batch
    norm on X's own statistics), as ``evaluate`` and ``activation_inputs`` give them, in one
    numpy pass: the layers before the first batch norm, which both share, run once."""
    modules = list(model)
    stop = _activation_indices(model)[probe_layer]
    first_bn = next((i for i, m in enumerate(modules) if isinstance(m, nn.BatchNorm1d)),
                    len(modules))
    shared_until = min(first_bn, stop)
    shared = numpy_forward(modules[:shared_until], X)
    logits = numpy_forward(modules[shared_until:], shared)
    accuracy = float((logits.argmax(axis=1) == y).mean())
    return accuracy, numpy_forward(modules[shared_until:stop], shared, batch_stats=True)


def _activation_indices(model):
    found = [i for i, m in enumerate(model) if isinstance(m, tuple(ACTIVATIONS.values()))]
    if not found:
        raise ValueError("activation_inputs: the model has no Sigmoid/ReLU/Tanh layer")
    return found


def activation_inputs(model, X, layer=-1):
    """The input to every unit of the ``layer``-th hidden activation, shape (len(X), units).

    Batch-norm layers normalize with the statistics of X itself (as in training: gamma·x̂ + beta
    with x̂ = (x - mean_X) / sqrt(var_X + eps)) and leave their running statistics untouched.
    """
    stop = _activation_indices(model)[layer]
    x = Tensor(X)
    with no_grad():
        for module in list(model)[:stop]:
            if isinstance(module, nn.BatchNorm1d):
                x = F.batch_norm(x, None, None, module.weight, module.bias, training=True,
                                 eps=module.eps)
            else:
                x = module(x)
    return x.data


def steps_to_accuracy(steps, accuracies, threshold):
    """The first evaluated step whose accuracy is >= threshold, or None if none is."""
    for step, acc in zip(steps, accuracies):
        if acc >= threshold:
            return int(step)
    return None


def train_run(model, data, steps, lr, batch_size=60, eval_every=50, seed=0, optimizer=None,
              probe_layer=-1, percentiles=(15, 50, 85), progress=False, label="",
              stop_on_nan=True, on_eval=None, compiled=True, data_parallel=None):
    """Train ``model`` with minibatch SGD and evaluate it every ``eval_every`` steps (and at 0).

    ``data`` = (X_train, y_train, X_test, y_test). Each epoch is a fresh permutation (stream 1 of
    ``seed``) cut into batches of ``batch_size``; the last short batch is dropped. ``optimizer``
    defaults to plain SGD with constant ``lr``. At every evaluation: test accuracy (eval mode),
    the mean training loss since the previous evaluation, and the ``percentiles`` over the test
    images of the input to each unit of hidden activation ``probe_layer``.

    Returns {"steps", "test_acc", "train_loss" (None at step 0), "percentiles" (ndarray
    (evals, len(percentiles), units)), "final_test_acc", "diverged", "seconds"}.
    ``on_eval(step, train_loss, test_acc)``, if given, is called at every evaluation.
    ``compiled``: run the forward and backward through ``tinygrad_bn.jit`` (the same numpy calls,
    so the same numbers, without rebuilding the graph every step); the optimizer steps eagerly,
    so any optimizer works, also one that records things in Python.
    ``data_parallel``: a ``distributed.DistributedDataParallel`` wrapping ``model``: each rank
    trains on its share of every batch (``batch_size`` is the global batch), gradients are
    averaged over the ranks, the logged loss is the global batch's, and only rank 0 evaluates
    (the others return empty curves). Eager only: collectives are not replayed by jit.
    """
    X_train, y_train, X_test, y_test = data
    if len(X_train) < batch_size:
        raise ValueError(f"train_run: {len(X_train)} training examples, fewer than one batch "
                         f"of {batch_size}")
    if eval_every < 1 or steps < 0:
        raise ValueError(f"train_run: need steps >= 0 and eval_every >= 1, got {steps}, "
                         f"{eval_every}")
    rng = np.random.default_rng([seed, 1])
    opt = optimizer if optimizer is not None else optim.SGD(model.parameters(), lr=lr)
    batches_per_epoch = len(X_train) // batch_size
    out = {"steps": [], "test_acc": [], "train_loss": [], "percentiles": []}
    loss_sum, loss_count, diverged = 0.0, 0, False

    def record(step):
        if data_parallel is not None and data_parallel.rank != 0:
            return
        accuracy, inputs = evaluate_and_probe(model, X_test, y_test, probe_layer)
        out["steps"].append(step)
        out["test_acc"].append(accuracy)
        out["train_loss"].append(loss_sum / loss_count if loss_count else None)
        out["percentiles"].append(np.percentile(inputs, percentiles, axis=0))
        if on_eval is not None:
            on_eval(step, out["train_loss"][-1], out["test_acc"][-1])

    step_model = model if data_parallel is None else data_parallel

    def forward_backward(x, y):
        loss = F.cross_entropy(step_model(x), y)
        loss.backward()
        return loss
    if compiled and data_parallel is None:
        forward_backward = jit(forward_backward)

    bar = progress_bar(steps, label) if progress else None
    start = time.perf_counter()
    model.train()
    try:
        record(0)
        batch = batches_per_epoch  # start with a fresh permutation
        for step in range(1, steps + 1):
            if batch == batches_per_epoch:
                order = rng.permutation(len(X_train))
                # One gathered copy per epoch; the batches below are slices of it.
                X_epoch, y_epoch = X_train[order], y_train[order]
                batch = 0
            lo = batch * batch_size
            batch += 1
            xb, yb = X_epoch[lo:lo + batch_size], y_epoch[lo:lo + batch_size]
            if data_parallel is not None:
                xb, yb = data_parallel.shard(xb), data_parallel.shard(yb)
            opt.zero_grad()
            loss = forward_backward(Tensor(xb), yb)
            if data_parallel is not None:
                data_parallel.average_gradients()
            opt.step()
            value = loss.item() if data_parallel is None else data_parallel.mean_loss(loss.item())
            loss_sum += value
            loss_count += 1
            if bar is not None:
                bar.update(1)
            if not math.isfinite(value) and stop_on_nan:
                diverged = True
                record(step)
                break
            if step % eval_every == 0 or step == steps:
                record(step)
                loss_sum, loss_count = 0.0, 0
                if bar is not None:
                    bar.set_postfix(loss=f"{out['train_loss'][-1]:.3f}",
                                    test_acc=f"{out['test_acc'][-1]:.4f}", refresh=False)
    finally:  # also on Ctrl-C: no half-drawn bar left behind
        if bar is not None:
            bar.close()
    out["percentiles"] = np.asarray(out["percentiles"])
    out["final_test_acc"] = out["test_acc"][-1] if out["test_acc"] else None
    out["diverged"] = diverged
    out["seconds"] = time.perf_counter() - start
    return out
