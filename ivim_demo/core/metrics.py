"""Accuracy, precision and agreement measures for IVIM estimates."""
from __future__ import annotations

import numpy as np
from scipy import stats

from .signal_model import PARAMS, IVIMParams

__all__ = ["PARAMS", "nrmse", "normalised_bias", "spearman", "cv_across", "cv_net", "region_stats", "roi_medians", "repeatability",
           "AGREEMENT", "check_agreement", "SCAN_CHECKS", "check_scan", "markdown_table", "pivot"]



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


def cv_net(estimates, truth):
    r"""Kaandorp et al.'s CV_NET: the spread of retrained networks, relative to the mean true value.

    .. math:: \mathrm{CV_{NET}} = \sqrt{\langle \mathrm{Var}_r(\hat x) \rangle_{voxels}} / \langle x \rangle

    with the variance across retrainings ``r`` (population variance, ``ddof=0``,
    as IVIMNET's ``np.std``).

    Parameters
    ----------
    estimates : array_like
        Shape ``(n_repeats, n_voxels)``: the same voxels estimated by each retrained network.
    truth : array_like
        The voxels' true values, shape ``(n_voxels,)``.

    Returns
    -------
    float
    """
    e = np.asarray(estimates, float)
    if e.ndim != 2 or len(e) < 2:
        raise ValueError(f"estimates must be (n_repeats >= 2, n_voxels), got shape {e.shape}.")
    return float(np.sqrt(np.mean(e.var(axis=0))) / np.mean(np.asarray(truth, float)))


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


def roi_medians(params: IVIMParams, labels, names: dict, *, mask=None, reference=None):
    """Median of each parameter in each named region of interest.

    Medians, not means: small ROIs on real scans hold voxels where a fit hit
    its bounds, and one such voxel moves a mean far more than a median.

    Parameters
    ----------
    params : IVIMParams
        Estimated maps (Dp, Dt in mm^2/s).
    labels : array_like of int
        ROI label per voxel, same shape as the maps.
    names : dict of int -> str
        Labels to report and their names, e.g. ``{2: "liver", 4: "spleen"}``.
    mask : array_like of bool, optional
        Only voxels inside it count (e.g. the voxels that were fitted).
    reference : dict, optional
        Reference maps ``{"D": ..., "f": ...}`` (mm^2/s, fraction): the scan
        authors' maps or a phantom's truth; their medians are added as
        ``ref_D`` and ``ref_f``.

    Returns
    -------
    list of dict
        One row per ROI: ``roi``, ``voxels``, ``Dp``, ``Dt``, ``Fp`` (and
        ``ref_D``, ``ref_f``); NaN for an ROI with no voxel.
    """
    labels = np.asarray(labels)
    keep = np.ones(labels.shape, bool) if mask is None else np.asarray(mask, bool)
    rows = []
    for label, name in names.items():
        inside = (labels == label) & keep
        row = {"roi": name, "voxels": int(inside.sum())}

        def median(a):
            return float(np.median(np.asarray(a)[inside])) if inside.any() else float("nan")

        row.update({p: median(getattr(params, p)) for p in PARAMS})
        if reference is not None:
            row.update(ref_D=median(reference["D"]), ref_f=median(reference["f"]))
        rows.append(row)
    return rows


