"""fit_bayes(..., s0="marginal"): the exact posterior with S0 unknown, checked against brute force."""
import numpy as np
import pytest

import ivim_demo as iv
from ivim_demo.classical.posterior import _brute_force
from tolerances import BAYES_F32_RTOL

pytestmark = pytest.mark.numerics  # run again under other numeric paths (Makefile)

B = iv.SEED_B_VALUES
FIELDS = iv.IVIMParams._fields


def f32_rounding(mean):
    """fit_bayes's float32 path (sigma >~ 0.015 here, see fit._F32_ROUNDING) against float64, or two of its fits
    through other float32 matrix shapes (chunks, S0 windows): ``BAYES_F32_RTOL`` of each parameter's largest
    posterior mean over the voxels, (4,) for means (n, 4). Of the largest, not of each value: the grid holds each
    parameter in units of its box, so a small value carries the rounding of the largest (measured at sigma 0.02,
    grids 16-40: means, SDs and interval ends within 3e-6 of the box's width; a small Dp's mean up to 1.2e-5 of
    its own value)."""
    return BAYES_F32_RTOL * np.abs(mean).max(axis=0)


def stacked(params):
    return np.stack([getattr(params, k) for k in FIELDS], axis=1)


def fit(signals, sigma, **kw):
    return iv.fit_bayes(signals, B, sigma=sigma, s0="marginal", **kw)


@pytest.mark.parametrize("snr", [20, 50])
def test_marginal_posterior_matches_brute_force(snr):
    sigma, grid = 1 / snr, (8, 8, 8)
    signals, truth = iv.training_data(60, B, sigma=sigma, seed=snr)  # from the prior, S0 = 1
    post = fit(signals, sigma, interval=0.9, grid=grid)
    ref = _brute_force(signals, B, sigma, iv.PARAMETER_BOX, grid, step=1 / 6, half_width=10.0)
    assert ref["edge"].max() < 1e-12  # the reference's S0 grid holds the whole posterior
    for field in ("mean", "sd", "lower", "upper"):  # errors in units of each voxel's posterior SD, beyond the
        # float32 path's rounding (the reference is float64; at SNR 50 float32 adds up to 6e-5 SD, float64 1e-6)
        err = ((np.abs(stacked(getattr(post, field)) - ref[field]) - f32_rounding(ref["mean"])) / ref["sd"]).max(axis=0)
        assert (err[:3] < 1e-4).all(), (field, err)  # Dp, Dt, Fp: same grid, same cell CDF
        # S0: mean and SD to 1e-4; interval ends (sinc CDF vs the reference's cell CDF on a finer grid) 0.03
        assert err[3] < (1e-4 if field in ("mean", "sd") else 0.03), (field, err)
    # the acceptance measure: NRMSE of each posterior mean within 1 % (relative) of the reference's
    for i, k in enumerate(FIELDS):
        assert iv.nrmse(getattr(post.mean, k), getattr(truth, k)) == pytest.approx(
            iv.nrmse(ref["mean"][:, i], getattr(truth, k)), rel=0.01)


@pytest.mark.parametrize("sigma", [0.2, 0.01, 0.002])
def test_marginal_posterior_matches_brute_force_at_extreme_snr(sigma):
    # SNR 5 (S0 window down to the prior's S0 > 0 end), 100 and 500 (float64 path; on this coarse grid the
    # posterior sits on one or two cells, possibly far apart: every mode must be inside the S0 window)
    signals, _ = iv.training_data(10, B, sigma=sigma, seed=40)
    signals[0, 6:] = 0.0  # magnitude 0 at the high b-values
    if sigma > 0.1:
        signals[1, 3] = 3.0  # an outlier far above the model
    post = fit(signals, sigma, interval=0.9, grid=(8, 8, 8))
    ref = _brute_force(signals, B, sigma, iv.PARAMETER_BOX, (8, 8, 8), step=1 / 8, half_width=14.0)
    ends_free = ref["edge"] < 1e-9  # S0 reaches 0 at SNR 5: there the reference's window is the prior's
    assert ends_free.sum() >= 5
    typical = np.array([0.05, 1e-3, 0.2, 1.0])
    np.testing.assert_allclose(stacked(post.mean)[ends_free], ref["mean"][ends_free], rtol=1e-5, atol=0)
    # a posterior on one cell has an SD of rounding size, and a separate mode with < 1e-9 of the mass (which
    # the S0 window may leave out) adds up to sqrt(1e-9) x its distance to it
    np.testing.assert_allclose(stacked(post.sd)[ends_free] / typical, ref["sd"][ends_free] / typical, rtol=1e-3,
                               atol=1e-4)


