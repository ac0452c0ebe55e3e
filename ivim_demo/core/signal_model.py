"""The IVIM signal model, the seed's acquisition and parameter box.

The intravoxel incoherent motion (IVIM) model (Le Bihan 1988) describes the
diffusion-weighted signal of a voxel as two compartments: blood moving in the
capillary network (pseudo-diffusion ``Dp``, volume fraction ``Fp``) and water
diffusing in tissue (``Dt``):

.. math::

    S(b) = S_0 \\left[F_p e^{-b D_p} + (1 - F_p) e^{-b D_t}\\right]

b is in s/mm^2, Dp and Dt in mm^2/s, Fp is a fraction and S0 is in the units
of the signal.  Parameter order is always ``(Dp, Dt, Fp, S0)``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["SEED_B_VALUES", "PARAMETER_BOX", "FIT_BOUNDS", "IVIMParams", "PARAMS", "ivim"]

#: The b-values (s/mm^2) of the seed notebook and the paper's simulations.
SEED_B_VALUES = np.array([0, 10, 20, 60, 150, 300, 500, 1000], dtype=float)

#: Uniform ranges the seed draws its training parameters from:
#: Dp and Dt in mm^2/s, Fp a fraction.
PARAMETER_BOX = {"Dp": (0.01, 0.1), "Dt": (0.0005, 0.002), "Fp": (0.1, 0.4)}

#: Bounds of the least-squares fits and of the bounded networks (IVIM-NET_optim,
#: Kaandorp et al. MRM 2021): Dp, Dt in mm^2/s, Fp a fraction, S0 relative to
#: the measured S(b=0). Wider than the box, so estimates are not forced into it.
FIT_BOUNDS = {"Dp": (0.005, 0.2), "Dt": (0.0, 0.005), "Fp": (0.0, 0.7), "S0": (0.7, 1.3)}


class IVIMParams(NamedTuple):
    """IVIM parameters, in the project's fixed order.

    Every estimator returns one; each field is an array shaped like the
    signals it was estimated from without their last (b-value) axis.

    Attributes
    ----------
    Dp : array
        Pseudo-diffusion coefficient, mm^2/s.
    Dt : array
        Tissue diffusion coefficient, mm^2/s.
    Fp : array
        Perfusion (pseudo-diffusion) volume fraction, 0-1.
    S0 : array
        Signal at b = 0, in signal units.
    """

    Dp: np.ndarray
    Dt: np.ndarray
    Fp: np.ndarray
    S0: np.ndarray


#: The project's parameter order, defined once: ``IVIMParams._fields`` is (Dp, Dt, Fp, S0), and
#: these are the three IVIM parameters every comparison reports.
PARAMS = IVIMParams._fields[:3]


def ivim(b, Dp, Dt, Fp, S0=1.0):
    """Bi-exponential IVIM signal.

    .. math:: S(b) = S_0 [F_p e^{-b D_p} + (1 - F_p) e^{-b D_t}]

    Works unchanged on numpy arrays and torch tensors (only arithmetic and
    ``exp`` of the argument's own library are used) and broadcasts like them:
    pass ``b`` shaped ``(n_b,)`` and parameters shaped ``(..., 1)`` to get
    signals shaped ``(..., n_b)``.

    Parameters
    ----------
    b : array or tensor
        b-values, s/mm^2.
    Dp, Dt : array, tensor or float
        Pseudo-diffusion and tissue diffusion coefficients, mm^2/s.
    Fp : array, tensor or float
        Perfusion fraction, 0-1.
    S0 : array, tensor or float, optional
        Signal at b = 0 (default 1: a normalised signal).

    Returns
    -------
    array or tensor
        The signal, broadcast from the inputs.
    """
    exp = _exp_for(b, Dp, Dt)
    return S0 * (Fp * exp(-b * Dp) + (1 - Fp) * exp(-b * Dt))


def _exp_for(*values):
    """``torch.exp`` if any value is a tensor, else ``numpy.exp``."""
    for v in values:
        if type(v).__module__.startswith("torch"):
            import torch

            return torch.exp
    return np.exp
