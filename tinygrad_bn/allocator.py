"""Keep freed memory for reuse: the engine allocates a fresh array per operation.

glibc's malloc gives large freed blocks back to the operating system (munmap, heap trimming),
so every training step touched fresh pages again: 1,700 page faults and ~25% of the time of a
784-512-512-10 step at batch 256 (measured; 10,000 faults on the 1024-wide net). Raising the
mmap and trim thresholds keeps those blocks in the heap for the next step, as the hand-written
numpy step gets for free by working in place.

Importing tinygrad_bn changes nothing: a training program asks for it once, at its start,

    from tinygrad_bn.allocator import keep_freed_memory
    keep_freed_memory()

as ``tinygrad-bn train``/``demo``, ``demos/train_mlp.py`` and the benchmarks do. It is
process-wide (it also applies to everything else the process allocates) and cannot be undone.
Linux/glibc only; TINYGRAD_BN_MALLOC=default makes the call do nothing.
"""
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold=16 << 20, trim_threshold=128 << 20):
    """Ask malloc to serve blocks up to ``mmap_threshold`` bytes from the heap and to keep up to
    ``trim_threshold`` free bytes instead of returning them. Returns whether it was applied."""
    if not sys.platform.startswith("linux") or os.environ.get("TINYGRAD_BN_MALLOC") == "default":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
