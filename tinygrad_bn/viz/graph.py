"""The displayed graph: the engine's graph walked once, as nodes and edges to draw.

Walks with the engine's own ``autograd.toposort`` (iterative, so a chain of 10,000 nodes draws)
and builds one of two views, as ``Items`` (nodes with a kind, a label and a scope, and edges)
for the emitter in ``dot.py``:

* forward: one node per tensor. Op nodes show the op, its attributes (axis, keepdims,
  exponent), shape and dtype, and the tensor's name (batch norm names its steps with the
  paper's μ_B, σ²_B, x̂, ...; an unnamed result is named by its op's label, ``(x − μ_B)²``).
  Leaves show their parameter name, or "input" / "const".
* backward: the gradient computation itself. One node per gradient ∂L/∂t, and between them
  one node per derivative rule the engine applies ("·γ", "÷√(σ²_B + ε)", "÷8, copy to every
  row"), numbered in the order ``backward()`` runs them. The texts come from the op table
  (``Op.show``, filled in by ``text.py``).
"""
from collections import namedtuple

import numpy as np

from .. import autograd, dispatch
from . import text


def capture_grads(output, gradient=None):
    """Backward from ``output`` keeping every node's gradient and the graph (for show_grad).

    Asks every node of the graph to keep its output's gradient (like ``retain_grad()``, also
    for intermediates no tensor refers to any more), then runs
    ``output.backward(gradient, retain_graph=True)``. Leaf gradients accumulate as usual (zero
    them first if you call it twice). Returns ``output``.
    """
    for t in walk(output):
        if isinstance(t, _View):
            autograd.retain_node_grad(t.node)
    output.backward(gradient, retain_graph=True)
    return output


# ---- the graph, as the builders see it ----

def walk(tensor):
    """The engine's walk over every vertex (also constants), refusing a released graph.

    Leaves and constants are the tensors themselves; each recorded operation becomes a
    ``_View``, which the builders read like the tensor it made.
    """
    if not hasattr(tensor, "_ctx"):
        raise TypeError(f"viz draws the graph of a Tensor, got {type(tensor).__name__}")
    order = autograd.toposort(tensor, grad_only=False)
    if any(autograd.is_released(v) for v in order):
        raise RuntimeError(
            "this graph was released by backward(), so there is nothing left to draw. Draw "
            "before backward(), or run viz.capture_grads(loss) (or loss.backward("
            "retain_graph=True)) instead of loss.backward()")
    values = {}  # node -> its output array, wherever the graph still holds one
    for v in order:
        if autograd.is_node(v):
            for a in v.args:
                if not autograd.is_node(a) and a._ctx is not None:
                    values[a._ctx] = a.data
    if tensor._ctx is not None:
        values[tensor._ctx] = tensor.data
    view = {}
    for v in order:
        view[v] = _View(v, [view[p] for p in v.parents], values.get(v)) \
            if autograd.is_node(v) else v
    return [view[v] for v in order]


class _View:
    """A recorded operation as the builders see it: like the tensor it made (name, shape,
    dtype, ``data`` if the graph kept the value else None, ``grad`` if captured), with
    ``_ctx.inputs`` listing the vertices of its inputs."""

    requires_grad = True

    def __init__(self, node, inputs, value):
        self.node, self.name, self.shape, self.dtype = node, node.name, node.shape, node.dtype
        self._ctx = _ViewCtx(node.op, node.attrs, node.scope, inputs)
        self.data = node.out if node.out is not None else value
        self.grad = autograd.retained_grad(node)

    ndim = property(lambda self: len(self.shape))


class _ViewCtx:
    def __init__(self, op, attrs, scope, inputs):
        self.op, self.attrs, self.scope, self.inputs = op, attrs, scope, inputs


