"""Which voxels to fit: background masks and the exclusion of invalid voxels."""
from __future__ import annotations

import warnings

import numpy as np

from ..core.checks import check_noise, valid_voxels

__all__ = ["otsu_threshold", "has_background", "tissue_mask", "make_mask", "BACKGROUND_CONTRAST", "LOW_B",
           "DECAY_SHARE", "LEVEL_OVER_NOISE", "VALLEY_DOUBT"]


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


#: b-values (s/mm^2) up to which the signal is averaged to tell tissue from air: near S0 in tissue,
#: and averaging several columns narrows the noise (at SNR 5 one b = 0 image cannot split air from tissue).
LOW_B = 100.0
#: A class of voxels counts as tissue when its signal decays between the b-values above ``LOW_B`` by at
#: least this share of the brightest class's decay. Air holds noise only: it does not decay at all.
DECAY_SHARE = 0.5
#: A class that decays less than ``DECAY_SHARE`` of the brightest class is still tissue when its median
#: signal at b <= ``LOW_B`` is this many times the noise floor (the median of the voxels that do not decay):
#: fat beside kidney, white matter beside CSF (24 times), liver at SNR 10 beside kidney (7.2 times). Below
#: it, such a class is ghosting or ringing as often as tissue (2-3 times around the shipped volunteers, 5.1-5.3
#: times around the shipped phantoms): it is left out and the mask reported doubtful.
LEVEL_OVER_NOISE = 6.0
#: The mask is reported doubtful when the histogram at the cut is at least this fraction as dense as the
#: smaller of the two peaks it separates (no gap between tissue and air).
VALLEY_DOUBT = 0.75
_MIN_DECAY = 0.02  # a fall smaller than 2 % is none (a large class of air can be "significant" by a hair)
_SIGNIFICANT = 3.0  # standard errors: a fall smaller than this is noise (a small class of air can seem to fall)
_MIN_CLASS = 20  # voxels: smaller classes are not split further
_MAX_DEPTH = 8


def _decay(values_mid, values_high) -> tuple[float, float]:
    """How much a class's signal falls from the lower to the upper b-values above ``LOW_B`` (0: not at all),
    and the standard error of that fall (from the medians' errors, 1.2533 x robust SD / sqrt(n))."""
    m, h = float(np.median(values_mid)), float(np.median(values_high))
    if h <= 0:
        return np.inf, 0.0

    def rel_se(v, centre):
        mad = 1.4826 * float(np.median(np.abs(v - centre)))
        return 1.2533 * mad / np.sqrt(v.size) / max(abs(centre), 1e-300)

    return m / h - 1.0, (m / h) * float(np.hypot(rel_se(values_mid, m), rel_se(values_high, h)))


def _decays(decay, se) -> bool:
    """Whether a class's signal falls with b beyond its noise (air's does not fall at all)."""
    return decay > max(_SIGNIFICANT * se, _MIN_DECAY)


def _valley(x, cut) -> float:
    """Histogram density at ``cut`` over the smaller of the peaks on either side of it."""
    counts, edges = np.histogram(x, bins=64)
    k = int(np.clip(np.searchsorted(edges, cut) - 1, 0, len(counts) - 1))
    below, above = counts[:k], counts[k + 1:]
    peak = min(below.max() if below.size else 0, above.max() if above.size else 0)
    return float(counts[max(k - 1, 0):k + 2].mean() / max(peak, 1))


