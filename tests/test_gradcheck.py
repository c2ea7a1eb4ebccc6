"""gradcheck: passes on every correct op, fails on wrong derivatives, warns when the check is
vacuous or on a kink, leaves the caller's tensors alone; the three batch-norm backwards agree;
the ``gradcheck`` command runs."""
import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_bn import GradcheckError, Tensor, cli, dispatch, gradcheck, ops
from tinygrad_bn.gradcheck import (
    GradcheckWarning,
    batch_norm_backward_chain_rule,
    batch_norm_backward_closed_form,
    batch_norm_fn,
    batch_norm_forward,
    default_upstream,
    eps_sweep,
    gradcheck_report,
)
from tinygrad_bn.nn import functional as F
from tinygrad_bn.samples import SAMPLES, make_inputs
from tinygrad_bn.tensor import _apply

CASES = [(name, s) for name, samples in SAMPLES.items() for s in samples]


def _tensors(arrays, names="xyzw"):
    return [Tensor(a, requires_grad=True, name=n) for a, n in zip(arrays, names)]


def _bn_inputs(rng, shape=(6, 3)):
    x = rng.standard_normal(shape) * 2.0 + 1.0
    return x, rng.uniform(0.5, 1.5, shape[1]), rng.standard_normal(shape[1])


# ---- deliberately wrong derivatives, registered as ops and applied with tensor._apply ----

# d(x*y)/dx is y; this rule drops the factor y (the gradient for y stays right).
MUL_MISSING_FACTOR = ops.Op("mul_missing_factor", lambda x, y: x * y,
                            lambda g, out, x, y: g,
                            lambda g, out, x, y: g * x)

# exp's derivative, wrong by a factor 1/2 at one element only: the error must name that index.
_BAD = (1, 2)


def _exp_wrong_at_one_element(g, out, x):
    factor = np.ones(x.shape)
    factor[_BAD] = 0.5
    return g * out * factor


EXP_WRONG_AT_ONE = ops.Op("exp_wrong_at_one", np.exp, _exp_wrong_at_one_element)


def _bn_backward_without_variance_term(g, out, x):
    """The closed form without - x_hat * sum(dy * x_hat): as if var did not depend on x."""
    m = x.shape[0]
    std = np.sqrt(x.var(axis=0) + 1e-5)
    return (m * g - g.sum(axis=0)) / (m * std)


BN_NO_VARIANCE_TERM = ops.Op("bn_no_variance_term",
                             lambda x: batch_norm_forward(x, 1.0, 0.0),
                             _bn_backward_without_variance_term)


# ---- the checker passes on every correct op ----

