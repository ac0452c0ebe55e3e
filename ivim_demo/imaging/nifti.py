"""Your own data: FSL-style NIfTI + bvals in, parameter maps out."""
from __future__ import annotations

import os

import numpy as np

from typing import NamedTuple

from ..core.checks import check_b_units, check_noise
from ..core.signal_model import IVIMParams
from .halves import HALVES, split_halves

__all__ = ["NEGATIVE_SHARE", "Scan", "read_scan", "noise_of", "load_dwi", "load_mask", "average_directions", "save_maps",
           "save_dwi"]


def _nib():
    import nibabel

    return nibabel


class Scan(NamedTuple):
    """A DWI series as ``read_scan`` reads it."""

    dwi: np.ndarray  #: ``(x, y, z, n_b)`` float32, directions averaged, b-values increasing
    b_values: np.ndarray  #: the distinct b-values (s/mm^2), starting at 0
    affine: np.ndarray  #: the 4 x 4 voxel-to-world affine
    noise: str  #: "rician" (magnitude image) or "gaussian" (real-valued)
    noise_why: str  #: how the noise was decided ("given", or the evidence in the image)
    average: str  #: how directions were averaged


#: ``noise_of`` takes an image for real-valued when at least this share of its samples is negative (Gaussian
#: noise makes about half of the background's samples negative); a few negative samples in a magnitude image
#: are damage, and their voxels are excluded.
NEGATIVE_SHARE = 1e-3


def noise_of(dwi) -> tuple[str, str]:
    """Tell from an image whether its noise is Rician (a magnitude image) or Gaussian (real-valued).

    A magnitude image has no negative sample; a real-valued or phase-corrected
    one has them wherever the signal is within a few noise SDs of 0 (about
    half of the background's samples). At least ``NEGATIVE_SHARE`` of the
    samples negative: Gaussian; fewer: a magnitude image with damaged samples.

    Parameters
    ----------
    dwi : array_like
        Signals of any shape (NaN/inf samples are ignored).

    Returns
    -------
    noise : {"rician", "gaussian"}
    why : str
        The evidence, for summary.json (e.g. ``"1,204 negative samples (2.1 %): a real-valued image"``).
    """
    d = np.asarray(dwi)
    with np.errstate(invalid="ignore"):
        negative = int(np.count_nonzero(d < 0))  # NaN < 0 is False
        finite = int(np.count_nonzero(np.isfinite(d))) if d.dtype.kind == "f" else d.size
    share = negative / max(finite, 1)
    if negative and share >= NEGATIVE_SHARE:
        return "gaussian", f"{negative:,} negative samples ({share:.1%}): a real-valued image"
    if negative:
        return "rician", (f"{negative:,} negative sample(s) ({share:.2%}), too few for a real-valued image: a "
                          "magnitude image, their voxels excluded")
    return "rician", "no negative sample: a magnitude image"


def load_dwi(nifti_path, bvals_path, *, average="geometric", half=None):
    """Read a 4-D diffusion-weighted NIfTI and its FSL ``bvals`` file.

    Volumes with the same b-value (to the whole s/mm^2), e.g. several
    diffusion directions, are averaged into one volume per b-value, sorted
    by b with b = 0 first. The geometric mean of directions is the
    trace-weighted image (:math:`S_0 e^{-b\\,\\mathrm{tr}(D)/3}` for a
    diffusion tensor); ``average="arithmetic"`` gives the mean DWI instead.
    A magnitude image is assumed: negative samples make their voxel NaN at
    that b-value (``read_scan`` reads real-valued images too).

    Parameters
    ----------
    nifti_path : str or os.PathLike
        4-D image ``(x, y, z, volumes)``.
    bvals_path : str or os.PathLike
        Text file of one b-value (s/mm^2) per volume, whitespace separated.
    average : {"geometric", "arithmetic"}
    half : {None, 1, 2}
        One half of the repeated images only (see ``read_scan``).

    Returns
    -------
    dwi : numpy.ndarray
        ``(x, y, z, n_b)`` float32.
    b_values : numpy.ndarray
        The distinct b-values, increasing, starting at 0.
    affine : numpy.ndarray
        The image's 4 x 4 voxel-to-world affine.
    """
    if average not in ("geometric", "arithmetic"):
        raise ValueError(f"average must be 'geometric' or 'arithmetic', got {average!r}.")
    scan = read_scan(nifti_path, bvals_path, average=average, noise="rician", half=half)
    return scan.dwi, scan.b_values, scan.affine


