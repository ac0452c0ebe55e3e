"""Classical IVIM fits, batched over voxels: least squares, segmented, Bayesian.

All three take raw signals ``(..., n_b)`` with b = 0 first, normalise each
voxel by its S(b=0) (except ``fit_bayes`` in its default mode, ``s0="marginal"``,
which fits the raw signals with S0 unknown), fit the voxels in chunks (vectorised inside a chunk, no
Python loop over voxels; memory bounded by the chunk size) and return
``IVIMParams`` shaped ``signals.shape[:-1]``. Results do not depend on the
chunk size.

torch is imported only by ``fit_bayes``, so ``import ivim_demo.classical.fit`` stays light.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ..core.checks import (check_b_values, check_box, check_grid, check_positive, check_noise, check_signals, check_whole, invalid_option)
from ..core.prior import SEED_PRIOR, as_prior
from ..core.signal_model import FIT_BOUNDS, IVIMParams, ivim
from .likelihood import BLOCK, GridLikelihood
from ..core.threads import one_torch_thread, worker_pool

__all__ = ["fit_lsq", "fit_segmented", "fit_bayes", "lsq_reference", "estimate_sigma"]

_ORDER = IVIMParams._fields  # (Dp, Dt, Fp, S0)

#: Default voxels per chunk of the least-squares and segmented fits (a few hundred MB at most).
CHUNK = 65536


def _prepare(signals, b_values, noise="rician"):
    """Checked b-values, signals as (n, n_b) (a view when possible) and the leading shape; negative samples
    are refused unless ``noise`` is ``"gaussian"``."""
    b = check_b_values(b_values)
    s = check_signals(signals, n_b=len(b), negative=check_noise(noise) == "gaussian")
    return b, s.reshape(-1, len(b)), s.shape[:-1]


def _normalised(s):
    """Signals (n, n_b) of one chunk as float64 divided by their S(b=0)."""
    s = s.astype(float)
    return s / s[:, :1]


def _chunks(n, chunk, desc=None, progress=False):
    """Slices of at most ``chunk`` voxels covering ``range(n)``, with an optional progress bar."""
    bar = tqdm(total=n, desc=desc, unit="voxel", disable=not progress)
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))
        bar.update(min(chunk, n - start))
    bar.close()


def _bounds_array(bounds):
    bounds = check_box(FIT_BOUNDS if bounds is None else bounds, name="bounds", keys=_ORDER, defaults=FIT_BOUNDS)
    lo = np.array([bounds[k][0] for k in _ORDER], float)
    hi = np.array([bounds[k][1] for k in _ORDER], float)
    return lo, hi


def _segmented(b, x, b_threshold, lo, hi):
    """Segmented fit on normalised signals (n, n_b); returns (n, 4) with S0 = 1."""
    _check_threshold(b, b_threshold)
    high = b >= b_threshold
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
    grid = np.geomspace(lo[0], hi[0], 200) if lo[0] > 0 else np.linspace(lo[0], hi[0], 200)
    resid = x - (1 - Fp)[:, None] * np.exp(-np.outer(Dt, b))  # what the fast compartment must explain
    e = np.exp(-np.outer(b, grid))  # (n_b, G)
    sse = resid @ e  # (n, G), built in place: -2 Fp (resid . e) + Fp^2 |e|^2
    sse *= -2 * Fp[:, None]
    sse += Fp[:, None] ** 2 * (e * e).sum(axis=0)
    k = np.clip(sse.argmin(axis=1), 1, len(grid) - 2)
    rows = np.arange(len(x))
    f0, f1, f2 = sse[rows, k - 1], sse[rows, k], sse[rows, k + 1]
    del sse
    denom = f0 - 2 * f1 + f2
    shift = np.where(denom > 0, 0.5 * (f0 - f2) / np.where(denom > 0, denom, 1), 0.0)
    if lo[0] > 0:
        Dp = grid[k] * np.exp(np.clip(shift, -1, 1) * np.log(grid[1] / grid[0]))
    else:
        Dp = grid[k] + np.clip(shift, -1, 1) * (grid[1] - grid[0])
    Dp = np.clip(Dp, lo[0], hi[0])
    return np.stack([Dp, Dt, Fp, np.ones(len(x))], axis=1)


def _check_threshold(b, b_threshold):
    high = b >= b_threshold
    if high.sum() < 2 or (~high).sum() < 2:
        raise ValueError(
            f"b_threshold={b_threshold} s/mm^2 must leave at least 2 b-values on each side; "
            f"b-values are {b.tolist()}."
        )


def _start_threshold(b):
    """b_threshold of the least-squares start: 200 s/mm^2, or the median b when no b-value exceeds it."""
    return 200.0 if b.max() > 200 else float(np.median(b))


def _lsq_start(b, x, lo, hi):
    """Start of every least-squares fit (``fit_lsq`` and its scipy reference alike): the segmented
    fit (threshold 200 s/mm^2, or the median b when no b-value exceeds it), inside the bounds."""
    return np.clip(_segmented(b, x, _start_threshold(b), lo, hi), lo, hi)


def _finish(est, s, shape):
    """(n, 4) estimates on normalised signals -> IVIMParams with S0 in signal units."""
    s0 = s[:, 0].astype(float).reshape(shape)
    Dp, Dt, Fp, S0 = (est[:, i].reshape(shape) for i in range(4))
    return IVIMParams(Dp, Dt, Fp, S0 * s0)


@invalid_option()
def fit_segmented(signals, b_values, *, b_threshold=200.0, bounds=None, chunk=CHUNK, progress=False,
                  noise="rician") -> IVIMParams:
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
        Overrides of ``FIT_BOUNDS`` (keys Dp, Dt, Fp, S0); estimates are clipped to them.
    chunk : int
        Voxels fitted at once; memory is about ``chunk * 3 kB`` (200 MB at the default)
        on top of the input and output, whatever the number of voxels. Results do not depend on it.
    progress : bool
        Show a progress bar over voxels.
    noise : {"rician", "gaussian"}
        ``"rician"`` (default): magnitude images, negative samples refused.
        ``"gaussian"``: real-valued or phase-corrected images, where negative
        samples are legal (least squares is the Gaussian maximum likelihood,
        so only the check changes).
    invalid : {"raise", "nan"}
        ``"raise"`` (default): refuse signals with NaN/inf, negative values
        (with ``noise="rician"``) or S(b=0) <= 0 in any voxel. ``"nan"``: such
        voxels get NaN estimates and the others are fitted (see
        ``checks.invalid_option``).

    Returns
    -------
    IVIMParams
    """
    b, s, shape = _prepare(signals, b_values, noise)
    lo, hi = _bounds_array(bounds)
    chunk = check_whole(chunk, name="chunk")
    est = np.empty((len(s), 4))
    for part in _chunks(len(s), chunk, "segmented", progress):
        est[part] = _segmented(b, _normalised(s[part]), b_threshold, lo, hi)
    return _finish(est, s, shape)


