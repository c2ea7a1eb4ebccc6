"""Claim 2 of the lecture notes: "Batch norm lets you set hyperparameters more easily."

    python demos/claim_2_hyperparams.py          # --quick for a 2 x 2 grid

The paper's MNIST net trained for a fixed budget at every (learning rate, init std) of a grid,
with and without batch norm; a heatmap of test accuracy for each. With BN a layer's output does
not depend on the scale of its weights, so the init std stops mattering.
The code: tinygrad_bn/experiments/claims/hyperparams.py.
Writes claim_hyperparams.png into the current folder (run it from where you want the picture).
"""
import os
import sys

from tinygrad_bn.data import load_mnist5k
from tinygrad_bn.experiments.claims import hyperparams

data = load_mnist5k()  # X_train (4000, 784), y_train, X_test (1000, 784), y_test
results = hyperparams.run(data, quick="--quick" in sys.argv, progress=True)
print(hyperparams.conclusion(results))  # settings reaching 90%, with and without BN
png = hyperparams.plot(results, "claim_hyperparams.png")
print(f"figure written to {os.path.abspath(png)}")
