"""DOT text and rendering: the displayed graph (``graph.py``) as a ``graphviz.Digraph``.

``to_dot(t)`` returns DOT text (no ``dot`` binary needed), ``draw(t)`` a ``graphviz.Digraph``
(it displays inline in Jupyter), ``render(t, "g.svg")`` a file (svg, png, pdf or dot). Both
views go through one emitter that groups nodes into one cluster per module (``Node.scope``),
with ``collapse=True`` folds each layer into one box, colours nodes by kind and adds a legend.
"""
from __future__ import annotations

import html
import os
import re
import shutil
from typing import TYPE_CHECKING

import graphviz

from . import graph, text

if TYPE_CHECKING:  # for the type hints only: the renderer needs nothing from nn at run time
    from ..nn import Module
    from ..tensor import Tensor


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
TONES = {"value": "#333333", "grad": "#1f4e9c", "zero": ZERO_EDGE, "muted": "#888888"}
# How each kind of node is drawn, besides its fill colour.
STYLES = {"op": dict(style="filled"), "const": dict(style="filled,rounded", fontsize="10"),
          "rule": dict(style="rounded,dashed", fontsize="10")}
ROUNDED = dict(style="filled,rounded")

FORMATS = ("svg", "png", "pdf", "dot", "gv")


class GraphvizNotFoundError(RuntimeError):
    """The ``dot`` binary is not on PATH, so only DOT text can be written."""


# ---- public API ----

def to_dot(tensor, params=None, **options):
    """DOT text of the graph that made ``tensor`` (works without the ``dot`` binary).

    Same options as ``draw``.
    """
    return draw(tensor, params, **options).source


def draw(tensor: Tensor, params: Module | dict[str, Tensor] | None = None, *,
         show_grad: bool = False, show_data: bool = False, collapse: bool = False,
         expand: str | Module | list | tuple | set | None = None, direction: str = "forward",
         title: str | None = None, legend: bool = True, rankdir: str = "TB") -> graphviz.Digraph:
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
    order = graph.walk(tensor)
    if show_grad and not any(t.grad is not None for t in order):
        raise ValueError(
            "show_grad=True, but no tensor of this graph has a gradient. Run "
            "viz.capture_grads(loss) (retain_grad() on every node + backward(retain_graph=True)) "
            "before drawing, or pass show_grad=False")
    g = graph.Graph(order, params)
    items = graph.build(g, direction, show_grad, show_data)
    return _emit(g, items, collapse=collapse, expand=expand, title=title, legend=legend,
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
                label=_label(n["label"]), fillcolor=COLORS[n["kind"]], shape="box",
                **STYLES.get(n["kind"], ROUNDED))))
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
        rows = [(words, COLORS[kind]) for words, kind in items.legend]
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
    name, _ = label
    inside = {n["tensor"] for n in members if n["tensor"] is not None}
    params = [t for t in inside if g.kind[t] == "parameter"]
    known = list(g.param_names)  # the model's own order: weight before bias
    params.sort(key=lambda p: known.index(p) if p in g.param_names else len(known))
    lines = [", ".join(f"{g.param_names.get(p) or 'parameter'} {text.shape_only(p.shape)}"
                       for p in params)] if params else []
    # what the layer hands on: its tensors used outside it (or the root)
    outs = sorted((t for t in inside if t._ctx is not None and (
        t is g.root or any(c not in inside for c in g.consumers[t]))), key=g.index.get)
    small = []
    if direction == "forward":
        for t in outs[:1]:
            lines.append("→ " + text.shape_text(t))
            small = graph.grad_lines(t, show_grad, False)
    else:
        steps = sum(1 for n in members if n["tensor"] is None)  # the rule nodes
        lines.append(f"{steps} derivative rules")
        for p in params:
            small += [(f"∂L/∂{g.param_names.get(p, 'parameter')}  {s}", c)
                      for s, c in graph.grad_lines(p, show_grad, False, value=False)]
    return _html(name + (" backward" if direction == "backward" else ""), lines, small=small)


def _legend_label(rows, show_grad, direction):
    cells = [f'<TR><TD BGCOLOR="{fill}" BORDER="1"> </TD><TD ALIGN="LEFT">'
             f"{html.escape(words, quote=False)}</TD></TR>" for words, fill in rows]
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


# ---- labels: HTML-like graphviz text ----

def _esc(words, sub_points=8):
    """HTML-escaped, with one-letter subscripts set small on the baseline: μ_B becomes μ + small B.

    Not <SUB>: graphviz writes it as baseline-shift on a full-size <text>, which Chrome lowers
    onto the next line (rsvg does not); a smaller font on the same baseline looks alike everywhere.
    """
    return _SUBSCRIPT.sub(rf'\1<FONT POINT-SIZE="{sub_points}">\2</FONT>',
                          html.escape(words, quote=False))


_SUBSCRIPT = re.compile(r"(\S)_([A-Za-z])(?![\w.])")


def _label(label):
    """A node's ``graph.Label`` as graphviz HTML."""
    return _html(label.title, label.lines, label.style, label.small)


def _html(title=None, lines=(), title_style="B", small=()):
    """An HTML-like graphviz label: a title, plain lines, then smaller lines coloured by tone."""
    rows = []
    if title is not None:
        rows.append(f"<{title_style}>{_esc(title)}</{title_style}>")
    rows += [_esc(s) for s in lines]
    for words, tone in small:
        rows.append(f'<FONT POINT-SIZE="9" COLOR="{TONES[tone]}">{_esc(words, 7)}</FONT>')
    return "<" + "<BR/>".join(rows) + ">"


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
