"""Accuracy, precision and agreement measures for IVIM estimates."""
from __future__ import annotations

import numpy as np
from scipy import stats

from .model import IVIMParams

__all__ = ["PARAMS", "nrmse", "normalised_bias", "spearman", "cv_across", "region_stats", "markdown_table", "pivot"]

#: The three IVIM parameters every comparison reports, in order.
PARAMS = ("Dp", "Dt", "Fp")


def nrmse(estimate, truth):
    """Root-mean-square error divided by the mean true value.

    .. math:: \\mathrm{NRMSE} = \\sqrt{\\langle(\\hat x - x)^2\\rangle} / \\langle x \\rangle
    """
    e, t = np.asarray(estimate, float), np.asarray(truth, float)
    return float(np.sqrt(np.mean((e - t) ** 2)) / np.mean(t))


def normalised_bias(estimate, truth):
    """Mean error divided by the mean true value."""
    e, t = np.asarray(estimate, float), np.asarray(truth, float)
    return float(np.mean(e - t) / np.mean(t))


def spearman(a, b):
    """Spearman rank correlation of two flattened arrays (NaN if either is constant)."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def cv_across(estimates):
    """Consistency of repeated estimates of the same voxels.

    Parameters
    ----------
    estimates : array_like
        Shape ``(n_repeats, n_voxels)``, e.g. one row per training seed.

    Returns
    -------
    float
        Mean over voxels of the coefficient of variation (SD / |mean| across
        repeats).
    """
    e = np.asarray(estimates, float)
    return float(np.mean(e.std(axis=0) / np.abs(e.mean(axis=0))))


def region_stats(params: IVIMParams, labels, truth: IVIMParams | None = None):
    """Mean and SD of each parameter in each labelled region.

    Parameters
    ----------
    params : IVIMParams
        Estimated maps.
    labels : array_like of int
        Region label per voxel, same shape as the maps.
    truth : IVIMParams, optional
        Ground-truth maps; their mean per region is added as ``<param>_true``.

    Returns
    -------
    list of dict
        One row per label: ``region``, ``voxels`` and ``<param>_mean``,
        ``<param>_sd`` (and ``<param>_true``) for Dp, Dt, Fp.
    """
    labels = np.asarray(labels)
    rows = []
    for region in np.unique(labels):
        inside = labels == region
        row = {"region": int(region), "voxels": int(inside.sum())}
        for name in PARAMS:
            values = np.asarray(getattr(params, name))[inside]
            row[f"{name}_mean"], row[f"{name}_sd"] = float(values.mean()), float(values.std())
            if truth is not None:
                row[f"{name}_true"] = float(np.asarray(getattr(truth, name))[inside].mean())
        rows.append(row)
    return rows


def markdown_table(rows, columns=None, *, digits=4) -> str:
    """Format a list of dicts as a Markdown table (floats to ``digits`` significant digits; missing: blank)."""
    if not rows:
        raise ValueError("no rows to format")
    columns = list(columns or rows[0].keys())

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def pivot(rows, *, value, index="snr", column="method", where=None):
    """Reshape long result rows into one row per ``index`` with one column per ``column`` value.

    Parameters
    ----------
    rows : list of dict
    value : str
        The field to tabulate (e.g. ``"nrmse"``).
    index, column : str
        Fields giving the table's rows and columns.
    where : dict, optional
        Keep only rows matching all these fields (e.g. ``{"param": "Dp"}``).
    """
    kept = [r for r in rows if all(r.get(k) == v for k, v in (where or {}).items())]
    cols = list(dict.fromkeys(r[column] for r in kept))
    table = {}
    for r in kept:
        table.setdefault(r[index], {index: r[index]})[r[column]] = r[value]
    return [{c: t.get(c, float("nan")) for c in [index, *cols]} for t in table.values()]
