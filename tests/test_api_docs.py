"""The public API is documented: every public function and method has a docstring and type hints,
and the API reference (docs/build_api.py, ``make docs``) builds and shows them."""
import html
import inspect
import runpy
from pathlib import Path

import pytest

import tinygrad_bn
from tinygrad_bn import Tensor, gradcheck, nn, optim
from tinygrad_bn.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [Tensor, nn.Module, nn.Parameter, nn.Sequential, nn.Linear, nn.BatchNorm1d, nn.ReLU,
           nn.Sigmoid, nn.Tanh, nn.Identity, nn.Flatten, optim.SGD, optim.Adam,
           tinygrad_bn.no_grad, tinygrad_bn.enable_grad]


def public_api():
    """(qualified name, function) for the public functions and methods users call; methods are
    named by the class that defines them ("Module.parameters", not "Linear.parameters")."""
    from tinygrad_bn import viz
    found = {f"F.{name}": f for name, f in vars(F).items()
             if inspect.isfunction(f) and not name.startswith("_") and f.__module__ == F.__name__}
    found.update({"gradcheck": gradcheck, "viz.draw": viz.draw,
                  "is_grad_enabled": tinygrad_bn.is_grad_enabled})
    for cls in CLASSES:
        for klass in cls.__mro__:
            if not klass.__module__.startswith("tinygrad_bn"):
                continue
            for name, member in vars(klass).items():
                if name.startswith("_") and name != "__init__":
                    continue
                if isinstance(member, property):
                    # A one-line (lambda) property carries its docstring as doc= and no hints.
                    member = member if member.fget.__name__ == "<lambda>" else member.fget
                if inspect.isfunction(member) or isinstance(member, property):
                    found.setdefault(f"{klass.__name__}.{name}", member)
    return found


def is_method(f):
    return next(iter(inspect.signature(f).parameters), None) == "self"


def test_every_public_class_and_function_has_a_docstring():
    missing = [name for name, f in public_api().items()
               if not name.endswith(".__init__") and not (inspect.getdoc(f) or "").strip()]
    missing += [cls.__name__ for cls in CLASSES if not (cls.__doc__ or "").strip()]
    assert not missing, f"add a one-line docstring (with the math where it applies) to {missing}"


def test_every_public_function_has_type_hints():
    missing = []
    for name, f in public_api().items():
        if isinstance(f, property):
            continue
        sig = inspect.signature(f)
        params = [p for p in list(sig.parameters.values())[1 if is_method(f) else 0:]
                  if p.annotation is inspect.Parameter.empty]
        no_return = sig.return_annotation is inspect.Signature.empty \
            and not name.endswith(".__init__")
        if params or no_return:
            missing.append(f"{name}({', '.join(p.name for p in params)})"
                           + (" -> ?" if no_return else ""))
    assert not missing, f"add type hints to {missing}"


@pytest.fixture(scope="module")
def api_dir(tmp_path_factory):
    pytest.importorskip("pdoc", reason="pip install -e '.[docs]' (pdoc builds the API page)")
    build = runpy.run_path(str(ROOT / "docs" / "build_api.py"))["build"]
    out = tmp_path_factory.mktemp("api")
    index = build(out)
    assert index.exists()
    return out


@pytest.mark.parametrize("page, names", [
    ("tinygrad_bn.html", ["Tensor", "Tensor.backward", "Tensor.mean", "no_grad", "enable_grad"]),
    ("tinygrad_bn/nn.html", ["Module.parameters", "Linear", "BatchNorm1d", "Sequential"]),
    ("tinygrad_bn/nn/functional.html", ["batch_norm", "cross_entropy", "mse_loss"]),
    ("tinygrad_bn/optim.html", ["SGD", "Adam"]),
    ("tinygrad_bn/gradcheck.html", ["gradcheck", "GradcheckError"]),
    ("tinygrad_bn/viz.html", ["draw"]),
])
def test_api_page_documents_the_public_names(api_dir, page, names):
    text = (api_dir / page).read_text(encoding="utf-8")
    for name in names:
        assert f'id="{name}"' in text, f"{name} has no entry in {page}"


def test_api_page_shows_the_docstrings(api_dir):
    text = html.unescape((api_dir / "tinygrad_bn" / "nn" / "functional.html").read_text("utf-8"))
    assert inspect.getdoc(F.batch_norm).splitlines()[0] in text
    text = html.unescape((api_dir / "tinygrad_bn.html").read_text("utf-8"))
    assert inspect.getdoc(Tensor.backward).splitlines()[0] in text
