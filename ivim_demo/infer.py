"""Inference: IVIM parameter maps from a trained network."""
from __future__ import annotations

import numpy as np
import torch

from .checks import check_signals
from .model import IVIMParams
from .networks import acquisition_matches

__all__ = ["predict", "swap_guard"]

_CHUNK = 131_072  # voxels per forward pass: small enough to stay in cache, ~3x faster than 1M


def swap_guard(Dp, Dt, Fp):
    """The seed's guard against the network swapping the two compartments.

    The model is symmetric: ``(Dp, Dt, Fp)`` and ``(Dt, Dp, 1 - Fp)`` give
    the same signal.  An unbounded network may settle on either labelling, so
    if the mean estimated Dp is below the mean Dt, the two are exchanged and
    Fp replaced by 1 - Fp, for the whole set of voxels at once.

    Returns
    -------
    Dp, Dt, Fp : numpy.ndarray
    """
    if np.mean(Dp) < np.mean(Dt):
        return Dt, Dp, 1 - Fp
    return Dp, Dt, Fp


def predict(net, signals, *, b_values=None) -> IVIMParams:
    """Estimate IVIM parameters with a trained network.

    Each voxel's signal is normalised by its S(b=0), the network runs in eval
    mode without gradients (on the GPU if the network is there), and the
    seed's ``swap_guard`` is applied.

    Parameters
    ----------
    net : IVIMNet
        A trained network (see ``train`` or ``load_model``).
    signals : array_like
        Raw magnitude signals ``(..., n_b)`` with b = 0 first, acquired with
        the b-values the network was trained on.
    b_values : array_like, optional
        The signals' b-values (s/mm^2). When given they must equal the
        network's; this is how data acquired differently is refused.

    Returns
    -------
    IVIMParams
        Dp, Dt (mm^2/s), Fp and S0 (the measured S(b=0), times the network's
        fitted S0 when it fits one), each shaped ``signals.shape[:-1]``.
    """
    net_b = net.b_values.cpu().numpy()
    if b_values is not None and not acquisition_matches(net, b_values):
        raise ValueError(
            f"these signals were acquired with b-values {np.asarray(b_values).tolist()} but the "
            f"network was trained on {net_b.tolist()} s/mm^2; train a network for this acquisition."
        )
    s = check_signals(signals, n_b=len(net_b))
    s0 = s[..., 0].reshape(-1)
    flat = s.reshape(-1, len(net_b)).astype(np.float32)  # the network computes in float32 anyway
    flat = (flat[:, net.input_columns] / flat[:, :1])
    dev = next(net.parameters()).device
    net.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(flat), _CHUNK):
            outs.append(net.encode(torch.from_numpy(flat[start : start + _CHUNK]).to(dev)).cpu().numpy())
    est = np.concatenate(outs).astype(float)
    Dp, Dt, Fp = swap_guard(est[:, 0], est[:, 1], est[:, 2])
    s0_rel = est[:, 3] if est.shape[1] > 3 else 1.0  # networks that fit S0 return it 4th
    shape = s.shape[:-1]
    return IVIMParams(
        Dp.reshape(shape), Dt.reshape(shape), Fp.reshape(shape), (s0_rel * s0).reshape(shape)
    )
