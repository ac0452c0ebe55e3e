"""Figures for the notebooks, and the one helper that writes them to disk."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from ..core.metrics import PARAMS
from ..core.signal_model import IVIMParams, ivim

__all__ = [
    "MAP_LIMITS",
    "SCAN_LIMITS",
    "UNITS",
    "AXIS_UNITS",
    "save_figure",
    "plot_signal_examples",
    "plot_parameter_distributions",
    "plot_loss",
    "plot_b_images",
    "METHOD_STYLES",
    "method_style",
    "plot_maps",
    "plot_estimate_vs_truth",
    "plot_metric_vs_snr",
    "plot_images",
    "plot_ablation",
    "plot_cohort_rois",
]

#: Display range per parameter: the seed's colour limits.
MAP_LIMITS = {"Dp": (0.01, 0.07), "Dt": (0.0, 0.002), "Fp": (0.0, 0.4)}
#: Display range for real scans: the fits' bounds (FIT_BOUNDS), with Dt to 0.003 mm^2/s (free water
#: at body temperature), so abdominal tissue is not saturated as with the seed's narrow limits.
SCAN_LIMITS = {"Dp": (0.0, 0.2), "Dt": (0.0, 0.003), "Fp": (0.0, 0.7)}
#: Units per parameter, for labels.
UNITS = {"Dp": "mm²/s", "Dt": "mm²/s", "Fp": "fraction", "S0": "a.u."}
#: Axis scale and unit per parameter on plot axes: diffusivities in 10⁻³ mm²/s, so tick labels stay short.
AXIS_UNITS = {"Dp": (1e3, "10⁻³ mm²/s"), "Dt": (1e3, "10⁻³ mm²/s"), "Fp": (1.0, "fraction")}


def _show(ax, image, **kwargs):
    """Draw a 2-D image ``[x, y]`` as NIfTI viewers do: x to the right, y up. Every image of the
    collection goes through here, so masks, maps and DWIs of one scan are never turned differently."""
    return ax.imshow(np.asarray(image, float).T, origin="lower", **kwargs)


def save_figure(fig, name: str, folder="figures", *, dpi: int = 110) -> str:
    """Write ``fig`` as ``folder/NAME.png`` (folder created) and return the path.

    Every figure of the collection goes through here, so a run's figures land
    in one folder: ``figures/`` for ``make demo``, a temporary one in tests.
    The figure stays open so the notebook still displays it.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.fspath(folder), f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def plot_signal_examples(b_values, params: IVIMParams, noisy, *, n: int = 4):
    """Noise-free IVIM curves and their noisy samples for the first ``n`` voxels."""
    b = np.asarray(b_values, float)
    fine = np.linspace(0, b.max(), 400)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i in range(min(n, len(noisy))):
        p = [np.asarray(v)[i] for v in params]
        line = ax.plot(fine, ivim(fine, *p), lw=1.5,
                       label=f"Dp={p[0]:.3f}, Dt={p[1] * 1e3:.2f}e-3, Fp={p[2]:.2f}")[0]
        ax.plot(b, noisy[i], "o", color=line.get_color(), ms=5)
    ax.set(xlabel="b (s/mm²)", ylabel="S(b) / S0", yscale="log",
           title="Training signals: noise-free curves (lines) and Rician-noisy samples (dots)")
    ax.legend(fontsize=8, title="Dp, Dt in mm²/s", title_fontsize=8)
    return fig


