"""Input checks shared by every estimator: one place, one wording.

Each check raises a ``ValueError`` that says what is wrong and what to do,
so bad input never turns into a silent NaN map or a traceback from deep
inside numpy or torch.
"""
from __future__ import annotations

import numpy as np

__all__ = ["check_b_values", "check_signals", "normalise"]


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
    if np.any(np.diff(b) <= 0):
        raise ValueError(
            f"b_values must be strictly increasing, got {b.tolist()}. "
            "Sort them and average repeated b-values (load_dwi does both)."
        )
    return b


def check_signals(signals, *, n_b: int | None = None, name: str = "signals") -> np.ndarray:
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
    if s.min() < 0:
        n = int((s < 0).any(axis=-1).sum())
        raise ValueError(
            f"{name} contain negative values in {n} voxel(s); magnitude DWI signals are >= 0. "
            "Use magnitude images or mask those voxels."
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
