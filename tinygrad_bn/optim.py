"""Optimizers with PyTorch's update rules. They read ``.grad``, write ``.data`` in place and
record no graph; parameters without a gradient are skipped."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from . import dispatch
from .dispatch import run
from .tensor import Tensor


class Optimizer:
    """Holds the parameters and per-parameter state; ``step()`` is the update rule."""

    def __init__(self, params: Iterable[Tensor], lr: float):
        self.params = _parameter_list(params, type(self).__name__)
        if lr < 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be >= 0, got {lr}")
        self.lr = lr
        self.state = [dict() for _ in self.params]

    def zero_grad(self) -> None:
        """Forget the gradients (set to None, PyTorch's default)."""
        for p in self.params:
            run(setattr, p, "grad", None)  # on a jit tape, so a replay does it too

    def step(self) -> None:
        """Update every parameter that has a gradient, in place, by the optimizer's rule."""
        for i in range(len(self.params)):
            # One call per parameter, as a jit replay repeats it: the parameter, whether it has
            # a gradient and which, its state (momentum buffer, Adam's step count) and the
            # hyperparameters (lr) are looked up at every call.
            dispatch.update(Optimizer._update_at, self, i)

    def _update_at(self, i):
        p = self.params[i]
        if p.grad is not None:  # else nothing is written and the version stays (as torch)
            self._update(p, p.grad.data, self.state[i])
            dispatch.bump(p.data)  # counted here, so a jit replay of the step counts it too

    def _update(self, p, grad, state):
        raise NotImplementedError


def _parameter_list(params, name):
    """``params`` as a list of distinct Tensors, or PyTorch's errors (a model or a single tensor
    passed by mistake would otherwise make step() silently change nothing)."""
    if isinstance(params, Tensor) or hasattr(params, "named_parameters"):
        raise TypeError(f"params argument given to the optimizer should be an iterable of "
                        f"Tensors or dicts, but got {type(params).__name__}; pass "
                        f"model.parameters() (or [w] for a single tensor)")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"params argument given to the optimizer should be an iterable of "
                        f"Tensors or dicts, but got {type(params).__name__}") from None
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    seen = set()
    for i, p in enumerate(params):
        if isinstance(p, dict):
            raise TypeError(f"{name}: parameter groups (dicts) are not supported; pass one "
                            f"list of Tensors and one learning rate")
        if not isinstance(p, Tensor):
            raise TypeError(f"optimizer can only optimize Tensors, but one of the params is "
                            f"{type(p).__name__} (at position {i})")
        if id(p) in seen:  # PyTorch only warns; the update would be applied twice
            raise ValueError(f"{name}: parameter {i} (shape {p.shape}) appears twice in params; "
                             f"each tensor must be given once (model.parameters() lists tied "
                             f"weights once)")
        seen.add(id(p))
    return params


class SGD(Optimizer):
    """v = momentum * v + g (v = g at first);  p -= lr * v;  g includes weight_decay * p."""

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, dampening: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum and weight_decay must be >= 0, "
                             f"got {momentum} and {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")
        self.momentum, self.weight_decay = momentum, weight_decay
        self.dampening, self.nesterov = dampening, nesterov

    def _update(self, p, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * p.data
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(grad, copy=True)
            else:
                buf *= self.momentum
                if self.dampening:
                    buf += (1 - self.dampening) * grad
                else:
                    buf += grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        p.data -= np.multiply(grad, self.lr)


class Adam(Optimizer):
    """m, v = EMAs of g and g²;  p -= lr * m̂ / (sqrt(v̂) + eps) with bias-corrected m̂, v̂."""

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"Adam: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def _update(self, p, grad, state):
        b1, b2 = self.betas
        if self.weight_decay:
            grad = grad + self.weight_decay * p.data
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * grad * grad
        # PyTorch's arrangement of the same formula, so results agree to rounding.
        denom = np.sqrt(v) / np.sqrt(1 - b2 ** t) + self.eps
        p.data -= (self.lr / (1 - b1 ** t)) * m / denom
