"""Module.load on a damaged file: an error naming the file, and the file closed afterwards."""
import gc
import warnings

import numpy as np
import pytest

from tinygrad_bn import nn


def _model():
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "pickle"])
def test_a_corrupt_npz_names_the_file_and_leaks_no_handle(damage, tmp_path):
    path = tmp_path / "model.npz"
    _model().save(path)
    good = path.read_bytes()
    path.write_bytes({"garbage": b"not a zip file at all" * 5, "truncated": good[:len(good) // 2],
                      "empty": b"", "pickle": b"\x80\x04K\x01."}[damage])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # an unclosed file would warn at gc
        with pytest.raises(ValueError) as err:
            _model().load(path)
        gc.collect()
    message = str(err.value)
    assert str(path) in message and "Module.save" in message
    assert "allow_pickle" not in message


def test_a_saved_model_loads_back(tmp_path):
    a, b = _model(), _model()
    a[0].weight.data += 1
    a.save(tmp_path / "m")  # numpy adds .npz; load finds it
    b.load(tmp_path / "m")
    np.testing.assert_array_equal(a[0].weight.data, b[0].weight.data)
