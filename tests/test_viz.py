"""The graph renderer: DOT text, rendering with the real dot binary, big graphs, the CLI."""
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tinygrad_bn import Tensor, nn, ops, viz
from tinygrad_bn.cli import main as cli_main
from tinygrad_bn.samples import SAMPLES, make_inputs
from tinygrad_bn.tensor import apply_op
from tinygrad_bn.viz import text

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")

# The primitive ops of training-mode batch norm on (N, C) input, with the paper's names.
BN_STEPS = [("μ_B", "mean", "(1, 3)"), ("x − μ_B", "sub", "(8, 3)"),
            ("(x − μ_B)²", "pow_scalar", "(8, 3)"), ("σ²_B", "mean", "(1, 3)"),
            ("σ²_B + ε", "add", "(1, 3)"), ("√(σ²_B + ε)", "sqrt", "(1, 3)"),
            ("x̂", "div", "(8, 3)"), ("γ·x̂", "mul", "(8, 3)"), ("y = γ·x̂ + β", "add", "(8, 3)")]


def plain(label):
    """A node's HTML label as plain text (μ + a small-font B back to μ_B)."""
    label = re.sub(r'(\S)<FONT POINT-SIZE="\d+">([A-Za-z])</FONT>', r"\1_\2", label)
    return re.sub(r"<[^>]*>", " ", label)


def nodes(dot_text):
    """node id -> plain label text, for the node statements of DOT text."""
    found = {}
    for m in re.finditer(r"^\s*(\w+) \[label=<(.*)> \w+=.*\]$", dot_text, re.M):
        found[m.group(1)] = plain(m.group(2))
    return found


def bn_graph(grad=True, loss="mse"):
    rng = np.random.default_rng(0)
    bn = nn.BatchNorm1d(3)
    bn.weight.data = rng.uniform(0.5, 1.5, 3).astype(np.float32)
    x = Tensor(rng.normal(1, 2, (8, 3)).astype(np.float32), requires_grad=True, name="x")
    y = bn(x)
    target = rng.normal(0, 1, (8, 3)).astype(np.float32)
    out = ((y - target) ** 2).mean() if loss == "mse" else y.sum()
    if grad:
        viz.capture_grads(out)
    return bn, x, y, out


def test_one_node_per_batch_norm_primitive_with_paper_labels_and_shapes():
    bn, _, _, out = bn_graph(grad=False)
    labels = list(nodes(viz.to_dot(out, dict(bn.named_parameters(prefix="bn")))).values())
    for name, op, shape in BN_STEPS:
        hits = [s for s in labels if re.search(rf"(^|\s){re.escape(name)}\s+{op}\b", s)]
        assert len(hits) == 1, (name, hits)
        assert f"{shape} float32" in hits[0]
    assert any("axis=0  keepdims" in s for s in labels)
    assert any("exponent=2" in s for s in labels)


def test_leaves_named_by_parameters_inputs_and_constants():
    bn, _, _, out = bn_graph(grad=False)
    text = " | ".join(nodes(viz.to_dot(out, bn)).values())
    assert "weight  (γ)" in text and "bias  (β)" in text and "(3) float32" in text
    assert "x (8, 3) float32" in " ".join(text.split())
    assert "ε = 1e-05" in text
    text = " | ".join(nodes(viz.to_dot(out, {"1.weight": bn.weight})).values())
    assert "1.weight  (γ)" in text
    with pytest.raises(TypeError, match="named_parameters"):
        viz.to_dot(out, ["not", "params"])


def test_clusters_colours_and_legend():
    bn, _, _, out = bn_graph(grad=False)
    dot = viz.to_dot(out, bn)
    assert "subgraph cluster_BatchNorm1d_1" in dot and "BatchNorm1d 1" in dot
    for kind in ("parameter", "input", "const", "output"):
        assert viz.COLORS[kind] in dot
    assert "legend" in dot