def test_intervals_cover_the_truth_at_their_level():
    sigma = 1 / 20
    signals, truth = iv.training_data(2000, B, sigma=sigma, seed=7)  # from the prior the fit assumes
    post = fit(signals, sigma, interval=0.9, grid=(16, 16, 16))
    for k in FIELDS:
        inside = (getattr(post.lower, k) <= getattr(truth, k)) & (getattr(truth, k) <= getattr(post.upper, k))
        assert 0.85 <= inside.mean() <= 0.95, (k, inside.mean())  # binomial SD at 0.9: 0.007
        assert (getattr(post.lower, k) <= getattr(post.mean, k)).all() and (
            getattr(post.mean, k) <= getattr(post.upper, k)).all()
        assert (getattr(post.sd, k) > 0).all()


@pytest.fixture(scope="module")
def voxels():
    return iv.training_data(40, B, sigma=0.05, seed=11)[0]


def test_window_is_wide_enough_and_widening_or_summing_online_changes_nothing(voxels, monkeypatch):
    from ivim_demo.classical import posterior as pm

    base = fit(voxels, 0.05, interval=0.8, grid=(10, 10, 10))
    with monkeypatch.context() as patch:  # far wider first windows
        patch.setattr(pm, "_PROFILE_DROP", 60.0)
        patch.setattr(pm, "_S0_TAIL", 12.0)
        wide = fit(voxels, 0.05, interval=0.8, grid=(10, 10, 10))
    with monkeypatch.context() as patch:  # first windows far too narrow: every voxel is widened
        patch.setattr(pm, "_PROFILE_DROP", 0.01)
        patch.setattr(pm, "_S0_TAIL", 0.2)
        narrow = fit(voxels, 0.05, interval=0.8, grid=(10, 10, 10))
    with monkeypatch.context() as patch:  # S0 nodes 3x closer
        patch.setattr(pm, "_S0_STEP", 0.4)
        dense = fit(voxels, 0.05, interval=0.8, grid=(10, 10, 10))
    with monkeypatch.context() as patch:  # every chunk summed again with a running maximum
        patch.setattr(pm, "_ABOVE_PROBE", -1000.0)
        online = fit(voxels, 0.05, interval=0.8, grid=(10, 10, 10))
    # other windows put other numbers of S0 nodes (matrix rows) in each float32 product and summing online
    # rounds otherwise, so beyond the float32 path's rounding (f32_rounding); a window left too narrow (not widened)
    # moves the means by 0.2-0.8 posterior SDs (3-13 %)
    allowed = f32_rounding(stacked(base.mean))
    for other in (wide, narrow, dense, online):
        for field in ("mean", "sd"):
            err = (np.abs(stacked(getattr(other, field)) - stacked(getattr(base, field))) - allowed) / stacked(base.sd)
            assert err.max() < 1e-5, field


def test_signal_units_and_chunks(voxels):
    post = fit(voxels, 0.05, interval=0.9, grid=(10, 10, 10))
    scaled = fit(voxels * 1500.0, 0.05 * 1500.0, interval=0.9, grid=(10, 10, 10), chunk=3)
    again = fit(voxels, 0.05, interval=0.9, grid=(10, 10, 10), chunk=7)
    unit = np.array([1.0, 1.0, 1.0, 1500.0])
    allowed = f32_rounding(stacked(post.mean))
    # other signal units (and 3 voxels per float32 product), 7 voxels per product instead of 16: equal up to
    # the float32 path's rounding (f32_rounding)
    for field in post._fields:
        for other in (stacked(getattr(scaled, field)) / unit, stacked(getattr(again, field))):
            assert (np.abs(other - stacked(getattr(post, field))) <= allowed).all(), field


