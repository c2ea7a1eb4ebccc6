"""The shared benchmark harness: one BLAS thread, candidates interleaved, paired ratios.

Entry scripts import this module *before* numpy, so the thread-count environment variables below
are read when OpenBLAS loads; ``pin_threads()`` then also limits any BLAS/OpenMP pool already
loaded (threadpoolctl) and PyTorch's intra-op pool.

``compare`` times candidates A B C A B C ... over several rounds (the order rotates every round,
so no candidate always runs right after the same one), keeps every per-call time, and reports per
candidate the median and min–max, and per pair the median of the per-round ratios: both
candidates of a round ran within milliseconds of each other, so a noisy neighbour on the shared
cores shifts both and the ratio stays put.
"""
import os
import sys

# Read by OpenBLAS/OpenMP when they load, so only useful before numpy is imported (entry scripts);
# imported later (e.g. from the tests) it leaves the environment alone and pin_threads() does it.
if "numpy" not in sys.modules:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# Variables that slow down OpenBLAS on these machines when set; the Makefile unsets them for
# `make bench`. We only report them: changing them here would hide what the run measured.
SLOW_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

_limiter = None


def pin_threads():
    """Limit BLAS, OpenMP and PyTorch to one thread for the rest of the process."""
    global _limiter
    optional_torch()  # first, so threadpoolctl also sees the OpenMP runtime torch loads
    if _limiter is None:
        try:
            from threadpoolctl import threadpool_limits
            _limiter = threadpool_limits(limits=1)
        except ImportError:  # the environment variables above still apply
            _limiter = False


def unpin_threads():
    """Undo ``pin_threads`` (for callers such as the test suite that run other work afterwards)."""
    global _limiter
    if _limiter:
        _limiter.restore_original_limits()
    _limiter = None
    torch = optional_torch(pin=False)
    if torch is not None and _torch_threads is not None:
        torch.set_num_threads(_torch_threads)


_torch_threads = None


TORCH_MISSING = "torch not installed: torch rows skipped"


def keep_freed_memory():
    """Tune malloc as a training program should (tinygrad_bn.allocator): an explicit call, since
    importing tinygrad_bn changes nothing in the process. Entry points call it, not the tests."""
    from tinygrad_bn.allocator import keep_freed_memory as keep
    return keep()


def optional_torch(pin=True):
    """PyTorch if installed (pinned to one thread unless ``pin`` is false), else None."""
    global _torch_threads
    try:
        import torch
    except ImportError:
        return None
    if pin and torch.get_num_threads() != 1:
        _torch_threads = _torch_threads or torch.get_num_threads()
        torch.set_num_threads(1)
    return torch


def machine_info():
    """What the numbers came from: CPU, versions, and the BLAS threadpoolctl sees."""
    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None,
        "blas": [],
        "env": {v: os.environ.get(v) for v in SLOW_BLAS_VARS + ("OPENBLAS_NUM_THREADS",)},
        "commit": _git_commit(),
    }
    torch = optional_torch()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_info
        for pool in threadpool_info():
            info["blas"].append({k: pool.get(k) for k in (
                "user_api", "internal_api", "prefix", "version", "architecture", "num_threads")})
    except ImportError:
        info["blas"].append({"note": "threadpoolctl not installed"})
    return info


