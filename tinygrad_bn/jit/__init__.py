"""jit: capture a training step's array work at the seam (``dispatch``), check it, replay it.

A layer above the core: ``tape.py`` is the hook that records what one call computed,
``replay.py`` captures, compares two captures, tries and replays, ``codegen.py`` turns two
agreeing tapes into one straight-line numpy function, ``state.py`` snapshots what a step touches.
"""
from .replay import Jit, jit
from .tape import JitError

__all__ = ["Jit", "JitError", "jit"]
