"""jit soundness: the seven ways a tracing jit replays stale work (issue 15). Each is either
replayed bit for bit like the eager step (the oracle: the same step run eagerly on a twin model,
over several calls with new data) or refused with a JitError at its first capture, not by luck
of the trial; and a fuzzer of random small training programs that asserts one or the other."""
import random
import types

import numpy as np
import pytest
from conftest import assert_same_state, state_of

import tinygrad_bn.nn.functional as F
from tinygrad_bn import JitError, Tensor, jit, nn, no_grad, optim


def model_and_opt(seed=0, dtype=np.float64, bn=True, opt="sgd"):
    np.random.seed(seed)
    layers = [nn.Linear(5, 6, dtype=dtype)]
    layers += [nn.BatchNorm1d(6, dtype=dtype)] if bn else []
    model = nn.Sequential(*layers, nn.ReLU(), nn.Linear(6, 3, dtype=dtype))
    if opt == "adam":
        return model, optim.Adam(model.parameters(), lr=0.01)
    return model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def data(n, seed=1, batch=8, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, 5)).astype(dtype), rng.integers(0, 3, batch),
             rng.uniform(0.5, 1.5, batch).astype(dtype)) for _ in range(n)]


def twins(make_step, **kw):
    """(eager step, model, opt) and (jit step, model, opt) built alike."""
    (em, eo), (jm, jo) = model_and_opt(**kw), model_and_opt(**kw)
    return (make_step(em, eo), em, eo), (jit(make_step(jm, jo)), jm, jo)


def run_twins(make_step, calls, before=None, **kw):
    """Run both twins on the same calls (``calls``: a list of argument-tuple makers) and compare
    outputs and every array of state bit for bit; ``before(i, model, opt)`` runs on both."""
    (eager, em, eo), (step, jm, jo) = twins(make_step, **kw)
    for i, args in enumerate(calls):
        if before is not None:
            before(i, em, eo)
            before(i, jm, jo)
        want, got = eager(*args()), step(*args())
        assert np.array_equal(got.data, want.data), f"output at call {i}"
        assert_same_state(state_of(jm, jo), state_of(em, eo), f"call {i}")
    return step


def first_call_refused(make_step, match, args=None, **kw):
    (_, _, _), (step, _, _) = twins(make_step, **kw)
    x, y, w = data(1)[0]
    with pytest.raises(JitError, match=match):
        step(*(args or (lambda: (Tensor(x), y, w)))())


def train(model, opt, loss_of):
    """A step: zero_grad, forward, ``loss_of(out)``, backward, update."""
    def step(x, y, w):
        opt.zero_grad()
        loss = loss_of(model(x), y, w)
        loss.backward()
        opt.step()
        return loss
    return step


def new_batches(n=6):
    return [lambda b=b: (Tensor(b[0]), b[1], b[2]) for b in data(n)]


# ---- 1. a value computed with numpy from an argument is refused, not frozen ----

def weighted_ce(out, y, w):
    return (F.cross_entropy(out, y, reduction="none") * w).sum()


def test_1_numpy_values_of_arguments_are_refused():
    first_call_refused(lambda m, o: train(m, o, lambda out, y, w: weighted_ce(out, y, w) /
                                          w.sum()), r"np.add.reduce on a numpy argument")
    first_call_refused(lambda m, o: train(m, o, lambda out, y, w: F.cross_entropy(out, y) *
                                          w[0]), r"__getitem__ on a numpy argument")
    first_call_refused(lambda m, o: train(m, o, lambda out, y, w: F.cross_entropy(out, y) /
                                          float(len(w[w > 1]))), r"np.greater on a numpy")


def test_1_the_same_values_as_tensor_ops_replay_like_eager():
    def loss_of(out, y, w):
        wt = Tensor(w)
        return (F.cross_entropy(out, y, reduction="none") * wt).sum() / wt.sum()
    step = run_twins(lambda m, o: train(m, o, loss_of), new_batches())
    assert step.replays == 4  # calls 3 to 6: the trial replay, then three


# ---- 2. work done outside the tape inside the step is refused at capture ----