def _model_and_jacobian(b, p):
    """Normalised model (n, n_b) and its Jacobian (n, n_b, 4) at parameters p (n, 4)."""
    Dp, Dt, Fp, S0 = (p[:, i : i + 1] for i in range(4))
    e1, e2 = np.exp(-b * Dp), np.exp(-b * Dt)
    shape = Fp * e1 + (1 - Fp) * e2
    J = np.stack([-b * S0 * Fp * e1, -b * S0 * (1 - Fp) * e2, S0 * (e1 - e2), shape], axis=-1)
    return S0 * shape, J


def _lsq(b, x, lo, hi, max_iter, tol):
    """Projected Levenberg-Marquardt on normalised signals x (n, n_b); returns (n, 4).

    Every voxel has its own damping and stops on its own, so a voxel's result
    does not depend on which other voxels share its chunk.
    """
    u = (_lsq_start(b, x, lo, hi) - lo) / (hi - lo)
    scale = hi - lo
    active = np.arange(len(x))
    lam = np.full(len(x), 1e-2)
    model, _ = _model_and_jacobian(b, lo + u * scale)
    cost = ((model - x) ** 2).sum(axis=1)
    eye = np.eye(4)
    for _ in range(max_iter):
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
    return lo + u * scale


@invalid_option()
def fit_lsq(signals, b_values, *, bounds=None, max_iter=50, tol=1e-7, chunk=CHUNK, progress=False,
            noise="rician") -> IVIMParams:
    """Bounded non-linear least-squares fit of the bi-exponential model, batched over voxels.

    Minimises :math:`\\sum_b [S(b)/S(b{=}0) - S_0' (F_p e^{-bD_p} + (1-F_p)e^{-bD_t})]^2`
    over (Dp, Dt, Fp, S0') within ``bounds`` with a projected
    Levenberg-Marquardt iteration run on every voxel of a chunk simultaneously
    (numpy, one damping factor per voxel, parameters scaled to [0, 1] by the
    bounds). Each voxel starts from its segmented fit (``fit_segmented``).

    Parameters
    ----------
    signals : array_like
        ``(..., n_b)``, b = 0 first.
    b_values : array_like
        b-values in s/mm^2.
    bounds : dict, optional
        Overrides of ``FIT_BOUNDS`` (keys Dp, Dt in mm^2/s, Fp fraction, S0
        relative to the measured S(b=0)).
    max_iter : int
        Maximum iterations (>= 1); voxels stop individually when converged.
    tol : float
        Relative cost decrease below which a voxel has converged (> 0).
    chunk : int
        Voxels fitted at once; memory is about ``chunk * 3 kB`` (200 MB at the default)
        on top of the input and output, whatever the number of voxels (2M voxels
        x 8 b-values: 395 MB above the input, benchmarks/fit_memory.py). Results do
        not depend on it.
    progress : bool
        Show a progress bar over voxels.
    noise : {"rician", "gaussian"}
        ``"rician"`` (default): magnitude images, negative samples refused.
        ``"gaussian"``: real-valued or phase-corrected images, where negative
        samples are legal (least squares is the Gaussian maximum likelihood,
        so only the check changes).
    invalid : {"raise", "nan"}
        ``"raise"`` (default): refuse signals with NaN/inf, negative values
        (with ``noise="rician"``) or S(b=0) <= 0 in any voxel. ``"nan"``: such
        voxels get NaN estimates and the others are fitted (see
        ``checks.invalid_option``).

    Returns
    -------
    IVIMParams
        S0 in signal units (fitted relative S0 times S(b=0)).
    """
    b, s, shape = _prepare(signals, b_values, noise)
    lo, hi = _bounds_array(bounds)
    max_iter = check_whole(max_iter, name="max_iter")
    tol = check_positive(tol, name="tol", what=" (relative cost decrease at convergence)")
    chunk = check_whole(chunk, name="chunk")
    est = np.empty((len(s), 4))
    for part in _chunks(len(s), chunk, "LSQ", progress):
        est[part] = _lsq(b, _normalised(s[part]), lo, hi, max_iter, tol)
    return _finish(est, s, shape)


