"""The one-page ``report.html`` of an output folder: figure, graph, gradcheck, extra sections.

Self-contained: PNGs are embedded as base64 and SVGs inlined, so the page opens in any browser
with no server and survives being mailed alone. It links the folder's data files as well.

Other demos add a section by writing ``<out>/sections/<name>.json`` (``add_section`` does it):
``{"title": str, "text": str, "image": "relative/path.png" | null,
"table": {"columns": [...], "rows": [[...], ...]} | null, "order": int, "kind": "note" | null}``.
``text`` is plain text; a blank line starts a new paragraph. Sections are shown by ``order``
(the built-in parts use 10, 20 and 30; the default is 50), then by name.
"""
import base64
import datetime
import glob
import html
import json
import os

FIGURE_JSON, FIGURE_PNG, SUMMARY_TXT = "mnist_bn.json", "mnist_bn.png", "summary.txt"
GRADCHECK_JSON, GRADCHECK_TXT = "gradcheck.json", "gradcheck.txt"
# The graphs the demo renders, with their captions, in display order.
GRAPHS = {
    "bn_graph.svg": "One BatchNorm1d layer after backward(): every node is a primitive op; "
                    "the gradients of x, gamma and beta come out of the chain rule over them.",
    "mlp_graph.svg": "The demo network, one box per layer, the first BatchNorm1d opened up.",
}
SECTIONS_DIR = "sections"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".svg": "image/svg+xml"}


def add_section(out_dir, name, title, text="", image=None, table=None, order=50, kind=None):
    """Write ``<out_dir>/sections/<name>.json`` for ``build_report`` to include; returns its path.

    ``image`` is a path relative to ``out_dir``; ``table`` is {"columns": [...], "rows": [...]};
    ``kind="note"`` shows the section as a highlighted note (e.g. a part that could not run).
    """
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"add_section: name must be a plain file name, got {name!r}")
    if table is not None and not ("columns" in table and "rows" in table):
        raise ValueError("add_section: table must be {'columns': [...], 'rows': [[...], ...]}")
    folder = os.path.join(out_dir, SECTIONS_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"title": title, "text": text, "image": image, "table": table,
                   "order": order, "kind": kind}, f, indent=1)
    return path


def load_sections(out_dir):
    """Every ``sections/*.json`` as (order, name, dict), sorted; unreadable ones become notes."""
    sections = []
    for path in glob.glob(os.path.join(out_dir, SECTIONS_DIR, "*.json")):
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path) as f:
                doc = json.load(f)
            if not isinstance(doc, dict) or "title" not in doc:
                raise ValueError("expected an object with at least a 'title'")
        except (OSError, ValueError) as e:
            doc = {"title": f"Section {name}", "kind": "note",
                   "text": f"{SECTIONS_DIR}/{name}.json could not be read: {e}"}
        sections.append((int(doc.get("order") or 50), name, doc))
    return sorted(sections, key=lambda s: (s[0], s[1]))