def _git_commit():
    """The checkout's commit, with "+changes" if tinygrad_bn/ has uncommitted edits, or None."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tinygrad_bn"], cwd=root,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+changes" if dirty else "")) or None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(info):
    """A few lines for the top of a printed table."""
    lines = [f"machine: {info['cpu']}, {info['cpus']} cpus, {info['platform']}",
             f"python {info['python']}, numpy {info['numpy']}, torch {info['torch'] or 'absent'}, "
             f"tinygrad_bn at {info['commit'] or 'unknown commit'}"]
    for pool in info["blas"]:
        if pool.get("user_api") == "blas":
            lines.append(f"BLAS: {pool['internal_api']} {pool['version']}, kernel/coretype "
                         f"{pool['architecture']}, {pool['num_threads']} thread(s) during timing")
    if info["torch"] is None:
        lines.append(TORCH_MISSING)
    bad = {k: v for k, v in info["env"].items() if k in SLOW_BLAS_VARS and v is not None}
    if bad:
        lines.append(f"WARNING: {bad} set in the environment; it slows OpenBLAS here "
                     f"(`make bench` unsets them)")
    return "\n".join(lines)


def _time_calls(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def warmed_jit(fn, calls=3):
    """``fn`` after ``calls`` untimed calls: a jit step captures twice and runs its trial (one
    eager call and one replay) before it replays, and none of that belongs in the timings."""
    for _ in range(calls):
        fn()
    return fn


def compare(candidates, rounds=7, inner=1, warmup=1, reference=None, round_seconds=0.05):
    """Time ``candidates`` ({name: zero-argument callable}) interleaved over ``rounds`` rounds.

    Each round calls every candidate ``inner`` times in a row and records the mean time per call;
    ``inner="auto"`` picks it from a timed call so a candidate's share of a round lasts about
    ``round_seconds`` (short calls are repeated, so timer resolution and one-off hiccups matter
    less).
    ``reference`` (a name, or a list of names) gets a paired ratio column: for each other
    candidate, the median over rounds of time(candidate) / time(reference) in that round.
    Returns a dict ready for JSON: times in seconds per call.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    if inner == "auto":
        slowest = max(_time_calls(candidates[name], 1) for name in names)
        inner = max(1, int(round_seconds / max(slowest, 1e-9)))
    times = {name: [] for name in names}
    for r in range(rounds):
        gc.collect()  # start every round from the same heap, not inside the timed region
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_time_calls(candidates[name], inner))
    refs = [] if reference is None else [reference] if isinstance(reference, str) else reference
    refs = [ref for ref in refs if ref in times]  # e.g. "torch" when PyTorch is not installed
    result = {"rounds": rounds, "inner": inner, "candidates": {}}
    for name in names:
        ts = times[name]
        entry = {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "times": ts,
                 "ratio": {}}
        for ref in refs:
            if ref != name:
                entry["ratio"][ref] = statistics.median(
                    t / tr for t, tr in zip(ts, times[ref]))
        result["candidates"][name] = entry
    return result


# ---- printing ----

def fmt_time(seconds):
    """Seconds in the unit that keeps 3-4 significant digits."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.3f} s"


def table(rows, headers):
    """A plain-text table: ``rows`` are lists of cells (already strings)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return "\n".join(out)


def comparison_rows(case, result, refs, unit=1.0, unit_name=None):
    """Rows (case, candidate, median, min–max, ratio vs each ref) for ``table``.

    ``unit`` divides the times (e.g. the number of ops, to print time per op).
    """
    rows = []
    for name, e in result["candidates"].items():
        med, lo, hi = e["median"] / unit, e["min"] / unit, e["max"] / unit
        ratios = [f"{e['ratio'][ref]:.2f}x" if ref in e["ratio"] else "" for ref in refs]
        rows.append([case, name, fmt_time(med), f"{fmt_time(lo)} – {fmt_time(hi)}"] + ratios)
    return rows


def report(suite, result, table_rows, headers, json_path=None, notes=()):
    """What a benchmark module run on its own prints: the machine, ``notes``, the table; and
    the results as JSON under ``suite`` if ``json_path`` is given."""
    print(describe_machine(machine_info()))
    for line in notes:
        print(line)
    print(table(table_rows, headers))
    if json_path:
        write_json(json_path, {suite: result})


def write_json(path, payload):
    """Write ``payload`` (plus machine info if missing) as indented JSON."""
    payload = dict(payload)
    payload.setdefault("machine", machine_info())
    payload.setdefault("argv", sys.argv)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=_json_default)
        f.write("\n")


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def peak_memory(fn):
    """Peak bytes numpy (or Python) allocated while ``fn()`` ran, above what was live before.

    numpy reports its data buffers to tracemalloc, so this counts arrays; PyTorch's allocator
    does not, so it means nothing for torch candidates.
    """
    import tracemalloc
    gc.collect()
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not started:
            tracemalloc.stop()
    return peak - before
