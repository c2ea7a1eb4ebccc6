"""Claim 5 of the lecture notes: "Batch norm reduces internal covariate shift."

    python demos/claim_5_covariate_shift.py          # --quick for a smaller run

The mean and std of every hidden layer's sigmoid inputs during training, with and without BN
(the paper's Figure 1(b, c) for all layers). Santurkar et al. 2018 dispute how much this shift
explains BN's benefit: this is the measurement, not a verdict.
The code: tinygrad_bn/experiments/claims/covariate_shift.py.
Writes claim_covariate_shift.png into the current folder (run it from where you want the picture).
"""
import os
import sys

from tinygrad_bn.data import load_mnist5k
from tinygrad_bn.experiments.claims import covariate_shift

results = covariate_shift.run(load_mnist5k(), quick="--quick" in sys.argv)
print(covariate_shift.conclusion(results))  # how far each layer's unit means wandered
png = covariate_shift.plot(results, "claim_covariate_shift.png")
print(f"figure written to {os.path.abspath(png)}")