def estimate_sigma(signals, b_values, *, absolute=False, chunk=CHUNK, noise="rician") -> float:
    """Noise level relative to S(b=0) (1/SNR), or in signal units, from least-squares residuals.

    Fits every voxel with ``fit_lsq``; the sum of squared residuals of a voxel
    is then about :math:`\\sigma^2 \\chi^2_{n_b - 4}` (4 fitted parameters), so

    .. math:: \\hat\\sigma = \\sqrt{\\mathrm{median}_v \\sum_b r_{vb}^2 \\,/\\, \\mathrm{median}(\\chi^2_{n_b-4})}

    on the normalised signals. Dividing by the median of the chi-square (not its
    mean, ``n_b - 4``) makes the estimate unbiased: within 2% of the true noise
    level at SNR 10-200 on simulated tissue. When the noise level of real data
    is not known, use ``estimate_sigma(..., absolute=True)`` as ``fit_bayes``'s
    ``sigma`` (signal units, its default ``s0="marginal"``), or the relative
    one with ``s0="ratio"``.

    Parameters
    ----------
    signals : array_like
        ``(..., n_b)``, b = 0 first; more than 4 b-values.
    b_values : array_like
        b-values in s/mm^2.
    absolute : bool
        Residuals in signal units (each voxel's normalised residuals times
        its S(b=0)) instead of relative to S(b=0): the noise SD of a scan
        whose voxels differ in brightness but share one noise level.
    chunk : int
        Voxels fitted at once (see ``fit_lsq``).
    noise : {"rician", "gaussian"}
        ``"gaussian"`` accepts negative samples (real-valued images).

    Returns
    -------
    float
    """
    b, s, _ = _prepare(signals, b_values, noise)
    if len(b) <= 4:
        raise ValueError(f"estimating the noise needs more than 4 b-values, got {len(b)}.")
    chunk = check_whole(chunk, name="chunk")
    from scipy.stats import chi2
    lo, hi = _bounds_array(None)
    ssr = np.empty(len(s))
    for part in _chunks(len(s), chunk):
        x = _normalised(s[part])
        p = _lsq(b, x, lo, hi, 50, 1e-7)
        model = ivim(b, p[:, :1], p[:, 1:2], p[:, 2:3], p[:, 3:])
        ssr[part] = ((x - model) ** 2).sum(axis=1) * (s[part, 0] ** 2 if absolute else 1.0)
    return float(np.sqrt(np.median(ssr) / chi2.median(len(b) - 4)))


