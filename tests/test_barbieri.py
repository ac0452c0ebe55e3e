"""Barbieri et al.'s settings: their Bayesian fit (MAP, empirical prior) and their comparison."""
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import minimize

import ivim_demo as iv
from ivim_demo.classical.map_fit import EmpiricalPrior, empirical_prior, fit_map
from ivim_demo.teaching import barbieri as bb

B = iv.SEED_B_VALUES


@pytest.mark.numerics  # floats through other kernels
def test_empirical_prior_recovers_known_distributions():
    rng = np.random.default_rng(0)
    dp = stats.lognorm(0.8, scale=0.04).rvs(20_000, random_state=rng)
    dt = stats.lognorm(0.3, scale=0.001).rvs(20_000, random_state=rng)
    fp = stats.beta(3.0, 9.0).rvs(20_000, random_state=rng)
    pr = empirical_prior(iv.IVIMParams(np.append(dp, 0.0), np.append(dt, 0.5), np.append(fp, 1.0), None))
    assert pr.Dp == pytest.approx((0.8, 0.04), rel=0.03) and pr.Dt == pytest.approx((0.3, 0.001), rel=0.03)
    assert pr.Fp == pytest.approx((3.0, 9.0), rel=0.05)
    with pytest.raises(ValueError, match="too few"):
        empirical_prior(iv.IVIMParams(np.zeros(50), dt[:50], fp[:50], None))  # all Dp at the bound 0


def _their_objective(q, x, prior):
    """Barbieri et al.'s neg_log_posterior, written out as their code has it."""
    dp, dt, fp = q
    if dp < dt:
        return 1e8
    model = fp * np.exp(-B[1:] * dp) + (1 - fp) * np.exp(-B[1:] * dt)
    like = 0.5 * (len(B) - 1 + 1) * np.log(np.sum((model - x) ** 2))
    e = 1e-8
    return (like - np.log(stats.lognorm.pdf(dp, prior.Dp[0], scale=prior.Dp[1]) + e)
            - np.log(stats.lognorm.pdf(dt, prior.Dt[0], scale=prior.Dt[1]) + e)
            - np.log(stats.beta.pdf(fp, *prior.Fp) + e))


@pytest.mark.numerics  # floats through other kernels
def test_fit_map_reaches_their_minimum():
    s, truth = bb.barbieri_data(3000, sd=75, seed=2)
    lsq = iv.fit_lsq(s, B)
    prior = empirical_prior(lsq)
    est = fit_map(s, B, prior=prior, start=lsq)
    x = s[:, 1:] / s[:, :1]
    for i in range(40):  # every voxel at least as low as scipy's L-BFGS-B from their start
        ours = _their_objective((est.Dp[i], est.Dt[i], est.Fp[i]), x[i], prior)
        theirs = minimize(_their_objective, x0=[0.01, 0.001, 0.1], args=(x[i], prior), bounds=[(0, 1)] * 3).fun
        assert ours <= theirs + 1e-6, (i, ours, theirs)
    assert (est.Dp > est.Dt).all() and ((est.Fp > 0) & (est.Fp < 1)).all()
    # the prior pulls the noisy least-squares estimates in: lower error at SNR 20
    assert iv.nrmse(est.Fp, truth.Fp) < 0.8 * iv.nrmse(lsq.Fp, truth.Fp)
    assert iv.nrmse(est.Dp, truth.Dp) < 0.8 * iv.nrmse(lsq.Dp, truth.Dp)


def test_fit_map_refusals():
    s, _ = bb.barbieri_data(50, sd=30, seed=0)
    with pytest.raises(ValueError, match="EmpiricalPrior"):
        fit_map(s, B, prior={"Dp": (1, 0.04)})
    prior = EmpiricalPrior((1.0, 0.04), (0.5, 0.001), (4.0, 10.0))
    with pytest.raises(ValueError, match="one estimate per voxel"):
        fit_map(s, B, prior=prior, start=iv.IVIMParams(np.ones(3), np.ones(3), np.ones(3), None))
    with pytest.raises(ValueError, match="b-values"):
        fit_map(s[:, :5], B, prior=prior)


def test_barbieri_data():
    s, truth = bb.barbieri_data(20_000, sd=15, seed=0)
    assert s.shape == (20_000, 8) and (truth.S0 == 1500).all()
    assert np.std(s[:, 0] - 1500) == pytest.approx(15, rel=0.03)  # SNR 100 at b = 0: nearly Gaussian
    s2, _ = bb.barbieri_data(20_000, sd=(0.0, 165.0), seed=0)
    spread = np.abs(s2[:, 0] - 1500)
    assert spread.max() > 300 and np.median(spread) < 80  # per-signal SDs up to 165
    with pytest.raises(ValueError, match="0 <= low < high"):
        bb.barbieri_data(10, sd=(50.0, 10.0))


def test_compare_barbieri_small():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a short training on few signals
        rows = bb.compare_barbieri(n_train=20_000, n_test=1000, sds=(30, 150), seeds=(0, 1), max_epochs=15,
                                   bayes_grid=(20, 20, 20))
    assert len(rows) == 2 * len(bb.BARBIERI_METHODS) * 3
    assert all(np.isfinite(r["rmse"]) and r["rmse"] > 0 for r in rows)
    by = {(r["sd"], r["method"], r["param"]): r for r in rows}
    assert by[(150.0, "IVIM-NET", "Fp")]["trainings"] == 2 and by[(150.0, "IVIM-NET", "Fp")]["rmse_sd"] > 0
    for p in ("Dp", "Fp"):  # at SNR 10 both Bayesian fits beat least squares, the exact posterior most
        lsq, bp = by[(150.0, "LSQ", p)]["rmse"], by[(150.0, "BP (theirs: MAP, empirical prior)", p)]["rmse"]
        exact = by[(150.0, "exact posterior (true prior)", p)]["rmse"]
        assert exact < bp < lsq, p
    assert by[(30.0, "LSQ", "Dt")]["rmse"] < by[(150.0, "LSQ", "Dt")]["rmse"]