def read_scan(nifti_path, bvals_path, *, average=None, noise="auto", half=None) -> Scan:
    """Read a 4-D diffusion-weighted NIfTI and its FSL ``bvals`` file, magnitude or real-valued.

    As ``load_dwi``, and the noise decided: ``noise="auto"`` tells a
    real-valued image (at least ``NEGATIVE_SHARE`` of its samples negative:
    Gaussian noise) from a magnitude one (``noise_of``). Real-valued images keep their negative samples and
    are averaged arithmetically (the geometric mean is undefined for them).

    Parameters
    ----------
    nifti_path : str or os.PathLike
        4-D image ``(x, y, z, volumes)``.
    bvals_path : str or os.PathLike
        Text file of one b-value (s/mm^2) per volume.
    average : {"geometric", "arithmetic"}, optional
        Default: geometric for a magnitude image, arithmetic for a real-valued one.
    noise : {"auto", "rician", "gaussian"}
    half : {None, 1, 2}
        Read one half of the series' repeated images (``split_halves``): two
        independent measurements of the same voxels, to judge a method by
        its repeatability. Default: every volume.

    Returns
    -------
    Scan
    """
    if noise != "auto":
        check_noise(noise)
    if half is not None and (isinstance(half, bool) or not isinstance(half, (int, np.integer)) or half not in HALVES):
        raise ValueError(f"half must be None (the whole series), 1 or 2, got {half!r}.")
    if average not in (None, "geometric", "arithmetic"):
        raise ValueError(f"average must be 'geometric' or 'arithmetic', got {average!r}.")
    for path, what in ((nifti_path, "DWI image"), (bvals_path, "bvals file")):
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"the {what} must be a path, got {path!r}.")
        if not os.path.isfile(path):
            raise ValueError(f"{what} not found: {os.fspath(path)!r}.")
    try:
        img = _nib().load(os.fspath(nifti_path))
    except Exception as err:
        raise ValueError(f"cannot read {os.fspath(nifti_path)!r} as NIfTI: {err}") from None
    if len(img.shape) != 4:
        raise ValueError(f"the DWI image must be 4-D (x, y, z, volumes), got shape {img.shape}.")
    try:
        bvals = np.loadtxt(os.fspath(bvals_path), dtype=float, ndmin=1).ravel()
    except ValueError as err:
        raise ValueError(f"cannot read b-values from {os.fspath(bvals_path)!r}: {err}") from None
    if len(bvals) != img.shape[3]:
        raise ValueError(
            f"{len(bvals)} b-values in {os.fspath(bvals_path)!r} but {img.shape[3]} volumes in the image; "
            "there must be one b-value per volume."
        )
    if not np.all(np.isfinite(bvals)) or (bvals < 0).any():
        raise ValueError(f"b-values must be finite and >= 0 s/mm^2, got {bvals.tolist()}.")
    check_b_units(bvals)
    if not (np.round(bvals) == 0).any():
        raise ValueError("no b=0 volume: IVIM fitting normalises by S(b=0), so the series needs one.")
    if np.iscomplexobj(np.empty(0, dtype=img.get_data_dtype())):
        raise ValueError(f"{os.fspath(nifti_path)!r} holds complex values; IVIM fits magnitude images: "
                         "save the magnitude (abs) of the data and fit that.")
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # truncated or corrupt file: the header read fine, the data do not
        raise ValueError(f"cannot read the image data of {os.fspath(nifti_path)!r} (truncated or corrupt?): "
                         f"{err}") from None
    if half is not None:
        keep = split_halves(bvals)[half - 1]
        data, bvals = data[..., keep], bvals[keep]
    noise, why = noise_of(data) if noise == "auto" else (noise, "given")
    if average is None:
        average = "arithmetic" if noise == "gaussian" else "geometric"
    dwi, b_values = average_directions(data, bvals, average=average, negative=noise == "gaussian")
    return Scan(dwi, b_values, np.asarray(img.affine), noise, why, average)




