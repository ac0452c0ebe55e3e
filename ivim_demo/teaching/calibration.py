"""How sure is an estimate? The two posterior limits and the calibration of credible intervals."""
from __future__ import annotations

import numpy as np

from ..classical.fit import fit_bayes
from ..nets.infer import predict
from ..nets.protocols import Protocol
from ..simulation.simulate import add_rician_noise, training_data
from ..core.signal_model import ivim
from ..core.metrics import PARAMS, normalised_bias, nrmse
from ..core.signal_model import PARAMETER_BOX, SEED_B_VALUES

__all__ = ["calibration_voxels", "coverage", "posterior_limits", "protocol_scores"]


def coverage(posterior, truth) -> dict:
    """Share of voxels whose true value lies in the credible interval, per parameter.

    Parameters
    ----------
    posterior : Posterior
        From ``fit_bayes(..., interval=level)`` or ``predict(..., interval=level)``.
    truth : IVIMParams
        True parameters of the same voxels.

    Returns
    -------
    dict of str -> float
        ``{"Dp": ..., "Dt": ..., "Fp": ...}``: a calibrated ``level`` interval covers about ``level``.
    """
    return {p: float(np.mean((getattr(posterior.lower, p) <= getattr(truth, p))
                             & (getattr(truth, p) <= getattr(posterior.upper, p)))) for p in PARAMS}


def calibration_voxels(snr, n, b_values=SEED_B_VALUES, *, seed=0):
    """The held-out voxels ``posterior_limits`` scores at one SNR: their own at every SNR.

    ``n`` voxels with parameters uniform on ``PARAMETER_BOX``, S0 = 1 and
    Rician noise sigma = 1/SNR, drawn from ``numpy.random.default_rng([seed,
    7919, round(1000 * snr)])``: a given SNR and seed give the same voxels
    whatever other SNRs are scored, and two SNRs share no voxel or noise
    draw, so coverages at different SNRs are independent samples.

    Parameters
    ----------
    snr : float
        SNR at b = 0.
    n : int
        Voxels.
    b_values : array_like
        b-values in s/mm^2, b = 0 first.
    seed : int, keyword-only

    Returns
    -------
    signals : numpy.ndarray
        ``(n, n_b)``.
    truth : IVIMParams
    """
    return training_data(n, b_values, sigma=1.0 / snr, seed=[seed, 7919, int(round(1000 * snr))])


def posterior_limits(snrs, *, n_test, levels=(0.5, 0.8, 0.9, 0.95), net=None, b_values=SEED_B_VALUES, seed=0,
                     grid=(40, 40, 40), progress=True):
    """The exact posterior with S0 known and with S0 unknown, and how well credible intervals cover the truth.

    At each SNR, on ``n_test`` voxels of its own (``calibration_voxels``:
    parameters uniform on ``PARAMETER_BOX``, S0 = 1, Rician noise sigma =
    1/SNR; no two SNRs share a voxel or a noise draw, so the coverages at
    different SNRs are independent):

    * ``Bayes, S0 known``: the posterior mean when S0 = 1 is known exactly
      (``fit_bayes(s0="ratio")`` on signals whose b = 0 column is the true
      S0: the ratio posterior is then exact, and the b = 0 sample carries no
      information about (Dp, Dt, Fp));
    * ``Bayes, S0 unknown``: ``fit_bayes``'s exact posterior, S0 integrated
      out, with a central credible interval at every level in ``levels``;
    * ``net``: a network with intervals (``IVIMNetUncertainty``), at its
      trained level, given the true sigma.

    Parameters
    ----------
    snrs : sequence of float
    n_test : int
    levels : sequence of float
        Credible levels in (0, 1) for the calibration of the exact posterior.
    net : IVIMNetUncertainty, optional
    grid : tuple of 3 int
        ``fit_bayes``'s grid.

    Returns
    -------
    rows : list of dict
        Per SNR, method and parameter: ``nrmse``, ``bias``, and for methods
        with intervals ``sd_vs_prior`` (mean posterior SD over the SD of the
        uniform prior: near 1 where the prior, not the data, decides) and
        ``coverage_90`` (or the network's level).
    calibration : list of dict
        Per SNR, method, parameter and level: ``coverage``.
    """
    prior_sd = {p: (PARAMETER_BOX[p][1] - PARAMETER_BOX[p][0]) / np.sqrt(12) for p in PARAMS}
    rows, calibration = [], []
    for snr in snrs:
        signals, truth = calibration_voxels(snr, n_test, b_values, seed=seed)
        known = np.array(signals, dtype=float)
        known[..., 0] = truth.S0
        estimates = {"Bayes, S0 known": (fit_bayes(known, b_values, sigma=1 / snr, s0="ratio", grid=grid), None)}
        posteriors = {level: fit_bayes(signals, b_values, sigma=1 / snr, grid=grid, interval=level)
                      for level in levels}
        main = 0.9 if 0.9 in posteriors else levels[-1]
        estimates["Bayes, S0 unknown"] = (posteriors[main].mean, posteriors[main])
        for level, post in posteriors.items():
            calibration += [{"snr": snr, "method": "Bayes, S0 unknown", "param": p, "level": level, "coverage": c}
                            for p, c in coverage(post, truth).items()]
        if net is not None:
            level = float(net.settings()["level"])
            post = predict(net, signals, sigma=1 / snr, interval=level)
            estimates["network"] = (post.mean, post)
            calibration += [{"snr": snr, "method": "network", "param": p, "level": level, "coverage": c}
                            for p, c in coverage(post, truth).items()]
        for method, (mean, post) in estimates.items():
            cover = coverage(post, truth) if post is not None else {}
            for p in PARAMS:
                row = {"snr": snr, "method": method, "param": p, "nrmse": nrmse(getattr(mean, p), getattr(truth, p)),
                       "bias": normalised_bias(getattr(mean, p), getattr(truth, p))}
                if post is not None:
                    row["sd_vs_prior"] = float(np.mean(getattr(post.sd, p)) / prior_sd[p])
                    row["coverage"] = cover[p]
                rows.append(row)
        if progress:
            print(f"SNR {snr:>5g}: done", flush=True)
    return rows, calibration


