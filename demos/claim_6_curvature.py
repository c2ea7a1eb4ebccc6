"""Claim 6 of the lecture notes: "Batch norm lets you use larger learning rates" — why?

    python demos/claim_6_curvature.py          # --quick for a smaller run

Santurkar et al. 2018 credit a smoother loss landscape. This measures it on the paper's MNIST
net, with and without BN, during training: the sharpness λ_max (top eigenvalue of the loss's
Hessian, by power iteration on Hessian-vector products from double backward), how well the
gradient predicts the gradient a step further, and a learning-rate sweep to set beside 2/λ_max.
The code: tinygrad_bn/experiments/claims/curvature.py; the engine: tinygrad_bn/hessian.py.
Writes claim_curvature.png into the current folder (run it from where you want the picture).
"""
import os
import sys

from tinygrad_bn.data import load_mnist5k
from tinygrad_bn.experiments.claims import curvature

results = curvature.run(load_mnist5k(), quick="--quick" in sys.argv)
print(curvature.conclusion(results))  # λ_max, gradient change and the stable learning rates
png = curvature.plot(results, "claim_curvature.png")
print(f"figure written to {os.path.abspath(png)}")