def test_shapes_mean_only_and_invalid_voxels(voxels):
    cube = voxels[:24].reshape(2, 3, 4, len(B))
    post = fit(cube, 0.05, interval=0.5, grid=(6, 6, 6))
    assert isinstance(post, iv.Posterior) and all(getattr(p, k).shape == (2, 3, 4) for p in post for k in FIELDS)
    mean = fit(cube, 0.05, grid=(6, 6, 6))
    assert isinstance(mean, iv.IVIMParams)
    np.testing.assert_allclose(stacked(mean), stacked(post.mean), rtol=1e-12)
    bad = voxels[:5].copy()
    bad[2, 3] = np.nan
    out = fit(bad, 0.05, interval=0.9, grid=(6, 6, 6), invalid="nan")
    alone = fit(bad[[0, 1, 3, 4]], 0.05, interval=0.9, grid=(6, 6, 6))  # the same 4 voxels in one call, same shapes
    for field in post._fields:
        assert np.isnan(stacked(getattr(out, field))[2]).all()
        np.testing.assert_allclose(stacked(getattr(out, field))[[0, 1, 3, 4]], stacked(getattr(alone, field)),
                                   rtol=1e-6)


def test_default_is_the_exact_posterior(voxels):
    default = iv.fit_bayes(voxels, B, sigma=0.05, grid=(8, 8, 8))
    marginal = iv.fit_bayes(voxels, B, sigma=0.05, grid=(8, 8, 8), s0="marginal")
    ratio = iv.fit_bayes(voxels, B, sigma=0.05, grid=(8, 8, 8), s0="ratio")
    assert isinstance(default, iv.IVIMParams)
    np.testing.assert_array_equal(stacked(default), stacked(marginal))
    assert not np.allclose(stacked(default)[:, :3], stacked(ratio)[:, :3])  # the modes differ: this is not ratio
    np.testing.assert_array_equal(ratio.S0, voxels[:, 0])  # ratio: S0 is the measured S(b=0)


@pytest.mark.parametrize("kw, words", [
    ({"s0": "known"}, "'ratio'"),
    ({"s0": "ratio", "interval": 0.9}, "s0='marginal'"),
    ({"s0": "ratio", "sigma": -1.0}, "relative to S"),
    ({"s0": "marginal", "interval": 1.0}, "between 0 and 1"),
    ({"s0": "marginal", "interval": 0}, "positive"),
    ({"s0": "marginal", "interval": True}, "interval"),
    ({"s0": "marginal", "sigma": -1.0}, "signal units"),
    ({"sigma": -1.0}, "signal units"),  # the default mode's unit
    ({"s0": "marginal", "grid": (1, 5, 5)}, "grid"),
])
def test_bad_options_are_refused(voxels, kw, words):
    kw = {"sigma": 0.05, **kw}
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        iv.fit_bayes(voxels[:3], B, **kw)


def test_posterior_limits_draw_independent_voxels_per_snr():
    """Coverages at different SNRs must be independent samples: no SNR reuses another's voxels; an SNR's voxels
    do not depend on which other SNRs are scored."""
    (_, at_10), (_, at_20) = (iv.calibration_voxels(snr, 300, seed=3) for snr in (10, 20))
    for k in iv.PARAMS:
        assert not np.any(getattr(at_10, k) == getattr(at_20, k)), k
    rows, calibration = iv.posterior_limits([10, 20], n_test=200, levels=(0.5, 0.9), seed=3, grid=(12, 12, 12),
                                            progress=False)
    alone, _ = iv.posterior_limits([20], n_test=200, levels=(0.5, 0.9), seed=3, grid=(12, 12, 12), progress=False)
    assert alone == [r for r in rows if r["snr"] == 20]
    assert {(r["level"], r["method"]) for r in calibration} == {(0.5, "Bayes, S0 unknown"), (0.9, "Bayes, S0 unknown")}
    known = {r["param"]: r["nrmse"] for r in alone if r["method"] == "Bayes, S0 known"}
    unknown = {r["param"]: r["nrmse"] for r in alone if r["method"] == "Bayes, S0 unknown"}
    assert known["Fp"] < unknown["Fp"]  # knowing S0 helps Fp most


def test_plot_calibration_shows_the_band_chance_allows():
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"snr": 20, "method": "Bayes", "param": p, "level": lv, "coverage": lv} for p in iv.PARAMS
            for lv in (0.5, 0.9)]
    fig = iv.plot_calibration(rows, n=1000)
    band = fig.axes[0].collections[0].get_paths()[0].vertices
    at_90 = band[np.isclose(band[:, 0], 0.9)][:, 1]
    np.testing.assert_allclose(sorted(at_90)[:: len(at_90) - 1], [0.9 - 1.96 * 0.3 / 1000 ** 0.5,
                                                                  0.9 + 1.96 * 0.3 / 1000 ** 0.5], rtol=1e-6)
    assert not iv.plot_calibration(rows).axes[0].collections  # no n: no band