def lsq_reference(signals, b_values, *, bounds=None) -> IVIMParams:
    """Per-voxel ``scipy.optimize.curve_fit`` (trust-region reflective) reference.

    Same model, bounds and start (the segmented fit) as ``fit_lsq``, but one
    voxel at a time: slow, kept to validate ``fit_lsq`` and to time it.
    """
    from scipy.optimize import curve_fit

    b, s, shape = _prepare(signals, b_values)
    lo, hi = _bounds_array(bounds)

    def f(bb, Dp, Dt, Fp, S0):
        return ivim(bb, Dp, Dt, Fp, S0)

    out = np.empty((len(s), 4))
    for part in _chunks(len(s), CHUNK):
        x = _normalised(s[part])
        start = _lsq_start(b, x, lo, hi)
        for i in range(len(x)):  # deliberately per voxel: this is the slow reference
            try:
                out[part.start + i], _ = curve_fit(f, b, x[i], p0=start[i], bounds=(lo, hi), method="trf",
                                                   maxfev=10000)
            except RuntimeError:
                out[part.start + i] = start[i]
    return _finish(out, s, shape)


def _grid_edges(lo, hi, n, *, log=False):
    """Cell edges of one grid axis: n cells of equal prior mass (equal widths in D, or in log D)."""
    return np.geomspace(lo, hi, n + 1) if log else np.linspace(lo, hi, n + 1)


def _centres(edges, *, log=False):
    """Cell centres: midpoints in D, or in log D (geometric means) for a log-uniform axis."""
    return np.sqrt(edges[:-1] * edges[1:]) if log else (edges[:-1] + edges[1:]) / 2


class _PosteriorFields(NamedTuple):
    """``Posterior`` flattened to arrays, so ``invalid="nan"`` can fill each field."""

    Dp: np.ndarray
    Dt: np.ndarray
    Fp: np.ndarray
    S0: np.ndarray
    Dp_sd: np.ndarray
    Dt_sd: np.ndarray
    Fp_sd: np.ndarray
    S0_sd: np.ndarray
    Dp_lower: np.ndarray
    Dt_lower: np.ndarray
    Fp_lower: np.ndarray
    S0_lower: np.ndarray
    Dp_upper: np.ndarray
    Dt_upper: np.ndarray
    Fp_upper: np.ndarray
    S0_upper: np.ndarray


#: How ``fit_bayes`` treats S0.
_S0_MODES = ("ratio", "marginal")


