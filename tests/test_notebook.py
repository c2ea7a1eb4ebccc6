"""notebooks/batchnorm_walkthrough.ipynb runs top to bottom in a fresh Jupyter kernel.

The notebook asserts its own numbers (BN against the formula, autodiff against the closed form,
gradcheck, training with BN ahead of training without); here: it runs without an error, draws
the graph inline, and is stored without outputs (so a diff shows code, not base64).
"""
import os
import shutil

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="pip install -e '.[test]' (nbclient, ipykernel)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "batchnorm_walkthrough.ipynb")


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), \
        "clear the outputs before committing (Jupyter: Edit > Clear Outputs of All Cells)"


@pytest.mark.slow
def test_notebook_runs(monkeypatch):
    pytest.importorskip("mlxtend", reason="the training part needs the demo extra (mlxtend)")
    if shutil.which("dot") is None:
        pytest.skip("no graphviz `dot` binary: the graph cell cannot render inline")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")  # the kernel inherits it: no BLAS threads fighting on CI
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel starts in the repository root, so it imports this checkout's tinygrad_bn.
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": ROOT}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    svgs = [o.data["image/svg+xml"] for o in outputs if "image/svg+xml" in o.get("data", {})]
    assert len(svgs) == 1 and "μ" in svgs[0]  # the batch-norm graph, drawn inline
    text = "".join(o.get("text", "") for o in outputs)
    assert "max |autodiff - closed form|" in text and "gradcheck failed" in text
    assert "with BN" in text and "without BN" in text
