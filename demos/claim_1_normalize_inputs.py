"""Claim 1 of the lecture notes: "Normalizing inputs speeds up learning."

    python demos/claim_1_normalize_inputs.py          # --quick for a smaller run

Logistic regression on two features, one 10x the other, by gradient descent on the raw and on the
standardized features: the raw loss is a long narrow valley, so the largest step that does not
overshoot across it is tiny along it. The code: tinygrad_bn/experiments/claims/inputs.py.
Writes claim_inputs.png into the current folder (run it from where you want the picture).
"""
import os
import sys

from tinygrad_bn.experiments.claims import inputs

results = inputs.run(quick="--quick" in sys.argv)
print(inputs.conclusion(results))  # condition numbers, largest stable lr, steps to target
png = inputs.plot(results, "claim_inputs.png")  # contours with the GD paths
print(f"figure written to {os.path.abspath(png)}")
