"""The demo graphs: one batch-norm layer, or the paper's MLP, drawn after a backward pass."""
import numpy as np

from .. import nn
from ..autograd import keep_values
from ..nn import functional as F
from ..tensor import Tensor
from .dot import render
from .graph import capture_grads


def render_batchnorm_graph(out_path, model="bn", backward=False, show_grad=True, seed=0):
    """Render the graph of one batch-norm layer (``model="bn"``) or of the demo MLP
    (``model="mlp"``: 784-100-100-100-10, Linear→BatchNorm1d→Sigmoid, collapsed with the first
    BatchNorm1d expanded) after a backward pass. Returns ``out_path``.

    The loss is mse against a random target ("bn") or cross-entropy on random digits ("mlp");
    inputs and weights come from ``seed``. ``backward=True`` draws the gradient computation.
    """
    rng = np.random.default_rng(seed)
    saved = np.random.get_state()  # Linear draws from numpy's global generator: leave it as found
    np.random.seed(seed)
    try:
        return _render_demo_graph(out_path, model, backward, show_grad, rng)
    finally:
        np.random.set_state(saved)


def _render_demo_graph(out_path, model, backward, show_grad, rng):
    with keep_values():  # the drawing summarizes every intermediate value
        if model == "bn":
            bn = nn.BatchNorm1d(4)
            bn.weight.data = rng.uniform(0.5, 1.5, 4).astype(np.float32)
            bn.bias.data = rng.normal(0, 0.5, 4).astype(np.float32)
            x = Tensor(rng.normal(2.0, 3.0, (16, 4)).astype(np.float32), requires_grad=True,
                       name="x")
            target = Tensor(rng.normal(0, 1, (16, 4)).astype(np.float32), name="target")
            loss = F.mse_loss(bn(x), target)
            params, options = dict(bn.named_parameters(prefix="bn")), {}
            title = "One BatchNorm1d layer, mse loss"
        elif model == "mlp":
            layers = []
            for n_in in (784, 100, 100):
                # no bias before batch norm: beta replaces it (the paper, the notes, the demo)
                layers += [nn.Linear(n_in, 100, bias=False), nn.BatchNorm1d(100), nn.Sigmoid()]
            net = nn.Sequential(*layers, nn.Linear(100, 10))
            x = Tensor(rng.normal(0, 1, (64, 784)).astype(np.float32), name="x")
            loss = F.cross_entropy(net(x), rng.integers(0, 10, 64))
            params, options = net, {"collapse": True, "expand": "BatchNorm1d 1"}
            title = "MLP 784-100-100-100-10 (Linear→BatchNorm1d→Sigmoid), cross-entropy loss"
        else:
            raise ValueError(f"model must be 'bn' or 'mlp', got {model!r}")
    loss.name = "loss"
    if show_grad or backward:
        capture_grads(loss)
    return render(loss, out_path, params, show_grad=show_grad,
                  direction="backward" if backward else "forward", title=title, **options)
