"""Is a fit to be trusted? Residuals, and the checks that flag a collapsed or poor map.

A network that collapsed returns a map that *looks* like a map: smooth, in
range, plausible. Two numbers give it away, both measured against least
squares on the same voxels: the spread of its Fp map (a collapsed network
gives nearly one value everywhere) and how well its parameters explain the
measured signals (the residual).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_b_values
from ..core.signal_model import IVIMParams, ivim

__all__ = ["residual", "spread", "signal_rise", "decay_warnings", "quality_measures", "quality_warnings",
           "FLAT_FRACTION", "FLAT_ABSOLUTE", "FLAT_MIN_VOXELS", "RESIDUAL_RATIO", "DT_RATIO", "RISE_LIMIT"]

#: An Fp map is *flat* when its 5th-95th percentile spread is below this fraction of least squares'
#: spread on the same voxels ...
FLAT_FRACTION = 0.2
#: ... or below this absolute spread (Fp units), whatever least squares says; judged only on at least
#: FLAT_MIN_VOXELS voxels (a handful of voxels may well share one Fp).
FLAT_ABSOLUTE = 0.02
FLAT_MIN_VOXELS = 50
#: A method's residual is *clearly worse* than least squares' when its median residual is above this
#: multiple of what an estimator that explains the signal down to the noise would have. Least
#: squares fits 4 parameters to n_b values and so also fits part of the noise: its residual is
#: about sqrt((n_b - 4) / n_b) of the noise (0.71 for 8 b-values), the true parameters' is the noise
#: itself. So a good estimator's median residual is about sqrt(n_b / (n_b - 4)) times least
#: squares' (1.41 for 8 b-values, measured 1.39-1.47 for the supervised network on the phantom);
#: the warning fires above RESIDUAL_RATIO times that.
RESIDUAL_RATIO = 1.25
#: A method's median Dt over the mask *disagrees* with least squares' when their ratio is above this
#: factor or below its inverse. The median over thousands of voxels is robust to least squares'
#: noisy voxels, so a large gap is a bias of the method, not noise.
DT_RATIO = 1.3


#: The median normalised signal of a scan falls with b (measured on the shipped scans: it never
#: rose, and fell by at least 0.005 per step). A rise of more than this between neighbouring
#: b-values means the b-values do not belong to the volumes (shuffled, or another scan's bvals file):
#: with the bvals of the shipped volunteers shuffled, the largest rise was 0.20-0.42.
RISE_LIMIT = 0.05


def signal_rise(signals) -> float:
    """Largest rise of the voxels' median S(b)/S(b=0) from one b-value to the next (b increasing)."""
    s = np.asarray(signals, dtype=float).reshape(-1, np.shape(signals)[-1])
    return float(np.diff(np.median(s / s[:, :1], axis=0)).max())


def decay_warnings(signals, b_values) -> list:
    """A warning when the median signal rises with b: the b-values do not match the volumes."""
    b = check_b_values(b_values)
    rise = signal_rise(signals)
    if rise <= RISE_LIMIT:
        return []
    return [f"the median signal rises by {rise:.2f} (of S(b=0)) between two neighbouring b-values of "
            f"{b.tolist()} s/mm^2; diffusion-weighted signal falls with b: check that the bvals file belongs to "
            "this image and lists the volumes in their order. Every map of this run is suspect."]


def residual(signals, b_values, params: IVIMParams) -> np.ndarray:
    """Root-mean-square fit residual of each voxel, relative to its measured S(b=0).

    .. math:: r = \\frac{1}{S(0)} \\sqrt{\\frac{1}{n_b} \\sum_b \\left(S(b) -
        S_0 [F_p e^{-b D_p} + (1 - F_p) e^{-b D_t}]\\right)^2}

    with S(0) the measured b = 0 signal and S0 the estimate's (fitted or
    measured) S0. A fit that explains the signal down to the noise has
    ``r`` of about the noise level relative to S(b=0) (1 / SNR).

    Parameters
    ----------
    signals : array_like
        ``(..., n_b)`` measured signals, b = 0 first, S(b=0) > 0.
    b_values : array_like
        b-values in s/mm^2.
    params : IVIMParams
        Estimates shaped ``signals.shape[:-1]`` (Dp, Dt in mm^2/s, S0 in
        signal units).

    Returns
    -------
    numpy.ndarray
        Shaped ``signals.shape[:-1]``; dimensionless.
    """
    b = check_b_values(b_values)
    s = np.asarray(signals, dtype=float)
    model = ivim(b, *(np.asarray(p, dtype=float)[..., None] for p in params))
    return np.sqrt(np.mean((s - model) ** 2, axis=-1)) / s[..., 0]