def clip_then_step(how):
    def make(model, opt):
        def step(x, y, w):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if how == "reassign":
                for p in model.parameters():
                    p.grad = p.grad * 0.5
            elif how == "in place":
                for p in model.parameters():
                    p.grad.data *= 0.5
            elif how == "zeroed":
                model[0].bias.grad.data[:] = 0
            elif how == "only when large":  # a no-op on the captured calls: still refused
                norm = np.sqrt(sum((p.grad.data ** 2).sum() for p in model.parameters()))
                if norm > 1e9:
                    for p in model.parameters():
                        p.grad.data *= 1e9 / norm
            opt.step()
            return loss
        return step
    return make


@pytest.mark.parametrize("how, match", [
    ("reassign", r"assigning .grad of a Parameter"),
    ("in place", r"np.multiply on a gradient"),
    ("zeroed", r"writes with numpy into an array"),
    ("only when large", r"np.square on a gradient")])
def test_2_gradient_clipping_outside_the_tape_is_refused(how, match):
    first_call_refused(clip_then_step(how), match)


def ema_step(how):
    def make(model, opt):
        averages = {k: v.copy() for k, v in model.state_dict().items()}
        shadow = nn.Sequential(nn.Linear(5, 6, dtype=np.float64))

        def step(x, y, w):
            loss = train(model, opt, lambda out, y, w: F.cross_entropy(out, y))(x, y, w)
            if how == "numpy in place":
                for k, p in model.state_dict().items():
                    averages[k] *= 0.9
            elif how == "numpy rebinding":
                for k, p in model.named_parameters():
                    averages[k] = 0.9 * averages[k] + 0.1 * p.data
            elif how == "a module's data":
                shadow[0].weight.data = 0.9 * shadow[0].weight.data + 0.1 * model[0].weight.data
            return loss
        return step
    return make


@pytest.mark.parametrize("how, match", [
    ("numpy in place", r"writes with numpy into an array"),
    ("numpy rebinding", r"changes averages\['0.weight'\]"),
    ("a module's data", r"assigning .data of a Parameter")])
def test_2_an_average_of_weights_kept_with_numpy_is_refused(how, match):
    first_call_refused(ema_step(how), match)


def test_2_optimizer_state_and_arguments_are_read_only_to_the_step():
    def make(model, opt):
        def step(x, y, w):
            loss = train(model, opt, lambda out, y, w: F.cross_entropy(out, y))(x, y, w)
            opt.state[0]["momentum_buffer"] *= 0.5
            return loss
        return step
    first_call_refused(make, r"writes with numpy into an array")

    def make_writer(model, opt):
        def step(x, y, w):
            x.data[:] = 0  # writes into the caller's array
            return train(model, opt, lambda out, y, w: F.cross_entropy(out, y))(x, y, w)
        return step
    first_call_refused(make_writer, r"writes with numpy into an array")

    def make_mask_writer(model, opt):
        def step(x, y, w):
            w[w > 1] = 1  # writes into the caller's numpy array
            return train(model, opt, lambda out, y, w: F.cross_entropy(out, y))(x, y, w)
        return step
    first_call_refused(make_mask_writer, r"np.greater on a numpy argument")

    def make_clamp(model, opt):
        def step(x, y, w):
            w[:] = 1
            return train(model, opt, lambda out, y, w: F.cross_entropy(out, y))(x, y, w)
        return step
    first_call_refused(make_clamp, r"writes with numpy into an array")


# ---- 3. a tensor argument's graph ----

def test_3_an_argument_carrying_a_graph_is_refused_and_a_detached_one_replays():
    (_, _, _), (step, model, opt) = twins(lambda m, o: train(
        m, o, lambda out, y, w: F.cross_entropy(out, y)))
    encoder = nn.Linear(5, 5, dtype=np.float64)
    batches = data(5)
    for x, y, w in batches[:3]:  # leaves: captured, compiled, replayed
        step(Tensor(x), y, w)
    assert step.replays == 1
    x, y, w = batches[3]
    with pytest.raises(JitError, match="argument 0 carries a graph"):
        step(encoder(Tensor(x)), y, w)  # not replayed as the leaf: captured, and refused
    assert encoder.weight.grad is not None  # the refused call was applied eagerly
    assert step.replays == 1


