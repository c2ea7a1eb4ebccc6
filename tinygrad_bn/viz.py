"""Drawing the graph that made a tensor: DOT text, ``graphviz.Digraph`` objects, rendered files.

``to_dot(t)`` returns DOT text (no ``dot`` binary needed), ``draw(t)`` a ``graphviz.Digraph``
(it displays inline in Jupyter), ``render(t, "g.svg")`` a file (svg, png, pdf or dot).

Both views walk the graph with the engine's own ``autograd.toposort`` (iterative, so a chain of
10,000 nodes draws), and both are turned into DOT by one emitter that groups nodes into one
cluster per module (``Node.scope``) and, with ``collapse=True``, folds each layer into one box.

* ``direction="forward"``: one node per tensor. Op nodes show the op, its attributes (axis,
  keepdims, exponent), shape and dtype, and the tensor's name (batch norm names its steps with
  the paper's μ_B, σ²_B, x̂, ...). Leaves show their parameter name, or "input" / "const".
* ``direction="backward"``: the gradient computation itself. One node per gradient ∂L/∂t, and
  between them one node per derivative rule the engine applies ("·γ", "÷√(σ²_B + ε)",
  "sum over batch"), numbered in the order ``backward()`` runs them.

Gradients for ``show_grad=True``: ``backward()`` keeps ``.grad`` only on leaves and releases the
graph, so call ``capture_grads(loss)`` instead of ``loss.backward()``. It asks every node of the
graph to keep its gradient and runs ``backward(retain_graph=True)``: afterwards every node holds
its gradient and the graph is still there to draw.

Values: the graph keeps only the arrays its derivatives read, so an intermediate such as
(x − μ)² has no value left to summarize. Build the graph inside ``with viz.keep_values():`` to
keep every value for ``show_grad``/``show_data`` (``render_batchnorm_graph`` does).
"""
import html
import os
import re
import shutil

import graphviz
import numpy as np

from . import autograd
from .autograd import keep_values  # noqa: F401  (re-exported: build graphs that keep values)

# Fill colours: kinds of nodes, told apart at a glance (and listed in the legend).
COLORS = {
    "parameter": "#a9cef4",
    "input": "#b8e6b8",
    "const": "#e4e4e4",
    "op": "#ffffff",
    "output": "#ffc98a",
    "module": "#d9ccf2",
    "grad": "#fde2e2",
    "rule": "#ffffff",
}
ZERO_EDGE = "#d62728"  # an edge whose gradient is identically zero
NO_GRAD_EDGE = "#9a9a9a"  # an edge from a tensor that needs no gradient
BN_CLUSTER = ("#fff6dc", "#d9a400")  # fill, border of a batch-norm cluster
OTHER_CLUSTER = ("#f4f4f4", "#9a9a9a")

FORMATS = ("svg", "png", "pdf", "dot", "gv")


class GraphvizNotFoundError(RuntimeError):
    """The ``dot`` binary is not on PATH, so only DOT text can be written."""


# ---- public API ----

def capture_grads(output, gradient=None):
    """Backward from ``output`` keeping every node's gradient and the graph (for show_grad).

    Asks every node of the graph to keep its output's gradient (like ``retain_grad()``, also
    for intermediates no tensor refers to any more), then runs
    ``output.backward(gradient, retain_graph=True)``. Leaf gradients accumulate as usual (zero
    them first if you call it twice). Returns ``output``.
    """
    for t in _walk(output):
        if isinstance(t, _View):
            autograd.retain_node_grad(t.node)
    output.backward(gradient, retain_graph=True)
    return output


def to_dot(tensor, params=None, **options):
    """DOT text of the graph that made ``tensor`` (works without the ``dot`` binary).

    Same options as ``draw``.
    """
    return draw(tensor, params, **options).source


