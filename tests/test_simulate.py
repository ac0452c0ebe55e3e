import numpy as np
import pytest

import ivim_demo as iv


def test_rician_noise_statistics():
    rng = np.random.default_rng(0)
    n = 200_000
    # zero signal: Rayleigh distribution, mean sigma*sqrt(pi/2)
    zero = iv.add_rician_noise(np.zeros(n), 2.0, rng)
    assert zero.mean() == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.01)
    assert zero.min() >= 0
    # high signal: approximately Gaussian around the signal with SD sigma
    high = iv.add_rician_noise(np.full(n, 100.0), 2.0, rng)
    assert high.mean() == pytest.approx(100.0 + 2.0**2 / (2 * 100.0), abs=0.02)
    assert high.std() == pytest.approx(2.0, rel=0.01)


def test_rician_noise_touches_every_sample():
    clean = np.ones((1000, 8))
    noisy = iv.add_rician_noise(clean, 0.01, 1)
    assert np.all(noisy != clean)  # no sample or b-value left noise-free


def test_rician_noise_is_seeded_and_rejects_negative_sigma():
    a = iv.add_rician_noise(np.ones(5), 0.1, 3)
    b = iv.add_rician_noise(np.ones(5), 0.1, 3)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="sigma"):
        iv.add_rician_noise(np.ones(5), -0.1, 3)


def test_training_data_shapes_box_and_noise():
    signals, p = iv.training_data(5000, seed=2)
    assert signals.shape == (5000, 8)
    for name, (lo, hi) in iv.PARAMETER_BOX.items():
        v = getattr(p, name)
        assert v.shape == (5000,) and v.min() >= lo and v.max() <= hi
        assert v.mean() == pytest.approx((lo + hi) / 2, rel=0.05)
    np.testing.assert_array_equal(p.S0, 1.0)
    clean = iv.ivim(iv.SEED_B_VALUES, p.Dp[:, None], p.Dt[:, None], p.Fp[:, None])
    assert np.std(signals[:, 0] - clean[:, 0]) == pytest.approx(0.01, rel=0.05)
    again, _ = iv.training_data(5000, seed=2)
    np.testing.assert_array_equal(signals, again)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_training_data_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be"):
        iv.training_data(n)


def test_training_data_rejects_bad_sigma_and_b_values():
    with pytest.raises(ValueError, match="sigma"):
        iv.training_data(10, sigma=-1)
    with pytest.raises(ValueError, match="start at b=0"):
        iv.training_data(10, b_values=[10, 20, 30])
    with pytest.raises(ValueError, match="increasing"):
        iv.training_data(10, b_values=[0, 20, 10])


def test_phantom_regions_exact():
    labels = iv.phantom_regions()
    assert (labels == 0).sum() == 19 * 19  # 41..59 in both directions
    assert (labels == 1).sum() == 59 * 59 - 19 * 19  # 21..79
    assert (labels == 2).sum() == 100 * 100 - 59 * 59
    assert labels[40, 50] == 1 and labels[41, 41] == 0 and labels[59, 59] == 0 and labels[60, 50] == 1
    assert labels[20, 50] == 2 and labels[21, 21] == 1 and labels[79, 79] == 1 and labels[80, 50] == 2


def test_phantom_values_exact():
    dwi, truth = iv.phantom(sigma=0.0)
    labels = iv.phantom_regions()
    assert dwi.shape == (100, 100, 8)
    for region, ref in enumerate(iv.PHANTOM_REGIONS):
        inside = labels == region
        for name in iv.IVIMParams._fields:
            np.testing.assert_array_equal(getattr(truth, name)[inside], getattr(ref, name))
        expected = iv.ivim(iv.SEED_B_VALUES, ref.Dp, ref.Dt, ref.Fp, ref.S0)
        np.testing.assert_allclose(dwi[inside], np.broadcast_to(expected, (inside.sum(), 8)))
    assert [r.S0 for r in iv.PHANTOM_REGIONS] == [1500, 1400, 1600]
    assert [r.Dp for r in iv.PHANTOM_REGIONS] == [0.02, 0.04, 0.06]
    assert [r.Dt for r in iv.PHANTOM_REGIONS] == [0.0015, 0.0010, 0.0005]
    assert [r.Fp for r in iv.PHANTOM_REGIONS] == [0.1, 0.2, 0.3]


def test_phantom_noise_level():
    dwi, truth = iv.phantom(sigma=15.0, seed=0)
    clean, _ = iv.phantom(sigma=0.0)
    assert np.std(dwi[..., 0] - clean[..., 0]) == pytest.approx(15.0, rel=0.05)
