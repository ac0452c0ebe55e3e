import numpy as np
import pytest

import ivim_demo as iv

B = iv.SEED_B_VALUES


@pytest.fixture(scope="module")
def low_noise():
    return iv.training_data(1500, sigma=0.002, seed=21)  # SNR 500


@pytest.fixture(scope="module")
def snr100():
    return iv.training_data(3000, sigma=0.01, seed=22)


def rel_err(est, truth, name):
    return np.median(np.abs(getattr(est, name) - getattr(truth, name)) / getattr(truth, name))


def test_lsq_recovers_low_noise_parameters(low_noise):
    signals, truth = low_noise
    est = iv.fit_lsq(signals * 700.0, B)  # any S0 scale
    assert est.Dp.shape == (1500,)
    assert rel_err(est, truth, "Dt") < 0.01
    assert rel_err(est, truth, "Fp") < 0.02
    assert rel_err(est, truth, "Dp") < 0.05
    np.testing.assert_allclose(np.median(est.S0 / 700.0), 1.0, atol=0.005)


def test_lsq_agrees_with_scipy_curve_fit(snr100):
    signals, _ = snr100
    fast = iv.fit_lsq(signals[:300], B)
    ref = iv.lsq_reference(signals[:300], B)
    for name in iv.IVIMParams._fields:
        a, r = getattr(fast, name), getattr(ref, name)
        assert np.median(np.abs(a - r) / np.abs(r)) < 0.02, name
    lo, hi = iv.FIT_BOUNDS["Fp"]
    assert fast.Fp.min() >= lo and fast.Fp.max() <= hi


def test_lsq_respects_custom_bounds(snr100):
    signals, _ = snr100
    est = iv.fit_lsq(signals[:200], B, bounds={"Dp": (0.02, 0.05)})
    assert est.Dp.min() >= 0.02 and est.Dp.max() <= 0.05
    with pytest.raises(ValueError, match="lower < upper"):
        iv.fit_lsq(signals[:10], B, bounds={"Dp": (0.05, 0.02)})


def test_segmented_recovers_low_noise_parameters(low_noise):
    signals, truth = low_noise
    est = iv.fit_segmented(signals, B)
    # segmented is biased by design (the perfusion signal is not fully gone at b = 200) but close
    assert rel_err(est, truth, "Dt") < 0.05
    assert np.median(np.abs(est.Fp - truth.Fp)) < 0.02
    assert rel_err(est, truth, "Dp") < 0.25
    np.testing.assert_allclose(est.S0, signals[:, 0])


def test_segmented_threshold_must_split_b_values(low_noise):
    with pytest.raises(ValueError, match="b_threshold"):
        iv.fit_segmented(low_noise[0], B, b_threshold=2000)


def test_bayes_recovers_and_beats_lsq_at_moderate_snr():
    signals, truth = iv.training_data(600, sigma=0.05, seed=23)  # SNR 20
    bayes = iv.fit_bayes(signals, B, sigma=0.05, grid=(24, 24, 24))
    lsq = iv.fit_lsq(signals, B)
    for name in iv.PARAMS:  # the posterior mean has the lower error
        assert iv.nrmse(getattr(bayes, name), getattr(truth, name)) < iv.nrmse(getattr(lsq, name), getattr(truth, name))
    assert iv.spearman(bayes.Dt, truth.Dt) > 0.9
    lo, hi = iv.PARAMETER_BOX["Dp"]
    assert bayes.Dp.min() >= lo and bayes.Dp.max() <= hi  # a posterior mean stays inside the prior


def test_bayes_matches_brute_force_rician_posterior():
    from scipy.special import i0e

    signals, _ = iv.training_data(5, sigma=0.1, seed=24)  # low SNR: exercises the exact-I0 path too
    grid = (10, 9, 8)
    est = iv.fit_bayes(signals, B, sigma=0.1, grid=grid, s0="ratio")  # the ratio posterior's formula
    axes = [np.linspace(*iv.PARAMETER_BOX[k], n + 1) for k, n in zip(iv.PARAMS, grid)]
    axes = [(a[:-1] + a[1:]) / 2 for a in axes]
    theta = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    m = iv.ivim(B, theta[:, :1], theta[:, 1:2], theta[:, 2:3])
    for v, e in zip(signals / signals[:, :1], zip(est.Dp, est.Dt, est.Fp)):
        z = v * m / 0.01
        ll = (np.log(i0e(z)) + z - m**2 / 0.02).sum(axis=1)
        w = np.exp(ll - ll.max())
        np.testing.assert_allclose(e, w @ theta / w.sum(), rtol=1e-5)


def test_fits_handle_a_whole_phantom():
    dwi, truth = iv.phantom(seed=3)
    labels = iv.phantom_regions()
    seg = iv.fit_segmented(dwi, B)
    bayes = iv.fit_bayes(dwi[::4, ::4], B, sigma=15.0, grid=(16, 16, 16))  # the phantom's noise SD, signal units
    assert seg.Dt.shape == (100, 100) and bayes.Fp.shape == (25, 25)
    for region, ref in enumerate(iv.PHANTOM_REGIONS):
        inside = labels == region
        assert np.median(seg.Dt[inside]) == pytest.approx(ref.Dt, rel=0.1)
        assert np.median(bayes.Dt[labels[::4, ::4] == region]) == pytest.approx(ref.Dt, rel=0.1)


@pytest.mark.parametrize("fit", ["fit_lsq", "fit_segmented", "fit_bayes"])
def test_fits_reject_bad_input(fit):
    f = getattr(iv, fit)
    kw = {"sigma": 0.01} if fit == "fit_bayes" else {}
    signals, _ = iv.training_data(10, seed=0)
    bad = signals.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        f(bad, B, **kw)
    bad = signals.copy()
    bad[4, 0] = 0
    with pytest.raises(ValueError, match=r"S\(b=0\)"):
        f(bad, B, **kw)
    with pytest.raises(ValueError, match="7 b-values"):
        f(signals[:, :7], B, **kw)
    with pytest.raises(ValueError, match="start at b=0"):
        f(signals, B + 5, **kw)


@pytest.mark.parametrize("sigma", [0, -0.1, np.nan, [0.1, 0.2]])
def test_bayes_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        iv.fit_bayes(iv.training_data(5, seed=0)[0], B, sigma=sigma)


def test_score_and_pivot():
    signals, truth = iv.training_data(300, sigma=0.01, seed=5)
    est = iv.fit_lsq(signals, B)
    rows = iv.score({"LSQ": est, "truth": truth}, truth, extra={"snr": 100})
    assert len(rows) == 6
    perfect = [r for r in rows if r["method"] == "truth"]
    assert all(r["nrmse"] == 0 and r["bias"] == 0 and r["rho_truth"] == pytest.approx(1) for r in perfect)
    table = iv.pivot(rows, value="nrmse", where={"param": "Dt"})
    assert table == [{"snr": 100, "LSQ": rows[1]["nrmse"], "truth": 0.0}]