def repeatability(first: IVIMParams, second: IVIMParams, labels, names: dict, *, mask=None):
    r"""Within-subject coefficient of variation (wCV) of two measurements of the same voxels, per ROI.

    For the two maps :math:`a` and :math:`b` of one parameter (e.g. the fits
    of a scan's two halves, ``split_halves``), within each ROI:

    .. math:: \mathrm{wCV_{voxel}} = \sqrt{\langle (a - b)^2 / 2 \rangle} \,/\, |\langle (a + b)/2 \rangle|

    (the within-voxel SD of two measurements, root-mean-squared over the ROI's
    voxels, relative to the ROI's mean), and for the ROI medians
    :math:`m_a, m_b`:

    .. math:: \mathrm{wCV_{median}} = |m_a - m_b| / \sqrt{2} \,/\, |(m_a + m_b)/2|

    Parameters
    ----------
    first, second : IVIMParams
        The two measurements' maps (Dp, Dt in mm^2/s), same shape.
    labels : array_like of int
        ROI label per voxel, same shape as the maps.
    names : dict of int -> str
        Labels to report and their names.
    mask : array_like of bool, optional
        Only voxels inside it count (e.g. those fitted in both).

    Returns
    -------
    list of dict
        One row per ROI: ``roi``, ``voxels``, and for Dp, Dt and Fp
        ``<p>_wcv_voxel``, ``<p>_wcv_median`` (fractions) and ``<p>_median``
        (the mean of the two medians); NaN for an ROI with no voxel, and
        for a wCV whose mean is 0 (a parameter at its bound in both halves).
        To pool wCVs over subjects, take their root mean square.
    """
    labels = np.asarray(labels)
    keep = np.ones(labels.shape, bool) if mask is None else np.asarray(mask, bool)
    if keep.shape != labels.shape:
        raise ValueError(f"mask has shape {keep.shape} but labels have {labels.shape}; give them one shape.")
    for which, maps in (("first", first), ("second", second)):
        shapes = {p: np.shape(getattr(maps, p)) for p in PARAMS}
        if any(s != labels.shape for s in shapes.values()):
            raise ValueError(f"the {which} maps have shapes {shapes} but labels have {labels.shape}; give maps and "
                             "labels of one image.")
    rows = []
    for label, name in names.items():
        inside = (labels == label) & keep
        for p in PARAMS:
            inside &= np.isfinite(np.asarray(getattr(first, p))) & np.isfinite(np.asarray(getattr(second, p)))
        row = {"roi": name, "voxels": int(inside.sum())}
        for p in PARAMS:
            if not inside.any():
                row.update({f"{p}_wcv_voxel": float("nan"), f"{p}_wcv_median": float("nan"),
                            f"{p}_median": float("nan")})
                continue
            a, b = np.asarray(getattr(first, p), float)[inside], np.asarray(getattr(second, p), float)[inside]
            ma, mb = np.median(a), np.median(b)
            with np.errstate(invalid="ignore", divide="ignore"):  # a mean of 0 (a fit at its bound): NaN
                row[f"{p}_wcv_voxel"] = float(np.sqrt(np.mean((a - b) ** 2 / 2)) / abs(np.mean((a + b) / 2)))
                row[f"{p}_wcv_median"] = float(abs(ma - mb) / np.sqrt(2) / abs((ma + mb) / 2))
            row[f"{p}_median"] = float((ma + mb) / 2)
        rows.append(row)
    return rows


#: How close ROI medians must come to a reference (the scan authors' maps or a phantom's truth): Dt
#: within a relative tolerance of the reference D, liver Fp within an absolute tolerance of the
#: reference f, and liver above spleen in Fp (the organ contrast, liver about 0.2-0.3, spleen about
#: 0.05-0.1 in the literature). On the shipped scans the authors' D comes from a flow-aware model fitted
#: to all 300 images of a scan, which one 60-image series cannot be held to (README, *Can any fit of one
#: series reach the authors' D?*): there these checks are context, and ``check_scan`` decides.
AGREEMENT = {"Dt_liver": 0.25, "Dt_spleen": 0.35, "Fp_liver": 0.10, "Fp_liver_minus_spleen": 0.08}

#: What ``check_scan`` asks of a fit of a real scan: liver and spleen Dt within these relative distances
#: of least squares' on the same series, and the organ contrast in Fp (liver at least this far above
#: spleen).
SCAN_CHECKS = {"Dt_liver_vs_lsq": 0.25, "Dt_spleen_vs_lsq": 0.35, "Fp_liver_minus_spleen": 0.08}


