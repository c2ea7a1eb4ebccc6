"""The MLP training step written by hand in plain numpy: the practical limit for a numpy engine.

Network: (Linear → BatchNorm1d → activation) per hidden layer, then a Linear to the logits;
cross-entropy on the logits (mean over the batch); SGD with momentum as PyTorch defines it.
Batch norm in training mode: batch mean and biased variance normalize, the running statistics
are updated with momentum 0.1 and the unbiased variance, and the backward is the closed form

    dx = gamma / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat))

(every mean over the batch axis), which is what a perfect engine could at best reach.

Parameters are kept in PyTorch's layout and order — W (out, in), b, gamma, beta per hidden layer,
then W, b — the order of ``model.parameters()`` for ``Sequential(Linear, BatchNorm1d, act, ...)``.
The code works in place wherever the array it overwrites is not needed any more: that is the
point of a reference that sets the bar, not a trick the engine is expected to copy line by line.
"""
import numpy as np


class NumpyMLP:
    """Hand-written forward, backward and SGD-momentum step; ``step(x, targets)`` returns the loss.

    ``params``: [W, b, gamma, beta] per hidden layer, then [W, b] (copied); ``running``: a
    (running_mean, running_var) pair per hidden layer (copied); ``activation``: "sigmoid" or "relu".
    """

    def __init__(self, params, running, activation, lr=0.01, momentum=0.9, bn_momentum=0.1,
                 eps=1e-5):
        if activation not in ("sigmoid", "relu"):
            raise ValueError(f"activation must be 'sigmoid' or 'relu', got {activation!r}")
        if len(params) != 4 * len(running) + 2:
            raise ValueError(f"expected 4 params per hidden layer plus 2, got {len(params)} for "
                             f"{len(running)} hidden layers")
        self.params = [np.array(p) for p in params]
        self.running = [(np.array(m), np.array(v)) for m, v in running]
        self.activation, self.lr, self.momentum = activation, lr, momentum
        self.bn_momentum, self.eps = bn_momentum, eps
        self.buffers = [None] * len(self.params)  # SGD momentum buffers, created at first step

    @property
    def hidden(self):
        return len(self.running)

    def loss_and_grads(self, x, targets):
        """Forward and backward; returns the loss and one gradient per parameter (new arrays)."""
        n = x.shape[0]
        saved = []  # per hidden layer: (its input, x_hat, 1/std, activation output)
        h = x
        for layer in range(self.hidden):
            W, b, gamma, beta = self.params[4 * layer: 4 * layer + 4]
            z = h @ W.T
            z += b
            mu = z.mean(axis=0)
            xc = z
            xc -= mu  # z is not needed any more: centre it in place
            var = np.square(xc).mean(axis=0)  # biased: normalizes the batch
            self._update_running(layer, mu, var, n)
            inv_std = 1 / np.sqrt(var + self.eps)
            x_hat = xc
            x_hat *= inv_std
            a = x_hat * gamma
            a += beta
            if self.activation == "sigmoid":  # 1 / (1 + exp(-a)), in place
                np.negative(a, out=a)
                np.exp(a, out=a)
                a += 1
                np.reciprocal(a, out=a)
            else:
                np.maximum(a, 0, out=a)
            saved.append((h, x_hat, inv_std, a))
            h = a
        W, b = self.params[-2:]
        logits = h @ W.T
        logits += b

        # Cross-entropy: mean over the batch of logsumexp(logits) - logits[target].
        rows = np.arange(n)
        shifted = logits
        shifted -= logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        sum_e = e.sum(axis=1, keepdims=True)
        loss = (np.log(sum_e[:, 0]) - shifted[rows, targets]).mean()
        d = e
        d /= sum_e  # softmax
        d[rows, targets] -= 1
        d /= n  # d loss / d logits

        grads = [None] * len(self.params)
        grads[-2] = d.T @ h
        grads[-1] = d.sum(axis=0)
        da = d @ W
        for layer in reversed(range(self.hidden)):
            W, _, gamma, _ = self.params[4 * layer: 4 * layer + 4]
            h_in, x_hat, inv_std, a = saved.pop()
            if self.activation == "sigmoid":  # da *= a * (1 - a); a is used for the last time
                da *= a
                np.subtract(1, a, out=a)
                da *= a
            else:
                da *= a > 0
            dy = da
            dbeta = dy.sum(axis=0)
            tmp = dy * x_hat
            dgamma = tmp.sum(axis=0)
            # Closed-form batch-norm backward, into tmp (dgamma has been taken from it).
            dz = tmp
            np.multiply(x_hat, dgamma / -n, out=dz)
            dz += dy
            dz -= dbeta / n
            dz *= gamma * inv_std
            grads[4 * layer: 4 * layer + 4] = [dz.T @ h_in, dz.sum(axis=0), dgamma, dbeta]
            if layer > 0:
                da = dz @ W
        return loss, grads

    def _update_running(self, layer, mu, var, n):
        """new = (1 - momentum) * old + momentum * batch, with the unbiased batch variance."""
        m, k = self.bn_momentum, 1 - self.bn_momentum
        mean, running_var = self.running[layer]
        mean *= k
        mean += m * mu
        running_var *= k
        running_var += (m * n / (n - 1)) * var

    def sgd_step(self, grads):
        """PyTorch's SGD: buf = g at the first step, then buf = momentum * buf + g; p -= lr * buf.

        The gradient arrays are used as scratch space (they are not needed after the update).
        """
        for i, (p, g) in enumerate(zip(self.params, grads)):
            buf = self.buffers[i]
            if buf is None:
                buf = self.buffers[i] = g.copy()
            else:
                buf *= self.momentum
                buf += g
            np.multiply(buf, self.lr, out=g)
            p -= g

    def step(self, x, targets):
        """One training step; returns the loss (before the update)."""
        loss, grads = self.loss_and_grads(x, targets)
        self.sgd_step(grads)
        return loss
