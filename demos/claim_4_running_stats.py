"""Claim 4 of the lecture notes: "At test time, use running averages of mu and sigma^2."

    python demos/claim_4_running_stats.py          # --quick for a smaller run

A trained BN net tested with (a) its running averages, (b) the exact population statistics of
the paper's Algorithm 2, and (c) each test batch's own statistics for batch sizes 1 ... 1000.
A single example minus its own mean is 0, so (c) with batch size 1 answers the same for every
image. The code: tinygrad_bn/experiments/claims/running_stats.py.
Writes claim_running_stats.png into the current folder (run it from where you want the picture).
"""
import os
import sys

from tinygrad_bn.data import load_mnist5k
from tinygrad_bn.experiments.claims import running_stats

results = running_stats.run(load_mnist5k(), quick="--quick" in sys.argv)
print(running_stats.conclusion(results))  # the three accuracies, and what "momentum" means
png = running_stats.plot(results, "claim_running_stats.png")
print(f"figure written to {os.path.abspath(png)}")