def build_report(out_dir, title="tinygrad_bn: batch normalization, seen from the inside"):
    """Write ``<out_dir>/report.html`` from whatever the folder holds; returns its path."""
    parts = [(10, _figure_part(out_dir)), (20, _graph_part(out_dir)),
             (30, _gradcheck_part(out_dir))]
    parts += [(order, _section_part(out_dir, name, doc))
              for order, name, doc in load_sections(out_dir)]
    body = "\n".join(p for _, p in sorted(parts, key=lambda p: p[0]) if p)
    page = _PAGE.format(title=_e(title), body=body, files=_files_part(out_dir),
                        when=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    path = os.path.join(out_dir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


# ---------------------------------------------------------------- the built-in parts

def _figure_part(out_dir):
    json_path = os.path.join(out_dir, FIGURE_JSON)
    if not os.path.exists(json_path):
        return _note("The MNIST experiment", f"{FIGURE_JSON} is missing: the experiment did not "
                     f"run into this folder (tinygrad-bn train --out {out_dir}).")
    with open(json_path) as f:
        doc = json.load(f)
    cfg, summary = doc["config"], doc.get("summary", {})
    out = ["<section id='experiment'><h2>The batch-norm paper's MNIST experiment</h2>",
           f"<p>{_e(_describe(cfg))}</p>"]
    png = os.path.join(out_dir, FIGURE_PNG)
    if os.path.exists(png):
        out.append(f"<figure>{_img(png, 'Figure 1 redrawn')}<figcaption>(a) test accuracy, "
                   f"mean and min–max over seeds; (b), (c) the 15th, 50th and 85th percentile "
                   f"over test images of the input to one typical sigmoid of the last hidden "
                   f"layer, without and with batch norm; (d) for every unit of that layer "
                   f"and every seed, how far its median wandered during training (largest "
                   f"minus smallest value after the first evaluation), in units of its final "
                   f"15–85 width: the smaller, the steadier the input the next layer sees. "
                   f"The unit drawn in (b) and (c) is the median of this distribution."
                   f"</figcaption></figure>")
    else:
        out.append(_note_p(f"{FIGURE_PNG} is missing (matplotlib not installed? "
                           f"pip install tinygrad_bn[demo])."))
    out.append(_summary_table(summary, cfg))
    out.append("</section>")
    return "\n".join(out)


def _describe(cfg):
    return (f"Dataset {cfg['dataset']} ({cfg.get('n_train', '?'):,} training, "
            f"{cfg.get('n_test', '?'):,} test images); network 784-"
            f"{'-'.join(map(str, cfg['hidden']))}-10, each hidden layer Linear → (BatchNorm1d) "
            f"→ {cfg['activation']}; weights N(0, {cfg['init_std']}²); plain SGD, learning rate "
            f"{cfg['lr']}, batch {cfg['batch_size']}, {cfg['steps']:,} steps; test accuracy "
            f"every {cfg['eval_every']} steps; seeds {', '.join(map(str, cfg['seeds']))}.")


def _summary_table(summary, cfg):
    from .experiments.mnist_bn import VARIANT_LABELS, reference_cells
    ref, note = reference_cells(cfg["dataset"], cfg["steps"], cfg["eval_every"])
    head = ["", "final test accuracy", "steps to 90%", "steps to 95%"]
    rows = []
    for variant, row in summary.items():
        cells = [VARIANT_LABELS.get(variant, variant), _ms(row["final_acc"], "{:.4f}")]
        for key in ("steps_to_90", "steps_to_95"):
            text = _ms(row[key], "{:,.0f}")
            if row[key].get("reached", row["n_seeds"]) < row["n_seeds"]:
                text += f" ({row[key]['reached']}/{row['n_seeds']} seeds)"
            cells.append(text)
        rows.append(cells)
    rows += [[f"PyTorch, {VARIANT_LABELS.get(v, v)}"] + ref[v] for v in summary if v in ref]
    n = max((r["n_seeds"] for r in summary.values()), default=0)
    return _table(head, rows) + f"<p class='small'>mean ± sd over {n} seeds. Steps to a " \
        f"threshold: the first evaluation at or above it. {_e(note)}</p>"


def _ms(stat, pattern):
    if stat.get("mean") is None:
        return "never"
    return f"{pattern.format(stat['mean'])} ± {pattern.format(stat['sd'])}"


def _graph_part(out_dir):
    found = [(name, caption) for name, caption in GRAPHS.items()
             if os.path.exists(os.path.join(out_dir, name))]
    if not found:
        return ""  # the demo writes a note section saying why, when it knows
    out = ["<section id='graph'><h2>The batch-norm computation graph</h2>"]
    for name, caption in found:
        out.append(f"<figure><div class='svg'>{_inline_svg(os.path.join(out_dir, name))}</div>"
                   f"<figcaption>{_e(caption)} (<a href='{_e(name)}'>{_e(name)}</a>)"
                   f"</figcaption></figure>")
    out.append("</section>")
    return "\n".join(out)


def _gradcheck_part(out_dir):
    path = os.path.join(out_dir, GRADCHECK_JSON)
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        rep = json.load(f)
    verdict = "all checks pass" if rep.get("passed") else \
        "FAILED: " + "; ".join(rep.get("failures", []))
    out = ["<section id='gradcheck'><h2>Gradient checks</h2>",
           f"<p>Autodiff against float64 central differences, {_e(verdict)}.</p>"]
    bn = rep.get("batch_norm")
    if bn and bn.get("rows"):
        out.append(f"<h3>Batch norm, x of shape {_e(tuple(bn['shape']))}: the same gradients "
                   f"four ways</h3><p class='small'>A = autodiff through the composed graph, "
                   f"P = the paper's step-by-step chain rule, C = the closed form, "
                   f"FD = central differences; largest absolute differences.</p>")
        out.append(_table(["gradient", "|A − C|", "|P − C|", "|A − P|", "|FD − A|", "result"],
                          [[f"d{r['param']}", _sci(r.get("autodiff_vs_closed")),
                            _sci(r.get("chain_vs_closed")), _sci(r.get("autodiff_vs_chain")),
                            _sci(r.get("fd_vs_autodiff")), "ok" if r.get("passed") else "FAIL"]
                           for r in bn["rows"]]))
    prims = rep.get("primitives")
    if prims:
        n_ok = sum(1 for r in prims if r.get("passed"))
        out.append(f"<details><summary>Every primitive: {n_ok} of {len(prims)} checks pass"
                   f"</summary>")
        out.append(_table(["op", "sample", "input", "shape", "max abs err", "max rel err",
                           "result"],
                          [[r.get("op"), r.get("sample"), r.get("input"),
                            tuple(r.get("shape", ())), _sci(r.get("max_abs_err")),
                            _sci(r.get("max_rel_err")), "ok" if r.get("passed") else "FAIL"]
                           for r in prims]))
        out.append("</details>")
    txt = os.path.join(out_dir, GRADCHECK_TXT)
    if os.path.exists(txt):
        out.append(f"<p class='small'>The full text report, with the choice of eps: "
                   f"<a href='{GRADCHECK_TXT}'>{GRADCHECK_TXT}</a>.</p>")
    out.append("</section>")
    return "\n".join(out)


def _section_part(out_dir, name, doc):
    cls = " class='note'" if doc.get("kind") == "note" else ""
    out = [f"<section id='section-{_e(name)}'{cls}><h2>{_e(doc.get('title', name))}</h2>"]
    for para in str(doc.get("text") or "").split("\n\n"):
        if para.strip():
            out.append(f"<p>{_e(para.strip())}</p>")
    image = doc.get("image")
    if image:
        path = os.path.normpath(os.path.join(out_dir, image))
        inside = os.path.commonpath([os.path.abspath(path), os.path.abspath(out_dir)]) == \
            os.path.abspath(out_dir)
        if not inside or not os.path.exists(path):
            out.append(_note_p(f"image {image} not found in the output folder"))
        elif path.lower().endswith(".svg"):
            out.append(f"<figure><div class='svg'>{_inline_svg(path)}</div></figure>")
        else:
            out.append(f"<figure>{_img(path, doc.get('title', name))}</figure>")
    table = doc.get("table")
    if table:
        out.append(_table(table.get("columns", []), table.get("rows", [])))
    out.append("</section>")
    return "\n".join(out)


def _files_part(out_dir):
    names = [n for n in (FIGURE_JSON, FIGURE_PNG, SUMMARY_TXT, GRADCHECK_JSON, GRADCHECK_TXT,
                         *GRAPHS) if os.path.exists(os.path.join(out_dir, n))]
    if not names:
        return ""
    links = ", ".join(f"<a href='{_e(n)}'>{_e(n)}</a>" for n in names)
    return f"<p class='small'>Files in this folder: {links}.</p>"


# ---------------------------------------------------------------- HTML helpers

def _e(x):
    return html.escape(str(x), quote=True)


def _sci(x):
    return "–" if x is None else f"{x:.1e}"


def _note(title, text):
    return f"<section class='note'><h2>{_e(title)}</h2><p>{_e(text)}</p></section>"


def _note_p(text):
    return f"<p class='note'>{_e(text)}</p>"


def _img(path, alt):
    kind = IMAGE_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:{kind};base64,{data}'>"


def _inline_svg(path):
    """The <svg> element of an SVG file, without its XML prolog and DOCTYPE (invalid in HTML)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.find("<svg")
    return text[start:] if start >= 0 else _note_p(f"{os.path.basename(path)} is not an SVG")


def _table(head, rows):
    out = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead>",
           "<tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return "\n".join(out + ["</tbody></table>"])


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.6em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
figcaption, .small {{ color: #555; font-size: .9em; }}
.svg {{ overflow: auto; max-height: 80vh; border: 1px solid #eee; }}
.svg svg {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: .5em 0; font-variant-numeric: tabular-nums; }}
th, td {{ border: 1px solid #ccc; padding: .25em .6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.note {{ background: #fff6e0; border-left: 4px solid #e0a000; padding: .3em .8em; }}
</style></head>
<body>
<h1>{title}</h1>
{body}
<hr>{files}
<p class="small">Written by tinygrad_bn on {when}.</p>
</body></html>
"""
