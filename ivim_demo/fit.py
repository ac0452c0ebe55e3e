"""Classical IVIM fits, batched over voxels: least squares, segmented, Bayesian.

All three take raw signals ``(..., n_b)`` with b = 0 first, normalise each
voxel by its S(b=0), fit every voxel at once (no Python loop over voxels) and
return ``IVIMParams`` shaped ``signals.shape[:-1]``.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import check_b_values, check_signals, normalise
from .model import FIT_BOUNDS, PARAMETER_BOX, IVIMParams, ivim

__all__ = ["fit_lsq", "fit_segmented", "fit_bayes", "lsq_reference", "estimate_sigma"]

_ORDER = ("Dp", "Dt", "Fp", "S0")


def _prepare(signals, b_values):
    b = check_b_values(b_values)
    s = check_signals(signals, n_b=len(b))
    x, s0 = normalise(s.astype(float))
    return b, x.reshape(-1, len(b)), s0, s.shape[:-1]


def _bounds_array(bounds):
    bounds = FIT_BOUNDS if bounds is None else {**FIT_BOUNDS, **bounds}
    lo = np.array([bounds[k][0] for k in _ORDER], float)
    hi = np.array([bounds[k][1] for k in _ORDER], float)
    if not np.all(hi > lo):
        raise ValueError(f"every bound must have lower < upper, got {bounds}.")
    return lo, hi


def _segmented(b, x, b_threshold, lo, hi):
    """Segmented fit on normalised signals (n, n_b); returns (n, 4) with S0 = 1."""
    high = b >= b_threshold
    if high.sum() < 2 or (~high).sum() < 2:
        raise ValueError(
            f"b_threshold={b_threshold} s/mm^2 must leave at least 2 b-values on each side; "
            f"b-values are {b.tolist()}."
        )
    # 1) Dt and the intercept from a log-linear fit of b >= threshold (closed-form OLS)
    bh = b[high]
    y = np.log(np.clip(x[:, high], 1e-6, None))
    bc = bh - bh.mean()
    slope = (y - y.mean(axis=1, keepdims=True)) @ bc / (bc @ bc)
    intercept = y.mean(axis=1) - slope * bh.mean()
    Dt = np.clip(-slope, lo[1], hi[1])
    # 2) Fp from the intercept vs S0 (= 1 after normalisation)
    Fp = np.clip(1 - np.exp(intercept), lo[2], hi[2])
    # 3) Dp with Dt and Fp fixed: grid search on a log grid + parabolic refinement (vectorised)
    grid = np.geomspace(lo[0], hi[0], 200)
    resid = x - (1 - Fp)[:, None] * np.exp(-np.outer(Dt, b))  # what the fast compartment must explain
    e = np.exp(-np.outer(b, grid))  # (n_b, G)
    sse = -2 * Fp[:, None] * (resid @ e) + Fp[:, None] ** 2 * (e * e).sum(axis=0)
    k = np.clip(sse.argmin(axis=1), 1, len(grid) - 2)
    rows = np.arange(len(x))
    f0, f1, f2 = sse[rows, k - 1], sse[rows, k], sse[rows, k + 1]
    denom = f0 - 2 * f1 + f2
    shift = np.where(denom > 0, 0.5 * (f0 - f2) / np.where(denom > 0, denom, 1), 0.0)
    log_step = np.log(grid[1] / grid[0])
    Dp = np.clip(grid[k] * np.exp(np.clip(shift, -1, 1) * log_step), lo[0], hi[0])
    return np.stack([Dp, Dt, Fp, np.ones(len(x))], axis=1)


def _lsq_start(b, x, lo, hi):
    """Start of every least-squares fit (``fit_lsq`` and its scipy reference alike): the segmented
    fit (threshold 200 s/mm^2, or the median b when no b-value exceeds it), inside the bounds."""
    return np.clip(_segmented(b, x, 200.0 if b.max() > 200 else np.median(b), lo, hi), lo, hi)


def _finish(est, s0, shape):
    """(n, 4) estimates on normalised signals -> IVIMParams with S0 in signal units."""
    Dp, Dt, Fp, S0 = (est[:, i].reshape(shape) for i in range(4))
    return IVIMParams(Dp, Dt, Fp, S0 * s0.reshape(shape))


def fit_segmented(signals, b_values, *, b_threshold=200.0, bounds=None) -> IVIMParams:
    """Segmented IVIM fit, vectorised over voxels.

    1. Above ``b_threshold`` the pseudo-diffusion signal has decayed, so
       :math:`\\log S(b)/S_0 \\approx \\log(1 - F_p) - b D_t`: a straight-line fit
       gives Dt (slope) and the intercept.
    2. ``Fp = 1 - exp(intercept)``, with S0 the measured S(b=0).
    3. Dp is fitted to all b-values with Dt and Fp fixed (log grid search with
       parabolic refinement).

    Parameters
    ----------
    signals : array_like
        ``(..., n_b)``, b = 0 first.
    b_values : array_like
        b-values in s/mm^2.
    b_threshold : float
        b-value (s/mm^2) from which the signal is taken as mono-exponential.
    bounds : dict, optional
        Overrides of ``FIT_BOUNDS``; estimates are clipped to them.

    Returns
    -------
    IVIMParams
    """
    b, x, s0, shape = _prepare(signals, b_values)
    lo, hi = _bounds_array(bounds)
    return _finish(_segmented(b, x, b_threshold, lo, hi), s0, shape)


def _model_and_jacobian(b, p):
    """Normalised model (n, n_b) and its Jacobian (n, n_b, 4) at parameters p (n, 4)."""
    Dp, Dt, Fp, S0 = (p[:, i : i + 1] for i in range(4))
    e1, e2 = np.exp(-b * Dp), np.exp(-b * Dt)
    shape = Fp * e1 + (1 - Fp) * e2
    J = np.stack([-b * S0 * Fp * e1, -b * S0 * (1 - Fp) * e2, S0 * (e1 - e2), shape], axis=-1)
    return S0 * shape, J


def fit_lsq(signals, b_values, *, bounds=None, max_iter=50, tol=1e-7, progress=False) -> IVIMParams:
    """Bounded non-linear least-squares fit of the bi-exponential model, all voxels at once.

    Minimises :math:`\\sum_b [S(b)/S(b{=}0) - S_0' (F_p e^{-bD_p} + (1-F_p)e^{-bD_t})]^2`
    over (Dp, Dt, Fp, S0') within ``bounds`` with a projected
    Levenberg-Marquardt iteration run on every voxel simultaneously (numpy,
    one damping factor per voxel, parameters scaled to [0, 1] by the
    bounds). Each voxel starts from its segmented fit (``fit_segmented``).

    Parameters
    ----------
    signals : array_like
        ``(..., n_b)``, b = 0 first.
    b_values : array_like
        b-values in s/mm^2.
    bounds : dict, optional
        Overrides of ``FIT_BOUNDS`` (Dp, Dt in mm^2/s, Fp fraction, S0
        relative to the measured S(b=0)).
    max_iter : int
        Maximum iterations; voxels stop individually when converged.
    tol : float
        Relative cost decrease below which a voxel has converged.
    progress : bool
        Show a progress bar over iterations.

    Returns
    -------
    IVIMParams
        S0 in signal units (fitted relative S0 times S(b=0)).
    """
    b, x, s0, shape = _prepare(signals, b_values)
    lo, hi = _bounds_array(bounds)
    u = (_lsq_start(b, x, lo, hi) - lo) / (hi - lo)
    scale = hi - lo
    active = np.arange(len(x))
    lam = np.full(len(x), 1e-2)
    model, _ = _model_and_jacobian(b, lo + u * scale)
    cost = ((model - x) ** 2).sum(axis=1)
    eye = np.eye(4)
    for _ in tqdm(range(max_iter), desc="LSQ", disable=not progress):
        if active.size == 0:
            break
        ua, xa = u[active], x[active]
        model, J = _model_and_jacobian(b, lo + ua * scale)
        J = J * scale  # derivatives with respect to the scaled parameters
        r = model - xa
        Jt = J.transpose(0, 2, 1)
        JtJ = Jt @ J
        g = (Jt @ r[..., None])[..., 0]
        damp = lam[active, None, None] * (JtJ * eye + 1e-12 * eye)
        step = np.linalg.solve(JtJ + damp, -g[..., None])[..., 0]
        trial = np.clip(ua + step, 0.0, 1.0)
        m_trial, _ = _model_and_jacobian(b, lo + trial * scale)
        c_trial = ((m_trial - xa) ** 2).sum(axis=1)
        better = c_trial < cost[active]
        decrease = np.where(better, (cost[active] - c_trial) / np.maximum(cost[active], 1e-300), 0.0)
        u[active[better]] = trial[better]
        cost[active[better]] = c_trial[better]
        lam[active] = np.where(better, lam[active] * 0.3, lam[active] * 10.0)
        done = (better & (decrease < tol)) | (lam[active] > 1e10) | (np.abs(trial - ua).max(axis=1) < 1e-9)
        active = active[~done]
    return _finish(lo + u * scale, s0, shape)


def estimate_sigma(signals, b_values) -> float:
    """Noise level relative to S(b=0) (1/SNR), from least-squares residuals.

    Fits every voxel with ``fit_lsq`` and returns
    :math:`\\hat\\sigma = \\sqrt{\\mathrm{median}_v \\sum_b r_{vb}^2 / (n_b - 4)}` on the
    normalised signals (4 fitted parameters). Use it as ``fit_bayes``'s
    ``sigma`` when the noise level of real data is not known.
    """
    b, x, _, _ = _prepare(signals, b_values)
    if len(b) <= 4:
        raise ValueError(f"estimating the noise needs more than 4 b-values, got {len(b)}.")
    est = fit_lsq(x, b)
    model = ivim(b, est.Dp[:, None], est.Dt[:, None], est.Fp[:, None], est.S0[:, None])
    return float(np.sqrt(np.median(((x - model) ** 2).sum(axis=1)) / (len(b) - 4)))


def lsq_reference(signals, b_values, *, bounds=None) -> IVIMParams:
    """Per-voxel ``scipy.optimize.curve_fit`` (trust-region reflective) reference.

    Same model, bounds and start (the segmented fit) as ``fit_lsq``, but one
    voxel at a time: slow, kept to validate ``fit_lsq`` and to time it.
    """
    from scipy.optimize import curve_fit

    b, x, s0, shape = _prepare(signals, b_values)
    lo, hi = _bounds_array(bounds)
    start = _lsq_start(b, x, lo, hi)

    def f(bb, Dp, Dt, Fp, S0):
        return ivim(bb, Dp, Dt, Fp, S0)

    out = np.empty_like(start)
    for i in range(len(x)):  # deliberately per voxel: this is the slow reference
        try:
            out[i], _ = curve_fit(f, b, x[i], p0=start[i], bounds=(lo, hi), method="trf", maxfev=10000)
        except RuntimeError:
            out[i] = start[i]
    return _finish(out, s0, shape)


def _grid_midpoints(lo, hi, n):
    edges = np.linspace(lo, hi, n + 1)
    return (edges[:-1] + edges[1:]) / 2


def fit_bayes(signals, b_values, *, sigma, prior=None, grid=(40, 40, 40), chunk=256, progress=False) -> IVIMParams:
    """Posterior-mean IVIM estimate under a uniform prior and a Rician likelihood.

    With the normalised signal :math:`x_b = S(b)/S(b{=}0)` and model
    :math:`m_b(\\theta) = F_p e^{-bD_p} + (1-F_p)e^{-bD_t}`, the Rician
    likelihood of one b-value is

    .. math:: p(x_b|\\theta) = \\frac{x_b}{\\sigma^2}
        \\exp\\!\\left(-\\frac{x_b^2 + m_b^2}{2\\sigma^2}\\right) I_0\\!\\left(\\frac{x_b m_b}{\\sigma^2}\\right)

    The posterior over a regular grid of (Dp, Dt, Fp) cell centres filling the
    prior box is normalised per voxel and its mean returned. When the data
    really come from that prior with that noise, the posterior mean is the
    minimum-mean-square-error estimator: no method can have a lower expected
    squared error, which makes this the accuracy limit to compare with.

    Parameters
    ----------
    signals : array_like
        ``(..., n_b)``, b = 0 first.
    b_values : array_like
        b-values in s/mm^2.
    sigma : float
        Noise standard deviation relative to S(b=0) (1 / SNR), > 0.
    prior : dict, optional
        Uniform prior box ``{"Dp": (lo, hi), "Dt": ..., "Fp": ...}``; default
        ``PARAMETER_BOX``.
    grid : tuple of 3 int
        Grid points along Dp, Dt, Fp.
    chunk : int
        Voxels per batch (memory: ``chunk * prod(grid)`` floats).
    progress : bool
        Show a progress bar over chunks.

    Returns
    -------
    IVIMParams
        S0 is the measured S(b=0).
    """
    if not (np.isscalar(sigma) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number (noise SD relative to S(b=0)), got {sigma!r}.")
    b, x, s0, shape = _prepare(signals, b_values)
    if len(grid) != 3 or any(int(n) < 2 for n in grid):
        raise ValueError(f"grid must be 3 whole numbers >= 2 (points along Dp, Dt, Fp), got {grid!r}.")
    prior = PARAMETER_BOX if prior is None else prior
    axes = [_grid_midpoints(*prior[k], int(n)) for k, n in zip(("Dp", "Dt", "Fp"), grid)]
    theta = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)  # (G, 3)
    m = ivim(b[1:], theta[:, :1], theta[:, 1:2], theta[:, 2:3]).T  # (n_b - 1, G); b = 0 is 1 for all
    xb = x[:, 1:]
    out = np.empty((len(x), 3))
    for start in tqdm(range(0, len(x), chunk), desc="Bayes", disable=not progress):
        out[start : start + chunk] = _posterior_mean(xb[start : start + chunk], m, theta, sigma)
    est = np.concatenate([out, np.ones((len(x), 1))], axis=1)
    return _finish(est, s0, shape)


#: log I0e(z) is replaced by its asymptotic series where every z of a (voxel, b) is >= this
#: (truncation error below 1e-4); elsewhere it is evaluated exactly.
_SERIES_FROM = 8.0


def _posterior_mean(x, m, theta, sigma):
    """Posterior mean of theta (G, 3) for normalised signals x (n, n_b') and models m (n_b', G).

    The Rician log-likelihood, up to terms constant per voxel, is
    sum_b [log I0e(z) + z - m^2 / (2 sigma^2)] with z = x m / sigma^2. Where z is
    large, log I0e(z) = -log(2 pi z)/2 + 1/(8z) + 1/(16z^2) + 25/(384z^3) + O(z^-4),
    and the whole sum becomes one matrix product of voxel features with model
    features; the remaining (voxel, b) pairs get the exact log I0e.
    """
    iv2 = 1.0 / sigma**2
    series = (x * m.min(axis=1) * iv2) >= _SERIES_FROM  # (n, n_b'): asymptotic series is accurate
    xs = np.where(series, x, 1.0)  # avoid 1/0 where the series is not used
    s2 = sigma**2
    feats = [x * iv2, series * 1.0, series * s2 / (8 * xs), series * s2**2 / (16 * xs**2),
             series * 25 * s2**3 / (384 * xs**3)]
    mfeats = [m, -0.5 * np.log(m), 1 / m, 1 / m**2, 1 / m**3]
    X = torch.from_numpy(np.concatenate(feats, axis=1))
    M = torch.from_numpy(np.concatenate(mfeats, axis=0))
    loglik = X @ M - torch.from_numpy((m**2).sum(axis=0) * iv2 / 2)
    for k in np.flatnonzero(~series.all(axis=0)):  # b-values where some voxels need the exact term
        rows = torch.from_numpy(np.flatnonzero(~series[:, k]))
        z = torch.outer(torch.from_numpy(x[rows.numpy(), k] * iv2).float(), torch.from_numpy(m[k]).float())
        loglik[rows] += torch.log(torch.special.i0e(z)).double()
    w = torch.softmax(loglik, dim=1)
    return (w @ torch.from_numpy(theta)).numpy()
