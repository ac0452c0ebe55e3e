import numpy as np
import pytest

import ivim_demo as iv
from ivim_demo.core.checks import check_b_values, check_signals


def good(n=4):
    return iv.training_data(n, seed=0)[0]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.__setitem__((1, 3), np.nan), "NaN or inf in 1 voxel"),
        (lambda s: s.__setitem__((2, 5), np.inf), "NaN or inf"),
        (lambda s: s.__setitem__((0, 0), 0.0), r"S\(b=0\) is <= 0"),
        (lambda s: s.__setitem__((3, 2), -0.5), "negative values"),
    ],
)
def test_bad_signal_values_raise(mutate, message):
    s = good()
    mutate(s)
    with pytest.raises(ValueError, match=message):
        check_signals(s)


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match=r"\(\.\.\., n_b\)"):
        check_signals(np.float64(3.0))
    with pytest.raises(ValueError, match="8 were expected"):
        check_signals(good()[:, :7], n_b=8)
    with pytest.raises(ValueError, match="empty"):
        check_signals(np.zeros((0, 8)))
    with pytest.raises(ValueError, match="numeric"):
        check_signals(np.array([["a", "b"]]))


@pytest.mark.parametrize(
    "b, message",
    [([10, 20], "start at b=0"), ([0, 10, 10], "increasing"), ([0, np.nan], "NaN"), ([[0, 1]], "1-D"), ([0], "1-D")],
)
def test_bad_b_values_raise(b, message):
    with pytest.raises(ValueError, match=message):
        check_b_values(b)