def protocol_scores(net, b_values, snr, *, n, seed, grid=(40, 80, 40), level=0.9, direct=False):
    """The any-protocol network against the exact posterior under its own prior, on one protocol and SNR.

    ``n`` voxels drawn from ``net.prior`` (S0 = 1, Rician noise with sigma =
    1/SNR, given to both) are fitted by the network (``predict(net, S,
    b_values=b, sigma=..., interval=level)``) and by ``fit_bayes(S, b,
    sigma=..., prior=net.prior, grid=grid, interval=level)``, the posterior
    mean with S0 unknown that no estimator beats on average under that prior.

    Parameters
    ----------
    net : IVIMNetAnyProtocol
    b_values : array_like
        Distinct b-values in s/mm^2 (one image each), b = 0 first.
    snr : float
        SNR at b = 0.
    n : int, keyword-only
        Voxels.
    seed : int or sequence of int
        Seeds the voxels (``numpy.random.default_rng(seed)``) and their noise.
    grid : tuple of 3 int
        ``fit_bayes``'s grid (Dp, Dt, Fp cells; log-spaced for log-uniform parameters).
    level : float
        Credible level of the intervals.
    direct : bool
        Run the protocol's network (``net.specialise``) directly, for
        protocols outside the trained range, which ``predict`` refuses.

    Returns
    -------
    dict
        ``network`` and ``posterior``: NRMSE per parameter; ``ratio``: their
        ratio; ``coverage`` and ``posterior_coverage``: share of truths inside
        the ``level`` intervals; ``voxels``: ``n``.
    """
    b = np.asarray(b_values, dtype=float)
    rng = np.random.default_rng(seed)
    truth = net.prior.sample(n, seed=rng)
    clean = ivim(b, truth.Dp[:, None], truth.Dt[:, None], truth.Fp[:, None])
    signals = add_rician_noise(clean, 1.0 / snr, rng)
    if direct:
        est = predict(net.specialise(Protocol(b, np.ones(len(b), dtype=int))), signals, sigma=1.0 / snr,
                      interval=level)
    else:
        est = predict(net, signals, b_values=b, sigma=1.0 / snr, interval=level)
    post = fit_bayes(signals, b, sigma=1.0 / snr, prior=net.prior, grid=grid, interval=level)
    scores = {name: {p: nrmse(getattr(e.mean, p), getattr(truth, p)) for p in PARAMS}
              for name, e in (("network", est), ("posterior", post))}
    return {"voxels": int(n), **scores, "ratio": {p: scores["network"][p] / scores["posterior"][p] for p in PARAMS},
            "coverage": coverage(est, truth), "posterior_coverage": coverage(post, truth)}