class Graph:
    """The walked tensors with what both views need: kinds, names, consumers, scopes."""

    def __init__(self, order, params):
        self.order, self.root = order, order[-1]  # the root is made last
        self.param_names, self.module_names = _names(params)
        self.consumers = {t: [] for t in order}
        for t in order:
            if t._ctx is not None:
                for p in t._ctx.inputs:
                    self.consumers[p].append(t)
        self.index = {t: i for i, t in enumerate(order)}
        self.depth = {}  # longest path from a leaf: orders layers as the forward pass ran them
        for t in order:
            ins = t._ctx.inputs if t._ctx is not None else ()
            self.depth[t] = 1 + max((self.depth[p] for p in ins), default=-1)
        self.kind = {t: self._kind(t) for t in order}
        self.scope = {t: self._scope(t) for t in order}
        self.short = {}  # a short display name for every tensor, used in the backward labels
        self.derived = {}  # a name made from the op and its inputs' names, when short enough
        self.fallback = set()  # tensors known only as "op #k"
        counters = {}
        for t in order:
            self.short[t] = self._short_name(t, counters)

    def _kind(self, t):
        if t is self.root:
            return "output"
        if t._ctx is not None:
            return "op"
        if t in self.param_names or type(t).__name__ == "Parameter":
            return "parameter"
        if t.requires_grad or t.name is not None:
            return "input"
        # Unnamed data that needs no gradient: autodiff treats it as a constant (name your
        # inputs, Tensor(..., name="x"), to see them as inputs).
        return "const"

    def _scope(self, t):
        """Op nodes: the modules that recorded them. Parameters and constants: the scope all
        their consumers share, so γ, β and ε sit inside their BatchNorm1d cluster."""
        if t._ctx is not None:
            return t._ctx.scope
        if self.kind[t] not in ("parameter", "const") or not self.consumers[t]:
            return ()
        common = self.consumers[t][0]._ctx.scope
        for c in self.consumers[t][1:]:
            s = c._ctx.scope
            n = 0
            while n < min(len(common), len(s)) and common[n] is s[n]:
                n += 1
            common = common[:n]
        return common

    def paper_symbol(self, t):
        """γ or β for the weight or bias of a batch-norm layer, else None."""
        for m in self.scope[t][-1:]:
            if type(m).__name__.startswith("BatchNorm"):
                if t is getattr(m, "weight", None):
                    return "γ"
                if t is getattr(m, "bias", None):
                    return "β"
        return None

    def const_symbol(self, t):
        """The symbol a named consumer gives a constant: ε in "σ²_B + ε"."""
        for c in self.consumers[t]:
            ins = c._ctx.inputs
            if c.name and len(ins) == 2 and ins[1] is t:
                head = _lhs(self.short.get(ins[0], "")) + " "
                if c.name.startswith(head) and len(c.name.split()) == len(head.split()) + 2:
                    return c.name.split()[-1]
        return None

    def leaf_title(self, t):
        name = self.param_names.get(t) or t.name
        kind = self.kind[t]
        if kind == "const":
            sym = self.const_symbol(t) if len(self.consumers[t]) < 64 else None
            if t.data.size != 1:
                return "const"
            return f"{sym} = {text.number(t.data)}" if sym else f"const {text.number(t.data)}"
        if name is None:
            return "parameter" if kind == "parameter" else "input"
        return name

    def _short_name(self, t, counters):
        ctx = t._ctx
        if ctx is None:
            if self.kind[t] == "const":
                return text.number(t.data) if t.data.size == 1 else "const"
            return self.paper_symbol(t) or self.param_names.get(t) or t.name or "input"
        counters[ctx.op] = k = counters.get(ctx.op, 0) + 1
        if t.name:
            return _lhs(t.name)
        if any(p in self.fallback for p in ctx.inputs):
            derived = None  # "exp(add #10)" says no more than the op line does
        else:
            derived = text.label(ctx.op, ctx.attrs, [self.short[p] for p in ctx.inputs])
        if derived is not None and len(derived) <= 28:
            self.derived[t] = derived
            return derived
        self.fallback.add(t)
        return f"{ctx.op.name} #{k}"


def _lhs(name):
    """"y" for "y = γ·x̂ + β": the short name of a tensor named by an equation."""
    return name.split(" = ")[0]


def _names(params):
    """tensor -> parameter name, module -> dotted name, from a Module or a dict."""
    if params is None:
        return {}, {}
    if hasattr(params, "named_parameters"):
        modules = {m: name for name, m in params.named_modules()} \
            if hasattr(params, "named_modules") else {}
        return {p: name for name, p in params.named_parameters()}, modules
    if isinstance(params, dict):
        return {p: name for name, p in params.items()}, {}
    raise TypeError(f"params must be a Module or a dict name -> parameter "
                    f"(e.g. dict(model.named_parameters())), got {type(params).__name__}")