def test_3_detached_encoder_outputs_replay_like_eager():
    encoder = nn.Linear(5, 5, dtype=np.float64)
    calls = [lambda b=b: (encoder(Tensor(b[0])).detach(), b[1], b[2]) for b in data(6)]
    step = run_twins(lambda m, o: train(m, o, lambda out, y, w: F.cross_entropy(out, y)), calls)
    assert step.replays == 4


# ---- 4. randomness inside the step ----

@pytest.mark.parametrize("draw", ["np.random", "random", "generator"])
def test_4_a_branch_on_random_numbers_is_refused(draw):
    rng = np.random.default_rng(0)
    coin = {"np.random": lambda: np.random.rand(), "random": random.random,
            "generator": lambda: rng.random()}[draw]

    def loss_of(out, y, w):
        loss = F.cross_entropy(out, y)
        return loss * 2 if coin() < 0.5 else loss
    first_call_refused(lambda m, o: train(m, o, loss_of), "draws random numbers")


def test_4_random_numbers_passed_in_replay_like_eager():
    def make(model, opt):
        def step(x, y, noise):
            return train(model, opt, lambda out, y, w: F.cross_entropy(out, y))(
                x + Tensor(noise), y, None)
        return step
    rng = np.random.default_rng(3)
    calls = [lambda b=b, n=rng.standard_normal((8, 5)): (Tensor(b[0]), b[1], n) for b in data(6)]
    assert run_twins(make, calls).replays == 4


# ---- 5. reading a value through numpy ----

def test_5_np_asarray_of_a_tensor_is_refused():
    def loss_of(out, y, w):
        loss = F.cross_entropy(out, y)
        return loss * 0.5 if np.asarray(loss) > 10 else loss
    first_call_refused(lambda m, o: train(m, o, loss_of), r"np.asarray\(tensor\)")
    x = Tensor(np.ones(3))
    assert np.array_equal(np.asarray(x), np.ones(3))  # outside a step: fine


# ---- 6. state assigned inside the step ----

def test_6_assigning_the_learning_rate_inside_the_step_is_refused():
    def make(model, opt):
        def step(x, y, w, lr):
            opt.lr = lr
            return train(model, opt, lambda out, y, w: F.cross_entropy(out, y))(x, y, w)
        return step
    (_, _, _), (step, _, opt) = twins(make)
    batches = data(4)
    for x, y, w in batches[:3]:  # the same value as before: nothing changes
        step(Tensor(x), y, w, 0.1)
    x, y, w = batches[3]
    with pytest.raises(JitError, match=r"changes opt.lr \(from 0.1 to 0.01\)"):
        step(Tensor(x), y, w, 0.01)


def test_6_the_learning_rate_set_outside_the_step_replays_like_eager():
    schedule = [0.1, 0.1, 0.1, 0.01, 0.01, 0.1, 0.1, 0.05]

    def set_lr(i, model, opt):
        opt.lr = schedule[i]
    step = run_twins(lambda m, o: train(m, o, lambda out, y, w: F.cross_entropy(out, y)),
                     new_batches(len(schedule)), before=set_lr)
    assert step.replays == 6


def test_6_switching_modes_inside_the_step_is_refused():
    def make(model, opt):
        def step(x, y, w):
            model.train()  # a no-op while training; a change after eval()
            return train(model, opt, lambda out, y, w: F.cross_entropy(out, y))(x, y, w)
        return step
    (_, _, _), (step, model, _) = twins(make)
    batches = data(4)
    for x, y, w in batches[:3]:
        step(Tensor(x), y, w)
    model.eval()
    x, y, w = batches[3]
    with pytest.raises(JitError, match=r"changes model.training \(from False to True\)"):
        step(Tensor(x), y, w)


def test_6_freezing_a_parameter_inside_the_step_is_refused():
    def make(model, opt):
        def step(x, y, w):
            model[0].weight.requires_grad_(False)
            return train(model, opt, lambda out, y, w: F.cross_entropy(out, y))(x, y, w)
        return step
    first_call_refused(make, "changes requires_grad of a Parameter")


