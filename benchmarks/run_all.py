"""Run every benchmark, print one combined table and the targets, write benchmarks/results.json.

    python benchmarks/run_all.py            # the full suite (a few minutes on 2 cores)
    python benchmarks/run_all.py --quick    # a fast smoke run: short chain, small shapes

BLAS is pinned to one thread (see harness.py). OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow
OpenBLAS down on these machines; `make bench` unsets them, and the header warns when they are set.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# Each bench module imports harness (which sets the BLAS thread variables) before numpy.
import bench_batchnorm  # noqa: E402
import bench_overhead  # noqa: E402
import bench_step  # noqa: E402
import harness  # noqa: E402

SUITES = ("overhead", "step", "batchnorm")


def target_rows(results):
    """(target, measured, limit, verdict) rows for every target of issue 7 that was measured."""
    checks = []
    if "overhead" in results:
        for who, mode in (("tinygrad_bn", ""), ("tinygrad_bn jit", " (jit)")):
            e = results["overhead"]["candidates"].get(who)
            if e is not None and "torch" in e["ratio"]:
                checks.append((f"per-op overhead{mode} vs torch", e["ratio"]["torch"], 0.8))
    if "step" in results:
        checks += bench_step.target_checks(results["step"])
    if "batchnorm" in results:
        checks += bench_batchnorm.target_checks(results["batchnorm"])
    rows = []
    for what, value, limit in checks:
        ok = value is not None and value <= limit
        rows.append([what, f"{value:.2f}x", f"<= {limit}x",
                     "met" if ok else f"MISSED by {value / limit:.2f}x"])
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a fast smoke run")
    p.add_argument("--only", default=",".join(SUITES), help=f"comma-separated subset of {SUITES}")
    p.add_argument("--json", default=os.path.join(HERE, "results.json"),
                   help="where to write the results (default benchmarks/results.json)")
    args = p.parse_args(argv)
    harness.keep_freed_memory()
    only = args.only.split(",")
    unknown = set(only) - set(SUITES)
    if unknown:
        p.error(f"unknown suites {sorted(unknown)}; choose from {SUITES}")

    harness.pin_threads()
    info = harness.machine_info()
    print(harness.describe_machine(info), flush=True)
    started = time.time()
    results, rows = {}, []
    if "overhead" in only:
        results["overhead"] = bench_overhead.run(quick=args.quick)
        rows += bench_overhead.rows(results["overhead"])
        print(f"overhead done ({time.time() - started:.0f} s)", flush=True)
    if "step" in only:
        results["step"] = bench_step.run(quick=args.quick)
        rows += bench_step.rows(results["step"])
        print(f"training step done, correctness gate passed: {results['step']['gate']} "
              f"({time.time() - started:.0f} s)", flush=True)
    if "batchnorm" in only:
        results["batchnorm"] = bench_batchnorm.run(quick=args.quick)
        print(f"batch norm done ({time.time() - started:.0f} s)", flush=True)

    print()
    print(harness.describe_machine(info))
    print("times per call (per op for the chain); ratios are medians of per-round paired ratios")
    if rows:
        print(harness.table(rows, ["case", "candidate", "median", "min – max", "vs numpy",
                                   "vs torch"]))
    if "batchnorm" in results:
        print()
        print(harness.table(bench_batchnorm.rows(results["batchnorm"]), bench_batchnorm.HEADERS))
    targets = target_rows(results)
    print()
    print(harness.table(targets, ["target (issue 7)", "tinygrad_bn", "limit", "verdict"]))
    results["targets"] = [dict(zip(("target", "measured", "limit", "verdict"), r))
                          for r in targets]
    results["quick"] = args.quick
    results["seconds"] = time.time() - started
    results["machine"] = info
    harness.write_json(args.json, results)
    print(f"\nwrote {args.json} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
