"""Batch norm over MPI ranks: one process vs SyncBatchNorm vs per-rank BatchNorm1d.

    python demos/distributed_bn.py [--quick] [--out out]

The paper's MNIST network with the global batch of 60 split over 2 ranks, and a global batch of 8
over 4 ranks (2 examples per rank), each trained three ways from the same weights on the same
batches. Starts mpiexec itself (the [distributed] extra); 4 ranks on a 2-core machine share the
cores, which is slow but gives the same numbers. Writes distributed_bn.json / .png and a section
of report.html into --out. The code: tinygrad_bn/experiments/distributed_bn.py.
"""
import argparse

from tinygrad_bn import report
from tinygrad_bn.experiments import distributed_bn

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
parser.add_argument("--out", default="out", help="output folder (default out)")
args = parser.parse_args()

steps = (120, 60) if args.quick else (600, 200)
results = distributed_bn.run_all(steps=steps)
paths = distributed_bn.write_outputs(results, args.out)
print(distributed_bn.conclusion(results))
print("wrote", paths["json"], paths["figure"], report.build_report(args.out))
