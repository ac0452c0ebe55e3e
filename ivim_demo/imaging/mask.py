"""Which voxels to fit: background masks and the exclusion of invalid voxels."""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["otsu_threshold", "has_background", "make_mask", "BACKGROUND_CONTRAST"]


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


#: Otsu's cut is taken as a background/tissue boundary only when the two classes' median S(b=0)
#: differ by more than this factor (air holds noise only: tens of times darker than tissue, while
#: tissues differ by a few times at most). Otherwise the image is all tissue and every valid voxel is kept.
BACKGROUND_CONTRAST = 5.0


def has_background(s0) -> tuple[bool, float]:
    """Whether a b = 0 image contains background (air), and Otsu's threshold on it.

    Otsu's method always splits an image in two, also when the field of view
    is filled with tissue: it then cuts one tissue away. The split is taken as
    background vs tissue only when the median S(b=0) of the two classes differ
    by more than ``BACKGROUND_CONTRAST``.

    Parameters
    ----------
    s0 : array_like
        The b = 0 image (signal units), any shape; non-positive and non-finite
        values are ignored.

    Returns
    -------
    background : bool
    threshold : float
        Otsu's threshold in signal units (``nan`` when there are too few
        distinct values to split).
    """
    v = np.ravel(np.asarray(s0, float))
    positive = v[np.isfinite(v) & (v > 0)]
    if positive.size == 0:
        raise ValueError("the b=0 image has no positive voxel: cannot make a mask.")
    if positive.min() == positive.max():
        return False, float("nan")
    # on log S(b=0): background noise and tissue differ by a factor, not an offset
    threshold = float(np.exp(otsu_threshold(np.log(positive))))
    low, high = positive[positive <= threshold], positive[positive > threshold]
    if low.size == 0 or high.size == 0:
        return False, threshold
    return bool(np.median(high) > BACKGROUND_CONTRAST * np.median(low)), threshold


def make_mask(dwi, method="otsu", *, mask=None, warn=True, return_excluded=False):
    """Voxels to fit: foreground of the b=0 image, minus voxels that cannot be fitted.

    Parameters
    ----------
    dwi : array_like
        ``(..., n_b)`` with b = 0 first.
    method : "otsu" or float
        ``"otsu"``: Otsu's threshold on log S(b=0) when the image has background
        (see ``has_background``), otherwise every voxel; a number: keep S(b=0)
        above it (signal units). Ignored when ``mask`` is given.
    mask : array_like, optional
        A user mask shaped ``dwi.shape[:-1]`` (e.g. loaded from NIfTI): non-zero,
        finite values are inside (a NaN background counts as outside).
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
    if d.dtype.kind not in "fiu":
        raise ValueError(f"dwi must hold real magnitude signals, got dtype {d.dtype}"
                         f"{' (use np.abs for complex data)' if d.dtype.kind == 'c' else ''}.")
    s0 = d[..., 0]
    if mask is not None:
        keep = np.asarray(mask)
        if keep.shape != s0.shape:
            raise ValueError(f"the mask has shape {keep.shape} but the image has {s0.shape} voxels per volume.")
        if keep.dtype.kind not in "biuf":
            raise ValueError(f"the mask must be numeric or boolean, got dtype {keep.dtype}.")
        keep = np.isfinite(keep) & (keep != 0) if keep.dtype.kind == "f" else keep.astype(bool)
    elif isinstance(method, str):
        if method != "otsu":
            raise ValueError(f"method must be 'otsu' or a threshold in signal units, got {method!r}.")
        background, threshold = has_background(s0)
        keep = s0 > threshold if background else np.ones(s0.shape, bool)
    elif isinstance(method, (int, float, np.number)) and not isinstance(method, bool):
        keep = s0 > float(method)
    else:
        raise ValueError(f"method must be 'otsu' or a threshold in signal units, got {method!r}.")
    valid = np.isfinite(d).all(axis=-1) & (d >= 0).all(axis=-1) & (s0 > 0)
    excluded = int((keep & ~valid).sum())
    keep = keep & valid
    if excluded and warn:
        warnings.warn(f"{excluded} voxel(s) inside the mask have NaN/inf, negative values or S(b=0) <= 0 "
                      "and are excluded (their maps are 0).", stacklevel=2)
    if not keep.any():
        raise ValueError("the mask is empty: no voxel to fit. Check the threshold or the mask file.")
    return (keep, excluded) if return_excluded else keep
