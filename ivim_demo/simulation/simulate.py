"""Simulated IVIM data: Rician noise, training sets and the seed's phantom."""
from __future__ import annotations

import numpy as np

from ..core.checks import check_b_values, check_box
from ..core.prior import Prior, as_generator
from ..core.signal_model import PARAMETER_BOX, SEED_B_VALUES, IVIMParams, ivim

__all__ = [
    "add_rician_noise",
    "as_generator",
    "sample_params",
    "training_data",
    "phantom",
    "PHANTOM_REGIONS",
    "phantom_regions",
    "scan_like_data",
]

#: The seed's three phantom regions: S0 (signal units), Dp, Dt (mm^2/s), Fp.
PHANTOM_REGIONS = (
    IVIMParams(Dp=0.02, Dt=0.0015, Fp=0.1, S0=1500.0),  # region 0: centre square
    IVIMParams(Dp=0.04, Dt=0.0010, Fp=0.2, S0=1400.0),  # region 1: ring around it
    IVIMParams(Dp=0.06, Dt=0.0005, Fp=0.3, S0=1600.0),  # region 2: the rest
)


def add_rician_noise(signals, sigma, rng):
    """Add Rician noise, as a magnitude image of a complex signal has.

    Independent Gaussian noise of standard deviation ``sigma`` is added to the
    real channel (which carries the signal) and to an empty imaginary channel,
    and the magnitude is returned:

    .. math:: \\tilde S = \\sqrt{(S + n_r)^2 + n_i^2}, \\quad n_r, n_i \\sim N(0, \\sigma^2)

    Every sample and every b-value gets its own noise draw.

    Parameters
    ----------
    signals : array_like
        Noise-free signals, any shape.
    sigma : float or array_like
        Noise standard deviation in signal units, >= 0; broadcasts against
        ``signals`` (e.g. shape ``(..., 1)`` for one sigma per voxel).
    rng : numpy.random.Generator or int
        Random generator (or a seed for a new one).

    Returns
    -------
    numpy.ndarray
        Noisy magnitude signals, same shape as ``signals``.
    """
    s = np.asarray(signals, dtype=float)
    sig = np.asarray(sigma, dtype=float)
    if not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}.")
    rng = as_generator(rng)
    real = s + sig * rng.standard_normal(s.shape)
    imag = sig * rng.standard_normal(s.shape)
    return np.hypot(real, imag)


def sample_params(n, *, box=None, log=(), seed=0) -> IVIMParams:
    """Draw ``n`` parameter sets uniformly from a box (S0 = 1).

    Parameters
    ----------
    n : int
        Number of samples, >= 1.
    box : dict, optional
        ``{"Dp": (lo, hi), "Dt": (lo, hi), "Fp": (lo, hi)}`` in mm^2/s and
        fraction (Dp, Dt >= 0, Fp within [0, 1], low < high; see
        ``checks.check_box``); default ``PARAMETER_BOX``.
    log : tuple of str
        Parameters among ``"Dp"``, ``"Dt"`` drawn log-uniformly (uniform in
        log D: as many values per factor of 2 at the low end as at the high
        end), the others uniformly. Default: all uniform, as the seed.
    seed : int or numpy.random.Generator

    Returns
    -------
    IVIMParams
        Arrays of shape ``(n,)``.
    """
    n = _check_n(n)
    box = check_box(PARAMETER_BOX if box is None else box, name="box")
    return Prior(box, log=log).sample(n, seed=seed)


def training_data(n, b_values=SEED_B_VALUES, sigma=0.01, seed=0, *, box=None):
    """Simulate the seed's training set: random IVIM curves with Rician noise.

    Parameters are uniform in ``box`` (default ``PARAMETER_BOX``: Dp
    0.01-0.1 mm^2/s, Dt 0.0005-0.002 mm^2/s, Fp 0.1-0.4), S0 = 1, and Rician
    noise of standard deviation ``sigma`` (relative to S0, so SNR = 1/sigma)
    is added to every b-value including b = 0, as in the seed.

    Parameters
    ----------
    n : int
        Number of voxels (the seed uses 100 000).
    b_values : array_like
        b-values in s/mm^2, starting at 0.
    sigma : float
        Noise standard deviation relative to S0 (seed: 0.01, i.e. SNR 100).
    seed : int or numpy.random.Generator
    box : dict, optional
        Parameter ranges, see ``sample_params``.

    Returns
    -------
    signals : numpy.ndarray
        Shape ``(n, n_b)``.
    params : IVIMParams
        The true parameters, arrays of shape ``(n,)``.
    """
    b = check_b_values(b_values)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}.")
    rng = as_generator(seed)
    p = sample_params(n, box=box, seed=rng)
    clean = ivim(b, p.Dp[:, None], p.Dt[:, None], p.Fp[:, None])
    return add_rician_noise(clean, sigma, rng), p


