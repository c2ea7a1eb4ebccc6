"""Build the API reference from the docstrings: ``python docs/build_api.py [OUT_DIR]``.

``make docs`` runs it (into docs/api/, not committed). pdoc writes one self-contained HTML page
per module, with a search box; building and reading need no network. ``tinygrad_bn`` brings the
submodules its ``__all__`` names (nn, nn.functional, optim, gradcheck); viz and data are added.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("tinygrad_bn", "tinygrad_bn.viz", "tinygrad_bn.data")


def build(out_dir=ROOT / "docs" / "api"):
    """Write the HTML pages into ``out_dir``; returns the path of its index.html."""
    try:
        import pdoc
        import pdoc.render
    except ImportError:
        raise SystemExit("docs/build_api.py: pdoc is not installed; "
                         "pip install -e '.[docs]' (or make setup)") from None
    sys.path.insert(0, str(ROOT))  # document this checkout, whatever is installed
    import tinygrad_bn
    pdoc.render.configure(docformat="restructuredtext", search=True, show_source=True,
                          footer_text=f"tinygrad_bn {tinygrad_bn.__version__}")
    out_dir = Path(out_dir)
    pdoc.pdoc(*MODULES, output_directory=out_dir)
    return out_dir / "index.html"


if __name__ == "__main__":
    index = build(*sys.argv[1:2])
    print(f"API reference: {index}")
