"""Imports of the optional [demo] packages, failing with the command that installs them."""
import importlib


class MissingDependencyError(ImportError):
    """An optional package is missing; the message names the pip command that installs it."""


def require(module, purpose):
    """``importlib.import_module(module)``, or MissingDependencyError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and module.split(".")[0] != e.name.split(".")[0]:
            raise  # the package is there but broken: show the real error
        raise MissingDependencyError(
            f"{purpose} needs the optional package {module.split('.')[0]!r}, which is not "
            f"installed. Install the demo extras with:  pip install tinygrad_bn[demo]") from None