def tissue_mask(dwi, b_values, *, negative=False):
    """Tell tissue from air in a DWI by the signal's level and by its decay with b.

    Air holds noise only: its signal does not fall with b. Tissue's does. Otsu's
    method splits the voxels by ``log`` of their mean signal at b <= ``LOW_B``
    (s/mm^2), and splits the lower class again, down from the brightest voxels,
    until the upper part of a split does not fall from the lower to the upper
    half of the b-values above ``LOW_B`` (beyond its noise): those voxels are
    air, and their median signal is the noise floor. When no class is air,
    every voxel is tissue. Going down from the brightest class, a class is
    tissue when it falls by at least ``DECAY_SHARE`` of the brightest class's
    fall, or is ``LEVEL_OVER_NOISE`` times the noise floor (fat beside kidney);
    the first class that does neither (ghosting, or a dim slowly diffusing
    tissue) ends the tissue, and the mask is reported doubtful.

    Parameters
    ----------
    dwi : array_like
        ``(..., n_b)`` magnitude signals, valid voxels only need be finite and >= 0.
    b_values : array_like
        ``(n_b,)`` b-values in s/mm^2 (repeats allowed), at least one <= ``LOW_B``
        and, for the decay test, two above it.
    negative : bool
        Negative samples are legal (real-valued images, Gaussian noise).

    Returns
    -------
    keep : numpy.ndarray of bool
        ``dwi.shape[:-1]``: voxels judged tissue (invalid voxels included; ``make_mask`` removes them).
    report : dict
        ``rule`` (``"otsu+decay"``, or ``"otsu+contrast"`` when fewer than two b-values exceed
        ``LOW_B``), ``threshold`` (the cut on mean S(b <= LOW_B), signal units, ``None`` when every
        voxel is tissue), ``background`` (bool), ``valley`` (see ``VALLEY_DOUBT``), ``noise_floor``
        (the air's median signal, when air was found) and ``doubt`` (``None``, or a sentence saying why
        the mask should be checked).
    """
    d = np.asarray(dwi)
    b = np.asarray(b_values, float).ravel()
    if not np.isfinite(b).all() or (b < 0).any():
        raise ValueError(f"b_values must be finite and >= 0 s/mm^2, got {b.tolist()}.")
    if b.shape != d.shape[-1:]:
        raise ValueError(f"b_values has {b.size} values but dwi has {d.shape[-1]} per voxel.")
    low = b <= LOW_B
    if not low.any():
        raise ValueError(f"cannot make a mask: no b-value at or below {LOW_B:g} s/mm^2 (b = 0 is needed).")
    rest = np.flatnonzero(~low)
    rest = rest[np.argsort(b[rest], kind="stable")]
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a voxel with no finite sample: its level is NaN
        finite = np.where(np.isfinite(d[..., low]), d[..., low], np.nan)
        level = np.nanmean(finite, axis=-1, dtype=float)
        # voxels with a NaN or a negative value are judged by their other samples (make_mask then excludes and
        # counts them); the statistics below use the valid voxels only
        ok = (np.isfinite(d).all(axis=-1) & ((d >= 0).all(axis=-1) | negative) & (level > 0)
              & (d[..., b == b.min()] > 0).all(axis=-1))  # as make_mask: S(b=0) <= 0 cannot be fitted
    if not ok.any():
        raise ValueError(f"no voxel has finite{'' if negative else ', non-negative'} samples at every b-value, a "
                         f"positive S(b=0) and a positive mean at b <= {LOW_B:g} s/mm^2: cannot make a mask (is a "
                         "whole volume NaN or empty?).")
    if rest.size < 2:
        background, cut = has_background(level[ok])
        keep = np.nan_to_num(level, nan=0.0) > cut if background else np.ones(level.shape, bool)
        return keep, {"rule": "otsu+contrast", "threshold": cut if background else None, "background": background,
                      "valley": None, "doubt": f"fewer than two b-values above {LOW_B:g} s/mm^2: tissue was told "
                                                "from air by its brightness alone"}
    half = rest.size // 2
    judged = np.nan_to_num(level, nan=0.0)
    x = np.log(level[ok])
    mid = d[ok][:, rest[:half]].mean(axis=-1, dtype=float)
    high = d[ok][:, rest[half:]].mean(axis=-1, dtype=float)
    # split down from the brightest voxels until the upper part of a split does not decay: that split's
    # voxels are noise (air), and their median level is the noise floor
    chosen, splits, noise = np.ones(x.size, bool), [], None
    for _ in range(_MAX_DEPTH):
        if chosen.sum() < 2 * _MIN_CLASS or x[chosen].min() == x[chosen].max():
            break
        t = otsu_threshold(x[chosen])
        lower, upper = chosen & (x <= t), chosen & (x > t)
        if lower.sum() < _MIN_CLASS or upper.sum() < _MIN_CLASS:
            break
        decay = _decay(mid[upper], high[upper])
        if not _decays(*decay):
            noise = chosen
            break
        splits.append((t, upper, decay[0]))
        chosen = lower
    if noise is None and chosen.sum() >= _MIN_CLASS and not _decays(*_decay(mid[chosen], high[chosen])):
        noise = chosen
    if noise is None or not splits:
        if not splits and noise is None:
            doubt = (f"{int(ok.sum())} voxel(s) with one signal level or too few to split (fewer than "
                     f"{2 * _MIN_CLASS}): tissue could not be told from air, every voxel was kept")
        elif not splits:
            doubt = "the brightest voxels' signal does not fall with b: tissue could not be told from air"
        else:
            doubt = None
        return np.ones(level.shape, bool), {"rule": "otsu+decay", "threshold": None, "background": False,
                                            "valley": None, "doubt": doubt}
    floor = float(np.exp(np.median(x[noise])))
    top, tissue, cut_on, doubt = splits[0][2], None, None, None
    previous = np.ones(x.size, bool)
    for t, upper, decay in splits:  # from the brightest class down: tissue while it decays like tissue
        above = float(np.exp(np.median(x[upper]))) / floor
        if decay < DECAY_SHARE * top and above < LEVEL_OVER_NOISE:
            doubt = (f"{int(upper.sum()):,} voxels with mean S(b<={LOW_B:g}) of {np.exp(x[upper].min()):.4g}-"
                     f"{np.exp(x[upper].max()):.4g} ({above:.1f} times the noise floor) decay with b, but weakly "
                     f"({decay:.2f} against {top:.2f} in the brightest): ghosting, or a dim, slowly diffusing "
                     "tissue; they were left out")
            break
        tissue, cut_on = t, previous
        previous = previous & ~upper
    cut = float(np.exp(tissue))
    valley = _valley(x[cut_on], tissue)
    if doubt is None and valley >= VALLEY_DOUBT:
        doubt = (f"no clear gap between tissue and air: at the cut (mean S(b<={LOW_B:g}) = {cut:.4g}) the "
                 f"histogram is {valley:.0%} as dense as the smaller of its two peaks")
    return judged > cut, {"rule": "otsu+decay", "threshold": cut, "background": True, "valley": valley,
                          "noise_floor": floor, "doubt": doubt}