def check_scan(rows, lsq_rows):
    """Check a fit of a real scan by what the series itself can tell: organ contrast and agreement with least squares.

    Least squares makes no assumption about the tissue distribution and, on these organs' Dt, is the
    most direct reading of the series' high-b decay; a method whose organ Dt is far from it on the
    same voxels carries a bias of its own (its prior, its training) or least squares is hit by noise,
    and either way the difference needs a look. With ``SCAN_CHECKS``:
    liver Dt within 25 % and spleen Dt within 35 % of least squares' (ROI medians), and liver Fp at
    least 0.08 above spleen Fp. Judge repeatability separately (``repeatability``, two halves of
    the series).

    Parameters
    ----------
    rows, lsq_rows : list of dict
        ``roi_medians`` rows of the fit and of least squares on the same series and voxels, each with
        ``liver`` and ``spleen``.

    Returns
    -------
    list of dict
        One per check: ``check``, ``value``, ``limit`` (text) and ``ok``.
    """
    by, lsq = ({r["roi"]: r for r in x} for x in (rows, lsq_rows))
    for organ in ("liver", "spleen"):
        if organ not in by or organ not in lsq:
            raise ValueError(f"check_scan needs liver and spleen rows for the fit and for least squares; got "
                             f"{list(by)} and {list(lsq)}.")
        for who, row in (("the fit", by[organ]), ("least squares", lsq[organ])):
            if not (np.isfinite(row["Dt"]) and np.isfinite(row["Fp"])):
                raise ValueError(f"{who} has no {organ} median (NaN): the {organ} ROI has no fitted voxel; check the "
                                 "mask and the ROI labels.")
        if not lsq[organ]["Dt"] > 0:
            raise ValueError(f"least squares' {organ} Dt median is {lsq[organ]['Dt']}: at its bound, it cannot be "
                             "compared with; look at its map (noise, mask) before judging another method by it.")
    out = []
    for organ in ("liver", "spleen"):
        tol = SCAN_CHECKS[f"Dt_{organ}_vs_lsq"]
        err = float(abs(by[organ]["Dt"] - lsq[organ]["Dt"]) / lsq[organ]["Dt"])
        out.append({"check": f"{organ} Dt vs least squares", "value": err, "limit": f"<= {tol:.0%}",
                    "ok": bool(err <= tol)})
    contrast = by["liver"]["Fp"] - by["spleen"]["Fp"]
    limit = SCAN_CHECKS["Fp_liver_minus_spleen"]
    out.append({"check": "liver Fp - spleen Fp", "value": contrast, "limit": f">= {limit}",
                "ok": bool(contrast >= limit)})
    return out


def check_agreement(rows):
    """Check ``roi_medians`` rows (with a reference) against ``AGREEMENT``: context on the shipped scans.

    Returns
    -------
    list of dict
        One per check: ``check``, ``value``, ``limit`` (text) and ``ok``.
    """
    by = {r["roi"]: r for r in rows}
    for organ in ("liver", "spleen"):
        if organ not in by or "ref_D" not in by[organ]:
            raise ValueError(f"check_agreement needs rows for liver and spleen with a reference; got {list(by)}.")
    liver, spleen = by["liver"], by["spleen"]
    out = []
    for organ, row in (("liver", liver), ("spleen", spleen)):
        tol = AGREEMENT[f"Dt_{organ}"]
        err = abs(row["Dt"] - row["ref_D"]) / row["ref_D"]
        out.append({"check": f"{organ} Dt vs reference D", "value": err, "limit": f"<= {tol:.0%}",
                    "ok": bool(err <= tol)})
    diff = abs(liver["Fp"] - liver["ref_f"])
    out.append({"check": "liver Fp vs reference f", "value": diff, "limit": f"<= {AGREEMENT['Fp_liver']}",
                "ok": bool(diff <= AGREEMENT["Fp_liver"])})
    contrast = liver["Fp"] - spleen["Fp"]
    out.append({"check": "liver Fp - spleen Fp", "value": contrast,
                "limit": f">= {AGREEMENT['Fp_liver_minus_spleen']}",
                "ok": bool(contrast >= AGREEMENT["Fp_liver_minus_spleen"])})
    return out


def markdown_table(rows, columns=None, *, digits=4) -> str:
    """Format a list of dicts as a Markdown table (floats to ``digits`` significant digits; missing: blank;
    a ``(mean, sd)`` pair, as ``pivot(..., spread=True)`` gives, as "mean ± sd")."""
    if not rows:
        raise ValueError("no rows to format")
    columns = list(columns or rows[0].keys())

    def fmt(v):
        if isinstance(v, tuple):
            return " ± ".join(fmt(x) for x in v)
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def pivot(rows, *, value, index="snr", column="method", where=None, spread=False):
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
    spread : bool
        Where a row also has ``<value>_sd`` (a network trained several times,
        see ``compare_over_snr``), the cell is the pair ``(mean, sd)``, which
        ``markdown_table`` prints as "mean ± sd".
    """
    kept = [r for r in rows if all(r.get(k) == v for k, v in (where or {}).items())]
    cols = list(dict.fromkeys(r[column] for r in kept))
    table = {}
    for r in kept:
        sd = r.get(f"{value}_sd") if spread else None
        table.setdefault(r[index], {index: r[index]})[r[column]] = r[value] if sd is None else (r[value], sd)
    return [{c: t.get(c, float("nan")) for c in [index, *cols]} for t in table.values()]
