"""Drawing the graph that made a tensor: DOT text, ``graphviz.Digraph`` objects, rendered files.

``to_dot(t)`` returns DOT text (no ``dot`` binary needed), ``draw(t)`` a ``graphviz.Digraph``
(it displays inline in Jupyter), ``render(t, "g.svg")`` a file (svg, png, pdf or dot).
``direction="forward"`` draws the computation, ``"backward"`` the gradient computation, one
node per derivative rule, with the texts of the op table (``Op.show``).

``graph.py`` builds the displayed graph from the engine's walk, ``text.py`` fills in the op
table's texts, ``dot.py`` emits DOT and renders, ``demo.py`` draws the batch-norm demo graphs.

Gradients for ``show_grad=True``: ``backward()`` keeps ``.grad`` only on leaves and releases the
graph, so call ``capture_grads(loss)`` instead of ``loss.backward()``. It asks every node of the
graph to keep its gradient and runs ``backward(retain_graph=True)``: afterwards every node holds
its gradient and the graph is still there to draw.

Values: the graph keeps only the arrays its derivatives read, so an intermediate such as
(x − μ)² has no value left to summarize. Build the graph inside ``with viz.keep_values():`` to
keep every value for ``show_grad``/``show_data`` (``render_batchnorm_graph`` does).
"""
from ..autograd import keep_values
from .demo import render_batchnorm_graph
from .dot import (
    COLORS,
    FORMATS,
    NO_GRAD_EDGE,
    ZERO_EDGE,
    GraphvizNotFoundError,
    draw,
    render,
    to_dot,
)
from .graph import capture_grads

__all__ = ["draw", "to_dot", "render", "capture_grads", "keep_values", "render_batchnorm_graph",
           "GraphvizNotFoundError", "FORMATS", "COLORS", "ZERO_EDGE", "NO_GRAD_EDGE"]
