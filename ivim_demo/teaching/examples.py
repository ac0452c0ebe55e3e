"""Real IVIM scans shipped with the package: abdominal volunteers and a flow phantom.

The data are one axial slice per scan from Wetscherek A, Stieltjes B, Laun FB,
"Flow-compensated intravoxel incoherent motion diffusion imaging", Magn Reson
Med 2015;74:410-419 (BSD licence, see ``data/wetscherek/LICENSE.txt``),
reduced to the conventional IVIM acquisition: bipolar gradients at one
diffusion time (100 ms), b = 0-500 s/mm^2, 6 directions per b > 0.
``data/wetscherek/README.md`` says how they were converted
(``tools/convert_wetscherek.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..imaging.nifti import average_directions, load_dwi

__all__ = ["EXAMPLES", "CITATION", "REFERENCE_MAPS", "Example", "load_example", "phantom_example",
           "write_example_study", "reference_roi_medians"]

_FOLDER = Path(__file__).resolve().parents[1] / "data" / "wetscherek"

#: Names ``load_example`` accepts.
EXAMPLES = ("volunteer1", "volunteer2", "volunteer3", "phantom_flow", "phantom_static")

#: Where the data come from; cite it when you use them.
CITATION = (
    "Wetscherek A, Stieltjes B, Laun FB. Flow-compensated intravoxel incoherent motion "
    "diffusion imaging. Magn Reson Med 2015;74:410-419."
)

_VOLUNTEER_ROIS = {1: "pancreas", 2: "liver", 3: "kidney", 4: "spleen"}
_PHANTOM_ROIS = {1: "bottle", 2: "pipe"}

#: Volumes of ``NAME_reference.nii.gz`` in order (D, Dstar, Dhighb in mm^2/s; f, fhighb fractions).
REFERENCE_MAPS = ("D", "f", "Dstar", "Dhighb", "fhighb")


class Example(NamedTuple):
    """One shipped scan, ready to fit.

    Attributes
    ----------
    dwi : numpy.ndarray
        ``(x, y, z, n_b)`` float32 signal (scanner units): the 6 directions of
        each b > 0 geometric-averaged (trace-weighted) and the b = 0 images
        averaged, b = 0 first. ``z`` is 1 (a single slice).
    b_values : numpy.ndarray
        The ``n_b`` distinct b-values in s/mm^2, increasing from 0.
    affine : numpy.ndarray
        4 x 4 voxel-to-world affine: the identity, as the voxel size was not
        recorded in the source data.
    mask : numpy.ndarray
        ``(x, y, z)`` bool: the authors' body mask (the whole image for the phantoms).
    rois : numpy.ndarray
        ``(x, y, z)`` int labels, 0 outside every ROI.
    roi_names : dict of int -> str
        Label -> organ (``pancreas``, ``liver``, ``kidney``, ``spleen``) or, for
        the phantoms, ``bottle`` (static water) and ``pipe``.
    reference : dict of str -> numpy.ndarray or None
        The authors' maps, each ``(x, y, z)`` float32 and 0 outside ``mask``:
        ``D`` (mm^2/s) and ``f`` (fraction) of their IVIM model with a blood
        velocity v and correlation time tau (their fit, presumably of all 300
        images, both gradient profiles), ``Dstar`` (mm^2/s, their v^2 tau / 6:
        not a bi-exponential Dp), and ``Dhighb`` (mm^2/s) and ``fhighb``
        (fraction) of their high-b prefit. A reference, not ground truth.
        None for the phantoms.
    paths : dict of str -> str
        ``dwi``, ``bvals``, ``mask``, ``rois`` (and ``reference``) files, e.g. for
        ``python -m ivim_demo fit PATHS['dwi'] --bvals PATHS['bvals'] --mask PATHS['mask']``.
    """

    dwi: np.ndarray
    b_values: np.ndarray
    affine: np.ndarray
    mask: np.ndarray
    rois: np.ndarray
    roi_names: dict
    reference: dict | None
    paths: dict


def _read(path):
    import nibabel

    return np.asarray(nibabel.load(path).dataobj)


def load_example(name, *, average="geometric", half=None) -> Example:
    """Load a shipped real scan: a volunteer's upper abdomen or the flow phantom.

    Parameters
    ----------
    name : str
        One of ``EXAMPLES``: ``volunteer1``-``volunteer3`` (upper abdomen,
        ROIs in pancreas, liver, kidney, spleen), ``phantom_flow`` (water
        flowing at ~0.9 cm/s in a 1 cm pipe next to a static bottle) or
        ``phantom_static`` (the same, water not flowing).
    average : {"geometric", "arithmetic"}
        How the diffusion directions of a b-value are averaged (see ``load_dwi``).
    half : {None, 1, 2}
        One half of the series (``split_halves``: directions 1-3 or 4-6 of
        each b > 0, every other b = 0 image), for repeatability; default the
        whole series.

    Returns
    -------
    Example
        ``dwi`` (x, y, 1, 9) float32 for b = 0, 10, 25, 50, 100, 200, 300,
        400, 500 s/mm^2, ``b_values``, ``affine``, ``mask``, ``rois``,
        ``roi_names``, ``reference`` (authors' maps, mm^2/s and fractions;
        None for phantoms) and ``paths`` to the NIfTI/bval files.

    Raises
    ------
    ValueError
        If ``name`` is not one of ``EXAMPLES``.
    """
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}.")
    paths = {
        "dwi": _FOLDER / f"{name}_dwi.nii.gz",
        "bvals": _FOLDER / f"{name}_dwi.bval",
        "mask": _FOLDER / f"{name}_mask.nii.gz",
        "rois": _FOLDER / f"{name}_rois.nii.gz",
    }
    volunteer = name.startswith("volunteer")
    if volunteer:
        paths["reference"] = _FOLDER / f"{name}_reference.nii.gz"
    dwi, b_values, affine = load_dwi(paths["dwi"], paths["bvals"], average=average, half=half)
    reference = None
    if volunteer:
        maps = _read(paths["reference"]).astype(np.float32)
        reference = {key: maps[..., k] for k, key in enumerate(REFERENCE_MAPS)}
    return Example(
        dwi=dwi,
        b_values=b_values,
        affine=affine,
        mask=_read(paths["mask"]) > 0,
        rois=_read(paths["rois"]).astype(int),
        roi_names=dict(_VOLUNTEER_ROIS if volunteer else _PHANTOM_ROIS),
        reference=reference,
        paths={key: str(path) for key, path in paths.items()},
    )


def phantom_example(*, shape=(64, 64, 4), snr=50.0, directions=3, seed=0) -> Example:
    """The anatomical digital phantom as an ``Example``: a scan whose answer is known.

    ``anatomical_phantom`` with ``directions`` noisy volumes per b > 0,
    averaged as ``load_example`` averages a real scan's directions. Its
    ``reference`` is the truth (``D`` = true Dt, ``f`` = true Fp, ``Dp``), so
    the same code checks a fit of the phantom and of a volunteer.

    Parameters
    ----------
    shape : tuple of 3 int
    snr : float
        SNR of liver at b = 0 (per volume).
    directions : int
    seed : int

    Returns
    -------
    Example
        ``rois`` are the tissue labels (``roi_names`` from ``TISSUES``,
        background left out), ``mask`` is the body, ``paths`` is empty.
    """
    from ..simulation.anatomy import TISSUES, anatomical_phantom

    ph = anatomical_phantom(tuple(shape), snr=snr, directions=directions, seed=seed)
    dwi, b_values = average_directions(ph.dwi, ph.b_values)
    return Example(
        dwi=dwi,
        b_values=b_values,
        affine=np.eye(4),
        mask=ph.labels > 0,
        rois=ph.labels.astype(int),
        roi_names={label: name for label, (name, _) in TISSUES.items() if label > 0},
        reference={"D": ph.truth.Dt, "f": ph.truth.Fp, "Dp": ph.truth.Dp},
        paths={},
    )


def write_example_study(folder, *, names=("volunteer1", "volunteer2", "volunteer3")) -> dict:
    """Lay out shipped scans as a BIDS-like study, as ``fit_cohort`` reads one.

    Each scan becomes a subject: ``FOLDER/sub-01/dwi/sub-01_dwi.nii.gz`` with ``sub-01_dwi.bval`` and its
    ROI labels as ``sub-01_dseg.nii.gz`` (the files are copied unchanged).

    Parameters
    ----------
    folder : str or os.PathLike
        The study folder (created; existing subject folders of the same names are overwritten).
    names : sequence of str
        Shipped scans (``EXAMPLES``), in subject order.

    Returns
    -------
    dict
        Subject label (``"sub-01"``) -> example name.

    Raises
    ------
    ValueError
        If a name is not one of ``EXAMPLES``, or no name is given.
    """
    import shutil

    names = list(names)
    if not names or any(n not in EXAMPLES for n in names):
        raise ValueError(f"names must be shipped examples ({', '.join(EXAMPLES)}); got {names!r}.")
    subjects = {}
    for k, name in enumerate(names, start=1):
        subject = f"sub-{k:02d}"
        dwi = Path(folder) / subject / "dwi"
        dwi.mkdir(parents=True, exist_ok=True)
        for source, suffix in (("dwi.nii.gz", "dwi.nii.gz"), ("dwi.bval", "dwi.bval"), ("rois.nii.gz", "dseg.nii.gz")):
            shutil.copyfile(_FOLDER / f"{name}_{source}", dwi / f"{subject}_{suffix}")
        subjects[subject] = name
    return subjects


def reference_roi_medians(name) -> dict:
    """The authors' D and f of a shipped volunteer, as ROI medians named like ``cohort.csv``'s columns.

    Parameters
    ----------
    name : str
        ``volunteer1``-``volunteer3``.

    Returns
    -------
    dict
        ``{"label2_Dt": median D of ROI 2 (mm^2/s), "label2_Fp": median f, ...}`` for every ROI
        (1 pancreas, 2 liver, 3 kidney, 4 spleen), over the ROI's voxels inside the body mask.
    """
    if not str(name).startswith("volunteer") or name not in EXAMPLES:
        raise ValueError(f"reference maps exist for volunteer1-volunteer3 only, not {name!r}.")
    ex = load_example(name)
    out = {}
    for k in _VOLUNTEER_ROIS:
        inside = (ex.rois == k) & ex.mask
        out[f"label{k}_Dt"] = float(np.median(ex.reference["D"][inside]))
        out[f"label{k}_Fp"] = float(np.median(ex.reference["f"][inside]))
    return out
