"""Convert the Wetscherek et al. (MRM 2015) abdominal IVIM data to small NIfTI files for ``load_example``.

Usage (from the repository root)::

    python tools/convert_wetscherek.py [SOURCE] [--diffusion-time {40,70,100}] [--out DIR]

SOURCE holds the authors' ``volunteerN.mat``, ``maps_volunteerN.mat``, ``phantom_*.mat`` and
``LICENSE.txt`` (default ``../shared/data/wetscherek-ivim`` relative to the repository root).
Writes into ``ivim_demo/data/wetscherek/`` (``--out``); see the README written there.

From each scan only the conventional IVIM acquisition is kept: the bipolar (``betta`` = 1)
diffusion-weighted images at one diffusion time, every direction and every b = 0 image of the
same breath-holds, in acquisition order. The output is deterministic: running the script twice
gives identical bytes (nibabel writes gzip with mtime 0 and no file name).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.io

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "wetscherek-ivim"
OUT = ROOT / "ivim_demo" / "data" / "wetscherek"

VOLUNTEERS = ("volunteer1", "volunteer2", "volunteer3")
PHANTOMS = ("phantom_flow", "phantom_static")

#: Images per breath-hold: [b0, 6 directions of bA, b0, 6 directions of bB, b0].
BREATH_HOLD = 15
B0_POSITIONS = (0, 7, 14)

#: Volumes of NAME_reference.nii.gz, in this order; D, Dstar, Dhighb converted to mm^2/s.
REFERENCE_MAPS = ("D", "f", "Dstar", "Dhighb", "fhighb")
_TO_MM2_PER_S = {"D": 1e-3, "f": 1.0, "Dstar": 1e-3, "Dhighb": 1e-3, "fhighb": 1.0}

BIPOLAR = 1  # betta: 1 bipolar (conventional), 2 flow-compensated


def select_series(b, T, betta, *, diffusion_time=100):
    """Indices of the bipolar images at one diffusion time and the b = 0 images of their breath-holds.

    Parameters
    ----------
    b, T, betta : array_like
        Per-image b-value (s/mm^2), diffusion time (ms) and gradient profile (1 bipolar,
        2 flow-compensated), one entry per image, in acquisition order.
    diffusion_time : int
        Diffusion time T (ms) of the series to keep.

    Returns
    -------
    numpy.ndarray
        Image indices in acquisition order (whole breath-holds of 15 images).
    """
    b, T, betta = (np.asarray(a).ravel().astype(int) for a in (b, T, betta))
    if len(b) % BREATH_HOLD:
        raise ValueError(f"{len(b)} images is not a whole number of {BREATH_HOLD}-image breath-holds.")
    keep = []
    for start in range(0, len(b), BREATH_HOLD):  # 20 breath-holds, not voxels
        hold = np.arange(start, start + BREATH_HOLD)
        is_b0 = b[hold] == 0
        if not np.array_equal(np.flatnonzero(is_b0), B0_POSITIONS):
            raise ValueError(f"breath-hold at image {start} has b = 0 at {np.flatnonzero(is_b0).tolist()}, "
                             f"expected {list(B0_POSITIONS)}.")
        dw = hold[~is_b0]
        # the b = 0 images are all labelled flow-compensated: a breath-hold's (T, betta) is its DW images'
        if len(set(T[dw])) != 1 or len(set(betta[dw])) != 1:
            raise ValueError(f"breath-hold at image {start} mixes diffusion times or gradient profiles.")
        if T[dw[0]] == diffusion_time and betta[dw[0]] == BIPOLAR:
            keep.append(hold)
    if not keep:
        raise ValueError(f"no bipolar breath-hold at T = {diffusion_time} ms; T in the data: {sorted(set(T))}.")
    return np.concatenate(keep)


def _nifti_axes(image):
    """(H, W, ...) as displayed by the authors -> (x, y, ...) as NIfTI viewers display it:
    x = column (left to right), y = row from the bottom up."""
    return np.ascontiguousarray(np.swapaxes(image, 0, 1)[:, ::-1])


def _nifti(array, path, descrip):
    img = nib.Nifti1Image(_nifti_axes(array), np.eye(4))
    img.header["descrip"] = descrip.encode()[:79]
    img.header.set_xyzt_units("unknown", "unknown")
    nib.save(img, str(path))
    return path


def convert_scan(name, source, out, *, diffusion_time=100):
    """Write NAME_dwi.nii.gz, NAME_dwi.bval, NAME_mask.nii.gz, NAME_rois.nii.gz (and NAME_reference.nii.gz).

    Returns the paths written and the selected b-values.
    """
    m = scipy.io.loadmat(source / f"{name}.mat")
    idx = select_series(m["b"], m["T"], m["betta"], diffusion_time=diffusion_time)
    data = m["data"][idx]  # (img, H, W)
    if data.min() < 0 or data.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"{name}: values outside the uint16 range.")
    dwi = np.moveaxis(data.astype(np.uint16), 0, -1)[:, :, None, :]  # (H, W, 1, img), turned by _nifti
    bvals = m["b"].ravel()[idx].astype(int)
    tag = f"Wetscherek 2015 {name}, bipolar, T={diffusion_time} ms"
    paths = [
        _nifti(dwi, out / f"{name}_dwi.nii.gz", tag),
        _nifti((m["mask"] > 0.5).astype(np.uint8)[:, :, None], out / f"{name}_mask.nii.gz", f"{name} mask"),
        _nifti(m["rois"].astype(np.uint8)[:, :, None], out / f"{name}_rois.nii.gz", f"{name} ROI labels"),
    ]
    bval_path = out / f"{name}_dwi.bval"
    bval_path.write_text(" ".join(str(v) for v in bvals) + "\n")
    paths.append(bval_path)
    if name in VOLUNTEERS:
        maps = scipy.io.loadmat(source / f"maps_{name}.mat")
        ref = np.stack([maps[k] * _TO_MM2_PER_S[k] for k in REFERENCE_MAPS], axis=-1).astype(np.float32)
        paths.append(_nifti(ref[:, :, None, :], out / f"{name}_reference.nii.gz",
                            f"{name} authors' maps {' '.join(REFERENCE_MAPS)} (mm2/s, fraction)"))
    return paths, bvals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=SOURCE, help=f"folder of the .mat files ({SOURCE})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder ({OUT})")
    parser.add_argument("--diffusion-time", type=int, default=100, choices=(40, 70, 100),
                        help="diffusion time T (ms) of the bipolar series to keep (default 100)")
    args = parser.parse_args(argv)
    if not (args.source / "volunteer1.mat").is_file():
        parser.error(f"no volunteer1.mat in {args.source}: give the folder of the Wetscherek .mat files.")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in VOLUNTEERS + PHANTOMS:
        paths, bvals = convert_scan(name, args.source, args.out, diffusion_time=args.diffusion_time)
        print(f"{name}: {len(bvals)} volumes, b = {sorted(set(bvals.tolist()))} s/mm^2 -> "
              + ", ".join(p.name for p in paths))
    shutil.copyfile(args.source / "LICENSE.txt", args.out / "LICENSE.txt")


if __name__ == "__main__":
    main()
