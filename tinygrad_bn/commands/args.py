"""Flag types shared by the commands: each checks its value when the command line is parsed.

argparse calls these with the flag's text and turns an ArgumentTypeError into the one-line error
"argument --steps: must be a whole number >= 1, got '0'", exit code 2, before any work starts.
"""
import argparse
import math
import os


def _refuse(allowed, text):
    raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")


def _int_at_least(low, text):
    try:
        value = int(text)
    except ValueError:
        _refuse(f"a whole number >= {low}", text)
    if value < low:
        _refuse(f"a whole number >= {low}", text)
    return value


def positive_int(text):
    """A whole number >= 1 (steps, jobs, evaluation spacing)."""
    return _int_at_least(1, text)


def nonnegative_int(text):
    """A whole number >= 0 (numpy's random generators take no negative seeds)."""
    return _int_at_least(0, text)


def positive_float(text):
    """A finite number > 0 (a learning rate): nan, inf and 0 would train to nothing."""
    try:
        value = float(text)
    except ValueError:
        _refuse("a finite number > 0", text)
    if not (math.isfinite(value) and value > 0):
        _refuse("a finite number > 0", text)
    return value


def seed_list(text):
    """Seeds, comma-separated: "0,1,2" is three runs, "0" one run with seed 0 (never a count)."""
    parts = [p.strip() for p in text.split(",")]
    allowed = "seeds >= 0 separated by commas, such as 0,1,2 (one number is one seed)"
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        _refuse(allowed, text)
    if any(s < 0 for s in seeds):
        _refuse(allowed, text)
    if len(set(seeds)) != len(seeds):
        _refuse(allowed + ", each once", text)
    return seeds


def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def output_dir(text):
    """A folder to write into: existing and writable, or creatable (not an existing file)."""
    if os.path.exists(text) and not os.path.isdir(text):
        _refuse("a folder, not an existing file", text)
    base = _nearest_existing(text)
    if not os.path.isdir(base):
        _refuse(f"a folder that can be created ({base} is a file)", text)
    if not _writable(base):
        _refuse(f"a folder you can write to ({base} is not writable)", text)
    return text


def _writable(folder):
    # os.access says yes to root everywhere, also on a read-only file system: ask that too.
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only = False
    return os.access(folder, os.W_OK | os.X_OK) and not read_only


def output_file(suffixes):
    """A type for a file to write, whose suffix is one of ``suffixes`` (its folder is created)."""
    def check(text):
        allowed = f"a file path ending in {', '.join('.' + s for s in suffixes)}"
        if os.path.splitext(text)[1].lstrip(".").lower() not in suffixes:
            _refuse(allowed, text)
        if os.path.isdir(text):
            _refuse(allowed + ", not a folder", text)
        if os.path.exists(text):
            folder = os.path.dirname(os.path.abspath(text))
            if not os.access(text, os.W_OK) or not _writable(folder):
                _refuse(allowed + " you can write to", text)
            return text
        base = _nearest_existing(os.path.dirname(os.path.abspath(text)))
        if not os.path.isdir(base) or not _writable(base):
            _refuse(allowed + f" in a folder you can write to ({base} is not writable)", text)
        return text
    return check


def existing_dir(text):
    """A folder that exists (data to read)."""
    if not os.path.isdir(text):
        _refuse("an existing folder", text)
    return text
