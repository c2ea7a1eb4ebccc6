"""Claim 3 of the lecture notes: with every Z at mean 0, variance 1 the sigmoid works only in its
near-linear range (outputs in about (0.2, 0.8)); the learned gamma and beta let the net choose.

    python demos/claim_3_sigmoid_range.py          # --quick for a smaller run

The BN net trained with gamma/beta learned, frozen at (1, 0), and without BN; where its sigmoid
outputs land. Also the notes' check: gamma = sqrt(sigma^2 + eps), beta = mu gives back Z itself.
The code: tinygrad_bn/experiments/claims/sigmoid.py.
Writes claim_sigmoid.png into the current folder (run it from where you want the picture).
"""
import os
import sys

from tinygrad_bn.data import load_mnist5k
from tinygrad_bn.experiments.claims import sigmoid

check = sigmoid.identity_check()  # a batch with means up to 50 and stds up to 20
print(f"gamma = sqrt(var + eps), beta = mu: max |BN(x) - x| = {check['max_abs_error']:.1e}")

results = sigmoid.run(load_mnist5k(), quick="--quick" in sys.argv)
print(sigmoid.conclusion(results))  # fraction of outputs in (0.2, 0.8) per layer, accuracy
png = sigmoid.plot(results, "claim_sigmoid.png")
print(f"figure written to {os.path.abspath(png)}")