def make_mask(dwi, method="otsu", *, b_values=None, mask=None, warn=True, return_excluded=False,
              return_report=False, noise="rician"):
    """Voxels to fit: foreground of the b=0 image, minus voxels that cannot be fitted.

    Parameters
    ----------
    dwi : array_like
        ``(..., n_b)`` with b = 0 first.
    method : "otsu" or float
        ``"otsu"``: with ``b_values``, tissue told from air by level and decay
        (``tissue_mask``); without, Otsu's threshold on log S(b=0) when the image
        has background (``has_background``), otherwise every voxel. A number:
        keep S(b=0) above it (signal units). Ignored when ``mask`` is given.
    b_values : array_like, optional
        ``(n_b,)`` in s/mm^2. Give them: the decay with b is what tells a dark
        tissue from air (the command line always does).
    mask : array_like, optional
        A user mask shaped ``dwi.shape[:-1]`` (e.g. loaded from NIfTI): non-zero,
        finite values are inside (a NaN background counts as outside).
    warn : bool
        Warn with the count of voxels excluded as invalid, and when the automatic
        mask is doubtful.
    return_excluded : bool
        Also return that count.
    return_report : bool
        Also return how the mask was made (a dict: ``rule``, ``threshold``,
        ``background``, ``valley``, ``doubt``; see ``tissue_mask``).
    noise : {"rician", "gaussian"}
        ``"gaussian"`` (real-valued images): negative samples are legal, and
        only NaN/inf and S(b=0) <= 0 exclude a voxel.

    Returns
    -------
    numpy.ndarray of bool
        Shaped ``dwi.shape[:-1]``. Voxels with NaN/inf at any b-value, a negative
        value (with Rician noise), or S(b=0) <= 0 are never in it: they are excluded and counted in a
        warning, not turned silently into NaN maps. Followed by the count and the
        report when asked for, in that order.
    """
    d = np.asarray(dwi)
    if d.ndim < 2:
        raise ValueError(f"dwi must be shaped (..., n_b), got shape {d.shape}.")
    if d.dtype.kind not in "fiu":
        raise ValueError(f"dwi must hold real magnitude signals, got dtype {d.dtype}"
                         f"{' (use np.abs for complex data)' if d.dtype.kind == 'c' else ''}.")
    s0 = d[..., 0]
    negative = check_noise(noise) == "gaussian"
    if mask is not None:
        keep = np.asarray(mask)
        if keep.shape != s0.shape:
            raise ValueError(f"the mask has shape {keep.shape} but the image has {s0.shape} voxels per volume.")
        if keep.dtype.kind not in "biuf":
            raise ValueError(f"the mask must be numeric or boolean, got dtype {keep.dtype}.")
        keep = np.isfinite(keep) & (keep != 0) if keep.dtype.kind == "f" else keep.astype(bool)
        report = {"rule": "user", "threshold": None, "background": None, "valley": None, "doubt": None}
    elif isinstance(method, str):
        if method != "otsu":
            raise ValueError(f"method must be 'otsu' or a threshold in signal units, got {method!r}.")
        if b_values is not None:
            keep, report = tissue_mask(d, b_values, negative=negative)
        else:
            background, threshold = has_background(s0)
            keep = s0 > threshold if background else np.ones(s0.shape, bool)
            report = {"rule": "otsu+contrast", "threshold": threshold if background else None,
                      "background": background, "valley": None, "doubt": None}
    elif isinstance(method, (int, float, np.number)) and not isinstance(method, bool):
        keep = s0 > float(method)
        report = {"rule": "threshold", "threshold": float(method), "background": True, "valley": None, "doubt": None}
    else:
        raise ValueError(f"method must be 'otsu' or a threshold in signal units, got {method!r}.")
    valid = valid_voxels(d, negative=negative)
    excluded = int((keep & ~valid).sum())
    keep = keep & valid
    if excluded and warn:
        warnings.warn(f"{excluded} voxel(s) inside the mask have NaN/inf, "
                      f"{'' if negative else 'negative values '}or S(b=0) <= 0 and are excluded (their maps are "
                      "0).", stacklevel=2)
    if not keep.any():
        raise ValueError("the mask is empty: no voxel to fit. Check the threshold or the mask file.")
    if report["doubt"] and warn:
        warnings.warn(f"the automatic mask is doubtful: {report['doubt']}. Check it, or pass a mask.", stacklevel=2)
    out = (keep,) + ((excluded,) if return_excluded else ()) + ((report,) if return_report else ())
    return out if len(out) > 1 else keep