def plot_parameter_distributions(params: IVIMParams, *, bins: int = 50):
    """Histograms of Dp, Dt, Fp (e.g. of a training set)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, name in zip(axes, PARAMS):
        scale, unit = AXIS_UNITS[name]
        ax.hist(np.ravel(getattr(params, name)) * scale, bins=bins, color="tab:blue", alpha=0.8)
        ax.set(xlabel=f"{name} ({unit})", ylabel="voxels", title=f"{name} distribution")
    fig.suptitle("Training parameters, drawn uniformly from the box")
    fig.tight_layout()
    return fig


def plot_loss(history, *, title="IVIM-NET training loss"):
    """Loss per epoch (log scale) with the restored best epoch marked."""
    h = history if isinstance(history, dict) else history.as_dict()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(h["loss"], "o-", ms=3, label="training loss (sum over batches)")
    if h.get("val_loss"):
        ax2 = ax.twinx()
        ax2.plot(h["val_loss"], "s-", ms=3, color="tab:orange", label="validation loss (mean)")
        ax2.set_ylabel("validation MSE")
        ax2.set_yscale("log")
        ax2.legend(loc="upper center")
    best = h["best_epoch"]
    ax.axvline(best, color="tab:red", ls="--", label=f"best epoch {best} (weights restored)")
    ax.set(xlabel="epoch", ylabel="summed MSE", yscale="log", title=title)
    ax.legend(loc="upper right")
    return fig


def plot_b_images(dwi, b_values, *, clim=None, ncols: int = 4):
    """One image per b-value (the seed's 2 x 4 grid), in signal units.

    ``clim`` (signal units) defaults to 0 to the largest finite signal, so no region is clipped at b = 0
    (the seed's fixed 1600 clipped its brightest region there and hid its early drop).
    """
    b = np.asarray(b_values)
    if clim is None:
        d = np.asarray(dwi, dtype=float)
        clim = (0.0, float(np.nanmax(np.where(np.isfinite(d), d, np.nan))))
    nrows = int(np.ceil(len(b) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.3 * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if k >= len(b):
            ax.axis("off")
            continue
        im = _show(ax, dwi[..., k], cmap="gray", clim=clim)
        ax.set_title(f"b = {b[k]:g} s/mm²")
    fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02, label="signal (a.u.)")
    fig.suptitle("Simulated diffusion-weighted images")
    return fig


def plot_maps(rows: dict, *, limits=None, title=None, row_limits=None, truth=None):
    """Parameter maps: one row per estimator (or truth), columns Dp, Dt, Fp.

    Parameters
    ----------
    rows : dict of str -> IVIMParams
        e.g. ``{"IVIM-NET": estimates, "ground truth": truth}``; each map 2-D.
    limits : dict, optional
        Colour limits per parameter; default ``MAP_LIMITS`` (the seed's).
    row_limits : dict of str -> dict, optional
        Colour limits per parameter for some rows (by label) instead of
        ``limits``, e.g. for a row of posterior SDs.
    truth : IVIMParams, optional
        The true maps: every other row's panel titles then give that map's
        NRMSE against it (RMSE / mean truth, over all voxels), since a map
        that looks smooth is not thereby accurate.
    """
    limits = MAP_LIMITS if limits is None else limits
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, 3.4 * len(rows)), squeeze=False)
    for r, (label, params) in enumerate(rows.items()):
        for c, name in enumerate(PARAMS):
            ax = axes[r, c]
            clim = (row_limits or {}).get(label, limits)[name]
            im = _show(ax, getattr(params, name), cmap="gray", clim=clim)
            score = ""
            if truth is not None and params is not truth:
                true = np.asarray(getattr(truth, name), float)
                error = np.sqrt(np.nanmean((np.asarray(getattr(params, name), float) - true) ** 2)) / np.mean(true)
                score = f" (NRMSE {error:.3f})"
            ax.set_title(f"{name}, {label}{score}")
            ax.set_xticks([]), ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=UNITS[name])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_estimate_vs_truth(estimates: dict, truth: IVIMParams, *, limits=None, title=None):
    """Density scatter (2-D histogram) of estimate vs truth, one row per estimator.

    Estimates outside ``limits`` are drawn on the edge of the panel; how many
    there are is given in each panel's title. Colour: voxels per bin.
    """
    limits = MAP_LIMITS if limits is None else limits
    fig, axes = plt.subplots(len(estimates), 3, figsize=(12, 3.4 * len(estimates)), squeeze=False)
    for r, (label, est) in enumerate(estimates.items()):
        for c, name in enumerate(PARAMS):
            ax = axes[r, c]
            scale, unit = AXIS_UNITS[name]
            t, e = np.ravel(getattr(truth, name)) * scale, np.ravel(getattr(est, name)) * scale
            lo, hi = (v * scale for v in limits[name])
            outside = float(np.mean((e < lo) | (e > hi) | ~np.isfinite(e)))
            *_, image = ax.hist2d(t, np.clip(e, lo, hi), bins=60, range=[[lo, hi], [lo, hi]], cmap="viridis",
                                  cmin=1)
            fig.colorbar(image, ax=ax, label="voxels per bin", pad=0.02)
            ax.plot([lo, hi], [lo, hi], "r--", lw=1)
            ax.set(xlabel=f"true {name} ({unit})", ylabel=f"estimated {name} ({unit})",
                   title=f"{name}, {label}" + (f"\n{outside:.0%} outside the axes, drawn on the edge" if outside else ""))
            ax.title.set_fontsize(9)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.96) if title else None)
    return fig


#: One colour and marker per method in every figure (by its label, ``methods.REGISTRY``; "IVIM-NET_orig" is
#: the seed's network, "IVIM-NET").
METHOD_STYLES = {
    "IVIM-NET": ("tab:blue", "o"), "IVIM-NET_orig": ("tab:blue", "o"), "IVIM-NET_optim": ("tab:purple", "D"),
    "supervised": ("tab:green", "s"), "LSQ": ("tab:orange", "^"), "segmented": ("tab:brown", "v"),
    "Bayes": ("tab:red", "x"), "pretrained": ("tab:cyan", "P"),
    # Barbieri et al.'s comparison (notebook 05): the exact posterior is Bayes; their MAP Bayes its own
    "exact posterior (true prior)": ("tab:red", "x"), "BP (theirs: MAP, empirical prior)": ("tab:pink", "*"),
}


_OTHER_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                  "tab:olive", "tab:cyan", "tab:gray")
_OTHER_MARKERS = "osD^vxP*<>"


def method_style(name, *, others=()):
    """(colour, marker) of a method's label in every figure (``METHOD_STYLES``).

    A label not there (a protocol, a setting) gets the k-th of ten distinct colours and markers, k its place
    in ``others`` (the figure's other labels, in order), so the lines of one figure stay apart.
    """
    if name in METHOD_STYLES:
        return METHOD_STYLES[name]
    k = list(others).index(name) if name in others else 0
    return _OTHER_COLOURS[k % len(_OTHER_COLOURS)], _OTHER_MARKERS[k % len(_OTHER_MARKERS)]


def _snr_labels(snrs, *, min_ratio=1.25):
    """The SNRs to label on a log axis: from the lowest up, each at least ``min_ratio`` above the last one
    labelled, and the highest always (its label replaces a too-close neighbour's)."""
    keep = [snrs[0]]
    for s in snrs[1:]:
        if s / keep[-1] >= min_ratio:
            keep.append(s)
    if keep[-1] != snrs[-1]:
        keep[-1] = snrs[-1]
    return keep


def plot_metric_vs_snr(rows, *, metric="nrmse", ylabel="NRMSE (RMSE / mean truth)", title=None):
    """One panel per parameter: ``metric`` against SNR, one line per method (``METHOD_STYLES``).

    Parameters
    ----------
    rows : list of dict
        Rows with ``snr``, ``method``, ``param`` and ``metric`` (see ``compare.score``);
        a method whose rows have ``<metric>_sd`` (several trainings) gets error bars of one SD.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    methods = list(dict.fromkeys(r["method"] for r in rows))
    others = [m for m in methods if m not in METHOD_STYLES]
    snrs = sorted({r["snr"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), sharex=True)
    for ax, name in zip(axes, PARAMS):
        for method in methods:
            mine = sorted((r for r in rows if r["method"] == method and r["param"] == name), key=lambda r: r["snr"])
            x, y = [r["snr"] for r in mine], [r[metric] for r in mine]
            colour, marker = method_style(method, others=others)
            style = {"color": colour, "marker": marker, "ms": 6, "mfc": "none", "alpha": 0.9}
            if f"{metric}_sd" in mine[0]:  # trained several times: mean and SD over the trainings
                ax.errorbar(x, y, yerr=[r[f"{metric}_sd"] for r in mine], capsize=3, **style,
                            label=f"{method} (mean ± SD, {mine[0]['trainings']} trainings)")
            else:
                ax.plot(x, y, "-", **style, label=method)
        ax.set(xscale="log", xlabel="SNR at b = 0", ylabel=ylabel, title=name)
        ax.xaxis.set_major_locator(FixedLocator(snrs))  # the SNRs simulated, not only 10 and 100
        labelled = _snr_labels(snrs)  # close SNRs (10, 11.1, 12.5, ...) would print over each other
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}" if min(
            abs(v / s - 1) for s in labelled) < 1e-9 else ""))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False)
    fig.suptitle(title or f"{metric} vs SNR")
    fig.tight_layout(rect=(0, 0.1 if len(labels) <= 4 else 0.16, 1, 1))
    return fig


def plot_images(images: dict, *, cmap="gray", clim=None, title=None, units=None, names=None):
    """Show 2-D images side by side (e.g. a b=0 slice, its masks and ROIs), each read as what it holds.

    Parameters
    ----------
    images : dict
        Title -> 2-D array. Boolean images (masks) are drawn black (out) and white (in), without a colour
        bar; the others with one colour bar each.
    cmap, clim : optional
        Colour map and limits of the non-boolean images without ``names``.
    title : str, optional
    units : dict, optional
        Title -> the colour bar's label (e.g. ``{"S(b=0)": "signal (a.u.)"}``).
    names : dict, optional
        Title -> ``{label: name}`` for images of integer labels (e.g. ROIs): one colour per label (label 0
        light grey), the colour bar ticks named.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap

    units, names = units or {}, names or {}
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4), squeeze=False)
    for ax, (label, image) in zip(axes[0], images.items()):
        image = np.asarray(image)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(label)
        if image.dtype == bool:
            _show(ax, image.astype(float), cmap="gray", clim=(0, 1))
            ax.set_xlabel(f"white: in ({int(image.sum()):,} voxels)")
            continue
        if label in names:
            keys = sorted(names[label])
            palette = plt.get_cmap("tab10")(np.arange(len(keys)) % 10)
            palette[[k == 0 for k in keys]] = (0.92, 0.92, 0.92, 1.0)  # label 0 (none) recedes
            colours = ListedColormap(palette)
            edges = np.r_[np.asarray(keys, float) - 0.5, keys[-1] + 0.5]
            im = _show(ax, image, cmap=colours, norm=BoundaryNorm(edges, len(keys)), interpolation="nearest")
            bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, ticks=keys)
            bar.ax.set_yticklabels([names[label][k] for k in keys])
            continue
        im = _show(ax, image, cmap=cmap, clim=clim)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=units.get(label, ""))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_ablation(rows, *, title=None):
    """NRMSE per parameter for each step of an ablation (bars), in the order of the rows; with several
    trainings per step the bars are means with one SD over the trainings as error bars."""
    steps = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.45 * len(steps) + 2), sharey=True)
    for ax, name in zip(axes, PARAMS):
        mine = [next(r for r in rows if r["method"] == s and r["param"] == name) for s in steps]
        ax.barh(range(len(steps)), [r["nrmse"] for r in mine], color="tab:blue",
                xerr=[r.get("nrmse_sd", 0.0) for r in mine], capsize=3)
        ax.set(xlabel="NRMSE", title=name)
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(steps)), steps)
    fig.suptitle(title or "Ablation")
    fig.tight_layout()
    return fig


