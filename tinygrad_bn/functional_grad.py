"""``grad(outputs, inputs)``: gradients returned, not accumulated (torch.autograd.grad).

d(Σ_k <grad_outputs[k], outputs[k]>) / d inputs[i], one tensor per input, computed by the same
backward pass as ``Tensor.backward`` but written into no ``.grad``. With ``create_graph`` the
result is itself recorded, so it can be differentiated again (Hessian-vector products, ...).
"""
import numpy as np

from . import autograd
from .tensor import Tensor


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """A tuple with d(Σ_k <grad_outputs[k], outputs[k]>)/d(inputs[i]) for each input.

    ``outputs``/``inputs``: a Tensor or a sequence of Tensors; inputs may be non-leaf tensors.
    ``grad_outputs``: one per output (a Tensor, an array, or None for a one-element output,
    where it is 1). ``retain_graph`` defaults to ``create_graph``. An input the outputs do not
    depend on is an error unless ``allow_unused``, which gives None for it.
    """
    outputs, inputs = _as_tuple(outputs, "outputs"), _as_tuple(inputs, "inputs")
    if retain_graph is None:
        retain_graph = create_graph
    cotangents = _cotangents(outputs, grad_outputs, create_graph)
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: inputs[{i}] (shape {t.shape}) does not require grad; "
                               f"create it with requires_grad=True (or call .requires_grad_())")
    positions = {}  # vertex -> the positions in ``inputs`` it has (an input may repeat)
    for i, t in enumerate(inputs):
        positions.setdefault(t._ctx or t, []).append(i)
    if len(outputs) == 1:
        root, g = outputs[0], cotangents[0]
    else:
        # One pass for all outputs: the root Σ_k sum(outputs[k] * grad_outputs[k]) hands each
        # output exactly its grad_outputs (1 * g), and shared parts of the graph run once.
        with autograd.enable_grad():
            root = sum((out * g).sum() for out, g in zip(outputs, cotangents))
        g = np.ones((), dtype=root.dtype)
    found = autograd.backward(root, g, retain_graph, create_graph, positions)
    totals = [None] * len(inputs)
    for vertex, gi in found.items():
        for i in positions[vertex]:
            totals[i] = gi
    for i, t in enumerate(totals):
        if t is None and not allow_unused:
            raise RuntimeError(f"grad: inputs[{i}] (shape {inputs[i].shape}) was not used to "
                               f"compute the outputs, so it has no gradient; pass "
                               f"allow_unused=True to get None for it")
    return tuple(None if g is None else _as_result(g, t, create_graph)
                 for g, t in zip(totals, inputs))


def _as_tuple(x, what):
    seq = (x,) if isinstance(x, Tensor) else tuple(x)
    if not seq:
        raise ValueError(f"grad: {what} is empty; give at least one Tensor")
    for i, t in enumerate(seq):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: {what}[{i}] is a {type(t).__name__}, not a Tensor")
    return seq


def _cotangents(outputs, grad_outputs, create_graph):
    """One upstream gradient per output, checked: arrays, or Tensors under create_graph."""
    if grad_outputs is None or isinstance(grad_outputs, (Tensor, np.ndarray)):
        grad_outputs = (grad_outputs,) * len(outputs) if grad_outputs is None else (grad_outputs,)
    grad_outputs = tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(grad_outputs)} grad_outputs for {len(outputs)} outputs; "
                         f"give one per output (None for a one-element output)")
    result = []
    for k, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not out.requires_grad:
            raise RuntimeError(f"grad: outputs[{k}] does not require grad (no input of its "
                               f"computation had requires_grad=True, or it ran in no_grad)")
        if g is None:
            if out.size != 1:
                raise RuntimeError(f"grad: outputs[{k}] has shape {out.shape}; a gradient can be "
                                   f"implied only for a one-element output: pass grad_outputs")
            g = np.ones(out.shape, dtype=out.dtype)
        elif isinstance(g, Tensor):
            # A Tensor that requires grad stays in the recorded pass (differentiable in it)
            g = g if create_graph and g.requires_grad else g.data
        if not isinstance(g, Tensor):
            g = np.asarray(g, dtype=out.dtype)
        if g.shape != out.shape:
            raise ValueError(f"grad: grad_outputs[{k}] has shape {g.shape}, but outputs[{k}] "
                             f"has shape {out.shape}")
        if create_graph and not isinstance(g, Tensor):
            g = Tensor._wrap(g)
        result.append(g)
    return result


def _as_result(g, like, create_graph):
    """The gradient as a Tensor of the input's dtype that shares no memory with anything."""
    if create_graph:
        return g
    # The pass may hand out the caller's grad_outputs, a read-only broadcast view, or one
    # array for two inputs (x + y passes g to both): copy, so each result is its own.
    return Tensor._wrap(np.array(g, dtype=like.dtype))
