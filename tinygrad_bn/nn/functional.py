"""Functional forms of the layers and losses, composed from Tensor primitives (no derivatives here).

``batch_norm`` is the one place the batch-normalization formula is written.
"""
import numpy as np

from ..tape import run
from ..tensor import Tensor


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, process_group=None):
    """Batch normalization (Ioffe & Szegedy 2015, Algorithm 1), per feature (axis 1).

    mu = mean_B(x),  sigma2 = mean_B((x - mu)**2)  (biased),  x_hat = (x - mu) / sqrt(sigma2 + eps),
    y = weight * x_hat + bias.  B is the batch axis (and the length axis of (N, C, L) input).

    In training the batch statistics are used and, if given, ``running_mean``/``running_var`` are
    updated in place of their data (no graph): new = (1 - momentum) * old + momentum * batch, with
    the unbiased batch variance sigma2 * m / (m - 1), as PyTorch does. Outside training the running
    statistics normalize instead. Every step is a recorded primitive, so the gradients through
    mu and sigma2 come from the chain rule, not from a formula written here.

    ``process_group`` (SyncBatchNorm): the batch is split over processes, and B is all of it:
    each mean is sum_B / m with the sums and the count m summed over the group's processes by
    its differentiable ``all_reduce``, so the backward's cross-process terms come from the chain
    rule too.
    """
    if x.ndim not in (2, 3):
        raise ValueError(f"batch_norm expects input of shape (N, C) or (N, C, L), got {x.shape}")
    axes = (0,) if x.ndim == 2 else (0, 2)
    m = x.shape[0] * (x.shape[2] if x.ndim == 3 else 1)
    # (C,) vectors broadcast against (N, C) as they are; against (N, C, L) they need (1, C, 1).
    per_feature = (lambda t: t) if x.ndim == 2 else (lambda t: t.reshape(1, x.shape[1], 1))

    if training:
        if process_group is not None:
            m = int(process_group.all_reduce(Tensor(np.array(float(m)))).item())
        if m < 2:
            raise ValueError(
                f"batch_norm in training mode got {m} value per feature (input shape {x.shape}). "
                f"The variance of a single value is 0, so x_hat would be 0 whatever x is, and the "
                f"unbiased running variance m/(m-1) is undefined. Use eval() mode for single "
                f"examples, train with larger batches, or drop the last short batch.")
        mu = _named(_batch_mean(x, axes, m, process_group), "μ_B")
        centered = _named(x - mu, "x − μ_B")
        var = _named(_batch_mean(centered ** 2, axes, m, process_group), "σ²_B")
        if running_mean is not None or running_var is not None:
            run(_update_running, running_mean, running_var, mu.data, var.data, m, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm outside training needs running_mean and running_var "
                             "(or call it with training=True to use the batch's statistics)")
        centered = _named(x - per_feature(_constant(running_mean)), "x − running_mean")
        var = _named(per_feature(_constant(running_var)), "running_var")
    std = _named(_named(var + eps, "σ²_B + ε").sqrt(), "√(σ²_B + ε)")
    x_hat = _named(centered / std, "x̂")
    y = x_hat
    if weight is not None:
        y = _named(y * per_feature(weight), "γ·x̂")
    if bias is not None:
        y = y + per_feature(bias)
    return _named(y, "y = γ·x̂ + β" if weight is not None and bias is not None else "y")


def _batch_mean(t, axes, m, process_group):
    """The mean of ``t`` over the batch axes: this process's batch, or the group's (m values)."""
    if process_group is None:
        return t.mean(axis=axes, keepdims=True)
    return process_group.all_reduce(t.sum(axis=axes, keepdims=True)) / m


def _constant(t):
    # Buffers need no detach (no gradient); passing the buffer itself lets a jit replay read
    # its current array (load_state_dict replaces it), not the one a detached copy wrapped.
    return t.detach() if t.requires_grad else t


def _named(t, name):
    t.name = name
    return t


