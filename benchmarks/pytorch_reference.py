"""The PyTorch reference of the paper's MNIST experiment, for the table beside tinygrad_bn's.

    python benchmarks/pytorch_reference.py                      # mnist5k, seeds 0,1,2
    python benchmarks/pytorch_reference.py --dataset mnist --data-dir DIR

The protocol of tinygrad_bn/experiments/mnist_bn.py written in PyTorch (float32, one thread):
the same data split, the same initial weights (build_mlp's, copied) and the same batch order.
Evaluates every --eval-every steps and prints final test accuracy and steps to 90% / 95% as
mean ± sd over the seeds, read at that spacing and at every 250 steps.
"""
import argparse
import os
import sys

import harness  # noqa: F401  (one BLAS thread, set before numpy loads)
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tinygrad_bn import data  # noqa: E402
from tinygrad_bn.experiments.mlp import build_mlp, steps_to_accuracy  # noqa: E402
from tinygrad_bn.experiments.mnist_bn import PRESETS  # noqa: E402


def torch_copy(torch, model):
    """The tinygrad_bn MLP as a torch.nn.Sequential with the same weights."""
    layers = []
    for m in model:
        name = type(m).__name__
        if name == "Linear":
            t = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(m.weight.data))
                if m.bias is not None:
                    t.bias.copy_(torch.from_numpy(m.bias.data))
            layers.append(t)
        elif name == "BatchNorm1d":
            layers.append(torch.nn.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum))
        else:
            layers.append({"Sigmoid": torch.nn.Sigmoid, "ReLU": torch.nn.ReLU}[name]())
    return torch.nn.Sequential(*layers)


def one_run(torch, X, seed, bn, steps, lr, eval_every, batch_size=60):
    X_train, y_train, X_test, y_test = (torch.from_numpy(a) for a in X)
    net = torch_copy(torch, build_mlp(bn=bn, n_in=X_train.shape[1], seed=seed))
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    rng = np.random.default_rng([seed, 1])  # train_run's batch order
    per_epoch = len(X_train) // batch_size
    evaluated, accuracy, batch = [], [], per_epoch

    def evaluate(step):
        net.eval()
        with torch.no_grad():
            accuracy.append(float((net(X_test).argmax(1) == y_test).float().mean()))
        evaluated.append(step)
        net.train()
    evaluate(0)
    for step in range(1, steps + 1):
        if batch == per_epoch:
            order = torch.from_numpy(rng.permutation(len(X_train)))
            X_epoch, y_epoch, batch = X_train[order], y_train[order], 0
        lo = batch * batch_size
        batch += 1
        loss = torch.nn.functional.cross_entropy(net(X_epoch[lo:lo + batch_size]),
                                                 y_epoch[lo:lo + batch_size])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            evaluate(step)
    return evaluated, accuracy


def _mean_sd(values):
    if not values:
        return "never"
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):,.0f} ± {sd:,.0f}" + ("" if len(values) == 3 else
                                                   f" ({len(values)} seeds)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist5k", choices=data.DATASETS)
    p.add_argument("--data-dir")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int)
    p.add_argument("--eval-every", type=int, default=50)
    args = p.parse_args(argv)
    torch = harness.optional_torch()
    if torch is None:
        sys.exit(harness.TORCH_MISSING)
    X = data.load_dataset(args.dataset, data_dir=args.data_dir)
    preset = PRESETS[args.dataset]
    steps = args.steps or preset["steps"]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"PyTorch {torch.__version__}, {args.dataset}, {steps:,} steps, lr {preset['lr']}, "
          f"seeds {seeds}, evaluated every {args.eval_every} steps")
    for bn in (False, True):
        runs = [one_run(torch, X, s, bn, steps, preset["lr"], args.eval_every) for s in seeds]
        final = [acc[-1] for _, acc in runs]
        line = f"{'with BN' if bn else 'without BN':<11} final {np.mean(final):.4f} ± " \
               f"{np.std(final, ddof=1):.4f}"
        for spacing in (args.eval_every, 250):
            for t in (0.90, 0.95):
                reached = []
                for evaluated, acc in runs:
                    keep = [(s, a) for s, a in zip(evaluated, acc) if s % spacing == 0]
                    hit = steps_to_accuracy([s for s, _ in keep], [a for _, a in keep], t)
                    if hit is not None:
                        reached.append(hit)
                line += f" | {round(t * 100)}% every {spacing}: {_mean_sd(reached)}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