def draw(tensor, params=None, *, show_grad=False, show_data=False, collapse=False, expand=None,
         direction="forward", title=None, legend=True, rankdir="TB"):
    """A ``graphviz.Digraph`` of the graph that made ``tensor`` (displays inline in Jupyter).

    params:    a Module (its ``named_parameters()`` and module names are used) or a dict
               name -> parameter, like ``dict(model.named_parameters())``; names label the leaves.
    show_grad: add value and gradient summaries (mean, std, min, max; scalars as the number)
               and draw edges whose gradient is zero (up to rounding) in red. Needs gradients on
               the nodes: run ``capture_grads(loss)`` first.
    show_data: add the values themselves (numpy's abbreviated printout).
    collapse:  fold every layer (a module without submodules) into one box; ``expand`` keeps
               some open: modules, labels like "BatchNorm1d 1", dotted names like "1", or a type
               name like "BatchNorm1d" for all of that type.
    direction: "forward" (the computation) or "backward" (the gradient computation).
    """
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    order = _walk(tensor)
    if show_grad and not any(t.grad is not None for t in order):
        raise ValueError(
            "show_grad=True, but no tensor of this graph has a gradient. Run "
            "viz.capture_grads(loss) (retain_grad() on every node + backward(retain_graph=True)) "
            "before drawing, or pass show_grad=False")
    graph = _Graph(order, params)
    builder = _forward_items if direction == "forward" else _backward_items
    items = builder(graph, show_grad, show_data)
    return _emit(graph, items, collapse=collapse, expand=expand, title=title, legend=legend,
                 rankdir=rankdir, direction=direction, show_grad=show_grad)