def spread(values) -> float:
    """5th-95th percentile range of the finite values (0 when there are none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    low, high = np.percentile(v, [5, 95])
    return float(high - low)


def quality_measures(params: IVIMParams, res, lsq: IVIMParams, lsq_res, *, n_b: int) -> dict:
    """The numbers ``quality_warnings`` judges: a method's fit against least squares on the same voxels.

    Parameters
    ----------
    params, lsq : IVIMParams
        Estimates of the method and of ``fit_lsq`` on the same voxels.
    res, lsq_res : array_like
        Their residuals (see ``residual``).
    n_b : int
        Number of b-values (sets the residual least squares is expected to
        reach below the noise).

    Returns
    -------
    dict
        ``finite`` (bool), ``voxels``, ``fp_spread`` and ``fp_spread_lsq`` (5-95th
        percentile range of Fp), ``residual_median``,
        ``residual_median_lsq``, ``residual_ratio_expected``
        (sqrt(n_b / (n_b - 4)): a good estimator's residual over least
        squares'), ``dt_median_ratio`` (median Dt / least squares' median Dt).
    """
    return {
        "finite": bool(np.all(np.isfinite(np.stack([np.asarray(p, float) for p in params])))),
        "voxels": int(np.size(params.Fp)),
        "fp_spread": spread(params.Fp), "fp_spread_lsq": spread(lsq.Fp),
        "residual_median": float(np.nanmedian(res)), "residual_median_lsq": float(np.nanmedian(lsq_res)),
        "residual_ratio_expected": float(np.sqrt(n_b / (n_b - 4))) if n_b > 4 else 1.0,
        "dt_median_ratio": float(np.nanmedian(params.Dt) / max(np.nanmedian(lsq.Dt), 1e-12)),
    }


def quality_warnings(method: str, measures: dict, *, network: bool = False) -> list:
    """Warnings about one method's fit, from its ``quality_measures``.

    Parameters
    ----------
    method : str
        The method's name, used in the messages.
    measures : dict
        What ``quality_measures`` returned for it.
    network : bool
        The method is a trained network (the advice then names seeds).

    Returns
    -------
    list of str
        Empty when nothing is wrong; otherwise one sentence per problem,
        naming the method, the numbers and what to do.
    """
    q, out = measures, []
    if not q["finite"]:
        out.append(f"{method}: the maps contain NaN or inf; do not use them (check the input and the model).")
    flat = q["fp_spread"] < max(FLAT_ABSOLUTE, FLAT_FRACTION * q["fp_spread_lsq"])
    if flat and q["voxels"] >= FLAT_MIN_VOXELS:
        out.append(f"{method}: the Fp map is flat (5-95th percentile spread {q['fp_spread']:.3f}, least squares "
                   f"{q['fp_spread_lsq']:.3f} on the same voxels); the fit has likely collapsed: do not use it, "
                   f"try {'another seed or ' if network else ''}another method.")
    expected = q["residual_ratio_expected"]
    if q["residual_median"] > RESIDUAL_RATIO * expected * q["residual_median_lsq"]:
        out.append(f"{method}: the median residual {q['residual_median']:.4f} is "
                   f"{q['residual_median'] / q['residual_median_lsq']:.1f}x that of least squares "
                   f"({q['residual_median_lsq']:.4f}) on the same voxels, where a fit down to the noise would "
                   f"be about {expected:.2f}x; its parameters explain the signal poorly.")
    ratio = q["dt_median_ratio"]
    if not 1 / DT_RATIO <= ratio <= DT_RATIO:
        out.append(f"{method}: the median Dt is {ratio:.2f}x that of least squares on the same voxels; one of "
                   "the two is biased: compare the maps before using either.")
    return out
