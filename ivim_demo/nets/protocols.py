"""b-value protocols: the range the pretrained network covers, how training draws them, repeats.

A protocol is the set of distinct b-values (s/mm^2, b = 0 first) and how many
images were acquired at each (directions, averages). The pretrained network
(``IVIMNetAnyProtocol``) reads a voxel's signal averaged over the repeats of
each b-value, with the counts telling it how much each average has been
smoothed.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..core.checks import check_b_units
from ..core.prior import as_generator

__all__ = ["PROTOCOL_RANGE", "MAX_DISTINCT", "MAX_REPEATS", "Protocol", "protocol_of", "protocol_problems",
           "draw_protocols", "average_repeats"]

#: The protocols the pretrained network is trained for (b in s/mm^2): 4-25 distinct b-values with
#: b = 0 among them, the largest 200-1500, at least two at or below 100 (b = 0 counts) and at least
#: two at or above 150.
PROTOCOL_RANGE = {"distinct": (4, 25), "b_max": (200.0, 1500.0), "low": (100.0, 2), "high": (150.0, 2)}
#: Most distinct b-values (the padded length of a protocol in training).
MAX_DISTINCT = PROTOCOL_RANGE["distinct"][1]
#: Most images per b-value drawn in training; more are accepted (the network extrapolates in log count).
MAX_REPEATS = 8


class Protocol(NamedTuple):
    """A protocol: distinct b-values and the images acquired at each.

    Attributes
    ----------
    b_values : numpy.ndarray
        Distinct b-values in s/mm^2, increasing, b = 0 first.
    counts : numpy.ndarray
        Images acquired at each of them (>= 1), same length.
    """

    b_values: np.ndarray
    counts: np.ndarray


def protocol_of(b_values) -> tuple[Protocol, np.ndarray]:
    """The protocol of an acquisition whose images may repeat b-values, in any order.

    Parameters
    ----------
    b_values : array_like
        One b-value (s/mm^2) per image, ``(n_images,)``; repeats and any
        order allowed; at least one b = 0.

    Returns
    -------
    protocol : Protocol
    index : numpy.ndarray
        ``(n_images,)``: the position of each image's b-value in
        ``protocol.b_values``.
    """
    b = np.asarray(b_values, dtype=float)
    if b.ndim != 1 or b.size < 2:
        raise ValueError(f"b_values must be a 1-D list with one b-value (s/mm^2) per image, got shape {b.shape}.")
    if not np.all(np.isfinite(b)) or np.any(b < 0):
        raise ValueError("b_values must be finite and >= 0 (s/mm^2).")
    check_b_units(b)
    if not np.any(b == 0):
        raise ValueError("the protocol has no b = 0 image; the signal is normalised by S(b=0), so at least one "
                         "image must have b = 0.")
    distinct, index, counts = np.unique(b, return_inverse=True, return_counts=True)
    return Protocol(distinct, counts), index


def protocol_problems(protocol: Protocol) -> list[str]:
    """How a protocol leaves ``PROTOCOL_RANGE``, one sentence each (empty when it lies inside)."""
    b = protocol.b_values
    (fewest, most), (lo_max, hi_max) = PROTOCOL_RANGE["distinct"], PROTOCOL_RANGE["b_max"]
    (low_b, n_low), (high_b, n_high) = PROTOCOL_RANGE["low"], PROTOCOL_RANGE["high"]
    problems = []
    if not fewest <= len(b) <= most:
        problems.append(f"{len(b)} distinct b-values (the network covers {fewest}-{most})")
    if not lo_max <= b[-1] <= hi_max:
        problems.append(f"largest b-value {b[-1]:g} s/mm^2 (the network covers {lo_max:g}-{hi_max:g})")
    if np.sum(b <= low_b) < n_low:
        problems.append(f"{int(np.sum(b <= low_b))} b-value(s) at or below {low_b:g} s/mm^2, b = 0 included "
                        f"(the network needs at least {n_low})")
    if np.sum(b >= high_b) < n_high:
        problems.append(f"{int(np.sum(b >= high_b))} b-value(s) at or above {high_b:g} s/mm^2 (the network needs "
                        f"at least {n_high})")
    return problems


def draw_protocols(n, *, seed=0):
    """Draw ``n`` protocols from the training distribution, padded to ``MAX_DISTINCT``.

    The rule, fixed before any measurement: the number of distinct b-values
    k is uniform on 4-25; the largest b-value log-uniform on 200-1500
    s/mm^2; the other k - 2 non-zero b-values, per protocol either
    log-uniform on 1 to b_max or uniform on 0 to b_max (equally likely),
    rounded to whole s/mm^2; a protocol with repeated values, fewer than one
    non-zero b-value at or below 100 or fewer than two at or above 150 is
    drawn again. Images per b-value: all 1 (half of the protocols), one
    count on 2-8 for every b > 0 with the b = 0 count on 1-8 (a quarter), or
    each count on 1-8 independently (a quarter).

    Parameters
    ----------
    n : int
        Number of protocols.
    seed : int or numpy.random.Generator

    Returns
    -------
    b_values : numpy.ndarray
        ``(n, MAX_DISTINCT)`` s/mm^2, increasing within the first k entries
        of each row (b = 0 first); padding is 0.
    counts : numpy.ndarray
        ``(n, MAX_DISTINCT)`` images per b-value; 0 marks padding.
    """
    rng = as_generator(seed)
    out_b = np.zeros((n, MAX_DISTINCT))
    out_c = np.zeros((n, MAX_DISTINCT), dtype=np.int64)
    todo = np.arange(n)
    while len(todo):  # rejection rounds over the protocols still to draw (vectorised within a round)
        m = len(todo)
        k = rng.integers(PROTOCOL_RANGE["distinct"][0], MAX_DISTINCT + 1, size=m)
        b_max = np.exp(rng.uniform(*np.log(PROTOCOL_RANGE["b_max"]), size=m))
        log_spaced = rng.random(m) < 0.5
        u = rng.random((m, MAX_DISTINCT - 2))
        others = np.where(log_spaced[:, None], b_max[:, None] ** u, u * b_max[:, None])
        others = np.where(np.arange(MAX_DISTINCT - 2)[None, :] < (k - 2)[:, None], np.round(others), np.inf)
        body = np.sort(np.concatenate([others, np.round(b_max)[:, None]], axis=1), axis=1)  # inf padding last
        valid = np.isfinite(body)
        low = ((body <= PROTOCOL_RANGE["low"][0]) & (body > 0)).sum(axis=1) >= PROTOCOL_RANGE["low"][1] - 1
        high = ((body >= PROTOCOL_RANGE["high"][0]) & valid).sum(axis=1) >= PROTOCOL_RANGE["high"][1]
        gaps = np.diff(np.where(valid, body, np.nan), axis=1)
        distinct = ~np.any(gaps == 0, axis=1) & (body[:, 0] > 0)
        ok = low & high & distinct & (body[np.arange(m), k - 2] < PROTOCOL_RANGE["b_max"][1] + 0.5)
        rows = todo[ok]
        out_b[rows, 1:] = np.where(valid[ok], body[ok], 0.0)
        kind = rng.random(m)[ok]
        same = rng.integers(2, MAX_REPEATS + 1, size=len(rows))
        each = rng.integers(1, MAX_REPEATS + 1, size=(len(rows), MAX_DISTINCT))
        counts = np.where(kind[:, None] < 0.5, 1, np.where(kind[:, None] < 0.75, same[:, None], each))
        counts[:, 0] = np.where(kind < 0.5, 1, np.where(kind < 0.75, each[:, 0], counts[:, 0]))
        used = np.arange(MAX_DISTINCT)[None, :] < k[ok][:, None]
        out_c[rows] = np.where(used, counts, 0)
        todo = todo[~ok]
    return out_b, out_c


def average_repeats(signals, index, counts):
    """Average the images of each distinct b-value: ``(..., n_images)`` to ``(..., n_distinct)``.

    Parameters
    ----------
    signals : numpy.ndarray
        ``(..., n_images)``.
    index, counts : numpy.ndarray
        From ``protocol_of``: each image's distinct b-value, and the images
        per distinct b-value.

    Returns
    -------
    numpy.ndarray
        ``(..., n_distinct)`` float32 means (one matrix product).
    """
    weights = np.zeros((len(index), len(counts)), dtype=np.float32)
    weights[np.arange(len(index)), index] = 1.0 / counts[index]
    return np.asarray(signals, dtype=np.float32) @ weights
