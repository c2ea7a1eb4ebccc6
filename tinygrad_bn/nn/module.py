"""Module: parameters, buffers, children, train/eval, state dicts; and Sequential."""
from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from typing import Any, Iterator, Mapping

import numpy as np

from ..autograd import enter_scope, exit_scope
from ..dispatch import rebind, run
from ..tensor import Tensor

# Every tensor some Module holds as a parameter or buffer, by id (held weakly): layers above
# (jit) tell a model's own tensors from fresh inputs with ``is_model_tensor``.
_MODEL_TENSORS = weakref.WeakValueDictionary()


def is_model_tensor(t):
    """Whether ``t`` is (or was) registered in some Module as a parameter or buffer."""
    return _MODEL_TENSORS.get(id(t)) is t


class Parameter(Tensor):
    """A Tensor that a Module registers as learnable (requires_grad=True unless told otherwise)."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True, dtype: Any = None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers: attributes that are Parameters, buffers or Modules are registered."""

    optional_state = ()  # names load_state_dict accepts missing (the module keeps its value)

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        # Replacing an entry keeps its place (state_dict's order, as in PyTorch): only the
        # other tables forget the name.
        kind = self._parameters if isinstance(value, Parameter) else \
            self._modules if isinstance(value, Module) else \
            self._buffers if name in self.__dict__.get("_buffer_names", ()) else None
        for table in (self._parameters, self._buffers, self._modules):
            if table is not kind:
                table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
            _MODEL_TENSORS[id(value)] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self.__dict__.get("_buffer_names", ()):
            self._buffers[name] = value
            if isinstance(value, Tensor):
                _MODEL_TENSORS[id(value)] = value
        # Also an ordinary attribute, so reading self.weight in forward is a plain lookup.
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Called only when normal lookup fails: parameters, buffers and children live in tables.
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def register_buffer(self, name: str, tensor: Tensor | None) -> None:
        """State that is saved and loaded but not learned (e.g. running statistics)."""
        self.__dict__.setdefault("_buffer_names", set()).add(name)
        setattr(self, name, tensor)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The layer's computation; ``module(x)`` calls it (subclasses define it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        prev = enter_scope(self)  # nodes made inside carry this module, for the renderer
        try:
            return self.forward(*args, **kwargs)
        finally:
            exit_scope(prev)

    # ---- traversal ----
    # A module or parameter reached under two names (a layer used twice in a Sequential, tied
    # weights dec.weight = enc.weight) is listed once, under its first name, as in PyTorch:
    # an optimizer given it twice would apply its update twice. state_dict keeps every name.
    def named_modules(self, prefix: str = "", remove_duplicate: bool = True
                      ) -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for this module and every descendant, depth first."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate:
                if id(module) in seen:
                    continue
                seen.add(id(module))
            yield name, module
            children = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items()
                        if m is not None]
            stack.extend(reversed(children))

    def modules(self) -> list[Module]:
        """This module and every descendant, depth first."""
        return [m for _, m in self.named_modules()]

    def children(self) -> list[Module]:
        """The direct submodules, in the order they were assigned."""
        return list(self._modules.values())

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True
                         ) -> list[tuple[str, Parameter]]:
        """(dotted name, parameter) for every parameter, e.g. ("0.weight", W): state-dict names."""
        return self._named_tensors("_parameters", prefix, remove_duplicate)

    def parameters(self) -> list[Parameter]:
        """Every learnable parameter of this module and its descendants (what optimizers take)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "", remove_duplicate: bool = True
                      ) -> list[tuple[str, Tensor]]:
        """(dotted name, buffer) for every buffer, e.g. ("1.running_mean", ...)."""
        return self._named_tensors("_buffers", prefix, remove_duplicate)

    def buffers(self) -> list[Tensor]:
        """Every buffer (saved, not learned: running statistics) of this module and below."""
        return [b for _, b in self.named_buffers()]

    def _named_tensors(self, table, prefix, remove_duplicate):
        out, seen = [], set()
        for name, m in self.named_modules(prefix, remove_duplicate):
            for k, t in getattr(m, table).items():
                if t is None or (remove_duplicate and id(t) in seen):
                    continue
                seen.add(id(t))
                out.append((f"{name}.{k}" if name else k, t))
        return out

    # ---- modes and gradients ----
    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=False``: eval) on this module and every descendant."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Evaluation mode: BatchNorm1d normalizes with its running statistics."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget the gradients of every parameter (PyTorch's default: set them to None)."""
        for p in self.parameters():
            run(setattr, p, "grad", None)  # on a jit tape, so a replay does it too

    def to(self, dtype: Any) -> Module:
        """Convert every floating-point parameter and buffer to ``dtype`` (e.g. np.float64)."""
        dtype = np.dtype(dtype)
        for t in self.parameters() + self.buffers():
            if t.data.dtype.kind == "f":
                t.data = t.data.astype(dtype)
                t.grad = None
        return self

    def double(self) -> Module:
        """``to(np.float64)``: what gradient checks and comparisons with PyTorch want."""
        return self.to(np.float64)

    def float(self) -> Module:
        """``to(np.float32)``, the default precision."""
        return self.to(np.float32)

    # ---- state ----
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Name → a copy of the array, for parameters and buffers (PyTorch's names and layouts)."""
        return OrderedDict((name, t.data.copy()) for name, t in self._named_state())

    def _named_state(self):
        # Module by module, parameters then buffers: the order of PyTorch's state_dict.
        return [(f"{name}.{k}" if name else k, t)
                for name, m in self.named_modules(remove_duplicate=False)
                for k, t in list(m._parameters.items()) + list(m._buffers.items())
                if t is not None]

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> Module:
        """Copy arrays (or anything np.asarray accepts, e.g. torch tensors) into this module."""
        own = OrderedDict(self._named_state())
        # State a module can do without (BatchNorm's num_batches_tracked, absent from older
        # state dicts): if missing it keeps its value, as in PyTorch.
        optional = {f"{name}.{k}" if name else k
                    for name, m in self.named_modules(remove_duplicate=False)
                    for k in type(m).optional_state}
        missing = [k for k in own if k not in state and k not in optional]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        arrays = {}
        for name, t in own.items():
            if name not in state:
                continue
            value = state[name]
            arr = np.asarray(value.data if isinstance(value, Tensor) else value)
            if arr.shape != t.data.shape:
                raise ValueError(f"load_state_dict: {name} has shape {t.data.shape} here but "
                                 f"{arr.shape} in the state given")
            arrays[name] = arr
        # Only after every shape checked: a refused load leaves the module as it was.
        for name, arr in arrays.items():
            t = own[name]
            t.data = np.array(arr, dtype=t.data.dtype)
            rebind(t)  # a graph that read t must not differentiate with the new values
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the state dict to a ``.npz`` file."""
        np.savez(path, **self.state_dict())

    def load(self, path: str | os.PathLike) -> Module:
        """Read a state dict written by ``save`` (shapes must match this module)."""
        import zipfile
        if not os.path.exists(path) and os.path.exists(f"{path}.npz"):
            path = f"{path}.npz"  # np.savez added the suffix
        # We open the file, so it is closed whatever numpy makes of it; no pickles either way.
        with open(path, "rb") as raw:
            try:
                if raw.read(2) != b"PK":  # every .npz is a zip archive
                    raise ValueError("it is not a zip archive, as every .npz is")
                raw.seek(0)
                with np.load(raw, allow_pickle=False) as f:
                    state = {k: f[k] for k in f.files}
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(f"load: {path} is not a readable .npz state dict ({e}); it "
                                 f"may be truncated or another format. Write it again with "
                                 f"Module.save.") from None
        return self.load_state_dict(state)

    # ---- printing ----
    def extra_repr(self) -> str:
        """The text inside the parentheses of ``repr(module)``, e.g. "in_features=784, ..."."""
        return ""

    def __repr__(self):
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return "\n".join(lines + [")"])


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... and indexable."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, got {type(m).__name__} at position {i}")
            setattr(self, str(i), m)

    def forward(self, x: Tensor) -> Tensor:
        """Each module in turn: m_k(...m_1(m_0(x)))."""
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end (named by its position); returns self."""
        setattr(self, str(len(self)), module)
        return self