def fit_bayes(signals, b_values, *, sigma, prior=None, grid=(40, 40, 40), s0="marginal", interval=None, chunk=256,
              progress=False, noise="rician", invalid="raise"):
    """Posterior-mean IVIM estimate under a uniform or log-uniform prior and a Rician likelihood.

    Two modes, by how S0 is treated.

    ``s0="marginal"`` (default): the exact posterior with S0 unknown. The
    data are the raw signals :math:`y_b` of every b-value, b = 0 included,
    in signal units; each is Rician around :math:`\\mu_b = S_0\\, m_b(\\theta)`,
    :math:`m_b(\\theta) = F_p e^{-bD_p} + (1-F_p)e^{-bD_t}`, with one noise
    SD ``sigma`` in signal units (the same in every voxel, as on a real
    scan: ``estimate_sigma(..., absolute=True)``; for simulated signals with
    S0 = 1, ``sigma`` = 1/SNR), and S0 has a uniform prior on S0 > 0:

    .. math:: p(\\theta|y) \\propto \\int_0^\\infty \\prod_b \\frac{y_b}{\\sigma^2}
        \\exp\\!\\left(-\\frac{y_b^2 + S_0^2 m_b^2}{2\\sigma^2}\\right)
        I_0\\!\\left(\\frac{y_b S_0 m_b}{\\sigma^2}\\right) dS_0

    The integral is a sum over a per-voxel grid of S0 nodes (the trapezoidal
    rule) spaced 1.2 times the narrowest conditional posterior SD of S0
    given (Dp, Dt, Fp), sigma / max |m|: for these smooth, bell-shaped
    integrands it errs by about 2e-6 (relative) wherever the nodes fall. The
    grid first spans the S0 values that maximise the likelihood's Gaussian
    part for every theta within e^-20 of the best, plus 5 conditional SDs,
    and is widened until the S0 posterior at both its ends is below 1e-7 of
    its peak (or it reaches S0 = 0, where the prior ends); only a separate
    mode holding less than about 1e-9 of the posterior can be left out.
    Posterior means and SDs agree with a brute-force sum over a fine
    (Dp, Dt, Fp, S0) grid to about 1e-5 of the posterior SD.

    What its mean is optimal for, and only then: if the voxels' (Dp, Dt, Fp)
    are drawn uniformly from the prior box, their S0 uniformly over a range
    much wider than sigma, the signals follow the IVIM model exactly and the
    noise is Rician with SD ``sigma`` in every sample, then the posterior
    mean has the lowest expected squared error, averaged over that prior,
    of any estimator that is not told S0 (up to the grid's discretisation).
    On tissue drawn from another distribution, with another noise level or
    a model that does not hold, another method can do better (see notebook
    06's low-perfusion test); it is a yardstick under stated assumptions,
    not a bound for real data.

    ``s0="ratio"``: an approximation, kept for comparison with earlier
    results. S0 is taken to be the measured S(b=0). Each voxel is divided by
    its own noisy S(b=0), the b = 0 sample is dropped, and the normalised
    signal :math:`x_b = S(b)/S(b{=}0)` is treated as Rician around
    :math:`m_b(\\theta)` with noise SD ``sigma`` relative to S(b=0) (1/SNR):

    .. math:: p(x_b|\\theta) = \\frac{x_b}{\\sigma^2}
        \\exp\\!\\left(-\\frac{x_b^2 + m_b^2}{2\\sigma^2}\\right) I_0\\!\\left(\\frac{x_b m_b}{\\sigma^2}\\right)

    The noise of S(b=0) itself is ignored, so this is not the exact posterior
    and its mean is not the minimum-error estimator under any of the
    assumptions above (at SNR 20 its NRMSE of Dp, Dt and Fp is 1.6-4 % above the
    exact posterior's, ``benchmarks/results/posterior.json``); it is about 20
    times faster.

    In both modes the posterior lives on a regular grid of (Dp, Dt, Fp) cell
    centres filling the prior box, and the log-likelihood of every voxel (and
    S0 node) at every grid point is one matrix product (``GridLikelihood``):
    the Gaussian part exactly, :math:`\\log I_0^e(z) = \\log(I_0(z) e^{-z})`
    interpolated to a log-likelihood error below 1e-6. Chunks of voxels run
    side by side, one per torch thread, with torch itself single-threaded
    during the call (its thread setting is restored afterwards).

    Parameters
    ----------
    signals : array_like
        ``(..., n_b)``, b = 0 first.
    b_values : array_like
        b-values in s/mm^2.
    sigma : float
        Noise standard deviation, > 0: in signal units with ``s0="marginal"``
        (the default), relative to S(b=0) (1 / SNR) with ``s0="ratio"``.
    prior : Prior or dict, optional
        The prior on (Dp, Dt, Fp): a ``Prior`` (e.g. ``net.prior`` of a
        supervised network, or ``IN_VIVO_PRIOR``; its log-uniform parameters
        get a grid of equal steps in log D, so each cell holds the same prior
        mass), or a dict ``{"Dp": (lo, hi), "Dt": ..., "Fp": ...}`` for a
        uniform box (Dp, Dt in mm^2/s, >= 0; Fp within [0, 1]). Default
        ``SEED_PRIOR``, uniform on ``PARAMETER_BOX``. S0's prior is uniform
        on S0 > 0 (``"marginal"``).
    grid : tuple of 3 int
        Grid points along Dp, Dt, Fp (each >= 2).
    s0 : {"marginal", "ratio"}
        How S0 enters (see above). Default ``"marginal"``, the exact
        posterior; ``"ratio"`` is the approximation.
    interval : float, optional
        With ``s0="marginal"`` only: a level in (0, 1), e.g. 0.9, to return
        a ``Posterior`` (mean, SD and the central interval at that level of
        each parameter's marginal posterior) instead of the mean. Dp, Dt
        and Fp: means and SDs over the grid's cell centres; interval ends
        are quantiles of the CDF that spreads each cell's mass uniformly
        over the cell (so they lie inside the prior box). S0: trapezoidal
        sums over its nodes and the CDF of the sinc interpolation of its
        density (interval ends within about 0.02 posterior SD of those of a
        finer S0 grid). ``"ratio"`` refuses it: its posterior ignores the
        noise of S(b=0), so its intervals would be too narrow.
    chunk : int
        Voxels per batch (memory about ``chunk * 32 kB`` per torch thread,
        whatever the grid); ``"marginal"`` uses at most 16 (about 20 S0
        nodes each: ``16 * 20 * 13 kB``). Results depend on it only through
        rounding: other matrix shapes round differently (at most about 1e-5
        of each parameter's largest estimate on the float32 path).
    progress : bool
        Show a progress bar over voxels.
    noise : {"rician", "gaussian"}
        The likelihood of every sample. ``"rician"`` (default): magnitude
        images, as above; negative samples are refused. ``"gaussian"``:
        real-valued or phase-corrected images, each sample normal around the
        model, :math:`\\log p(y_b) = -(y_b - S_0 m_b)^2/(2\\sigma^2) + c` (the
        Rician formula with :math:`\\log I_0(z)` replaced by :math:`z`);
        negative samples are legal, even in a single voxel.
    invalid : {"raise", "nan"}
        ``"raise"`` (default): refuse signals with NaN/inf, negative values
        (with ``noise="rician"``) or S(b=0) <= 0 in any voxel. ``"nan"``:
        such voxels get NaN estimates and the others are fitted (see
        ``checks.invalid_option``).

    Returns
    -------
    IVIMParams or Posterior
        Without ``interval``, the posterior means; S0 is the measured S(b=0)
        (``"ratio"``) or its posterior mean in signal units (``"marginal"``).
        With ``interval``, a ``Posterior`` of four ``IVIMParams``.
    """
    if s0 not in _S0_MODES:
        raise ValueError(f"s0 must be 'ratio' (S0 = the measured S(b=0), the approximation) or 'marginal' "
                         f"(S0 unknown, integrated out), got {s0!r}.")
    if interval is not None:
        if s0 != "marginal":
            raise ValueError("interval needs s0='marginal': the 'ratio' posterior ignores the noise of S(b=0), "
                             "so its intervals would be too narrow.")
        level = check_positive(interval, name="interval", what=" below 1 (the credible level, e.g. 0.9)")
        if level >= 1:
            raise ValueError(f"interval must be a level between 0 and 1 (e.g. 0.9), got {interval!r}.")
    est = _fit_bayes(signals, b_values, sigma=sigma, prior=prior, grid=grid, s0=s0, interval=interval, chunk=chunk,
                     progress=progress, noise=check_noise(noise), invalid=invalid)
    if interval is None:
        return est
    from .posterior import Posterior

    return Posterior(*(IVIMParams(*est[i : i + 4]) for i in range(0, 16, 4)))