def _number(value):
    """A cohort row's cell as a float: NaN when missing (None, or "" in a row read back from cohort.csv)."""
    return np.nan if value is None or value == "" else float(value)


#: ``plot_cohort_rois`` labels ROI medians of fewer voxels than this with their count.
FEW_ROI_VOXELS = 10


def plot_cohort_rois(rows, labels: dict, *, reference=None, params=("Dt", "Fp"), title=None):
    """ROI medians across the scans of a cohort, one panel per parameter.

    Parameters
    ----------
    rows : list of dict
        ``cohort.csv`` rows (``fit_cohort``'s return): ``scan`` and ``label<k>_<param>`` columns.
    labels : dict of int -> str
        ROI label -> name, e.g. ``{2: "liver", 4: "spleen"}``.
    reference : dict of str -> dict, optional
        Scan -> the same columns from a reference (e.g. ``reference_roi_medians``), drawn as open markers.
    params : tuple of str
        Parameters to show (Dt in 10⁻³ mm²/s, Fp as a fraction).

    A median of fewer than ``FEW_ROI_VOXELS`` voxels (``label<k>_voxels``) is
    labelled with its count: it is a voxel's estimate, not an organ's.
    """
    fitted = [r for r in rows if r.get("status") in ("fitted", "skipped")]
    x = np.arange(len(fitted))
    fig, axes = plt.subplots(1, len(params), figsize=(5.5 * len(params), 3.8), squeeze=False)
    for ax, p in zip(axes[0], params):
        scale, unit = AXIS_UNITS[p]
        for i, (k, name) in enumerate(labels.items()):
            colour = f"C{i}"
            at = x + 0.08 * (i - (len(labels) - 1) / 2)  # side by side; scans are not a sequence: no lines
            values = [_number(r.get(f"label{k}_{p}")) * scale for r in fitted]
            ax.plot(at, values, "o", color=colour, label=f"{name}, this fit")
            for xi, value, r in zip(at, values, fitted):
                n = _number(r.get(f"label{k}_voxels"))
                if n < FEW_ROI_VOXELS and np.isfinite(value):
                    ax.annotate(f"n = {int(n)}", (xi, value), xytext=(4, 4), textcoords="offset points",
                                fontsize=8, color=colour)
            if reference is not None:
                ref = [float(reference.get(r["scan"], {}).get(f"label{k}_{p}", np.nan)) * scale for r in fitted]
                ax.plot(at, ref, "o", mfc="none", color=colour, ms=10, label=f"{name}, reference")
        ax.margins(y=0.1)  # room for the voxel counts
        ax.set(xticks=x, ylabel=f"{p} ({unit})", title=f"{p}: ROI medians per scan")
        ax.set_xticklabels([r["scan"] for r in fitted], rotation=30, ha="right")
    axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_calibration(rows, *, n=None, title=None):
    """Coverage of credible intervals against their nominal level, one panel per parameter.

    Parameters
    ----------
    rows : list of dict
        ``{"snr", "method", "param", "level", "coverage"}`` (``posterior_limits``' second result). A
        method with several levels is drawn as lines (one per SNR), one with a single level as markers.
        Points on the diagonal: intervals that hold the truth as often as they claim; below it:
        overconfident, above: too wide.
    n : int, optional
        Voxels behind each coverage. With it, a grey band around the diagonal shows where
        calibrated intervals fall 95 % of the time by chance alone: level ± 1.96 sqrt(level (1 -
        level) / n) (binomial). Only a point outside the band is evidence of miscalibration.
    """
    snrs = sorted({r["snr"] for r in rows})
    colours = dict(zip(snrs, plt.cm.viridis(np.linspace(0, 0.9, len(snrs)))))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    markers = dict(zip(methods, ["o", "s", "^", "D"]))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    for ax, name in zip(axes, PARAMS):
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        if n is not None:
            level = np.linspace(0.0, 1.0, 201)
            half = 1.96 * np.sqrt(level * (1 - level) / n)
            ax.fill_between(level, level - half, level + half, color="0.85", zorder=0,
                            label=f"calibrated ± chance ({n:,} voxels, 95 %)")
        for method in methods:
            for snr in snrs:
                mine = sorted((r["level"], r["coverage"]) for r in rows
                              if r["method"] == method and r["snr"] == snr and r["param"] == name)
                if not mine:
                    continue
                style = "-" if len(mine) > 1 else "none"
                ax.plot(*zip(*mine), marker=markers[method], linestyle=style, color=colours[snr],
                        mfc=colours[snr] if method == methods[0] else "none", label=f"{method}, SNR {snr:g}")
        ax.set(xlim=(0.4, 1.0), ylim=(0.4, 1.0), xlabel="nominal level of the interval",
               title=f"{name}: share of truths inside")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("coverage (held-out voxels)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title or "Calibration of credible intervals")
    fig.tight_layout()
    return fig