def test_gradient_summaries_after_backward():
    bn, x, _, out = bn_graph(grad=True)
    labels = nodes(viz.to_dot(out, bn, show_grad=True))
    xhat = next(s for s in labels.values() if re.search(r"(^|\s)x̂\s+div", s))
    assert re.search(r"value\s+mean \S+\s+std 1\b", xhat)  # x̂ is normalized per feature
    assert re.search(r"grad\s+mean \S+\s+std \S+\s+min \S+\s+max \S+", xhat)
    loss = next(s for s in labels.values() if "scalar float32" in s)
    assert re.search(r"grad\s+1\b", loss)  # scalars show the number itself
    g = x.grad.data
    assert f"min {g.min():.3g}" in " ".join(labels.values())


def test_show_grad_without_gradients_says_what_to_do():
    _, _, _, out = bn_graph(grad=False)
    with pytest.raises(ValueError, match="capture_grads"):
        viz.to_dot(out, show_grad=True)
    out.backward()  # releases the graph
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        viz.to_dot(out)


def test_zero_gradient_edges_are_highlighted():
    # Σ x̂ = 0 over the batch, so for L = sum(y): ∂L/∂√(σ²+ε) = -Σ γ·x̂/√(σ²+ε) = 0 and
    # ∂L/∂γ = Σ x̂ = 0. Both edges carry (up to float32 rounding) no gradient.
    bn, _, _, out = bn_graph(grad=True, loss="sum")
    dot = viz.to_dot(out, bn, show_grad=True)
    ids = {text.split("  ")[0].strip(): nid for nid, text in nodes(dot).items()}
    zero_edges = re.findall(rf"(\w+) -> (\w+) \[[^\]]*color=\"{viz.ZERO_EDGE}\"", dot)
    assert sorted(zero_edges) == sorted([(ids["√(σ²_B + ε)"], ids["x̂"]),
                                         (ids["weight"], ids["γ·x̂"])])
    # with an mse loss no edge is zero
    bn, _, _, out = bn_graph(grad=True, loss="mse")
    assert viz.ZERO_EDGE + '" penwidth' not in viz.to_dot(out, bn, show_grad=True)


def test_show_data_prints_values():
    a = Tensor(np.array([1.5, -2.25]), requires_grad=True, name="a")
    dot = viz.to_dot((a * 2).sum(), show_data=True)
    assert "[ 1.5  -2.25]" in dot


def test_backward_view_lists_local_derivatives_in_engine_order():
    bn, _, _, out = bn_graph(grad=True)
    text = " | ".join(nodes(viz.to_dot(out, bn, direction="backward", show_grad=True)).values())
    steps = {rule: int(k) for k, rule in re.findall(r"(\d+)\. ([^|]+?)\s*\|", text + " |")}
    assert "·γ" in steps and "÷√(σ²_B + ε)" in steps
    assert "·x̂, sum over batch" in steps
    assert steps["·γ"] < steps["÷(2·√(σ²_B + ε))"] < steps["÷8, copy to every row"]
    assert "∂L/∂x" in text and "Σ of 2 contributions" in text
    with pytest.raises(ValueError, match="direction"):
        viz.to_dot(out, direction="sideways")


def test_collapse_keeps_the_chosen_batch_norm_expanded():
    np.random.seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Sigmoid(),
                        nn.Linear(5, 5), nn.BatchNorm1d(5), nn.Sigmoid(), nn.Linear(5, 2))
    x = Tensor(np.random.randn(4, 6).astype(np.float32), name="x")
    out = net(x).sum()
    dot = viz.to_dot(out, net, collapse=True, expand="BatchNorm1d 2")
    boxes = [s for s in nodes(dot).values() if "Linear" in s or "BatchNorm1d" in s]
    assert any("Linear 1  [0]" in s and "0.weight (5, 6)" in s for s in boxes)
    assert any("BatchNorm1d 1  [1]" in s for s in boxes)
    assert "cluster_BatchNorm1d_2" in dot and "cluster_BatchNorm1d_1" not in dot
    assert dot.count("σ²") >= 3 and "4.weight  (γ)" in dot  # only the second BN is open
    assert "cluster_Sequential" not in dot
    with pytest.raises(ValueError, match="BatchNorm1d 1"):
        viz.to_dot(out, net, collapse=True, expand="BatchNorm1d 9")