def render(tensor, path, params=None, **options):
    """Write the graph of ``tensor`` (or a ``graphviz.Digraph``) to ``path``; the suffix picks
    the format (svg, png, pdf; dot/gv for DOT text). Returns the path.

    Without the ``dot`` binary the DOT text is still written next to ``path`` and a
    ``GraphvizNotFoundError`` says where and how to install Graphviz.
    """
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"cannot tell the format of {path!r} from its suffix; use one of "
                         f"{', '.join('.' + f for f in FORMATS)}")
    g = tensor if isinstance(tensor, graphviz.Digraph) else draw(tensor, params, **options)
    if fmt in ("dot", "gv"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(g.source)
        return path
    if shutil.which("dot") is None:
        raise _missing_dot(g, path)
    try:
        data = g.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise _missing_dot(g, path) from None
    with open(path, "wb") as f:
        f.write(data)
    return path


def render_batchnorm_graph(out_path, model="bn", backward=False, show_grad=True, seed=0):
    """Render the graph of one batch-norm layer (``model="bn"``) or of the demo MLP
    (``model="mlp"``: 784-100-100-100-10, Linear→BatchNorm1d→Sigmoid, collapsed with the first
    BatchNorm1d expanded) after a backward pass. Returns ``out_path``.

    The loss is mse against a random target ("bn") or cross-entropy on random digits ("mlp");
    inputs and weights come from ``seed``. ``backward=True`` draws the gradient computation.
    """
    from . import nn  # only here: the renderer itself needs nothing from nn
    from .nn import functional as F
    from .tensor import Tensor

    rng = np.random.default_rng(seed)
    saved = np.random.get_state()  # Linear draws from numpy's global generator: leave it as found
    np.random.seed(seed)
    try:
        return _render_demo_graph(out_path, model, backward, show_grad, rng, nn, F, Tensor)
    finally:
        np.random.set_state(saved)


def _render_demo_graph(out_path, model, backward, show_grad, rng, nn, F, Tensor):
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


# ---- the graph, as the builders see it ----

def _walk(tensor):
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


class _Graph:
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
            return f"{sym} = {_number(t.data)}" if sym else f"const {_number(t.data)}"
        if name is None:
            return "parameter" if kind == "parameter" else "input"
        return name

    def _short_name(self, t, counters):
        ctx = t._ctx
        if ctx is None:
            if self.kind[t] == "const":
                return _number(t.data) if t.data.size == 1 else "const"
            return self.paper_symbol(t) or self.param_names.get(t) or t.name or "input"
        counters[ctx.op.name] = k = counters.get(ctx.op.name, 0) + 1
        if t.name:
            return _lhs(t.name)
        if any(p in self.fallback for p in ctx.inputs):
            derived = None  # "exp(add #10)" says no more than the op line does
        else:
            derived = _derive(ctx, [self.short[p] for p in ctx.inputs])
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


def _derive(ctx, names):
    """A readable expression for an unnamed node, from its op and its inputs' names."""
    op, a = ctx.op.name, names[0]
    b = names[1] if len(names) > 1 else None
    infix = {"add": "+", "sub": "−", "mul": "·", "div": "/", "matmul": "@", "pow": "^"}
    if op in infix:
        return f"{a} {infix[op]} {b}"
    if op == "pow_scalar":
        e = ctx.attrs["exponent"]
        sup = {2: "²", 3: "³", -1: "⁻¹"}.get(e)
        return f"({a}){sup}" if sup else f"({a})^{e:g}"
    if op == "neg":
        return f"−{a}"
    if op == "transpose":
        return f"{a}ᵀ" if len(ctx.attrs["axes"]) == 2 else None
    if op in ("reshape", "expand"):
        return a
    if op == "sqrt":
        return f"√({a})"
    return f"{op}({a})"


# ---- labels ----

def _number(a):
    return f"{np.asarray(a).item():.4g}"


def _shape_only(t):
    return "scalar" if t.ndim == 0 else "(" + ", ".join(str(n) for n in t.shape) + ")"


def _shape_text(t):
    return f"{_shape_only(t)} {t.dtype}"


def _op_text(ctx):
    """The op and the attributes that change what it computes (axis, keepdims, exponent)."""
    name, attrs = ctx.op.name, ctx.attrs
    if name in ("sum", "mean", "max"):
        axis = attrs["axis"]
        axis = axis[0] if len(axis) == 1 else axis
        return f"{name}  axis={axis}" + ("  keepdims" if attrs["keepdims"] else "")
    if name == "pow_scalar":
        return f"pow  exponent={attrs['exponent']:g}"
    if name in ("reshape", "expand"):
        return f"{name}  → {tuple(attrs['shape'])}"
    if name == "transpose":
        return f"transpose  axes={attrs['axes']}"
    if name == "getitem":
        text = repr(attrs["index"])
        return "getitem  [" + (text if len(text) <= 24 else text[:21] + "...") + "]"
    return name


def _summary(a):
    """mean, std, min, max of an array; a single number as itself."""
    a = np.asarray(a)
    if a.size == 1:
        return _number(a)
    if a.size == 0:
        return "empty"
    with np.errstate(invalid="ignore", over="ignore"):  # -inf entries (masked classes)
        return (f"mean {a.mean():.3g}  std {a.std():.3g}  "
                f"min {a.min():.3g}  max {a.max():.3g}")


def _data_lines(a):
    text = np.array2string(np.asarray(a), precision=3, threshold=12, edgeitems=2,
                           max_line_width=48, suppress_small=True)
    return text.splitlines()


def _esc(text):
    """HTML-escaped, with one-letter subscripts set as such: μ_B becomes μ<SUB>B</SUB>."""
    return _SUBSCRIPT.sub(r"\1<SUB>\2</SUB>", html.escape(text, quote=False))


_SUBSCRIPT = re.compile(r"(\S)_([A-Za-z])(?![\w.])")


def _html(title=None, lines=(), title_style="B", small=()):
    """An HTML-like graphviz label: a title, plain lines, then smaller coloured lines."""
    rows = []
    if title is not None:
        rows.append(f"<{title_style}>{_esc(title)}</{title_style}>")
    rows += [_esc(s) for s in lines]
    for text, color in small:
        rows.append(f'<FONT POINT-SIZE="9" COLOR="{color}">{_esc(text)}</FONT>')
    return "<" + "<BR/>".join(rows) + ">"


def _grad_lines(t, show_grad, show_data, value=True):
    """(text, colour) lines with the value and gradient summaries of ``t``."""
    out = []
    if (show_grad and value or show_data) and t.data is None:
        out.append(("value  not kept (draw a graph built in viz.keep_values())", "#888888"))
    elif show_grad and value:
        out.append(("value  " + _summary(t.data), "#333333"))
    if show_data and t.data is not None:
        out += [(s, "#333333") for s in _data_lines(t.data)]
    if show_grad and t.requires_grad:
        if t.grad is None:
            out.append(("grad  not kept (run viz.capture_grads)", "#888888"))
        else:
            g = t.grad.data
            out.append(("grad  " + _summary(g), ZERO_EDGE if not np.any(g) else "#1f4e9c"))
    return out


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
    pg = autograd.unbroadcast(np.asarray(rule(v.grad.data, out, *arrays, **ctx.attrs)),
                              p.shape, ctx.op.name)
    # The same rule on absolute values bounds Σ|terms| per entry (the rules are products and
    # quotients of their arguments), also for rules that sum their result themselves.
    with np.errstate(all="ignore"):
        terms = rule(np.abs(v.grad.data), _abs(out), *[_abs(a) for a in arrays], **ctx.attrs)
    return pg, autograd.unbroadcast(np.abs(np.asarray(terms)), p.shape, ctx.op.name)


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

class _Items:
    """Nodes (id, label, fill, scope, tensor, attrs) and edges (src, dst, flags) to emit.

    A node sits in the clusters of its scope; with collapse it folds into its layer's box."""

    def __init__(self):
        self.nodes, self.edges = [], []
        self.legend = []  # (text, fill colour) rows

    def node(self, nid, label, fill, scope, tensor=None, **attrs):
        self.nodes.append(dict(id=nid, label=label, fill=fill, scope=scope, tensor=tensor,
                               attrs=attrs))

    def edge(self, src, dst, zero=False, no_grad=False):
        self.edges.append((src, dst, zero, no_grad))


def _forward_items(g, show_grad, show_data):
    items = _Items()
    for t in g.order:
        nid, kind = f"t{g.index[t]}", g.kind[t]
        small = _grad_lines(t, show_grad, show_data)
        if kind == "const":
            # One small node per use: a shared constant (scalars are cached) would otherwise
            # pull long edges across every layer that uses it.
            for c in dict.fromkeys(g.consumers[t]):
                cid = f"{nid}_{g.index[c]}"
                lines = [_shape_text(t)] if t.data.size != 1 else []
                items.node(cid, _html(g.leaf_title(t), lines, small=_grad_lines(
                    t, False, show_data)), COLORS["const"], c._ctx.scope, t,
                    shape="box", style="filled,rounded", fontsize="10")
            continue
        if t._ctx is None:
            sym = g.paper_symbol(t)
            title = g.leaf_title(t) + (f"  ({sym})" if sym else "")
            items.node(nid, _html(title, [_shape_text(t)], small=small), COLORS[kind], g.scope[t],
                       t, shape="box", style="filled,rounded")
            continue
        if t.name:
            title, style = t.name, "B"
        elif t in g.derived:
            title, style = g.derived[t], "I"
        else:
            title, style = None, "B"
        label = _html(title, [_op_text(t._ctx), _shape_text(t)], style, small)
        items.node(nid, label, COLORS[kind], g.scope[t], t, shape="box",
                   style="filled,rounded" if kind == "output" else "filled")
        for i, p in enumerate(t._ctx.inputs):
            eg = _edge_grad(t, i) if show_grad else None
            src = f"t{g.index[p]}" + (f"_{g.index[t]}" if g.kind[p] == "const" else "")
            items.edge(src, nid, zero=eg is not None and _is_zero(eg),
                       no_grad=not p.requires_grad)
    items.legend = [("parameter", COLORS["parameter"]), ("input", COLORS["input"]),
                    ("constant", COLORS["const"]), ("operation", COLORS["op"]),
                    ("output", COLORS["output"])]
    return items


def _backward_items(g, show_grad, show_data):
    """∂L/∂t nodes joined through one node per derivative rule, in the engine's order."""
    items = _Items()
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
        lines = [_shape_text(t)]
        if t is g.root:
            lines.append("upstream gradient: " + ("1" if t.data.size == 1 else "given"))
        if fan_in[t] > 1:
            lines.append(f"Σ of {fan_in[t]} contributions")
        small = _grad_lines(t, show_grad, show_data, value=False)
        scope = g.scope[t]
        items.node(f"g{g.index[t]}", _html(f"∂L/∂{_wrap(g.short[t])}", lines, small=small),
                   COLORS[kind], scope, t,
                   shape="box", style="filled,rounded")
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
            text = _rule_text(g, v, i)
            items.node(rid, _html(None, [f"{step}. {text}"]), COLORS["rule"], ctx.scope,
                       shape="box", style="rounded,dashed", fontsize="10")
            eg = _edge_grad(v, i) if show_grad else None
            items.edge(f"g{g.index[v]}", rid)
            items.edge(rid, f"g{g.index[p]}", zero=eg is not None and _is_zero(eg))
    items.legend = [("∂L/∂ parameter", COLORS["parameter"]), ("∂L/∂ input", COLORS["input"]),
                    ("∂L/∂ intermediate", COLORS["grad"]), ("∂L/∂ output", COLORS["output"]),
                    ("n. derivative rule, step n", COLORS["rule"])]
    return items


def _rule_text(g, v, i):
    """The local derivative applied to ∂L/∂v on its way to input i, in words."""
    ctx = v._ctx
    names = [g.short[p] for p in ctx.inputs]
    a, b = names[0], names[1] if len(names) > 1 else None
    out, op = g.short[v], ctx.op.name
    p = ctx.inputs[i]
    if op == "add":
        text = "·1"
    elif op == "sub":
        text = "·1" if i == 0 else "·(−1)"
    elif op == "mul":
        text = f"·{b}" if i == 0 else f"·{a}"
    elif op == "div":
        text = f"÷{_wrap(b)}" if i == 0 else f"·(−{_wrap(a)} ÷ {_wrap(b)}²)"
    elif op == "pow":
        text = f"·{b}·{a}^({b}−1)" if i == 0 else f"·{out}·log {a}"
    elif op == "neg":
        text = "·(−1)"
    elif op == "pow_scalar":
        e = ctx.attrs["exponent"]
        text = f"·2{_wrap(a)}" if e == 2 else f"·{e:g}·{_wrap(a)}^{e - 1:g}"
    elif op == "sqrt":
        text = f"÷(2·{out})"
    elif op == "exp":
        text = f"·{out}"
    elif op == "log":
        text = f"÷{_wrap(a)}"
    elif op == "relu":
        text = f"·[{a} > 0]"
    elif op == "sigmoid":
        text = "·σ(1 − σ)"
    elif op == "tanh":
        text = "·(1 − tanh²)"
    elif op == "matmul":
        text = f"@ {_wrap(b)}ᵀ" if i == 0 else f"{_wrap(a)}ᵀ @"
    elif op in ("sum", "mean"):
        axis = ctx.attrs["axis"]
        n = int(np.prod([p.shape[k] for k in axis])) if axis else 1
        if len(axis) == p.ndim:
            spread = "copy to every entry"
        elif axis == (0,) and p.ndim == 2:
            spread = "copy to every row"
        else:
            spread = f"copy along axis {axis[0] if len(axis) == 1 else axis}"
        text = (f"÷{n}, " if op == "mean" else "") + spread
    elif op == "max":
        text = "to the max entries"
    elif op == "reshape":
        text = f"reshape to {p.shape}"
    elif op == "transpose":
        text = "transpose back"
    elif op == "expand":
        text = "identity"
    elif op == "getitem":
        text = f"scatter into {p.shape}"
    else:
        text = f"vjp of {op}"
    reduced = _broadcast_axes(p.shape, v.shape) if op not in ("sum", "mean", "max") else ()
    if reduced:
        text += ", sum over batch" if reduced == (0,) else f", sum over axes {reduced}"
    return text


def _wrap(name):
    """Parenthesize a compound name so '÷' and '·' bind as they should."""
    plain = name.startswith(("(", "√")) or not any(c in name for c in " +−·/@")
    return name if plain else f"({name})"


def _broadcast_axes(shape, out_shape):
    """The axes of out_shape that broadcasting added to an input of ``shape``."""
    extra = len(out_shape) - len(shape)
    return tuple(range(extra)) + tuple(
        k + extra for k, n in enumerate(shape) if n == 1 and out_shape[k + extra] != 1)


# ---- the emitter: clusters per module, collapsed boxes, legend ----

def _emit(g, items, *, collapse, expand, title, legend, rankdir, direction, show_grad):
    labels = _module_labels(g, items)
    hidden = _hidden_modules(items, labels)
    opened = _resolve_expand(expand, labels, g.module_names)

    def box_of(scope):
        """The layer a node is folded into, or None to draw it as itself."""
        if not collapse or not scope:
            return None
        m = scope[-1]
        if _has_children(m) or m in opened:
            return None
        return m

    rep, boxes = {}, {}  # node id -> id drawn; module -> (box id, member items, scope)
    for n in items.nodes:
        m = box_of(n["scope"])
        if m is None:
            rep[n["id"]] = n["id"]
            continue
        if m not in boxes:
            boxes[m] = (f"m{len(boxes)}", [], n["scope"][:-1])
        boxes[m][1].append(n)
        rep[n["id"]] = boxes[m][0]

    dot = graphviz.Digraph("tinygrad_bn", graph_attr=dict(
        rankdir=rankdir, fontname="DejaVu Sans", fontsize="12", nodesep="0.3", ranksep="0.35",
        labelloc="t", label=_html(title) if title else "", newrank="true"),
        node_attr=dict(fontname="DejaVu Sans", fontsize="11", margin="0.12,0.05"),
        edge_attr=dict(color="#444444", arrowsize="0.7"))
    if len(items.nodes) > 2000:
        # dot's crossing minimization and network simplex dominate on big graphs: cap their
        # iterations (a 10,000-op chain lays out in ~35 s instead of ~95 s).
        dot.graph_attr.update(nslimit="1", nslimit1="1", mclimit="0.1", searchsize="10",
                              splines="line")
    tree = {(): []}  # visible scope path -> DOT statements to place in that cluster

    def place(scope, stmt):
        path = tuple(m for m in scope if m not in hidden)
        tree.setdefault(path, []).append(stmt)

    for n in items.nodes:
        if rep[n["id"]] == n["id"]:
            place(n["scope"], ("node", n["id"], dict(
                label=n["label"], fillcolor=n["fill"], **n["attrs"])))
    for m, (bid, members, scope) in boxes.items():
        place(scope, ("node", bid, dict(label=_box_label(g, labels[m], members, direction,
                                                         show_grad),
                                        fillcolor=COLORS["module"], shape="box3d",
                                        style="filled")))
    seen = {}
    for src, dst, zero, no_grad in items.edges:
        key = (rep[src], rep[dst])
        if key[0] == key[1]:
            continue
        if key[0] != src or key[1] != dst:  # an edge into or out of a box: draw it once
            if key in seen:
                prev = seen[key]
                seen[key] = (prev[0] and zero, prev[1] and no_grad)
                continue
            seen[key] = (zero, no_grad)
            continue
        dot.edge(src, dst, **_edge_attrs(zero, no_grad))
    for (src, dst), (zero, no_grad) in seen.items():
        dot.edge(src, dst, **_edge_attrs(zero, no_grad))

    _emit_tree(dot, tree, labels)
    if legend:
        rows = list(items.legend)
        if boxes:
            rows.append(("module (collapsed)", COLORS["module"]))
        dot.node("legend", _legend_label(rows, show_grad, direction), shape="plaintext")
    return dot


def _edge_attrs(zero, no_grad):
    if zero:
        return dict(color=ZERO_EDGE, penwidth="2.2", fontcolor=ZERO_EDGE, label=" grad 0",
                    fontsize="9")
    if no_grad:
        return dict(color=NO_GRAD_EDGE, style="dashed")
    return {}


def _emit_tree(dot, tree, labels):
    """Nested clusters, built deepest first so each child is added to its parent."""
    built = {}
    for path in sorted(tree, key=len, reverse=True):
        if not path:
            continue
        m = path[-1]
        fill, border = BN_CLUSTER if type(m).__name__.startswith("BatchNorm") else OTHER_CLUSTER
        sub = graphviz.Digraph(name=f"cluster_{labels[m][1]}")
        sub.attr(label=_cluster_label(m, labels[m][0]), style="filled,rounded", fillcolor=fill,
                 color=border, labeljust="l", fontsize="12")
        _add(sub, tree.get(path, []))
        for child in built.pop(path, []):
            sub.subgraph(child)
        parent = path[:-1]
        while parent and parent not in tree:
            parent = parent[:-1]
        built.setdefault(parent, []).append(sub)
    _add(dot, tree.get((), []))
    for child in built.pop((), []):
        dot.subgraph(child)


def _add(dot, stmts):
    for _, nid, attrs in stmts:
        dot.node(nid, **attrs)


def _cluster_label(m, label):
    lines = []
    if type(m).__name__.startswith("BatchNorm"):
        lines = ["x̂ = (x − μ_B) / √(σ²_B + ε),   y = γ·x̂ + β"]
    return _html(label, lines)


def _module_labels(g, items):
    """module -> ("BatchNorm1d 1  [1]", a DOT-safe key), numbered per type in forward order
    (by the depth of each module's first tensor: layer k+1 needs layer k's output)."""
    first = {}
    for n in items.nodes:
        t = n["tensor"]
        if t is None or t._ctx is None:
            continue  # parameters are leaves of depth 0 in every layer: they cannot order them
        for m in n["scope"]:
            rank = (g.depth[t], g.index[t])
            first[m] = min(first.get(m, rank), rank)
    labels, counts = {}, {}
    for m in sorted(first, key=first.get):
        kind = type(m).__name__
        counts[kind] = k = counts.get(kind, 0) + 1
        text = f"{kind} {k}"
        if g.module_names.get(m):
            text += f"  [{g.module_names[m]}]"
        labels[m] = (text, f"{kind}_{k}")
    return labels


def _hidden_modules(items, labels):
    """Containers not worth a frame: Sequential, and any module that wraps every node."""
    scopes = [n["scope"] for n in items.nodes if n["tensor"] is not None
              and n["tensor"]._ctx is not None]
    hidden = {m for m in labels if type(m).__name__ in ("Sequential", "ModuleList")}
    for m in labels:
        if scopes and all(m in s for s in scopes):
            hidden.add(m)
    return hidden


def _has_children(m):
    children = getattr(m, "children", None)
    return bool(children()) if callable(children) else False


def _resolve_expand(expand, labels, module_names):
    """The modules ``expand`` names (objects, "BatchNorm1d 1", dotted names, type names)."""
    if expand is None:
        return set()
    wanted = expand if isinstance(expand, (list, tuple, set)) else [expand]
    opened = set()
    for w in wanted:
        if not isinstance(w, str):
            opened.add(w)
            continue
        found = {m for m, (text, _) in labels.items()
                 if text.split("  [")[0] == w or module_names.get(m) == w
                 or type(m).__name__ == w}
        if not found:
            known = ", ".join(repr(t.split("  [")[0]) for t, _ in labels.values())
            raise ValueError(f"expand={w!r} names no module of this graph; its modules are "
                             f"{known or 'none'} (or pass dotted names / module objects)")
        opened |= found
    return opened


def _box_label(g, label, members, direction, show_grad):
    """A collapsed layer: its name, the parameters inside, the shape it produces."""
    text, _ = label
    inside = {n["tensor"] for n in members if n["tensor"] is not None}
    params = [t for t in inside if g.kind[t] == "parameter"]
    known = list(g.param_names)  # the model's own order: weight before bias
    params.sort(key=lambda p: known.index(p) if p in g.param_names else len(known))
    lines = [", ".join(f"{g.param_names.get(p) or 'parameter'} {_shape_only(p)}"
                       for p in params)] if params else []
    # what the layer hands on: its tensors used outside it (or the root)
    outs = sorted((t for t in inside if t._ctx is not None and (
        t is g.root or any(c not in inside for c in g.consumers[t]))), key=g.index.get)
    small = []
    if direction == "forward":
        for t in outs[:1]:
            lines.append("→ " + _shape_text(t))
            small = _grad_lines(t, show_grad, False)
    else:
        steps = sum(1 for n in members if n["tensor"] is None)  # the rule nodes
        lines.append(f"{steps} derivative rules")
        for p in params:
            small += [(f"∂L/∂{g.param_names.get(p, 'parameter')}  {s}", c)
                      for s, c in _grad_lines(p, show_grad, False, value=False)]
    return _html(text + (" backward" if direction == "backward" else ""), lines, small=small)


def _legend_label(rows, show_grad, direction):
    cells = [f'<TR><TD BGCOLOR="{fill}" BORDER="1"> </TD><TD ALIGN="LEFT">'
             f"{html.escape(text, quote=False)}</TD></TR>" for text, fill in rows]
    if show_grad:
        cells.append(f'<TR><TD><FONT COLOR="{ZERO_EDGE}"><B>→</B></FONT></TD>'
                     f'<TD ALIGN="LEFT"><FONT COLOR="{ZERO_EDGE}">gradient ≡ 0 on this edge'
                     f"</FONT></TD></TR>")
    if direction == "forward":
        cells.append(f'<TR><TD><FONT COLOR="{NO_GRAD_EDGE}">⇢</FONT></TD>'
                     f'<TD ALIGN="LEFT"><FONT COLOR="{NO_GRAD_EDGE}">no gradient needed'
                     f"</FONT></TD></TR>")
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2">'
            '<TR><TD COLSPAN="2"><B>legend</B></TD></TR>' + "".join(cells) + "</TABLE>>")


def _missing_dot(g, path):
    dot_path = os.path.splitext(path)[0] + ".dot"
    with open(dot_path, "w", encoding="utf-8") as f:
        f.write(g.source)
    fmt = os.path.splitext(path)[1].lstrip(".")
    return GraphvizNotFoundError(
        f"cannot render {path!r}: the Graphviz 'dot' program is not on PATH. Install Graphviz "
        f"(Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew install graphviz; conda: "
        f"conda install graphviz), or render the DOT text written to {dot_path!r} elsewhere "
        f"(e.g. dot -T{fmt} {dot_path} -o {path}).")
