"""report.html and the graph SVG in a real headless Chromium: a screenshot, and no two text boxes
overlapping (issue 17: Chrome dropped the B of μ_B onto the next line where rsvg did not).

A script added to a copy of the page measures, after layout, every SVG <text> and every line of
HTML text (Range.getClientRects), and writes the overlapping pairs into the DOM, which
``chromium --dump-dom`` prints. No network: every file is local and the report self-contained.
"""
import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from tinygrad_bn import report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install "
                                "chromium, or make system-deps as root)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars"]

# Two boxes overlap when they share more than these fractions of the smaller box's height, along
# and across the line. Measured in Chromium 156 on a correct report: lines graphviz stacks one
# font size apart share up to 20% (the font's ascent and descent reach past the line step), and
# pieces of one line share up to 14% where graphviz's width estimate is a little short. The
# subscript bug this guards against shared 100% (the B sat on the next line).
ALONG, ACROSS = 0.3, 0.35

MEASURE_JS = """
addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });  // measure those too
  const boxes = [];
  const add = (r, text, group) => {
    if (r.width > 0 && r.height > 0 && text.trim())
      boxes.push({l: r.left, r: r.right, t: r.top, b: r.bottom, text: text.trim(), group});
  };
  document.querySelectorAll('svg').forEach((svg, k) => {
    svg.querySelectorAll('text').forEach(t => add(t.getBoundingClientRect(), t.textContent,
                                                  'svg' + k));
  });
  if (document.body) {
    const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      if (n.parentElement.closest('svg, script, style')) continue;
      const range = document.createRange();
      range.selectNodeContents(n);
      for (const r of range.getClientRects()) add(r, n.textContent, 'html');
    }
  }
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], c = boxes[j];
      if (a.group !== c.group) continue;
      const h = Math.min(a.b - a.t, c.b - c.t);
      const along = Math.min(a.r, c.r) - Math.max(a.l, c.l);
      const across = Math.min(a.b, c.b) - Math.max(a.t, c.t);
      if (along > ALONG * h && across > ACROSS * h)
        overlaps.push([a.text, c.text, Math.round(along), Math.round(across)]);
    }
  }
  const groups = {};
  boxes.forEach(x => { groups[x.group] = (groups[x.group] || 0) + 1; });
  document.documentElement.setAttribute('data-layout', JSON.stringify({groups, overlaps}));
});
""".replace("ALONG", str(ALONG)).replace("ACROSS", str(ACROSS))


def chromium(args, profile, timeout=60):
    """Run Chromium with a fresh profile; returns its stdout."""
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stderr[-2000:]}"
    return done.stdout


def layout(path, profile):
    """{"groups": {group: n boxes}, "overlaps": [...]} for a page with MEASURE_JS added."""
    dom = chromium(["--dump-dom", f"file://{path}"], profile)
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, f"the measuring script did not run in {path}: {dom[:500]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """A demo folder in seconds: a short experiment on random data, both graphs, gradchecks."""
    viz = pytest.importorskip("tinygrad_bn.viz")
    if shutil.which("dot") is None:
        pytest.skip("no graphviz `dot` binary: the report would have no SVG to check")
    from tinygrad_bn.commands.gradcheck import full_report
    from tinygrad_bn.experiments.mnist_bn import run_experiment, write_outputs
    from tinygrad_bn.experiments.threads import blas_threads
    out = str(tmp_path_factory.mktemp("report"))
    rng = np.random.default_rng(0)
    data = (rng.random((240, 784), dtype=np.float32), rng.integers(0, 10, 240),
            rng.random((120, 784), dtype=np.float32), rng.integers(0, 10, 120))
    with blas_threads(1):  # OpenBLAS threads on a busy 2-core machine: 0.7 s became 24 s
        results = run_experiment(data, dataset="mnist5k", steps=40, seeds=(0,), eval_every=20,
                                 progress=False)
    try:
        import matplotlib  # noqa: F401
        figure = True
    except ImportError:
        figure = False
    write_outputs(results, out)
    if figure:
        from tinygrad_bn.experiments.plots import plot_figure
        plot_figure(results, os.path.join(out, "mnist_bn.png"))
    for name, model in (("bn_graph.svg", "bn"), ("mlp_graph.svg", "mlp")):
        viz.render_batchnorm_graph(os.path.join(out, name), model=model)
    with open(os.path.join(out, report.GRADCHECK_JSON), "w") as f:
        json.dump(full_report(), f)
    report.add_section(out, "extra", "A section with a table", "One paragraph.\n\nAnother.",
                       table={"columns": ["a", "b"], "rows": [[1, 2], [3, 4]]})
    report.build_report(out)
    return out


def with_script(src, dst, closing):
    with open(src, encoding="utf-8") as f:
        text = f.read()
    assert closing in text
    script = f"<script><![CDATA[{MEASURE_JS}]]></script>" if closing == "</svg>" else \
        f"<script>{MEASURE_JS}</script>"
    cut = text.rindex(closing)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(text[:cut] + script + text[cut:])
    return dst


def test_report_renders_without_overlapping_text(out_dir, tmp_path):
    page = with_script(os.path.join(out_dir, "report.html"), str(tmp_path / "measure.html"),
                       "</body>")
    found = layout(page, tmp_path / "profile")
    # Both graphs were measured (hundreds of labels), and the page's own text too.
    assert sorted(found["groups"]) == ["html", "svg0", "svg1"], found["groups"]
    assert found["groups"]["svg0"] > 100 and found["groups"]["html"] > 100
    assert found["overlaps"] == []


def test_graph_svg_alone_renders_without_overlapping_text(out_dir, tmp_path):
    svg = with_script(os.path.join(out_dir, "bn_graph.svg"), str(tmp_path / "measure.svg"),
                      "</svg>")
    found = layout(svg, tmp_path / "profile")
    assert list(found["groups"]) == ["svg0"] and found["groups"]["svg0"] > 100
    assert found["overlaps"] == []


def test_subscripts_need_no_baseline_shift(out_dir):
    """The cause of the Chrome overlap, checked without a browser too: no shifted baselines."""
    with open(os.path.join(out_dir, "bn_graph.svg"), encoding="utf-8") as f:
        svg = f.read()
    assert "μ" in svg and "baseline-shift" not in svg


def test_screenshot(out_dir, tmp_path):
    shot = tmp_path / "report.png"
    chromium([f"--screenshot={shot}", "--window-size=1280,2400",
              f"file://{os.path.join(out_dir, 'report.html')}"], tmp_path / "profile")
    with open(shot, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (1280, 2400)
    assert os.path.getsize(shot) > 50_000  # text, tables and figures drawn, not a blank page
