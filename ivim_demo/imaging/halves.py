"""Two halves of one scan's repeated images: a test-retest pair from a single series.

A series that repeats every b-value (diffusion directions, or averages) holds
two independent measurements of the same voxels: fitted separately, the two
halves show how repeatable a method's maps are, the way papers judge real
scans (within-subject coefficient of variation, wCV) when no reference exists.
"""
from __future__ import annotations

import numpy as np

__all__ = ["HALVES", "split_halves"]

#: The two halves ``split_halves`` returns, by number (``read_scan(half=...)``, ``fit --half``).
HALVES = (1, 2)


def split_halves(b_values):
    """Which volumes of a series form each of its two halves.

    Volumes are grouped by b-value (rounded to the whole s/mm^2, as
    ``average_directions`` groups them). In acquisition order, a b > 0 group's
    first half of volumes goes to half 1 and its second half to half 2 (the
    shipped scans: directions 1-3 and 4-6, acquired in the same breath-hold);
    the b = 0 volumes are dealt alternately (1st, 3rd, ... to half 1), so each
    half has b = 0 images from every part of the series. A group with an odd
    number of volumes leaves its middle one out (b = 0: its last one).

    Parameters
    ----------
    b_values : array_like
        The b-value of each volume, s/mm^2, in acquisition order.

    Returns
    -------
    first, second : ndarray of int
        Indices of the volumes of half 1 and half 2, increasing.

    Raises
    ------
    ValueError
        If a b-value has fewer than two volumes: the series cannot be split.
    """
    b = np.round(np.asarray(b_values, dtype=float).ravel())
    if b.size == 0 or not np.all(np.isfinite(b)):
        raise ValueError(f"b_values must be finite numbers, one per volume, got {np.asarray(b_values).tolist()!r}.")
    groups, counts = np.unique(b, return_counts=True)
    single = groups[counts < 2]
    if single.size:
        raise ValueError(f"cannot split the series into two halves: b = {single.astype(int).tolist()} s/mm^2 "
                         "has a single volume; every b-value needs at least two (directions or averages).")
    first, second = [], []
    for value in groups:  # a handful of b-values: a loop over groups, not voxels
        idx = np.flatnonzero(b == value)
        k = len(idx) // 2
        if value == 0:
            first.append(idx[0:2 * k:2])
            second.append(idx[1:2 * k:2])
        else:
            first.append(idx[:k])
            second.append(idx[len(idx) - k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))