#: Default voxels per batch of ``fit_bayes(..., s0="marginal")`` (each voxel is about 20 S0 rows).
_CHUNK_MARGINAL = 16


@invalid_option()
def _fit_bayes(signals, b_values, *, sigma, prior, grid, s0, interval, chunk, progress, noise):
    """``fit_bayes`` after its option checks; IVIMParams, or _PosteriorFields with ``interval``."""
    units = " (noise SD relative to S(b=0))" if s0 == "ratio" else " (noise SD in signal units)"
    sigma = check_positive(sigma, name="sigma", what=units)
    b, s, shape = _prepare(signals, b_values, noise)
    rician = noise == "rician"
    grid = check_grid(grid)
    chunk = check_whole(chunk, name="chunk")
    prior = as_prior(prior, default=SEED_PRIOR)
    box = prior.box
    edges = [_grid_edges(*box[k], n, log=k in prior.log) for k, n in zip(("Dp", "Dt", "Fp"), grid)]
    axes = [_centres(e, log=k in prior.log) for e, k in zip(edges, ("Dp", "Dt", "Fp"))]
    theta = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)  # (G, 3)
    if s0 == "marginal":
        # the posterior is unchanged when signals and sigma are scaled together: work at a median S(b=0) of 1,
        # so signals of any scale (1e-300 or 1e297) stay inside float range, and refuse an SNR it cannot resolve
        scale = float(np.median(s[:, 0]))
        _check_snr(scale / sigma, sigma)
        out = _marginal(b, s / scale, sigma / scale, edges, grid, axes, theta, min(chunk, _CHUNK_MARGINAL), progress,
                        interval, rician)
        out = [v * scale if k % 4 == 3 else v for k, v in enumerate(out)]  # every 4th field is S0's, signal units
        fields = _PosteriorFields if interval is not None else IVIMParams
        return fields(*(v.reshape(shape) for v in out))
    _check_snr(1.0 / sigma, sigma, relative=True)
    m = ivim(b[1:], theta[:, :1], theta[:, 1:2], theta[:, 2:3]).T  # (n_b - 1, G); b = 0 is 1 for all
    est = np.ones((len(s), 4))
    parts = list(_chunks(len(s), chunk))
    bar = tqdm(total=len(s), desc="Bayes", unit="voxel", disable=not progress)
    # chunks run side by side on single-threaded torch: no thread barrier per operation (each costs
    # milliseconds when other processes share the cores)
    with one_torch_thread() as workers:
        pool = worker_pool(workers)
        posterior = GridLikelihood(m, theta, sigma, _x_range(s), rician=rician, pool=pool)
        for part, mean in zip(parts, pool.map(lambda p: posterior.mean(_normalised(s[p])[:, 1:]), parts)):
            est[part, :3] = mean
            bar.update(part.stop - part.start)
    bar.close()
    return _finish(est, s, shape)


