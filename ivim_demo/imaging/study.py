"""A study on disk: the scans of a BIDS-like folder, their b-values and their grouping by acquisition.

``find_scans(root)`` lists ``sub-*/[ses-*/]dwi/*_dwi.nii.gz`` with their ``.bval`` and label images;
``group_scans`` groups them by their distinct b-values (one acquisition each). ``fit_cohort`` fits them.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import NamedTuple

import numpy as np

from .outputs import check_enough_b_values

__all__ = ["LABELS_GLOB", "StudyScan", "Acquisition", "find_scans", "read_b_values", "acquisition_id", "group_scans",
           "one_line"]

#: Label images looked for beside each DWI (the one named like the scan wins when there are several).
LABELS_GLOB = "*_dseg.nii*"
_DWI_SUFFIXES = ("_dwi.nii.gz", "_dwi.nii")
_LAYOUT = ("sub-*/dwi/*_dwi.nii.gz (or sub-*/ses-*/dwi/...; .nii also) with the matching *_dwi.bval "
           "beside each")

class StudyScan(NamedTuple):
    """One scan found by ``find_scans``.

    Attributes
    ----------
    scan_id : str
        The file name without ``_dwi.nii.gz``, e.g. ``sub-01_ses-1`` (prefixed with the subject and
        session when it does not start with them).
    subject : str
        ``sub-01``.
    session : str or None
        ``ses-1``, or None without a session folder.
    dwi : str
        The 4-D NIfTI.
    bval : str or None
        The matching ``*_dwi.bval``; None when there is none (the scan then fails).
    labels : str or None
        A label image beside the DWI (integer labels, 0 = none), for per-label medians.
    folder : str
        The scan's output folder relative to OUT: ``sub-01/ses-1/dwi/sub-01_ses-1``.
    """

    scan_id: str
    subject: str
    session: str | None
    dwi: str
    bval: str | None
    labels: str | None
    folder: str


class Acquisition(NamedTuple):
    """Scans that share their b-values (after direction averaging)."""

    acq_id: str
    b_values: np.ndarray
    scans: list


def find_scans(root, *, labels_glob=LABELS_GLOB) -> list:
    """Find the scans of a BIDS-like folder: ``sub-*/[ses-*/]dwi/*_dwi.nii[.gz]``.

    Parameters
    ----------
    root : str or os.PathLike
        The study folder.
    labels_glob : str or None
        Pattern of the label images looked for in each scan's folder (default ``LABELS_GLOB``); the one
        whose name starts like the scan's is taken, or the only one there. None: no labels.

    Returns
    -------
    list of StudyScan
        Sorted by path. A scan without its ``.bval`` is listed with ``bval=None`` (it fails alone).
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"cohort folder not found: {root!r}; give a folder holding {_LAYOUT}.")
    found = []
    for pattern in ("sub-*/dwi/*_dwi.nii*", "sub-*/ses-*/dwi/*_dwi.nii*"):
        found += glob.glob(os.path.join(glob.escape(root), pattern))
    scans, seen = [], {}
    for path in sorted(found):
        name = os.path.basename(path)
        suffix = next((s for s in _DWI_SUFFIXES if name.endswith(s)), None)
        if suffix is None or os.path.isdir(path):  # a broken link stays: it fails alone, with its reason
            continue
        stem, folder = name[: -len(suffix)], os.path.dirname(path)
        parts = os.path.relpath(folder, root).split(os.sep)
        subject, session = parts[0], (parts[1] if len(parts) == 3 else None)
        prefix = "_".join(p for p in (subject, session) if p)
        scan_id = stem if stem.startswith(subject) else f"{prefix}_{stem}"
        if scan_id in seen:
            raise ValueError(f"two scans are both named {scan_id!r} ({seen[scan_id]!r} and {path!r}); keep one "
                             "of them (e.g. not both .nii and .nii.gz).")
        seen[scan_id] = path
        bval = os.path.join(folder, f"{stem}_dwi.bval")
        labels = _labels_beside(folder, stem, labels_glob) if labels_glob else None
        scans.append(StudyScan(scan_id, subject, session, path, bval if os.path.isfile(bval) else None, labels,
                          os.path.join(*parts, scan_id)))
    if not scans:
        raise ValueError(f"no scans found in {root!r}; the expected layout is {_LAYOUT}.")
    return scans


def _labels_beside(folder, stem, pattern):
    candidates = sorted(p for p in glob.glob(os.path.join(glob.escape(folder), pattern))
                        if not p.endswith(_DWI_SUFFIXES) and os.path.isfile(p))
    own = [p for p in candidates if os.path.basename(p).startswith(stem + "_")]
    if len(own) == 1:
        return own[0]
    return candidates[0] if not own and len(candidates) == 1 else None


def read_b_values(bval_path) -> np.ndarray:
    """The distinct b-values (s/mm^2) ``load_dwi`` returns for a bvals file, without reading the image.

    Raises ``ValueError`` for a missing or unreadable file, b-values that ``check_b_values`` refuses
    once averaged (no b = 0, not finite, not in s/mm^2) and fewer than 5 distinct b-values.
    """
    import warnings

    from ..core.checks import check_b_values
    from .nifti import average_directions

    if bval_path is None:
        raise ValueError("no bvals file: put the scan's b-values in a *_dwi.bval file beside it.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty file, NaN b-values: said below
        try:
            bvals = np.loadtxt(os.fspath(bval_path), dtype=float, ndmin=1).ravel()
        except (ValueError, OSError) as err:
            raise ValueError(f"cannot read b-values from {os.fspath(bval_path)!r}: {err}") from None
        if bvals.size == 0:
            raise ValueError(f"{os.fspath(bval_path)!r} holds no b-values; write one b-value (s/mm^2) per volume.")
        b = average_directions(np.ones((1, bvals.size), np.float32), bvals)[1]  # the grouping of load_dwi
    check_enough_b_values(b)
    return check_b_values(b)


def acquisition_id(b_values) -> str:
    """``acq-`` and 8 hex digits of the sha256 of the b-values (to 1e-6 s/mm^2)."""
    text = json.dumps([round(float(b), 6) for b in b_values])
    return "acq-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def group_scans(scans) -> tuple:
    """Group scans by acquisition: the distinct b-values of their bvals files (see ``read_b_values``).

    Returns
    -------
    acquisitions : list of Acquisition
        Sorted by ``acq_id``.
    failed : dict of str -> str
        ``scan_id`` -> reason, for scans whose image is missing (a broken link) or whose bvals file is
        missing or refused.
    """
    groups, failed = {}, {}
    for scan in scans:
        if not os.path.isfile(scan.dwi):
            failed[scan.scan_id] = (f"the image {scan.dwi!r} cannot be opened (a broken link?); restore it or "
                                    "remove the scan from the study.")
            continue
        try:
            b = read_b_values(scan.bval)
        except ValueError as err:
            failed[scan.scan_id] = one_line(err)
            continue
        acq = acquisition_id(b)
        groups.setdefault(acq, Acquisition(acq, b, []))[2].append(scan)
    return [groups[k] for k in sorted(groups)], failed

def one_line(err) -> str:
    """An error message on one line (for a table cell or a log line)."""
    return " ".join(str(err).split())
