"""The lecture notes' claims about normalization, one demo each (issue 8).

Each claim module has NAME, TITLE, FULL/QUICK settings, ``run(...)`` -> results dict,
``conclusion(results)`` -> text and ``plot(results, path)``. ``run_claim`` ties them together:
JSON, PNG, conclusion text, and a report section in ``<out>/sections/<name>.json``.
"""
import os
import time

from . import covariate_shift, hyperparams, inputs, running_stats, sigmoid
from .common import write_json, write_section

CLAIMS = {m.NAME: m for m in (inputs, hyperparams, sigmoid, running_stats, covariate_shift)}
NEEDS_MNIST = {"hyperparams", "sigmoid", "running-stats", "covariate-shift"}


def run_claim(name, out_dir, quick=False, data=None, seed=0, progress=False, jobs=1):
    """Run claim ``name``; write <name>.json, <name>.png, <name>.txt and the report section.

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
    base = os.path.join(out_dir, f"claim_{name.replace('-', '_')}")
    paths = {"json": write_json(dict(results, claim=name, title=module.TITLE, quick=quick,
                                     seconds=seconds, conclusion=text), base + ".json"),
             "png": module.plot(results, base + ".png")}
    paths["txt"] = base + ".txt"
    with open(paths["txt"], "w") as f:
        f.write(f"{module.TITLE}\n{text}\n")
    paths["section"] = write_section(out_dir, f"claim_{name.replace('-', '_')}",
                                     f"Claim: {module.TITLE}", text, paths["png"])
    return {"results": results, "conclusion": text, "paths": paths, "seconds": seconds}