def phantom_regions(shape=(100, 100)) -> np.ndarray:
    """Region labels of the seed's phantom (0 centre, 1 ring, 2 outside).

    Uses exactly the seed's boundaries: ``40 < i < 60 and 40 < j < 60`` is
    region 0, ``20 < i < 80 and 20 < j < 80`` region 1, everything else 2.
    """
    i, j = np.indices(shape)
    labels = np.full(shape, 2, dtype=int)
    labels[(20 < i) & (i < 80) & (20 < j) & (j < 80)] = 1
    labels[(40 < i) & (i < 60) & (40 < j) & (j < 60)] = 0
    return labels


def phantom(sigma=15.0, seed=0, *, b_values=SEED_B_VALUES):
    """The seed's simulated DWI: three nested squares, 100 x 100 voxels.

    Region values are in ``PHANTOM_REGIONS`` (S0 1500/1400/1600, Dp
    0.02/0.04/0.06 mm^2/s, Dt 0.0015/0.0010/0.0005 mm^2/s, Fp 0.1/0.2/0.3);
    Rician noise of standard deviation ``sigma`` (signal units; seed 15, an
    SNR of about 100 at b = 0) is added to every b-value.

    Parameters
    ----------
    sigma : float
        Noise standard deviation in signal units.
    seed : int or numpy.random.Generator
    b_values : array_like
        b-values in s/mm^2, starting at 0.

    Returns
    -------
    dwi : numpy.ndarray
        Shape ``(100, 100, n_b)``.
    truth : IVIMParams
        Ground-truth maps, each ``(100, 100)``.
    """
    b = check_b_values(b_values)
    labels = phantom_regions()
    table = np.array(PHANTOM_REGIONS)  # (3 regions, 4 params)
    maps = table[labels]  # (100, 100, 4)
    truth = IVIMParams(*np.moveaxis(maps, -1, 0))
    clean = ivim(b, truth.Dp[..., None], truth.Dt[..., None], truth.Fp[..., None], truth.S0[..., None])
    return add_rician_noise(clean, sigma, as_generator(seed)), truth


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}.")
    return int(n)


def scan_like_data(n, b_values, s0, sigma, *, box=None, log=(), seed=0):
    """Simulate training voxels that look like one scan: its b-values, S(b=0) levels and noise.

    Parameters are uniform in ``box``; each voxel's S0 is drawn (with
    replacement) from ``s0``, the measured S(b=0) of the scan's voxels, and
    Rician noise of standard deviation ``sigma`` (signal units, the scan's
    noise) is added at every b-value. So the simulated voxels have the scan's
    spread of SNRs, from its darkest to its brightest tissue.

    Parameters
    ----------
    n : int
        Number of voxels.
    b_values : array_like
        The scan's b-values in s/mm^2, starting at 0.
    s0 : array_like
        S(b=0) values to draw from (signal units), > 0.
    sigma : float
        Noise standard deviation in signal units, >= 0.
    box : dict, optional
        Parameter ranges, see ``sample_params``.
    log : tuple of str
        Parameters drawn log-uniformly, see ``sample_params``.
    seed : int or numpy.random.Generator

    Returns
    -------
    signals : numpy.ndarray
        Shape ``(n, n_b)``.
    params : IVIMParams
        True parameters, arrays of shape ``(n,)`` (S0 in signal units).
    """
    b = check_b_values(b_values)
    levels = np.ravel(np.asarray(s0, dtype=float))
    if levels.size == 0 or not np.all(np.isfinite(levels)) or levels.min() <= 0:
        raise ValueError("s0 must be a non-empty set of finite S(b=0) values > 0 (the scan's masked voxels).")
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be finite and >= 0 (signal units), got {sigma!r}.")
    rng = as_generator(seed)
    p = sample_params(n, box=box, log=log, seed=rng)
    p = p._replace(S0=rng.choice(levels, size=len(p.Dp)))
    clean = ivim(b, *(v[:, None] for v in p))
    return add_rician_noise(clean, sigma, rng), p