def test_2_a_gradient_used_in_a_second_differentiable_loss_replays_like_eager():
    def make(model, opt):
        def step(x, y, w):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            weight = model[0].weight
            penalty = (weight * weight.grad).sum()  # the gradient as a constant of a new graph
            penalty.backward()
            opt.step()
            return penalty
        return step
    assert run_twins(make, new_batches()).replays == 4


# ---- 7. train() / eval() after capture ----

def test_7_eval_after_capture_uses_running_statistics_like_eager():
    modes = ["train"] * 3 + ["eval"] * 3 + ["train"] * 3

    def set_mode(i, model, opt):
        model.train(modes[i] == "train")
    step = run_twins(lambda m, o: train(m, o, lambda out, y, w: F.cross_entropy(out, y)),
                     new_batches(len(modes)), before=set_mode)
    assert step.replays == 3  # each mode change captures again (two eager calls and a trial)


def test_7_an_inference_step_follows_eval():
    model, _ = model_and_opt()
    predict = jit(lambda x: model(x))
    batches = data(8)
    with no_grad():
        for i, (x, _, _) in enumerate(batches):
            model.train(i < 4)
            got = predict(Tensor(x))
            with no_grad():
                model_copy_out = model(Tensor(x))
            assert np.array_equal(got.data, model_copy_out.data), i


def test_7_only_the_modes_the_step_reads_are_guarded():
    (_, _, _), (step, model, _) = twins(lambda m, o: train(
        m, o, lambda out, y, w: F.cross_entropy(out, y)))
    for x, y, w in data(3):
        step(Tensor(x), y, w)
    (replay, _), = step._compiled.values()
    assert replay.source.count(".training is not True") == 1  # the batch norm's only
    model[2].eval()  # a ReLU in eval mode computes the same: no capture again
    x, y, w = data(1, seed=5)[0]
    step(Tensor(x), y, w)
    assert step.replays == 2


# ---- what no check can see is told at capture ----

def test_what_the_guards_cannot_see_is_warned_at_capture():
    model, _ = model_and_opt()
    helpers = types.ModuleType("helpers")  # a module of the user's: not looked into
    helpers.model = model
    exec("def forward(x):\n    return model(x)\n", helpers.__dict__)
    x = Tensor(data(1)[0][0])

    def predict(x):
        with no_grad():
            return helpers.forward(x)
    with pytest.warns(RuntimeWarning, match="uses a module that it does not name"):
        jit(predict)(x)

    def scaled(x):
        with no_grad():
            return model(x) * float(model[0].weight.data.std())  # numpy on a parameter
    with pytest.warns(RuntimeWarning, match=r"reads .data: a number computed with numpy"):
        jit(scaled)(x)


# ---- the fuzzer: random small training programs, jit against eager ----

# Twists a step may have. "refused": jit must raise JitError at some call; the others must
# replay bit for bit like eager.
TWISTS = {
    "none": None, "eval between calls": None, "lr between calls": None,
    "zero_grad outside": None, "train() inside": None,
    "grad *= c": "refused", "grad = c * grad": "refused", "numpy on an argument": "refused",
    "random branch": "refused", "lr inside": "refused", "asarray": "refused",
    "numpy average": "refused", "clip when huge": "refused",
}