#: SNRs (median S(b=0) over sigma) ``fit_bayes`` accepts: below, the data say nothing; above, the S0
#: nodes (spaced by the posterior SD of S0) outnumber what memory holds. Measured: 1e5 fits 20 voxels in 1 s,
#: 1e6 50 voxels in 10 s with 0.9 GB.
SNR_LIMITS = (0.01, 1e6)


def _check_snr(snr, sigma, *, relative=False):
    lo, hi = SNR_LIMITS
    if not lo <= snr <= hi:
        what = "1/sigma" if relative else "the signals' median S(b=0) over sigma"
        raise ValueError(f"sigma={sigma:g} gives an SNR ({what}) of {snr:.3g}; fit_bayes works for SNRs from "
                         f"{lo:g} to {hi:g}. Check sigma: it is the noise SD "
                         + ("relative to S(b=0) (1/SNR) with s0='ratio'." if relative else
                            "in the signals' units (e.g. estimate_sigma(signals, b_values, absolute=True))."))


def _marginal(b, s, sigma, edges, grid, axes, theta, chunk, progress, interval, rician=True):
    """S0-marginal posterior of signals s (n, n_b) in signal units: 4 arrays (means), or 16 with ``interval``
    (means, SDs, lower and upper ends, each in the order Dp, Dt, Fp, S0)."""
    from . import posterior as pm

    m_full = ivim(b, theta[:, :1], theta[:, 1:2], theta[:, 2:3]).T  # (n_b, G), row b = 0 all ones
    h = pm.s0_step(m_full, sigma)
    n = len(s)
    lo, hi = np.empty(n), np.empty(n)
    with one_torch_thread() as workers:
        pool = worker_pool(workers)
        mhat, inv_norm = pm.unit_models(m_full)
        parts = list(_chunks(n, _CHUNK_MARGINAL))
        for part, (a, z) in zip(parts, pool.map(lambda p: pm.s0_windows(s[p].astype(float), mhat, inv_norm, sigma),
                                                parts)):
            lo[part], hi[part] = a, z
    marg = [np.zeros((n, g)) for g in grid]
    rounds = []  # (voxels, first node, node counts, S0 marginals) of each window round; the last one counts
    todo = np.arange(n)
    block = max(1, BLOCK // (grid[1] * grid[2])) * grid[1] * grid[2]  # whole Dp slices per block
    bar = tqdm(total=n, desc="Bayes (S0 marginal)", unit="voxel", disable=not progress)
    for _ in range(pm.MAX_WIDEN + 1):
        first, count = pm.s0_nodes(lo[todo], hi[todo], h)
        y = s[todo].astype(float)
        top = first + h * (count - 1)
        x_range = np.stack([np.where(y[:, 1:] > 0, first[:, None] * y[:, 1:], np.inf).min(axis=0),
                            (top[:, None] * y[:, 1:]).max(axis=0)])
        x_range[0] = np.where(np.isfinite(x_range[0]), x_range[0], x_range[1])
        s0w = np.zeros((len(todo), count.max()))
        with one_torch_thread() as workers:
            pool = worker_pool(workers)
            post = GridLikelihood(m_full[1:], theta, sigma, x_range, block=block, scale2=top.max() ** 2,
                                  offset=True, rician=rician, pool=pool)
            runner = pm.MarginalPass(post, grid, sigma, h)
            parts = list(_chunks(len(todo), chunk))
            for part, (dp, dt, fp, w) in zip(parts, pool.map(lambda p: runner.run(y[p], first[p], count[p]), parts)):
                for acc, v in zip(marg, (dp, dt, fp)):
                    acc[todo[part]] = v
                s0w[part, : w.shape[1]] = w
        rounds.append((todo, first, count, s0w))
        low, high = pm.edges_needing_room(s0w, first, count, h)
        bar.update(int((~(low | high)).sum()))
        widths = hi[todo] - lo[todo]
        lo[todo] -= np.where(low, widths / 2, 0.0)
        hi[todo] += np.where(high, widths / 2, 0.0)
        todo = todo[low | high]
        if len(todo) == 0:
            break
    bar.close()
    if len(todo):
        raise RuntimeError(f"the S0 posterior of {len(todo)} voxel(s) did not fit in a window "
                           f"{1.5 ** pm.MAX_WIDEN:.0f} times the first; please report this with the signals.")
    kmax = max(r[3].shape[1] for r in rounds)
    s0_p, s0_first = np.zeros((n, kmax)), np.empty(n)
    for voxels, first, _, w in rounds:  # later rounds overwrite the voxels they widened
        s0_p[voxels] = 0.0
        s0_p[voxels, : w.shape[1]] = w
        s0_first[voxels] = first
    stats = [pm.summaries(p, centres, e, interval) for p, centres, e in zip(marg, axes, edges)]
    stats.append(pm.s0_summaries(s0_p, s0_first, h, interval))
    if interval is None:
        return [st[0] for st in stats]
    return [st[j] for j in range(4) for st in stats]


def _x_range(s):
    """Smallest positive and largest normalised signal per b > 0 over all voxels, (2, n_b - 1)."""
    lo = np.full(s.shape[1] - 1, np.inf)
    hi = np.zeros(s.shape[1] - 1)
    for part in _chunks(len(s), CHUNK):
        x = _normalised(s[part])[:, 1:]
        hi = np.maximum(hi, x.max(axis=0))
        lo = np.minimum(lo, np.where(x > 0, x, np.inf).min(axis=0))
    return np.stack([np.where(np.isfinite(lo), lo, hi), hi])
