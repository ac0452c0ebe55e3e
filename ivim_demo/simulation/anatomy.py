"""A small abdominal digital phantom with tissue-specific IVIM values."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..core.checks import check_b_values
from ..core.signal_model import SEED_B_VALUES, IVIMParams, ivim
from .simulate import add_rician_noise, as_generator

__all__ = ["TISSUES", "AnatomicalPhantom", "anatomical_phantom"]

#: Tissue label -> (name, IVIM values). Dp, Dt in mm^2/s, Fp fraction, S0 in a.u.
#: Values of the order reported for abdominal IVIM at 1.5-3 T (e.g. liver Fp 0.2-0.3,
#: spleen Dt ~0.8e-3, renal cortex Dt ~1.9e-3, pancreatic tumours with lower Fp than
#: healthy pancreas); illustrative, not taken from a single study.
TISSUES = {
    0: ("background", IVIMParams(0.0, 0.0, 0.0, 0.0)),
    1: ("fat", IVIMParams(Dp=0.020, Dt=0.0005, Fp=0.05, S0=250.0)),
    2: ("liver", IVIMParams(Dp=0.060, Dt=0.0011, Fp=0.25, S0=600.0)),
    3: ("spleen", IVIMParams(Dp=0.050, Dt=0.0008, Fp=0.08, S0=900.0)),
    4: ("kidney cortex", IVIMParams(Dp=0.040, Dt=0.0019, Fp=0.20, S0=1000.0)),
    5: ("pancreas", IVIMParams(Dp=0.040, Dt=0.0012, Fp=0.25, S0=700.0)),
    6: ("tumour", IVIMParams(Dp=0.030, Dt=0.0011, Fp=0.10, S0=750.0)),
}

# (label, centre x, centre y, radius x, radius y) in coordinates from -1 to 1; later ones overwrite.
_ELLIPSES = [
    (1, 0.0, 0.0, 0.95, 0.75),
    (2, -0.40, -0.15, 0.42, 0.45),
    (3, 0.55, -0.20, 0.18, 0.25),
    (4, -0.35, 0.45, 0.14, 0.20),
    (4, 0.40, 0.45, 0.14, 0.20),
    (5, 0.10, 0.10, 0.35, 0.08),
    (6, 0.25, 0.10, 0.08, 0.08),
]


class AnatomicalPhantom(NamedTuple):
    """What ``anatomical_phantom`` returns.

    Attributes
    ----------
    dwi : numpy.ndarray
        ``(x, y, z, n_volumes)`` noisy magnitude images.
    b_values : numpy.ndarray
        b-value (s/mm^2) of each volume (repeated for each direction).
    truth : IVIMParams
        True maps, each ``(x, y, z)``; 0 in the background.
    labels : numpy.ndarray
        Tissue label per voxel, keys of ``TISSUES``.
    """

    dwi: np.ndarray
    b_values: np.ndarray
    truth: IVIMParams
    labels: np.ndarray


def _labels(shape):
    nx, ny, nz = shape
    x, y = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    zs = np.linspace(-1, 1, nz) if nz > 1 else np.zeros(1)
    labels = np.zeros(shape, dtype=np.int16)
    for k, z in enumerate(zs):
        shrink = np.sqrt(1 - 0.3 * z**2)  # organs a little smaller away from the centre slice
        for label, cx, cy, rx, ry in _ELLIPSES:
            r = 1.0 if label == 1 else shrink
            inside = ((x - cx) / (rx * r)) ** 2 + ((y - cy) / (ry * r)) ** 2 <= 1
            labels[..., k][inside] = label
    return labels


def anatomical_phantom(shape=(64, 64, 4), *, snr=50.0, variation=0.05, directions=1,
                       b_values=SEED_B_VALUES, seed=0) -> AnatomicalPhantom:
    """An abdominal-like 3-D digital phantom: fat, liver, spleen, kidney cortex,
    pancreas with a tumour, and background air.

    Each tissue has the IVIM values in ``TISSUES``, varied voxel by voxel by a
    factor ``1 + variation * N(0, 1)`` per parameter; the signal follows
    :math:`S(b) = S_0[F_p e^{-bD_p} + (1-F_p)e^{-bD_t}]` with Rician noise of
    sigma = 600 / ``snr`` (SNR ``snr`` in liver at b = 0). The background has
    no signal, only noise.

    Parameters
    ----------
    shape : tuple of 3 int
        Image size (x, y, z), each >= 8 in-plane and >= 1 slices.
    snr : float
        SNR of liver at b = 0, > 0.
    variation : float
        Relative within-tissue SD of every parameter, >= 0.
    directions : int
        Volumes per b > 0 (independent noise each, as separate diffusion
        directions of an isotropic tissue); b = 0 is acquired once.
    b_values : array_like
        Distinct b-values in s/mm^2, starting at 0.
    seed : int or numpy.random.Generator

    Returns
    -------
    AnatomicalPhantom
    """
    b = check_b_values(b_values)
    if len(shape) != 3 or shape[0] < 8 or shape[1] < 8 or shape[2] < 1:
        raise ValueError(f"shape must be (x, y, z) with x, y >= 8 and z >= 1, got {shape!r}.")
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number, got {snr!r}.")
    if variation < 0 or int(directions) < 1:
        raise ValueError("variation must be >= 0 and directions >= 1.")
    rng = as_generator(seed)
    labels = _labels(tuple(int(s) for s in shape))
    table = np.array([TISSUES[k][1] for k in sorted(TISSUES)])  # (tissues, 4)
    values = table[labels] * (1 + variation * rng.standard_normal(labels.shape + (4,)))
    values[..., 2] = np.clip(values[..., 2], 0, 1)
    values = np.clip(values, 0, None) * (labels > 0)[..., None]
    truth = IVIMParams(*np.moveaxis(values, -1, 0))
    volume_b = np.concatenate([b[:1], np.repeat(b[1:], int(directions))])
    clean = ivim(volume_b, *(v[..., None] for v in truth))
    dwi = add_rician_noise(clean, TISSUES[2][1].S0 / snr, rng)
    return AnatomicalPhantom(dwi.astype(np.float32), volume_b, truth, labels)