def average_directions(data, b_values, *, average="geometric", negative=False):
    r"""Average the volumes that share a b-value (e.g. diffusion directions) into one volume each.

    Parameters
    ----------
    data : array_like
        ``(..., volumes)`` signals.
    b_values : array_like
        b-value of each volume in s/mm^2. Volumes whose b-values round to
        the same whole s/mm^2 are one group (scanners write 999.6 and
        1000.4 for two directions of one shell).
    average : {"geometric", "arithmetic"}
        The geometric mean of directions is the trace-weighted image
        (:math:`S_0 e^{-b\,\mathrm{tr}(D)/3}` for a diffusion tensor); a
        direction that reads 0 makes it 0. ``"arithmetic"`` gives the mean DWI.
        Either way a voxel with a negative or NaN value in any of the
        volumes averaged gets NaN there (not a clipped value), so that
        ``make_mask`` excludes and counts it.
    negative : bool
        Real-valued images (Gaussian noise): negative samples are legal and
        kept (arithmetic mean only); NaN still gives NaN.

    Returns
    -------
    dwi : numpy.ndarray
        ``(..., n_b)`` float32, b-values increasing.
    b_values : numpy.ndarray
        One b-value per group: the mean of its volumes' b-values, kept as
        they are (not rounded); exactly 0 for the group that rounds to 0.
    """
    if average not in ("geometric", "arithmetic"):
        raise ValueError(f"average must be 'geometric' or 'arithmetic', got {average!r}.")
    if negative and average == "geometric":
        raise ValueError("real-valued images (Gaussian noise, negative samples) cannot be averaged geometrically "
                         "(the logarithm of a negative sample): average the directions arithmetically "
                         "(average='arithmetic', --average arithmetic).")
    data = np.asarray(data, dtype=np.float32)
    given = np.asarray(b_values, dtype=float)
    rounded = np.round(given)
    if rounded.shape != data.shape[-1:]:
        raise ValueError(f"{rounded.size} b-values for {data.shape[-1]} volumes; give one b-value per volume.")
    groups = np.unique(rounded)
    b_unique = np.array([given[rounded == b].mean() if b else 0.0 for b in groups])  # b ~ 0 is the reference
    volumes = []
    for b in groups:  # a handful of b-values: the loop is over volumes, not voxels
        group = data[..., rounded == b]
        if average == "geometric":
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = np.exp(np.log(np.clip(group, 0, None)).mean(axis=-1))
        else:
            mean = group.mean(axis=-1)
        legal = np.isfinite(group) if negative else group >= 0  # NaN (and < 0 for magnitudes) fail
        volumes.append(np.where(legal.all(axis=-1), mean, np.nan))
    return np.stack(volumes, axis=-1).astype(np.float32), b_unique


def load_mask(path, *, affine=None):
    """Read a mask NIfTI as stored (non-zero = inside; ``make_mask`` turns it into voxels to fit).

    A trailing axis of length 1 (a 4-D mask with one volume) is dropped.

    Parameters
    ----------
    path : str or os.PathLike
    affine : array_like, optional
        The DWI's 4 x 4 affine: the mask must lie on the same voxel grid
        (a mask saved flipped or shifted would select other anatomy).

    Returns
    -------
    numpy.ndarray
    """
    if not os.path.isfile(path):
        raise ValueError(f"mask not found: {os.fspath(path)!r}.")
    try:
        img = _nib().load(os.fspath(path))
        data = np.asarray(img.dataobj)
    except Exception as err:
        raise ValueError(f"cannot read the mask {os.fspath(path)!r} as NIfTI: {err}") from None
    if affine is not None and not np.allclose(img.affine, affine, atol=1e-3):
        raise ValueError(f"the mask {os.fspath(path)!r} is not on the DWI's voxel grid (their affines differ: "
                         "another orientation, position or voxel size); resample it to the DWI first.")
    return data[..., 0] if data.ndim == 4 and data.shape[-1] == 1 else data


def save_dwi(dwi, b_values, affine, nifti_path, bvals_path):
    """Write a 4-D DWI and its bvals file as a scanner export would (FSL style)."""
    nib = _nib()
    os.makedirs(os.path.dirname(os.path.abspath(nifti_path)), exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(dwi, dtype=np.float32), np.asarray(affine)), os.fspath(nifti_path))
    with open(bvals_path, "w") as f:
        f.write(" ".join(f"{b:g}" for b in b_values) + "\n")
    return os.fspath(nifti_path), os.fspath(bvals_path)


def save_maps(params: IVIMParams, affine, out_dir, *, mask=None) -> dict:
    """Write Dp, Dt, Fp and S0 as ``out_dir/NAME.nii.gz`` with the input's affine.

    Parameters
    ----------
    params : IVIMParams
        Maps shaped like the image without its last axis.
    affine : array_like
        4 x 4 affine of the DWI they were fitted from.
    out_dir : str or os.PathLike
    mask : array_like of bool, optional
        Voxels outside it are written as 0 (no estimate there).

    Returns
    -------
    dict of str -> str
        Parameter name -> path written.
    """
    nib = _nib()
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name in IVIMParams._fields:
        data = np.asarray(getattr(params, name), dtype=np.float32)
        if mask is not None:
            data = np.where(mask, data, 0).astype(np.float32)
        path = os.path.join(os.fspath(out_dir), f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(data, np.asarray(affine, dtype=float)), path)
        paths[name] = path
    return paths
