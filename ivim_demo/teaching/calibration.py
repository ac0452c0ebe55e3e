"""How sure is an estimate? The two posterior limits and the calibration of credible intervals."""
from __future__ import annotations

import numpy as np

from .compare import held_out
from ..classical.fit import fit_bayes
from ..nets.infer import predict
from ..core.metrics import PARAMS, normalised_bias, nrmse
from ..core.signal_model import PARAMETER_BOX, SEED_B_VALUES

__all__ = ["coverage", "posterior_limits"]


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


def posterior_limits(snrs, *, n_test, levels=(0.5, 0.8, 0.9, 0.95), net=None, b_values=SEED_B_VALUES, seed=0,
                     grid=(40, 40, 40), progress=True):
    """The exact posterior with S0 known and with S0 unknown, and how well credible intervals cover the truth.

    At each SNR, on the held-out voxels of ``compare_over_snr`` (``n_test``
    voxels from ``PARAMETER_BOX``, S0 = 1, Rician noise sigma = 1/SNR):

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
        signals, truth = held_out(snr, n_test, b_values, seed)
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