# ---- per-edge gradients, for the zero-gradient highlight ----

def _edge_grad(v, i):
    """The gradient that flows from ``v`` into its i-th input, recomputed with the op's rule
    from ``v.grad``, and the size of the terms summed into it; None when it cannot be known
    (no gradient kept, input needs none)."""
    ctx, p = v._ctx, v._ctx.inputs[i]
    if v.grad is None or not p.requires_grad:
        return None
    rule = ctx.op.vjps[i]
    out, arrays = autograd.saved_arrays(v.node)  # what the engine calls the rule with
    pg = dispatch.unbroadcast(np.asarray(rule(v.grad.data, out, *arrays, **ctx.attrs)),
                              p.shape, ctx.op.name)
    # The same rule on absolute values bounds Σ|terms| per entry (the rules are products and
    # quotients of their arguments), also for rules that sum their result themselves.
    with np.errstate(all="ignore"):
        terms = rule(np.abs(v.grad.data), _abs(out), *[_abs(a) for a in arrays], **ctx.attrs)
    return pg, dispatch.unbroadcast(np.abs(np.asarray(terms)), p.shape, ctx.op.name)


def _abs(a):
    return np.abs(a) if isinstance(a, np.ndarray) else a


def _is_zero(edge_grad):
    """Zero up to rounding: every entry below sqrt(machine eps) times the sum of the absolute
    terms that were summed into it (batch norm's Σ x̂ = 0 cancels exactly in math, only nearly
    in float32)."""
    pg, terms = edge_grad
    if not np.any(pg):
        return True
    if pg.dtype.kind != "f":
        return False
    return bool(np.all(np.abs(pg) <= np.sqrt(np.finfo(pg.dtype).eps) * terms))


# ---- the two views, as items for the emitter ----

# A node's label: a title (bold "B" or italic "I"), plain lines, then small lines as
# (text, tone) with tone one of "value", "grad", "zero" (a gradient that is all zeros), "muted".
Label = namedtuple("Label", "title lines small style", defaults=((), (), "B"))


class Items:
    """Nodes (id, kind, label, scope, tensor) and edges (src, dst, zero, no_grad) to emit.

    ``kind`` picks the colour (parameter, input, const, op, output, grad, rule). A node sits
    in the clusters of its scope; with collapse it folds into its layer's box."""

    def __init__(self):
        self.nodes, self.edges = [], []
        self.legend = []  # (text, kind) rows

    def node(self, nid, kind, label, scope, tensor=None):
        self.nodes.append(dict(id=nid, kind=kind, label=label, scope=scope, tensor=tensor))

    def edge(self, src, dst, zero=False, no_grad=False):
        self.edges.append((src, dst, zero, no_grad))


def build(g, direction, show_grad, show_data):
    """The items of one view of the graph ``g``: "forward" or "backward"."""
    if direction == "forward":
        return _forward_items(g, show_grad, show_data)
    return _backward_items(g, show_grad, show_data)


def _forward_items(g, show_grad, show_data):
    items = Items()
    for t in g.order:
        nid, kind = f"t{g.index[t]}", g.kind[t]
        small = grad_lines(t, show_grad, show_data)
        if kind == "const":
            # One small node per use: a shared constant (scalars are cached) would otherwise
            # pull long edges across every layer that uses it.
            for c in dict.fromkeys(g.consumers[t]):
                lines = [text.shape_text(t)] if t.data.size != 1 else []
                items.node(f"{nid}_{g.index[c]}", kind, Label(
                    g.leaf_title(t), lines, grad_lines(t, False, show_data)), c._ctx.scope, t)
            continue
        if t._ctx is None:
            sym = g.paper_symbol(t)
            title = g.leaf_title(t) + (f"  ({sym})" if sym else "")
            items.node(nid, kind, Label(title, [text.shape_text(t)], small), g.scope[t], t)
            continue
        if t.name:
            title, style = t.name, "B"
        elif t in g.derived:
            title, style = g.derived[t], "I"
        else:
            title, style = None, "B"
        lines = [text.op_line(t._ctx.op, t._ctx.attrs), text.shape_text(t)]
        items.node(nid, kind, Label(title, lines, small, style), g.scope[t], t)
        for i, p in enumerate(t._ctx.inputs):
            eg = _edge_grad(t, i) if show_grad else None
            src = f"t{g.index[p]}" + (f"_{g.index[t]}" if g.kind[p] == "const" else "")
            items.edge(src, nid, zero=eg is not None and _is_zero(eg),
                       no_grad=not p.requires_grad)
    items.legend = [("parameter", "parameter"), ("input", "input"), ("constant", "const"),
                    ("operation", "op"), ("output", "output")]
    return items