def test_ten_thousand_node_chain():
    x = Tensor(np.ones(3), requires_grad=True, name="x")
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    dot = viz.to_dot(y)
    # the tensors, one node per use of the shared constant, the legend
    assert dot.count("label=<") == 10_001 + 10_000 + 1
    assert dot.count("->") == 20_000


@needs_dot
def test_long_chain_renders_with_dot(tmp_path):
    # dot itself needs ~0.5 s for 1,000 ops but ~35 s for 10,000 (measured on 2 cores), so the
    # 10,000-node chain above checks the DOT text and this one the layout.
    y = Tensor(np.ones(3), requires_grad=True, name="x")
    for _ in range(1000):
        y = y.tanh()
    root = ET.parse(viz.render(y, tmp_path / "chain.svg")).getroot()
    assert sum(1 for e in root.iter() if e.get("class") == "node") == 1001 + 1


@needs_dot
def test_renders_valid_svg_png_pdf_and_dot(tmp_path):
    bn, _, _, out = bn_graph(grad=True)
    svg = viz.render(out, tmp_path / "g.svg", bn, show_grad=True)
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert "μ" in open(svg, encoding="utf-8").read()
    png = viz.render(out, tmp_path / "g.png", bn)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert open(viz.render(out, tmp_path / "g.pdf"), "rb").read(5) == b"%PDF-"
    assert "digraph" in open(viz.render(out, tmp_path / "g.dot"), encoding="utf-8").read()
    assert hasattr(viz.draw(out), "_repr_mimebundle_")  # shows inline in Jupyter
    with pytest.raises(ValueError, match="suffix"):
        viz.render(out, tmp_path / "g.jpeg2000")


@needs_dot
def test_render_batchnorm_graph_both_models_and_directions(tmp_path):
    for model in ("bn", "mlp"):
        for backward in (False, True):
            path = viz.render_batchnorm_graph(tmp_path / f"{model}{backward}.svg", model=model,
                                              backward=backward)
            assert ET.parse(path).getroot().tag.endswith("svg")


