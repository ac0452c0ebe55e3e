"""Input checks shared by every estimator: one place, one wording.

Each check raises a ``ValueError`` that says what is wrong and what to do,
so bad input never turns into a silent NaN map or a traceback from deep
inside numpy or torch.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

__all__ = [
    "valid_voxels",
    "invalid_option",
    "check_b_values",
    "check_b_units",
    "check_signals",
    "check_noise",
    "NOISE_MODELS",
    "OSIPI_NAMES",
    "normalise",
    "check_box",
    "check_whole",
    "check_positive",
    "check_grid",
]

#: What each IVIM parameter may physically be, for every box, prior or set of bounds.
_PHYSICAL = {
    "Dp": ("must be >= 0 (mm^2/s)", lambda lo, hi: lo >= 0),
    "Dt": ("must be >= 0 (mm^2/s)", lambda lo, hi: lo >= 0),
    "Fp": ("is a fraction: it must lie within [0, 1]", lambda lo, hi: lo >= 0 and hi <= 1),
    "S0": ("is relative to the measured S(b=0): it must be >= 0", lambda lo, hi: lo >= 0),
}

#: OSIPI TF2.4's parameter names, accepted as aliases in every box, prior and set of bounds: D is the tissue
#: diffusion coefficient Dt, f the perfusion fraction Fp; Dp and S0 are spelled alike.
OSIPI_NAMES = {"D": "Dt", "f": "Fp"}


def check_b_values(b_values) -> np.ndarray:
    """Validate an acquisition's b-values and return them as a float array.

    Parameters
    ----------
    b_values : array_like
        1-D b-values in s/mm^2: finite, starting at 0, strictly increasing
        (average repeated b-values first, e.g. with ``load_dwi``).

    Returns
    -------
    numpy.ndarray
        The b-values as float64.
    """
    b = np.asarray(b_values, dtype=float)
    if b.ndim != 1 or b.size < 2:
        raise ValueError(
            f"b_values must be a 1-D list of at least 2 b-values (s/mm^2), got shape {b.shape}."
        )
    if not np.all(np.isfinite(b)):
        raise ValueError("b_values contain NaN or inf; pass finite b-values in s/mm^2.")
    if b[0] != 0:
        raise ValueError(
            f"b_values must start at b=0 (got {b[0]:g}): the signal is normalised by S(b=0). "
            "Sort the volumes so the b=0 volume comes first."
        )
    check_b_units(b)
    if np.any(np.diff(b) <= 0):
        raise ValueError(
            f"b_values must be strictly increasing, got {b.tolist()}. "
            "Sort them and average repeated b-values (load_dwi does both)."
        )
    return b


def check_b_units(b_values) -> None:
    """Refuse b-values that are not in s/mm^2: the largest must lie between 5 and 10,000.

    b-values in s/m^2 (x 1e6) or ms/um^2 (x 1e-3) would otherwise give garbage
    maps without an error.
    """
    top = float(np.max(b_values))
    if not 5 <= top <= 10_000:
        raise ValueError(
            f"the largest b-value is {top:g}; IVIM b-values are in s/mm^2 (typically up to 500-1000). "
            "Convert them to s/mm^2 (from s/m^2 divide by 1e6, from ms/um^2 multiply by 1000)."
        )


#: The noise models the fits know: magnitude images (Rician, samples >= 0) and real-valued or phase-corrected
#: images (Gaussian, where negative samples are legal).
NOISE_MODELS = ("rician", "gaussian")


def check_noise(noise) -> str:
    """``noise`` as one of ``NOISE_MODELS``, or a ValueError naming them."""
    if noise not in NOISE_MODELS:
        raise ValueError(f"noise must be 'rician' (magnitude images, the default) or 'gaussian' (real-valued or "
                         f"phase-corrected images, where negative samples are legal), got {noise!r}.")
    return noise


def check_signals(signals, *, n_b: int | None = None, name: str = "signals", negative: bool = False) -> np.ndarray:
    """Validate diffusion-weighted signals shaped ``(..., n_b)``, b=0 first.

    Parameters
    ----------
    signals : array_like
        Magnitude signals, any leading shape, b-values on the last axis.
    n_b : int, optional
        Number of b-values the signals must have (e.g. those a network was
        trained on).
    name : str
        What to call the array in error messages.
    negative : bool
        Accept negative samples (Gaussian noise: real-valued or phase-corrected
        images); S(b=0) must still be > 0.

    Returns
    -------
    numpy.ndarray
        The signals as a float array (float32 input stays float32).
    """
    if type(signals).__module__.startswith("torch"):
        signals = signals.detach().cpu().numpy()
    s = np.asarray(signals)
    if s.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric, got dtype {s.dtype}.")
    if s.dtype != np.float32:
        s = s.astype(float)
    if s.ndim < 1 or s.shape[-1] < 2:
        raise ValueError(
            f"{name} must be shaped (..., n_b) with the b-values on the last axis, got shape {s.shape}."
        )
    if n_b is not None and s.shape[-1] != n_b:
        raise ValueError(
            f"{name} have {s.shape[-1]} b-values on the last axis but {n_b} were expected "
            "(the acquisition the model or fit was set up for). Check the b-value order and "
            "the axis order: arrays are (..., n_b)."
        )
    if s.size == 0:
        raise ValueError(f"{name} are empty (shape {s.shape}); is the mask empty?")
    if not np.isfinite(s).all():
        n = int((~np.isfinite(s)).any(axis=-1).sum())
        raise ValueError(
            f"{name} contain NaN or inf in {n} voxel(s); mask them out (make_mask excludes them) "
            "before fitting."
        )
    if not negative and s.min() < 0:
        n = int((s < 0).any(axis=-1).sum())
        raise ValueError(
            f"{name} contain negative values in {n} voxel(s); magnitude DWI signals are >= 0. "
            "Use magnitude images, mask those voxels, or fit with noise='gaussian' if the images are "
            "real-valued (phase-corrected)."
        )
    if (s[..., 0] <= 0).any():
        n = int((s[..., 0] <= 0).sum())
        raise ValueError(
            f"S(b=0) is <= 0 in {n} voxel(s), so the signal cannot be normalised. "
            "Exclude background voxels with a mask (make_mask) before fitting."
        )
    return s


def normalise(signals: np.ndarray):
    """Divide checked signals by their S(b=0).

    Returns
    -------
    normalised : numpy.ndarray
        ``signals / S(b=0)``, same shape.
    s0 : numpy.ndarray
        S(b=0), shape ``signals.shape[:-1]``.
    """
    s0 = signals[..., 0]
    return signals / s0[..., None], s0


def check_box(box, *, name: str = "box", keys=("Dp", "Dt", "Fp"), defaults=None) -> dict:
    """Validate a parameter box: fit bounds, a Bayesian prior or a simulation range.

    Parameters
    ----------
    box : dict
        ``{"Dp": (low, high), ...}``: Dp and Dt in mm^2/s (>= 0), Fp a fraction
        (within [0, 1]), S0 relative to the measured S(b=0) (>= 0). Each value is a
        pair of finite numbers with low < high. OSIPI's names are accepted for
        the same parameters (``OSIPI_NAMES``: ``D`` for Dt, ``f`` for Fp).
    name : str
        What to call the dict in error messages (``"bounds"``, ``"prior"``, ``"box"``).
    keys : tuple of str
        The parameters the box may contain, in the project's order (Dp, Dt, Fp, S0).
    defaults : dict, optional
        Ranges for keys the box leaves out (e.g. ``FIT_BOUNDS``). Without
        defaults every key in ``keys`` is required.

    Returns
    -------
    dict
        ``{key: (low, high)}`` as floats for every key in ``keys``, in that order.
    """
    allowed = ", ".join(keys)
    if not isinstance(box, dict):
        raise ValueError(f"{name} must be a dict of (low, high) pairs with keys {allowed}, got {box!r}.")
    for alias, ours in OSIPI_NAMES.items():  # OSIPI's names (D, f) for ours (Dt, Fp)
        if alias in box:
            if ours in box:
                raise ValueError(f"{name} gives both {alias!r} (OSIPI's name) and {ours!r} for the same parameter; "
                                 "give one.")
            box = {(ours if k == alias else k): v for k, v in box.items()}
    unknown = [k for k in box if k not in keys]
    if unknown:
        raise ValueError(
            f"{name} has unknown key {unknown[0]!r}; the allowed keys are {allowed} "
            "(parameter names are case-sensitive)."
        )
    merged = {**(defaults or {}), **box}
    missing = [k for k in keys if k not in merged]
    if missing:
        raise ValueError(
            f"{name} needs a (low, high) pair for each of {allowed}; missing {', '.join(map(repr, missing))}."
        )
    out = {}
    for k in keys:
        try:
            lo, hi = (float(v) for v in merged[k])
        except (TypeError, ValueError):
            lo = hi = np.nan
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(
                f"{name}[{k!r}] must be a (lower, upper) pair of finite numbers with lower < upper, "
                f"got {merged[k]!r}."
            )
        rule, ok = _PHYSICAL[k]
        if not ok(lo, hi):
            raise ValueError(f"{name}[{k!r}] = {merged[k]!r} is not physical: {k} {rule}.")
        out[k] = (lo, hi)
    return out


def check_whole(value, *, name: str, minimum: int = 1, strict: bool = False) -> int:
    """Validate a count (chunk size, grid points, iterations): a whole number >= ``minimum``.

    ``strict=True`` also refuses whole floats (3.0), for callers that use the value as given.

    Returns
    -------
    int
    """
    whole = isinstance(value, numbers.Integral) or (not strict and isinstance(value, numbers.Real)
                                                     and float(value).is_integer())
    if isinstance(value, (bool, np.bool_)) or not whole or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return int(value)


def check_positive(value, *, name: str, what: str = "") -> float:
    """Validate a positive finite scalar (e.g. a noise level or a tolerance).

    Parameters
    ----------
    value : float
    name : str
        What to call it in the message.
    what : str
        Its meaning and unit, appended to the message (e.g. ``" (noise SD relative to S(b=0))"``).

    Returns
    -------
    float
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not (ok and np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number{what}, got {value!r}.")
    return float(value)


def check_grid(grid, *, names=("Dp", "Dt", "Fp")) -> tuple:
    """Validate grid sizes: one whole number >= 2 per parameter in ``names``.

    Returns
    -------
    tuple of int
    """
    message = (f"grid must be {len(names)} whole numbers >= 2 (points along {', '.join(names)}), "
               f"got {grid!r}.")
    try:
        sizes = tuple(grid)
    except TypeError:
        raise ValueError(message) from None
    if len(sizes) != len(names):
        raise ValueError(message)
    try:
        return tuple(check_whole(n, name="grid size", minimum=2) for n in sizes)
    except ValueError:
        raise ValueError(message) from None


def valid_voxels(signals, *, negative=False) -> np.ndarray:
    """Which voxels of ``(..., n_b)`` signals can be fitted: all values finite and >= 0 (any sign with
    ``negative``), S(b=0) > 0.

    Returns
    -------
    numpy.ndarray of bool
        Shaped ``signals.shape[:-1]``.
    """
    s = np.asarray(signals)
    if s.dtype.kind not in "fiu" or s.ndim < 1:
        raise ValueError(f"signals must be a numeric array shaped (..., n_b), got dtype {s.dtype}, shape {s.shape}.")
    with np.errstate(invalid="ignore"):
        return np.isfinite(s).all(axis=-1) & ((s >= 0).all(axis=-1) | negative) & (s[..., 0] > 0)


def invalid_option(position: int = 0):
    """Give an estimator ``f(..., signals, ...) -> IVIMParams`` the keyword ``invalid``.

    ``invalid="raise"`` (default): ``check_signals`` refuses the whole call when
    one voxel has NaN/inf, a negative value (unless the estimator is called
    with ``noise="gaussian"``) or S(b=0) <= 0. ``invalid="nan"``:
    those voxels get NaN estimates and the others are fitted as usual, exactly
    as they would be on their own (real-valued, phase-corrected data have
    negative samples in some voxels).

    Parameters
    ----------
    position : int
        Index of ``signals`` among the estimator's positional arguments.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, invalid="raise", **kwargs):
            if invalid == "raise":
                return fn(*args, **kwargs)
            if invalid != "nan":
                raise ValueError(f"invalid must be 'raise' or 'nan', got {invalid!r}.")
            signals = args[position]
            if type(signals).__module__.startswith("torch"):
                signals = signals.detach().cpu().numpy()
            s = np.asarray(signals)
            ok = valid_voxels(s, negative=kwargs.get("noise") == "gaussian")
            if not ok.any():
                raise ValueError("no voxel can be fitted: every voxel has NaN/inf, a negative value or S(b=0) <= 0.")
            est = fn(*args[:position], s[ok], *args[position + 1:], **kwargs)
            full = []
            for values in est:
                out = np.full(ok.shape, np.nan)
                out[ok] = values
                full.append(out)
            return type(est)(*full)
        return wrapper
    return decorate
