"""Inference: IVIM parameter maps from a trained network."""
from __future__ import annotations

import numpy as np
import torch

from .checks import check_signals, invalid_option
from .signal_model import IVIMParams
from .networks import acquisition_matches

__all__ = ["predict", "decide_labelling", "swap_guard"]

_CHUNK = 131_072  # voxels per forward pass: small enough to stay in cache, ~3x faster than 1M
#: Forward passes always run on a multiple of this many rows (the last one padded): float32 GEMM
#: (MKL) computes the rows of a partial block differently, so without padding a voxel's estimate
#: could change in the last bit with the number of voxels in the call.
_ROWS = 64


def swap_guard(Dp, Dt, Fp):
    """The seed's guard against the network swapping the two compartments.

    The model is symmetric: ``(Dp, Dt, Fp)`` and ``(Dt, Dp, 1 - Fp)`` give
    the same signal.  An unbounded network may settle on either labelling, so
    if the mean estimated Dp is below the mean Dt, the two are exchanged and
    Fp replaced by 1 - Fp, for the whole set of voxels at once.

    ``predict`` no longer calls this on each batch (that made every voxel's
    estimate depend on the others in the call); ``decide_labelling`` applies
    the same rule once per network, to its training signals.

    Returns
    -------
    Dp, Dt, Fp : numpy.ndarray
    """
    if np.mean(Dp) < np.mean(Dt):
        return Dt, Dp, 1 - Fp
    return Dp, Dt, Fp


def _encode(net, signals):
    """The network's raw outputs ``(n_voxels, 3 or 4)`` (float64) and the checked signals."""
    net_b = net.b_values.cpu().numpy()
    s = check_signals(signals, n_b=len(net_b))
    flat = s.reshape(-1, len(net_b)).astype(np.float32)  # the network computes in float32 anyway
    flat = flat[:, net.input_columns] / flat[:, :1]
    dev = next(net.parameters()).device
    net.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(flat), _CHUNK):
            chunk = flat[start : start + _CHUNK]
            n = len(chunk)
            if n % _ROWS:  # see _ROWS (_CHUNK is a multiple of it)
                chunk = np.pad(chunk, ((0, -n % _ROWS), (0, 0)), mode="edge")
            outs.append(net.encode(torch.from_numpy(chunk).to(dev))[:n].cpu().numpy())
    return np.concatenate(outs).astype(float), s


def _ordered_by_construction(net) -> bool:
    """True for bounded networks whose Dp range lies above their Dt range."""
    lo, hi = getattr(net, "lo", None), getattr(net, "hi", None)
    return lo is not None and hi is not None and float(lo[0]) >= float(hi[1])


def decide_labelling(net, signals) -> bool:
    """Decide once which network output is Dp, and store it on the network.

    The model is symmetric in the two compartments, so an unbounded network
    (``IVIMNet``) may learn to put Dt in its first output and Dp in its
    second.  The seed's rule decides it: if the mean of output 0 over
    ``signals`` is below the mean of output 1, the network is *swapped*.
    The answer is stored as ``net.swapped`` and ``predict`` applies it to
    every voxel alike, so an estimate never depends on the other voxels in a
    call.  ``train`` calls this on its training signals; ``save_model`` and
    ``load_model`` keep the answer.  Bounded networks whose Dp range lies
    above their Dt range (``IVIMNetOptim`` with the default ``FIT_BOUNDS``)
    are never swapped.  A network that never went through this function
    counts as not swapped.

    Parameters
    ----------
    net : IVIMNet or IVIMNetOptim
        A trained network.
    signals : array_like
        Raw signals ``(..., n_b)``, b = 0 first, with the network's
        b-values: normally its training signals.

    Returns
    -------
    bool
        True when output 0 is Dt (the labels are exchanged in ``predict``).
    """
    if _ordered_by_construction(net):
        net.swapped = False
        return False
    est, _ = _encode(net, signals)
    net.swapped = bool(np.mean(est[:, 0]) < np.mean(est[:, 1]))
    return net.swapped


@invalid_option(position=1)
def predict(net, signals, *, b_values=None) -> IVIMParams:
    """Estimate IVIM parameters with a trained network.

    Each voxel's signal is normalised by its S(b=0), the network runs in eval
    mode without gradients (on the GPU if the network is there), and the
    network's labelling (``net.swapped``, decided once by
    ``decide_labelling`` when it was trained) is applied to every voxel
    alike: each voxel's estimate depends on its own signal only, never on the
    other voxels in the call (bit for bit on the CPU).

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
    invalid : {"raise", "nan"}
        ``"raise"`` (default): refuse signals with NaN/inf, negative values or
        S(b=0) <= 0 in any voxel. ``"nan"``: such voxels get NaN estimates
        and the others are fitted (see ``checks.invalid_option``).

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
    est, s = _encode(net, signals)
    Dp, Dt, Fp = est[:, 0], est[:, 1], est[:, 2]
    if getattr(net, "swapped", False):
        Dp, Dt, Fp = Dt, Dp, 1 - Fp
    s0_rel = est[:, 3] if est.shape[1] > 3 else 1.0  # networks that fit S0 return it 4th
    S0 = s0_rel * s[..., 0].reshape(-1)
    shape = s.shape[:-1]
    return IVIMParams(Dp.reshape(shape), Dt.reshape(shape), Fp.reshape(shape), S0.reshape(shape))