def random_program(seed):
    rng = random.Random(seed)
    dtype = rng.choice([np.float32, np.float64])
    features, classes = rng.randint(2, 5), rng.randint(2, 4)
    widths = [rng.randint(2, 6) for _ in range(rng.randint(0, 2))]
    acts = [nn.ReLU, nn.Tanh, nn.Sigmoid]
    plan = [(w, rng.random() < 0.5, rng.choice(acts)) for w in widths]
    opt_kind = rng.choice(["sgd", "momentum", "nesterov", "adam"])
    loss_kind = rng.choice(["ce", "mse"])
    twist = rng.choice(list(TWISTS))
    batch = rng.randint(3, 6)

    def build():
        np.random.seed(seed)
        layers, n = [], features
        for w, bn, act in plan:
            layers += [nn.Linear(n, w, dtype=dtype)] + ([nn.BatchNorm1d(w, dtype=dtype)] if bn
                                                        else []) + [act()]
            n = w
        model = nn.Sequential(*layers, nn.Linear(n, classes, dtype=dtype))
        ps = model.parameters()
        opt = {"sgd": lambda: optim.SGD(ps, lr=0.1),
               "momentum": lambda: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
               "nesterov": lambda: optim.SGD(ps, lr=0.05, momentum=0.5, nesterov=True),
               "adam": lambda: optim.Adam(ps, lr=0.01)}[opt_kind]()
        averages = [p.data.copy() for p in ps]

        def step(x, y, onehot, lr):
            if twist != "zero_grad outside":
                opt.zero_grad()
            if twist == "train() inside":
                model.train()
            if twist == "lr inside":
                opt.lr = lr
            out = model(x)
            loss = F.cross_entropy(out, y) if loss_kind == "ce" else F.mse_loss(
                out.softmax(), onehot)
            if twist == "numpy on an argument":
                loss = loss * (1.0 + y.mean())
            if twist == "random branch" and np.random.rand() < 0.5:
                loss = loss * 2
            if twist == "asarray" and np.asarray(loss) > 1e9:
                loss = loss * 0
            loss.backward()
            if twist == "grad *= c":
                ps[0].grad.data *= 0.5
            if twist == "grad = c * grad":
                ps[-1].grad = ps[-1].grad * 0.5
            if twist == "clip when huge" and np.abs(ps[0].grad.data).max() > 1e9:
                ps[0].grad = None
            opt.step()
            if twist == "numpy average":
                for a, p in zip(averages, ps):
                    a += 0.1 * (p.data - a)
            return loss
        return model, opt, step

    data_rng = np.random.default_rng(seed)
    calls = []
    schedule = [0.1] * 3 + [0.05] * 3 + [0.1] * 2 if "lr" in twist else [0.1] * 8
    for lr in schedule:
        y = data_rng.integers(0, classes, batch)
        calls.append((data_rng.standard_normal((batch, features)).astype(dtype), y,
                      np.eye(classes, dtype=dtype)[y], lr))
    return build, calls, twist


@pytest.mark.filterwarnings("ignore:jit.step.. the step reads .data")
@pytest.mark.parametrize("seed", range(40))
def test_fuzz_jit_equals_eager_or_refuses(seed):
    build, calls, twist = random_program(seed)
    (em, eo, eager), (jm, jo, step) = build(), build()
    step = jit(step)
    refused = None
    for i, (x, y, onehot, lr) in enumerate(calls):
        for model, opt in ((em, eo), (jm, jo)):
            if twist == "eval between calls":
                model.train(i not in (4, 5, 6))
            if twist == "lr between calls":
                opt.lr = lr
            if twist == "zero_grad outside" and i % 2 == 0:
                opt.zero_grad()
        np.random.seed(100 + i)
        want = eager(Tensor(x), y, onehot, lr)
        np.random.seed(100 + i)
        try:
            got = step(Tensor(x), y, onehot, lr)
        except JitError as e:
            refused = e
            break
        assert np.array_equal(got.data, want.data), (seed, twist, i)
        assert_same_state(state_of(jm, jo), state_of(em, eo), (seed, twist, i))
    if TWISTS[twist] == "refused":
        assert refused is not None, (seed, twist)
    else:
        assert refused is None, (seed, twist, refused)
        assert step.replays >= 2, (seed, twist)


def test_fuzz_covers_every_twist():
    seen = {random_program(seed)[2] for seed in range(40)}
    assert seen == set(TWISTS), set(TWISTS) - seen


def test_an_engine_function_wrongly_listed_as_pure_is_an_error_not_a_jit_error(monkeypatch):
    from tinygrad_bn.jit import guard
    monkeypatch.setattr(guard, "_PURE", guard._PURE | {id(optim.Optimizer._update_at)})
    (_, _, _), (step, _, _) = twins(lambda m, o: train(
        m, o, lambda out, y, w: F.cross_entropy(out, y)))
    x, y, w = data(1)[0]
    with pytest.raises(RuntimeError, match="remove it from guard._PURE") as e:
        step(Tensor(x), y, w)
    assert not isinstance(e.value, JitError)