def _update_running(running_mean, running_var, mu, var, m, momentum):
    """The exponential moving averages PyTorch keeps: momentum is the weight of the NEW batch.

    Updated in place on the buffers' arrays, with plain numpy: no graph is recorded.
    """
    if running_mean is not None:
        running_mean.data *= 1 - momentum
        running_mean.data += momentum * mu.reshape(-1)
    if running_var is not None:
        running_var.data *= 1 - momentum
        running_var.data += (momentum * m / (m - 1)) * var.reshape(-1)  # unbiased: m / (m - 1)


def linear(x, weight, bias=None):
    """y = x @ W.T + b, with W of shape (out_features, in_features) as in PyTorch."""
    y = x @ weight.T
    return y if bias is None else y + bias


def cross_entropy(logits, targets, reduction="mean"):
    """-log softmax(logits)[target], averaged over the batch; ``targets`` are class indices."""
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, C), got {logits.shape}")
    n, c = logits.shape
    t = targets.data if isinstance(targets, Tensor) else targets
    # A one-hot mask picks log p[target]: multiplying by a constant keeps the backward a product.
    onehot = run(_one_hot_targets, t, n, c, logits.dtype)
    log_p = _named(logits.log_softmax(axis=1), "log softmax")
    picked = _named((log_p * _named(Tensor._wrap(onehot), "one-hot(target)")).sum(axis=1),
                    "log p[target]")
    return _reduce(_named(-picked, "−log p[target]"), reduction, "cross_entropy")


def _one_hot_targets(targets, n, c, dtype):
    """The (n, c) one-hot mask of class indices ``targets``, after checking them."""
    t = np.asarray(targets)
    if t.shape != (n,):
        raise ValueError(f"cross_entropy: targets must have shape ({n},) to match logits "
                         f"{(n, c)}, got {t.shape}")
    if t.dtype.kind == "f":
        if not np.all(t == np.round(t)):
            raise ValueError("cross_entropy: targets must be integer class indices")
        t = t.astype(np.intp)
    elif t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got {t.dtype}")
    # numpy's indexing refuses a target >= c itself but wraps a negative one around (and reads
    # an unsigned one beyond 2**63 as negative): one reduction finds those first.
    if not (t.size and (np.maximum.reduce(t) >= c if t.dtype.kind == "u"
                        else np.minimum.reduce(t) < 0)):
        try:
            if c <= _EYE_MAX_CLASSES:  # rows of a cached identity: one take
                return _eye(c, dtype).take(t, axis=0)
            onehot = np.zeros((n, c), dtype=dtype)
            onehot[np.arange(n), t] = 1
            return onehot
        except IndexError:
            pass
    i = int(np.argmax((t < 0) | (t >= c)))
    raise ValueError(f"cross_entropy: target {int(t[i])} at index {i} is out of range "
                     f"for {c} classes (valid: 0..{c - 1})")


# An identity of 256 classes is 512 KB in float64, and at most 8 are kept; more classes: no
# cache (zeros and a scatter instead).
_EYE_MAX_CLASSES = 256
_EYES = {}


def _eye(c, dtype):
    eye = _EYES.get((c, dtype))
    if eye is None:
        eye = np.eye(c, dtype=dtype)
        eye.flags.writeable = False
        if len(_EYES) >= 8:
            _EYES.clear()
        _EYES[(c, dtype)] = eye
    return eye


def mse_loss(input, target, reduction="mean"):
    """mean((input - target)**2)."""
    target_shape = target.shape if hasattr(target, "shape") else np.shape(target)
    if tuple(target_shape) != tuple(input.shape):
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape "
                         f"{tuple(target_shape)} differ")
    return _reduce((input - target) ** 2, reduction, "mse_loss")


def _reduce(losses, reduction, name):
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def relu(x):
    return x.relu()


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def softmax(x, axis=-1):
    return x.softmax(axis=axis)


def log_softmax(x, axis=-1):
    return x.log_softmax(axis=axis)
