"""The lecture-notes claims (issue 8): every --quick demo end to end, and the direction of each
effect where it holds with a margin."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("mlxtend")

from tinygrad_bn import cli, nn, report  # noqa: E402
from tinygrad_bn.experiments.claims import CLAIMS, common, running_stats, sigmoid  # noqa: E402
from tinygrad_bn.experiments.mlp import activation_inputs, build_mlp  # noqa: E402

STEMS = {name: "claim_" + name.replace("-", "_") for name in CLAIMS}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`tinygrad-bn claims all --quick` once; the tests below read what it wrote."""
    out = str(tmp_path_factory.mktemp("claims"))
    assert cli.main(["claims", "all", "--quick", "--out", out]) == 0
    return out


def result(out, name):
    with open(os.path.join(out, STEMS[name] + ".json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", list(CLAIMS))
def test_quick_writes_figure_json_text_and_section(quick_run, name):
    png = os.path.join(quick_run, STEMS[name] + ".png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 10_000  # a drawn figure, not an empty canvas
    doc = result(quick_run, name)
    assert doc["quick"] is True and doc["claim"] == name and doc["seconds"] > 0
    assert any(ch.isdigit() for ch in doc["conclusion"])
    with open(os.path.join(quick_run, "sections", STEMS[name] + ".json")) as f:
        section = json.load(f)
    assert section["title"].startswith("Claim: ") and section["image"] == STEMS[name] + ".png"


def test_sections_appear_in_report_html(quick_run):
    with open(report.build_report(quick_run), encoding="utf-8") as f:
        page = f.read()
    for module in CLAIMS.values():
        assert f"Claim: {module.TITLE}" in page.replace("&#x27;", "'")
    assert page.count("data:image/png;base64,") >= len(CLAIMS)


def test_standardized_inputs_learn_faster(quick_run):
    r = result(quick_run, "inputs")
    raw, std = r["raw"], r["standardized"]
    assert raw["condition_number"] > 50 and std["condition_number"] < 2
    assert std["best_steps"] * 5 < raw["best_steps"]
    assert std["lr_max"] > 10 * raw["lr_max"]


def test_bn_widens_the_good_hyperparameter_region(quick_run):
    r = result(quick_run, "hyperparams")
    assert np.mean(r["bn"]["test_acc"]) > np.mean(r["no_bn"]["test_acc"]) + 0.2


def test_sigmoid_claim_numbers(quick_run):
    r = result(quick_run, "sigmoid")
    assert r["identity"]["max_abs_error"] < 1e-6
    assert r["learned"]["test_acc"] > r["no_bn"]["test_acc"] + 0.3
    # gamma, beta fixed at (1, 0): sigmoid inputs ~ N(0, 1), so ~83% of outputs in (0.2, 0.8)
    for frac in r["frozen"]["in_range"]:
        assert abs(frac - sigmoid.GAUSSIAN_FRACTION) < 0.1


def test_sigmoid_legend_shows_the_conclusions_numbers(quick_run, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    r = result(quick_run, "sigmoid")
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its legends
    sigmoid.plot(r, str(tmp_path / "sigmoid.png"))
    (fig,) = figures
    lines = {label.strip(): line for line in sigmoid.conclusion(r).splitlines()
             for label in sigmoid.VARIANTS.values() if line.strip().startswith(label)}
    for i, ax in enumerate(fig.axes[:len(r["learned"]["in_range"])]):
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        for variant, label in sigmoid.VARIANTS.items():
            shown = f"{r[variant]['in_range'][i]:.1%}"
            assert f"{label}: {shown} inside" in legend
            assert shown in lines[label].split("per layer:")[1].split(", ")[i]
    plt.close(fig)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gamma_sqrt_var_beta_mu_is_the_identity(seed):
    check = sigmoid.identity_check(seed=seed)
    assert check["max_abs_error"] < 1e-6
    assert np.all(np.abs(check["batch_mean"]) > 0) and np.all(check["batch_std"] > 0.1)


def test_batch_of_one_is_useless_running_stats_work(quick_run):
    r = result(quick_run, "running-stats")
    assert r["single_example_predictions"] == 1  # x - mu_B = 0: one output for every image
    assert r["acc_batch"]["1"] <= 0.15  # the 1,000 test images are 100 per digit
    assert r["acc_running"] > r["acc_batch"]["1"] + 0.4
    assert r["acc_population"] > r["acc_batch"]["1"] + 0.4
    assert "weight of the NEW batch" in r["conclusion"]
    # Algorithm 2 on shuffled batches estimates what the running averages track.
    assert all(median < 0.5 for median, _ in r["rel_diff_var"])


def test_population_stats_is_algorithm_2():
    rng = np.random.default_rng(0)
    X = rng.normal(2.0, 3.0, size=(120, 6)).astype(np.float32)
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Sigmoid(), nn.Linear(4, 2))
    model.eval()
    (mean, var), = running_stats.population_stats(model, X, m=40, shuffle=False)
    z = (X @ model[0].weight.data.T + model[0].bias.data).astype(np.float64).reshape(3, 40, 4)
    np.testing.assert_allclose(mean, z.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(var, z.var(axis=1).mean(axis=0) * 40 / 39, rtol=1e-5)
    # Shuffled batches: the same E[x] (every example once), a different mean of batch variances.
    (mean_s, var_s), = running_stats.population_stats(model, X, m=40)
    np.testing.assert_allclose(mean_s, mean, rtol=1e-5)
    assert not np.allclose(var_s, var)


def test_covariate_shift_recorded_for_every_layer(quick_run):
    r = result(quick_run, "covariate-shift")
    every, steps = r["config"]["probe_every"], r["config"]["steps"]
    for name in ("no_bn", "bn"):
        assert r[name]["steps"] == list(range(0, steps + 1, every))
        assert np.array(r[name]["mean"]).shape == (len(r[name]["steps"]), 3, 100)
        assert len(r[name]["drift"]) == 3 and np.all(np.isfinite(r[name]["drift"]))
    assert "Santurkar" in r["conclusion"]


def test_forward_layers_matches_the_demo_probe():
    data_x = np.random.default_rng(1).random((50, 784)).astype(np.float32)
    model = build_mlp(bn=True, seed=3)
    _, layers = common.forward_layers(model, data_x, bn_stats=common.own_batch_stats)
    # Two float32 computations of the statistics (numpy's x.var, the engine's graph) that sum
    # in different orders; normalizing scales their rounding up to ~20 ulp of O(1) values.
    for k in range(3):
        np.testing.assert_allclose(layers[k][0], activation_inputs(model, data_x, k),
                                   rtol=1e-5, atol=1e-5)


def test_probing_sgd_probes_at_zero_and_every_k():
    seen = []
    w = nn.Linear(2, 1)
    opt = common.ProbingSGD(w.parameters(), 0.1, seen.append, every=3)
    for _ in range(7):
        opt.zero_grad()
        opt.step()
    assert seen == [0, 3, 6]


def test_bad_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["claims", "nonsense", "--out", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["claims", "inputs", "--jobs", "0", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "argument --jobs: must be a whole number >= 1, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("script", sorted(
    f for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "demos"))
    if f.startswith("claim_")))
def test_demo_scripts_run_quick(script, tmp_path, monkeypatch, capsys):
    import runpy
    path = os.path.join(os.path.dirname(__file__), "..", "demos", script)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [script, "--quick"])
    runpy.run_path(path, run_name="__main__")
    pngs = [f for f in os.listdir(tmp_path) if f.endswith(".png")]
    assert pngs  # written into the current folder, as the script says, at the path it prints
    assert f"figure written to {tmp_path / pngs[0]}" in capsys.readouterr().out


def test_curvature_claim_measures_both_variants(quick_run):
    r = result(quick_run, "curvature")
    n = len(r["config"]["checkpoints"])
    for variant in ("no_bn", "bn"):
        k = r[variant]
        assert len(k["lambda_max"]) == len(k["step"]) == n
        # the top eigenvalue of a loss Hessian is positive here, and the power iteration's
        # vector is an eigenvector up to its stated residual
        assert all(v > 0 for v in k["lambda_max"]) and all(h >= 1 for h in k["hvps"])
        assert np.asarray(k["grad_change"]).shape == (n, len(r["config"]["etas"]))
        assert abs(sum(k["share"][-1]) - 1) < 1e-9  # the eigenvector's mass, per parameter
        assert len(k["sweep"]) == len(r["config"]["sweep_lrs"])
