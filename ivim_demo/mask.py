"""Which voxels to fit: background masks and the exclusion of invalid voxels."""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["otsu_threshold", "make_mask"]


def otsu_threshold(values, *, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of a histogram."""
    v = np.ravel(np.asarray(values, float))
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() == v.max():
        raise ValueError("cannot compute an Otsu threshold: the image is constant or empty.")
    counts, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres) / np.maximum(w0, 1)
    m1 = (np.sum(counts * centres) - np.cumsum(counts * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1:][np.argmax(between)])


def make_mask(dwi, method="otsu", *, mask=None, warn=True, return_excluded=False):
    """Voxels to fit: foreground of the b=0 image, minus voxels that cannot be fitted.

    Parameters
    ----------
    dwi : array_like
        ``(..., n_b)`` with b = 0 first.
    method : "otsu" or float
        ``"otsu"``: Otsu's threshold on log S(b=0); a number: keep S(b=0) above it
        (signal units). Ignored when ``mask`` is given.
    mask : array_like of bool, optional
        A user mask shaped ``dwi.shape[:-1]`` (e.g. loaded from NIfTI).
    warn : bool
        Warn with the count of voxels excluded as invalid.
    return_excluded : bool
        Also return that count.

    Returns
    -------
    numpy.ndarray of bool
        Shaped ``dwi.shape[:-1]``. Voxels with NaN/inf at any b-value, a negative
        value, or S(b=0) <= 0 are never in it: they are excluded and counted in a
        warning, not turned silently into NaN maps.
    """
    d = np.asarray(dwi)
    if d.ndim < 2:
        raise ValueError(f"dwi must be shaped (..., n_b), got shape {d.shape}.")
    s0 = d[..., 0]
    if mask is not None:
        keep = np.asarray(mask)
        if keep.shape != s0.shape:
            raise ValueError(f"the mask has shape {keep.shape} but the image has {s0.shape} voxels per volume.")
        keep = keep.astype(bool)
    elif isinstance(method, str):
        if method != "otsu":
            raise ValueError(f"method must be 'otsu' or a threshold in signal units, got {method!r}.")
        positive = s0[np.isfinite(s0) & (s0 > 0)]
        if positive.size == 0:
            raise ValueError("the b=0 image has no positive voxel: cannot make a mask.")
        # on log S(b=0): background noise and tissue differ by a factor, not an offset
        keep = s0 > np.exp(otsu_threshold(np.log(positive)))
    else:
        keep = s0 > float(method)
    valid = np.isfinite(d).all(axis=-1) & (d >= 0).all(axis=-1) & (s0 > 0)
    excluded = int((keep & ~valid).sum())
    keep = keep & valid
    if excluded and warn:
        warnings.warn(f"{excluded} voxel(s) inside the mask have NaN/inf, negative values or S(b=0) <= 0 "
                      "and are excluded (their maps are 0).", stacklevel=2)
    if not keep.any():
        raise ValueError("the mask is empty: no voxel to fit. Check the threshold or the mask file.")
    return (keep, excluded) if return_excluded else keep