def _backward_items(g, show_grad, show_data):
    """∂L/∂t nodes joined through one node per derivative rule, in the engine's order."""
    items = Items()
    reach = {g.root}  # exactly the vertices backward() visits: reached through inputs needing grad
    for t in reversed(g.order):
        if t in reach and t._ctx is not None:
            reach.update(p for p in t._ctx.inputs if p.requires_grad)
    order = [t for t in g.order if t in reach]
    fan_in = {t: 0 for t in order}
    for v in order:
        if v._ctx is not None:
            for p in v._ctx.inputs:
                if p.requires_grad:
                    fan_in[p] += 1
    for t in order:
        kind = g.kind[t] if t._ctx is None else ("output" if t is g.root else "grad")
        lines = [text.shape_text(t)]
        if t is g.root:
            lines.append("upstream gradient: " + ("1" if t.data.size == 1 else "given"))
        if fan_in[t] > 1:
            lines.append(f"Σ of {fan_in[t]} contributions")
        small = grad_lines(t, show_grad, show_data, value=False)
        items.node(f"g{g.index[t]}", kind, Label(f"∂L/∂{text.wrap(g.short[t])}", lines, small),
                   g.scope[t], t)
    step = 0
    for v in reversed(order):  # the order in which backward() pops them
        ctx = v._ctx
        if ctx is None:
            continue
        step += 1
        for i, p in enumerate(ctx.inputs):
            if not p.requires_grad:
                continue
            rid = f"r{g.index[v]}_{i}"
            items.node(rid, "rule", Label(None, [f"{step}. {_rule_text(g, v, i)}"]), ctx.scope)
            eg = _edge_grad(v, i) if show_grad else None
            items.edge(f"g{g.index[v]}", rid)
            items.edge(rid, f"g{g.index[p]}", zero=eg is not None and _is_zero(eg))
    items.legend = [("∂L/∂ parameter", "parameter"), ("∂L/∂ input", "input"),
                    ("∂L/∂ intermediate", "grad"), ("∂L/∂ output", "output"),
                    ("n. derivative rule, step n", "rule")]
    return items


def _rule_text(g, v, i):
    """The local derivative applied to ∂L/∂v on its way to input i (from ``Op.show``), and the
    sum the engine adds when broadcasting made v bigger than that input."""
    ctx, p = v._ctx, v._ctx.inputs[i]
    rule = text.derivative(ctx.op, i, ctx.attrs, [g.short[q] for q in ctx.inputs], g.short[v],
                           p.shape)
    summed = _broadcast_axes(p.shape, v.shape)
    if summed:
        rule += ", sum over batch" if summed == (0,) else f", sum over axes {summed}"
    return rule


def _broadcast_axes(shape, out_shape):
    """The axes of out_shape that broadcasting added to an input of ``shape`` (none when the
    op made it smaller: a reduction hands its gradient back whole)."""
    extra = len(out_shape) - len(shape)
    if extra < 0:
        return ()
    return tuple(range(extra)) + tuple(
        k + extra for k, n in enumerate(shape) if n == 1 and out_shape[k + extra] != 1)


def grad_lines(t, show_grad, show_data, value=True):
    """(text, tone) lines with the value and gradient summaries of ``t``."""
    out = []
    if (show_grad and value or show_data) and t.data is None:
        out.append(("value  not kept (draw a graph built in viz.keep_values())", "muted"))
    elif show_grad and value:
        out.append(("value  " + text.summary(t.data), "value"))
    if show_data and t.data is not None:
        out += [(s, "value") for s in text.data_lines(t.data)]
    if show_grad and t.requires_grad:
        if t.grad is None:
            out.append(("grad  not kept (run viz.capture_grads)", "muted"))
        else:
            g = t.grad.data
            out.append(("grad  " + text.summary(g), "grad" if np.any(g) else "zero"))
    return out
