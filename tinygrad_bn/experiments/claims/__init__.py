"""The lecture notes' claims about normalization, one demo each (issue 8).

Each claim module has NAME, TITLE, FULL/QUICK settings, ``run(...)`` -> results dict,
``conclusion(results)`` -> text and ``plot(results, path)``. ``run_claim`` ties them together:
JSON, PNG and the conclusion as text (the ``claims`` command adds them to report.html).
"""
import os
import time

from . import covariate_shift, curvature, hyperparams, inputs, running_stats, sigmoid
from .common import write_json

CLAIMS = {m.NAME: m for m in (inputs, hyperparams, sigmoid, running_stats, covariate_shift,
                               curvature)}
NEEDS_MNIST = {"hyperparams", "sigmoid", "running-stats", "covariate-shift", "curvature"}


def file_stem(name):
    """claim_<name> with '-' as '_': the stem of the claim's files and of its report section."""
    return f"claim_{name.replace('-', '_')}"


def run_claim(name, out_dir, quick=False, data=None, seed=0, progress=False, jobs=1):
    """Run claim ``name``; write claim_<name>.json, .png and .txt into ``out_dir``.

    Returns {"results", "conclusion", "paths", "seconds"}. ``data`` is the MNIST tuple for the
    claims that train the MNIST net (loaded with ``load_mnist5k(seed)`` when None).
    """
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; choose one of {', '.join(CLAIMS)} or 'all'")
    module = CLAIMS[name]
    kwargs = {"quick": quick, "seed": seed, "progress": progress}
    if name in NEEDS_MNIST:
        if data is None:
            from ...data import load_mnist5k
            data = load_mnist5k(seed)
        kwargs["data"] = data
    if name == "hyperparams":
        kwargs["jobs"] = jobs
    start = time.perf_counter()
    results = module.run(**kwargs)
    seconds = time.perf_counter() - start
    text = module.conclusion(results)
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, file_stem(name))
    paths = {"json": write_json(dict(results, claim=name, title=module.TITLE, quick=quick,
                                     seconds=seconds, conclusion=text), base + ".json"),
             "png": module.plot(results, base + ".png")}
    paths["txt"] = base + ".txt"
    with open(paths["txt"], "w") as f:
        f.write(f"{module.TITLE}\n{text}\n")
    return {"results": results, "conclusion": text, "paths": paths, "seconds": seconds}