@pytest.mark.parametrize("name,sample", CASES, ids=[s.label for _, s in CASES])
def test_passes_on_every_primitive(name, sample):
    xs = _tensors(make_inputs(sample, np.random.default_rng(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradcheckWarning)  # no vacuous check, no kink
        assert gradcheck(sample.fn, xs) is True


def test_passes_on_composed_batch_norm_for_x_gamma_beta():
    x, g, b = _bn_inputs(np.random.default_rng(1))
    assert gradcheck(batch_norm_fn(), _tensors([x, g, b], ["x", "gamma", "beta"]))


def test_large_inputs_check_a_random_vjp_without_the_full_jacobian():
    x = np.random.default_rng(2).standard_normal((30, 30))
    rep = gradcheck_report(lambda t: t.tanh() * t, [x])
    assert rep["passed"] and not rep["full_jacobian"] and rep["inputs"][0]["jacobian"] is None


# ---- ... and fails on wrong ones, naming the input and the index ----

def test_fails_on_an_op_missing_a_factor_and_names_the_input():
    rng = np.random.default_rng(3)
    a, b = _tensors([rng.standard_normal((3, 4)), rng.uniform(1.5, 3.0, (3, 4))], ["a", "b"])
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x, y: _apply(MUL_MISSING_FACTOR, x, y), [a, b])
    msg = str(info.value)
    assert "'a' (input 0)" in msg and "'b' (input 1)" not in msg
    for word in ("analytic", "numeric", "abs err", "rel err", "shape (3, 4)"):
        assert word in msg, word


def test_failure_names_the_worst_index_and_both_values():
    x = np.random.default_rng(4).standard_normal((3, 4))
    rep = gradcheck_report(lambda t: _apply(EXP_WRONG_AT_ONE, t), [x])
    worst = rep["inputs"][0]["worst"][0]
    assert not rep["passed"] and tuple(worst["index"]) == _BAD
    np.testing.assert_allclose(worst["analytic"], 0.5 * worst["numeric"], rtol=1e-6)
    with pytest.raises(GradcheckError, match=r"input 0, shape \(3, 4\)") as info:
        gradcheck(lambda t: _apply(EXP_WRONG_AT_ONE, t), [x])
    assert str(_BAD) in str(info.value)
    assert f"{worst['analytic']:.7g}" in str(info.value)


def test_fails_on_a_batch_norm_backward_missing_the_variance_term():
    x = Tensor(np.random.default_rng(5).standard_normal((6, 3)), requires_grad=True, name="x")

    def fn(t):
        return _apply(BN_NO_VARIANCE_TERM, t)

    np.testing.assert_allclose(fn(x).data, F.batch_norm(x, training=True).data, rtol=1e-12)
    with pytest.raises(GradcheckError, match=r"'x' \(input 0\), shape \(6, 3\)"):
        gradcheck(fn, [x])
    # Through .sum() alone (upstream all ones) both backwards give ~0, so the vector-Jacobian
    # check is fooled; only the full Jacobian still sees the bug.
    rep = gradcheck_report(fn, [x], upstream=np.ones((6, 3)))
    r = rep["inputs"][0]
    assert r["vjp_passed"] and r["vacuous"] and not r["jacobian"]["passed"] and not rep["passed"]


# ---- warnings ----

def test_vacuous_warning_for_sum_of_batch_norm():
    x = Tensor(np.random.default_rng(6).standard_normal((5, 3)), requires_grad=True)
    with pytest.warns(GradcheckWarning, match="~0 everywhere"):
        gradcheck(lambda t: F.batch_norm(t, training=True).sum(), [x])


def test_kink_warning_for_relu_at_zero():
    x = np.array([[-1.0, 0.0, 2.0]])
    with pytest.warns(GradcheckWarning, match="kink.*relu"), pytest.raises(GradcheckError):
        gradcheck(lambda t: t.relu(), [x])  # relu'(0) = 0, the central difference gives 1/2


def test_kink_warning_for_max_ties():
    x = np.array([1.0, 3.0, 3.0])
    with pytest.warns(GradcheckWarning, match="kink.*max"):
        gradcheck(lambda t: t.max(), [x])  # shared 1/2 each: equals the central difference


# ---- dtypes, side effects ----

@pytest.mark.parametrize("op", [None, MUL_MISSING_FACTOR], ids=["correct", "wrong"])
def test_float32_inputs_get_the_same_verdict_as_float64(op):
    rng = np.random.default_rng(7)
    arrays = [rng.uniform(0.5, 1.5, (3, 4)) for _ in range(2)]

    def fn(x, y):
        return x * y if op is None else _apply(op, x, y)

    verdicts = []
    for dtype in (np.float64, np.float32):
        rep = gradcheck_report(fn, _tensors([a.astype(dtype) for a in arrays]))
        verdicts.append(rep["passed"])
        assert any("float64 copy" in n for n in rep["notes"]) == (dtype == np.float32)
    assert verdicts == [op is None] * 2


def test_float32_batch_norm_passes_where_naive_float32_differences_are_far_off():
    x, g, b = (a.astype(np.float32) for a in _bn_inputs(np.random.default_rng(8), (8, 3)))
    assert gradcheck(batch_norm_fn(), _tensors([x, g, b]))
    rows = {r["eps"]: r for r in eps_sweep((8, 3), seed=0, eps_values=(1e-6,))}
    assert rows[1e-6]["float32"] > 1e-2 and rows[1e-6]["float64"] < 1e-8


def test_leaves_inputs_and_captured_tensors_untouched():
    rng = np.random.default_rng(9)
    x = Tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    leaf = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    y = leaf * 2.0  # a non-leaf input: its graph must not be extended or run
    w = Tensor(rng.standard_normal(3), requires_grad=True)  # captured by fn, e.g. a parameter
    v = Tensor(rng.standard_normal(3), requires_grad=True)
    v.grad = Tensor(np.ones(3))
    before = [t.data.copy() for t in (x, leaf, y, w, v)]
    ctx = y._ctx

    gradcheck(lambda a, b: (a * w + b * v).tanh(), [x, y])

    for t, data in zip((x, leaf, y, w, v), before):
        np.testing.assert_array_equal(t.data, data)
        assert t.data.dtype == data.dtype
    assert x.grad is None and leaf.grad is None and y.grad is None and w.grad is None
    np.testing.assert_array_equal(v.grad.data, np.ones(3))
    assert x._ctx is None and y._ctx is ctx


def test_tensors_without_requires_grad_are_constants():
    rng = np.random.default_rng(10)
    x, c = Tensor(rng.standard_normal(4), requires_grad=True), Tensor(rng.standard_normal(4))
    rep = gradcheck_report(lambda a, b: a * b, [x, c])
    assert rep["passed"] and [r["position"] for r in rep["inputs"]] == [0]


def test_misuse_is_a_clear_error():
    with pytest.raises(ValueError, match="requires_grad=True"):
        gradcheck(lambda t: t * 2, [Tensor(np.ones(3))])
    with pytest.raises(TypeError, match="must return a Tensor"):
        gradcheck(lambda t: 1.0, [np.ones(3)])
    with pytest.raises(TypeError, match="numpy float arrays"):
        gradcheck(lambda t: t, [[1.0, 2.0]])


def test_upstream_is_fixed_random_and_non_uniform():
    u = default_upstream((4, 3))
    np.testing.assert_array_equal(u, default_upstream((4, 3)))
    assert np.all((np.abs(u) >= 0.5) & (np.abs(u) <= 1.5)) and len(np.unique(u)) == u.size
    assert (u > 0).any() and (u < 0).any()


def test_report_is_strict_json():
    x, g, b = _bn_inputs(np.random.default_rng(11))
    rep = gradcheck_report(batch_norm_fn(), [x, g, b])
    assert json.loads(json.dumps(rep, allow_nan=False)) == rep
    r = rep["inputs"][0]
    assert r["max_abs_err"] < 1e-8 and len(r["worst"]) == 3 and r["jacobian"]["passed"]


# ---- the three batch-norm backwards agree (and with PyTorch) ----

@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), c=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_batch_norm_references_agree_with_autodiff(n, c, seed):
    rng = np.random.default_rng(seed)
    x, gamma, beta = _bn_inputs(rng, (n, c))
    x = x * rng.uniform(0.1, 10.0)  # also badly scaled inputs
    dy = rng.standard_normal((n, c))
    ts = [Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    y = batch_norm_fn()(*ts)
    np.testing.assert_allclose(y.data, batch_norm_forward(x, gamma, beta), rtol=1e-12, atol=1e-12)
    y.backward(dy)
    chain = batch_norm_backward_chain_rule(dy, x, gamma)
    closed = batch_norm_backward_closed_form(dy, x, gamma)
    for t, p, cf in zip(ts, chain, closed):
        tol = 1e-10 * max(1.0, np.max(np.abs(cf)))
        np.testing.assert_allclose(t.grad.data, cf, rtol=1e-10, atol=tol)
        np.testing.assert_allclose(p, cf, rtol=1e-10, atol=tol)


def test_batch_norm_references_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    x, gamma, beta = _bn_inputs(rng, (7, 4))
    dy = rng.standard_normal((7, 4))
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True, eps=1e-5).backward(
        torch.tensor(dy))
    expected = [t.grad.numpy() for t in (tx, tg, tb)]
    ts = [Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    batch_norm_fn()(*ts).backward(dy)
    ours = [[t.grad.data for t in ts], batch_norm_backward_chain_rule(dy, x, gamma),
            batch_norm_backward_closed_form(dy, x, gamma)]
    for grads in ours:
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_eps_sweep_falls_then_rises():
    rows = eps_sweep((6, 2), seed=1)
    errs = [r["float64"] for r in rows]
    best = int(np.argmin(errs))
    assert 0 < best < len(rows) - 1 and errs[best] < 1e-8
    assert errs[0] > 100 * errs[best] and errs[-1] > 100 * errs[best]


# ---- the command ----

def test_cli_prints_the_tables_and_passes(capsys):
    assert cli.main(["gradcheck", "--shape", "5,2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for text in ("Every primitive", "Batch norm", "chain rule", "closed form", "Choosing eps",
                 "dgamma", "PASSED", "matmul"):
        assert text in out, text


def test_cli_json_parses_and_covers_every_primitive(capsys):
    assert cli.main(["gradcheck", "--json", "--dtype", "float32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["settings"]["dtype"] == "float32"
    assert {r["op"] for r in report["primitives"]} == set(SAMPLES)
    assert [r["param"] for r in report["batch_norm"]["rows"]] == ["x", "gamma", "beta"]
    assert len(report["eps_sweep"]) == 10


def test_cli_exits_non_zero_when_a_derivative_is_wrong(capsys, monkeypatch):
    wrong = (lambda g, out, x: g * out * 1.01,)
    monkeypatch.setattr(ops.EXP, "vjps", wrong)  # the textbook rule and its kernel
    monkeypatch.setattr(dispatch.kernel(ops.EXP), "vjps", wrong)
    assert cli.main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "exp: exp(x)" in out


def test_cli_fails_when_the_batch_norm_reference_disagrees(capsys, monkeypatch):
    from tinygrad_bn.commands import gradcheck as command

    def wrong(dy, x, gamma, eps=1e-5):
        dx, dgamma, dbeta = batch_norm_backward_closed_form(dy, x, gamma, eps)
        return dx, dgamma, dbeta * 2
    monkeypatch.setattr(command, "batch_norm_backward_closed_form", wrong)
    assert cli.main(["gradcheck", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["failures"] == ["batch norm dbeta: autodiff vs closed form, "
                                  "chain rule vs closed form"]