def test_missing_dot_binary_explains_and_writes_dot(tmp_path, monkeypatch):
    _, _, _, out = bn_graph(grad=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(viz.GraphvizNotFoundError) as err:
        viz.render(out, tmp_path / "g.svg")
    message = str(err.value)
    assert "apt-get install graphviz" in message and "brew install graphviz" in message
    assert str(tmp_path / "g.dot") in message
    assert "digraph" in (tmp_path / "g.dot").read_text(encoding="utf-8")
    assert "digraph" in viz.to_dot(out)  # DOT text needs no binary
    assert cli_main(["graph", "--out", str(tmp_path / "c.png")]) == 1


@needs_dot
def test_cli_graph(tmp_path, capsys):
    out = tmp_path / "bn_graph.svg"
    assert cli_main(["graph", "--out", str(out)]) == 0
    assert ET.parse(out).getroot().tag.endswith("svg") and "wrote" in capsys.readouterr().out
    assert cli_main(["graph", "--model", "mlp", "--backward", "--no-grad",
                     "--out", str(tmp_path / "m.png")]) == 0
    with pytest.raises(SystemExit) as refused:  # checked when parsed, as every flag
        cli_main(["graph", "--out", str(tmp_path / "x.txt")])
    assert refused.value.code == 2


def test_values_the_graph_did_not_keep_are_marked_and_keep_values_keeps_them():
    # (x − μ_B)² is read by no derivative, so a normal graph frees it during the forward
    bn, _, _, out = bn_graph(grad=True)
    square = next(s for s in nodes(viz.to_dot(out, bn, show_grad=True)).values()
                  if re.search(r"μ_B\)²\s+pow", s))
    assert re.search(r"value\s+not kept", square) and "keep_values" in square
    assert re.search(r"grad\s+mean \S+", square)  # its gradient was still captured
    with viz.keep_values():
        bn, x, _, out = bn_graph(grad=True)
    square = next(s for s in nodes(viz.to_dot(out, bn, show_grad=True)).values()
                  if re.search(r"μ_B\)²\s+pow", s))
    centered = x.data - x.data.mean(axis=0)
    assert f"max {(centered ** 2).max():.3g}" in square


@pytest.mark.parametrize("op", ops.PRIMITIVES, ids=lambda op: op.name)
def test_every_primitive_is_drawn_from_its_show_texts(op):
    # one label and one derivative text per input, and every placeholder fillable on the
    # samples: an unknown one would stay in the drawing as "{name}"
    assert len(op.show) == 1 + len(op.vjps) and all(isinstance(s, str) and s for s in op.show)
    rng = np.random.default_rng(0)
    for sample in SAMPLES[op.name]:
        args = [Tensor(a, requires_grad=True, name=n)
                for a, n in zip(make_inputs(sample, rng), "ab")]
        out = sample.fn(*args)
        forward = " | ".join(nodes(viz.to_dot(out)).values())
        backward = " | ".join(nodes(viz.to_dot(out, direction="backward")).values())
        assert re.search(rf"\b{op.name}\b", forward), (sample.label, forward)
        for drawing in (forward, backward):
            assert "{" not in drawing and "}" not in drawing, (sample.label, drawing)
        assert "vjp of" not in backward and f"{op.name} #" not in backward, sample.label


def test_show_texts_fill_names_attributes_and_powers():
    x = "x − μ_B"
    power = "·{exponent}·{x}^({exponent}−1)"
    assert text.fill(power, {"x": x}, {"exponent": 2}) == "·2·(x − μ_B)"
    assert text.fill(power, {"x": x}, {"exponent": 3}) == "·3·(x − μ_B)²"
    assert text.fill(power, {"x": "a"}, {"exponent": -1.5}) == "·-1.5·a^-2.5"
    assert text.fill("exp({x})", {"x": "a + b"}, {}) == "exp(a + b)"  # already enclosed
    assert text.fill("÷{y}", {"y": "√(σ²_B + ε)"}, {}) == "÷√(σ²_B + ε)"
    assert text.fill("{x}·{y}", {"x": "(a) + (b)", "y": "c"}, {}) == "((a) + (b))·c"
    index = (slice(1, None), slice(None, None, 2))
    assert text.fill("{x}[{index}]", {"x": "a"}, {"index": index}) == "a[1:, ::2]"
    assert text.fill("÷{n}, {what}", {}, {}, {"n": 8}) == "÷8, {what}"  # unknown: left visible


def test_ops_outside_the_table_are_drawn_by_their_own_show_or_their_name():
    # e.g. distributed's all_reduce: an Op defined elsewhere, applied through the same seam
    a = Tensor(np.ones(3), requires_grad=True, name="a")
    all_reduce = ops.Op("all_reduce", lambda x: x, lambda g, out, x: g, reads=(),
                        show=("Σ_ranks {x}", "copy to every rank"))
    labels = " | ".join(nodes(viz.to_dot(apply_op(all_reduce, a * 2), direction="backward"))
                        .values())
    assert "∂L/∂(Σ_ranks (a·2))" in labels and "1. copy to every rank" in labels
    twice = ops.Op("twice", lambda x: 2 * x, lambda g, out, x: 2 * g, reads=())
    del twice.show  # an op-like object with no picture at all
    forward = " | ".join(nodes(viz.to_dot(apply_op(twice, a))).values())
    backward = " | ".join(nodes(viz.to_dot(apply_op(twice, a), direction="backward")).values())
    assert "twice(a)  twice" in forward and "1. vjp of twice" in backward
    broken = ops.Op("broken", lambda x: x, lambda g, out, x: g, reads=(), show=("f{x", "·1"))
    with pytest.raises(ValueError, match="Op broken: show text 'f{x'"):
        viz.to_dot(apply_op(broken, a))
