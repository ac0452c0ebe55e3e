"""Barbieri et al.'s Bayesian fit: the posterior mode under priors estimated from the data's own least-squares fits.

Barbieri et al. (MRM 2020) compared IVIM-NET with "BP", a Bayesian fit whose
prior is estimated from the data: lognormal distributions for Dp and Dt and a
beta distribution for Fp, fitted by maximum likelihood to least-squares
estimates of the same voxels, and whose estimate is the *maximum* of the
posterior (the mode), found by bounded numerical minimisation. The noise level
is integrated out of the likelihood rather than given. (github sebbarb/deep_ivim,
``related_code/fitting_functions.py``: ``empirical_neg_log_prior``,
``neg_log_likelihood``, ``fit_bayesian``.) This module computes the same estimate
for all voxels at once; ``fit_bayes`` computes the posterior *mean* under a known
prior instead.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import special, stats

from ..core.checks import check_b_values, check_signals, check_whole
from ..core.signal_model import IVIMParams
from ..core.threads import one_torch_thread

__all__ = ["EmpiricalPrior", "empirical_prior", "fit_map", "MAP_START"]

#: Barbieri et al.'s starting point of the minimisation, (Dp, Dt, Fp) in mm^2/s and fraction.
MAP_START = (0.01, 0.001, 0.1)


class EmpiricalPrior(NamedTuple):
    """Priors fitted to estimates: lognormal Dp and Dt, beta Fp (scipy's parameterisations).

    ``Dp``, ``Dt``: ``(shape, scale)`` of ``scipy.stats.lognorm`` (location 0),
    that is the SD and the exponential of the mean of log D (D in mm^2/s).
    ``Fp``: ``(a, b)`` of ``scipy.stats.beta`` on [0, 1].
    """

    Dp: tuple
    Dt: tuple
    Fp: tuple


def empirical_prior(estimates: IVIMParams, *, bounds=None) -> EmpiricalPrior:
    """Fit Barbieri et al.'s empirical prior to parameter estimates (e.g. ``fit_lsq`` of the same voxels).

    Estimates with any of Dp, Dt or Fp outside (1e-8, 1 - 1e-8) are left out,
    as in their code (a fit at a bound of 0 or 1 says nothing about the
    distribution). Dp and Dt: maximum-likelihood lognormal (closed form: the
    mean and SD of log D); Fp: maximum-likelihood beta (``scipy.stats.beta.fit``
    on [0, 1]).

    Parameters
    ----------
    estimates : IVIMParams
        Arrays of any shape (flattened).
    bounds : dict, optional
        The bounds of the fit that made ``estimates`` (e.g. ``FIT_BOUNDS`` for
        ``fit_lsq``): estimates within 1e-6 of a bound's range from it are left
        out too (their fit's bounds were (0, 1), which the rule above covers).

    Returns
    -------
    EmpiricalPrior

    Raises
    ------
    ValueError
        If fewer than 10 voxels have estimates inside the bounds.
    """
    dp, dt, fp = (np.ravel(np.asarray(getattr(estimates, p), float)) for p in ("Dp", "Dt", "Fp"))
    if not dp.shape == dt.shape == fp.shape:
        raise ValueError("estimates.Dp, .Dt and .Fp must have the same number of voxels.")
    valid = np.ones(dp.shape, bool)
    for v in (dp, dt, fp):
        valid &= (np.nan_to_num(v) > 1e-8) & (np.nan_to_num(v) < 1 - 1e-8)
    for name, v in zip(("Dp", "Dt", "Fp"), (dp, dt, fp)):
        if bounds is not None and name in bounds:
            lo, hi = (float(x) for x in bounds[name])
            valid &= (v > lo + 1e-6 * (hi - lo)) & (v < hi - 1e-6 * (hi - lo))
    if valid.sum() < 10:
        raise ValueError(f"only {int(valid.sum())} voxel(s) have Dp, Dt and Fp strictly inside (0, 1): too few to "
                         "estimate a prior from; fit more voxels by least squares first.")

    def lognormal(x):
        logs = np.log(x[valid])
        return float(logs.std()), float(np.exp(logs.mean()))

    a, b, _, _ = stats.beta.fit(fp[valid], floc=0, fscale=1)
    return EmpiricalPrior(lognormal(dp), lognormal(dt), (float(a), float(b)))


def fit_map(signals, b_values, *, prior: EmpiricalPrior, steps: int = 40, start=None) -> IVIMParams:
    r"""Barbieri et al.'s Bayesian fit: the posterior mode of (Dp, Dt, Fp) for every voxel.

    On the signal normalised by its S(b=0), at the b-values > 0, minimise

    .. math:: \frac{n + 1}{2} \log \sum_{b > 0} \left(\frac{S(b)}{S(0)} - F_p e^{-b D_p}
              - (1 - F_p) e^{-b D_t}\right)^2 - \log p(D_p) - \log p(D_t) - \log p(F_p)

    (:math:`n` the number of b-values > 0; the first term is the likelihood
    with the noise SD integrated out, the exponent (n + 1)/2 of their code
    corresponding to a prior :math:`p(\sigma) \propto \sigma^{-2}`; Jeffreys'
    :math:`1/\sigma` would give n/2) subject to
    :math:`D_t < D_p` and each parameter in (0, 1), with the priors of
    ``empirical_prior``. Their code adds 1e-8 to each prior density; so does
    this one. All voxels are minimised together, each by damped Newton steps
    in the variables :math:`\log(D_p - D_t)`, :math:`\log D_t` and
    :math:`\mathrm{logit} F_p` (the minimum does not depend on them), from two
    starts: ``MAP_START`` (theirs) and ``start``; each voxel keeps the lower
    minimum.

    Parameters
    ----------
    signals : array_like
        ``(..., n_b)`` magnitude signals, b = 0 first.
    b_values : array_like
        In s/mm^2.
    prior : EmpiricalPrior
        From ``empirical_prior`` (of least-squares fits of these or similar voxels).
    steps : int, keyword-only
        Newton iterations (a step is taken only where it lowers the objective).
    start : IVIMParams, optional
        A second starting point per voxel (e.g. the least-squares fit from which the prior came).

    Returns
    -------
    IVIMParams
        Dp, Dt (mm^2/s) and Fp shaped like ``signals`` without its last axis; S0 is None.
    """
    import torch

    b = check_b_values(b_values)
    s = check_signals(signals, n_b=len(b))
    shape = s.shape[:-1]
    if not isinstance(prior, EmpiricalPrior):
        raise ValueError(f"prior must be an EmpiricalPrior (from empirical_prior), got {type(prior).__name__}.")
    steps = check_whole(steps, name="steps")
    flat = s.reshape(-1, len(b)).astype(float)
    x = torch.from_numpy(flat[:, b > 0] / flat[:, :1])
    bb = torch.from_numpy(b[b > 0])
    n = len(bb)
    starts = [np.broadcast_to(np.asarray(MAP_START, float), (len(flat), 3))]
    if start is not None:
        first = np.stack([np.ravel(np.asarray(getattr(start, p), float)) for p in ("Dp", "Dt", "Fp")], axis=1)
        if first.shape != starts[0].shape:
            raise ValueError(f"start must hold one estimate per voxel ({len(flat)}), got {len(first)}.")
        # a failed start (NaN, e.g. a masked voxel) is replaced by theirs; Dp < Dt is the same curve with Fp -> 1 - Fp
        first = np.where(np.isfinite(first).all(axis=1, keepdims=True), first, starts[0])
        swapped = first[:, 0] < first[:, 1]
        first = np.where(swapped[:, None], first[:, [1, 0, 2]] * [1, 1, -1] + [0, 0, 1], first)
        starts.append(first)
    p0 = np.concatenate(starts)
    dt0 = np.clip(p0[:, 1], 1e-6, 0.5)
    gap0 = np.clip(p0[:, 0] - p0[:, 1], 1e-5, 0.5)
    f0 = np.clip(p0[:, 2], 1e-4, 1 - 1e-4)
    theta = torch.tensor(np.stack([np.log(gap0), np.log(dt0), np.log(f0 / (1 - f0))], axis=1))
    xs = x.repeat(len(starts), 1)
    (dp_s, dp_scale), (dt_s, dt_scale), (fa, fb) = prior
    log_beta_ab = -float(special.betaln(fa, fb))

    def lognorm_logpdf(v, shape_, scale):
        return -torch.log(v * shape_ * np.sqrt(2 * np.pi)) - torch.log(v / scale) ** 2 / (2 * shape_ ** 2)

    def parameters(t):
        dt = torch.exp(t[..., 1])
        return dt + torch.exp(t[..., 0]), dt, torch.sigmoid(t[..., 2])

    def objective(t, xv):
        dp, dt, fp = parameters(t)
        model = fp[..., None] * torch.exp(-bb * dp[..., None]) + (1 - fp[..., None]) * torch.exp(-bb * dt[..., None])
        like = 0.5 * (n + 1) * torch.log(((model - xv) ** 2).sum(dim=-1))
        log_fp = (fa - 1) * torch.log(fp) + (fb - 1) * torch.log1p(-fp) + log_beta_ab
        prior_terms = sum(-torch.log(torch.exp(lp) + 1e-8) for lp in (
            lognorm_logpdf(dp, dp_s, dp_scale), lognorm_logpdf(dt, dt_s, dt_scale), log_fp))
        return like + prior_terms + (dp >= 1).double() * 1e8  # their bounds: every parameter below 1

    def gradient(t):  # the voxels are independent: the gradient of the sum is each voxel's gradient
        t = t.detach().requires_grad_(True)
        return torch.autograd.grad(objective(t, xs).sum(), t)[0]

    def grad_hess(t):  # the Hessian by central differences of the gradient (3 parameters per voxel)
        eps = 1e-5
        cols = [(gradient(t + eps * e) - gradient(t - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=t.dtype)]
        h = torch.stack(cols, dim=2)
        return gradient(t), (h + h.transpose(1, 2)) / 2

    with one_torch_thread():  # small tensors: torch's threads would only spin-wait
        value = objective(theta, xs)
        damping = torch.full((len(theta),), 1e-3, dtype=torch.float64)
        eye = torch.eye(3, dtype=torch.float64)
        for _ in range(steps):  # damped Newton steps, all voxels at once (each voxel its own damping)
            g, h = grad_hess(theta)
            h = torch.nan_to_num(h) + damping[:, None, None] * (eye + torch.diag_embed(torch.diagonal(h, dim1=1, dim2=2).abs()))
            step = torch.linalg.solve(h, torch.nan_to_num(g))
            trial = theta - step
            trial_value = objective(trial, xs)
            better = torch.isfinite(trial_value) & (trial_value < value)
            theta = torch.where(better[:, None], trial, theta)
            value = torch.where(better, trial_value, value)
            damping = torch.where(better, damping / 3, damping * 4).clamp(1e-9, 1e9)
    dp, dt, fp = parameters(theta)
    value = value.numpy().reshape(len(starts), -1)
    best = np.argmin(np.where(np.isfinite(value), value, np.inf), axis=0)
    pick = best * len(flat) + np.arange(len(flat))
    out = [v.numpy()[pick].reshape(shape) for v in (dp, dt, fp)]
    return IVIMParams(out[0], out[1], out[2], None)
