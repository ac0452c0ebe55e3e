"""Inference: IVIM parameter maps from a trained network."""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

from ..core.checks import check_noise, check_signals, invalid_option, valid_voxels
from ..core.signal_model import IVIMParams
from .networks import acquisition_matches, check_sigma, noise_input
from .protocols import average_repeats, protocol_of, protocol_problems
from ..core.threads import one_torch_thread, worker_pool

__all__ = ["predict", "decide_labelling", "swap_guard"]

_CHUNK = 131_072  # voxels per forward pass: small enough to stay in cache, ~3x faster than 1M


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


def _encode(net, signals, sigma=None, *, negative=False):
    """The network's raw outputs ``(n_voxels, k)`` (float64) and the checked signals.

    ``sigma`` (signal units, one value or one per voxel) is the noise input of
    networks that take it (``networks.noise_input``); others refuse it.
    """
    net_b = net.b_values.cpu().numpy()
    s = check_signals(signals, n_b=len(net_b), negative=negative)
    raw = s.reshape(-1, len(net_b))
    # normalised before the cast to float32, the network's precision: signals of any scale give ratios near 1
    flat = (raw[:, net.input_columns] / raw[:, :1].astype(float)).astype(np.float32)
    flat = noise_input(net, flat, raw[:, 0].astype(float), sigma)
    dev = next(net.parameters()).device
    net.eval()
    step = getattr(net, "predict_chunk", _CHUNK)

    def run(start):
        with torch.no_grad():  # grad mode is per thread
            return net.encode(torch.from_numpy(flat[start : start + step]).to(dev)).cpu().numpy()

    starts = range(0, len(flat), step)
    if dev.type == "cpu" and hasattr(net, "predict_chunk"):
        # chunks side by side, one per thread, torch single-threaded: on a shared machine torch's own
        # threads spin-wait on each other's small ops (1M voxels: 0.8 s on 1 thread, 4-10 s on 2)
        with one_torch_thread() as workers:
            outs = list(worker_pool(workers).map(run, starts))
    else:
        outs = [run(start) for start in starts]
    est = np.concatenate(outs).astype(float)
    bad = ~np.isfinite(est).all(axis=1)
    if bad.any():  # finite inputs (checked above) that give NaN or inf: the weights, not the data
        raise ValueError(f"the network returned NaN or inf for {int(bad.sum())} of {len(est)} voxels with finite "
                         "signals: its weights are damaged or out of range (e.g. a checkpoint edited after "
                         "training); retrain it or load another checkpoint.")
    return est, s


def _ordered_by_construction(net) -> bool:
    """True for bounded networks whose Dp range lies above their Dt range."""
    lo, hi = getattr(net, "lo", None), getattr(net, "hi", None)
    return lo is not None and hi is not None and float(lo[0]) >= float(hi[1])


def decide_labelling(net, signals, *, negative=False) -> bool:
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
    negative : bool
        Accept negative samples (signals with Gaussian noise).

    Returns
    -------
    bool
        True when output 0 is Dt (the labels are exchanged in ``predict``).
    """
    if _ordered_by_construction(net) or getattr(net, "takes_sigma", False):  # the latter: supervised labels
        net.swapped = False
        return False
    est, _ = _encode(net, signals, negative=negative)
    net.swapped = bool(np.mean(est[:, 0]) < np.mean(est[:, 1]))
    return net.swapped


def predict(net, signals, *, b_values=None, sigma=None, interval=None, invalid="raise", noise="rician"):
    """Estimate IVIM parameters with a trained network (and, for some networks, their uncertainty).

    Each voxel's signal is normalised by its S(b=0), the network runs in eval
    mode without gradients (on the GPU if the network is there), and each
    voxel's estimate depends on its own signal (and noise level) only, never
    on the other voxels in the call: the labelling (which output is Dp) is
    fixed per network. It is not bit for bit the same in a call with other
    voxels: float32 matrix products of another shape round differently (which
    rows a CPU kernel groups together depends on the number of voxels), which
    moves an estimate by up to about 1e-5 of its value (measured: 109 of 295
    voxels changed, at most 1.1e-5 relative). The same call repeated on one
    machine gives the same bits.

    Parameters
    ----------
    net : IVIMNet, IVIMNetOptim or IVIMNetUncertainty
        A trained network (see ``train``, ``train_for_snr`` or ``load_model``).
    signals : array_like
        Raw magnitude signals ``(..., n_b)`` with b = 0 first, acquired with
        the b-values the network was trained on.
    b_values : array_like, optional
        The signals' b-values (s/mm^2). When given they must equal the
        network's; this is how data acquired differently is refused.
    sigma : float or array_like, optional
        ``IVIMNetUncertainty`` only (others refuse it): the Rician noise SD in
        signal units, one value or one per voxel (shape ``signals.shape[:-1]``).
        Default: ``estimate_sigma(signals, b_values, absolute=True)`` on the
        signals given (one value for all of them; fits every voxel by least
        squares, so it is much slower than the network: pass the noise
        level when it is known).
    interval : float, optional
        ``IVIMNetUncertainty`` only: return a ``Posterior`` with the central
        credible interval at this level. The network learns one level
        (``net.options["level"]``, 0.9 by default); any other is refused.
    invalid : {"raise", "nan"}
        ``"raise"`` (default): refuse signals with NaN/inf, negative values or
        S(b=0) <= 0 in any voxel. ``"nan"``: such voxels get NaN estimates
        and the others are fitted (see ``checks.invalid_option``).
    noise : {"rician", "gaussian"}
        ``"rician"`` (magnitude images, the default): negative samples are
        invalid. ``"gaussian"`` (real-valued or phase-corrected images):
        negative samples are legal and go to the network as they are, and a
        sigma estimated here assumes Gaussian noise. A network trained on
        magnitude signals (every network trained here on simulations, the
        shipped one included) has never seen a negative sample: at the
        SNRs it was trained for they occur only where the signal is near 0.

    Returns
    -------
    IVIMParams or Posterior
        Dp, Dt (mm^2/s), Fp and S0 (the measured S(b=0), times the network's
        fitted S0 when it fits one), each shaped ``signals.shape[:-1]``;
        ``IVIMNetUncertainty``'s are its posterior-mean estimates. With
        ``interval``, a ``Posterior`` (mean, sd, lower, upper, each an
        ``IVIMParams``) of the network's estimates of the posterior mean,
        SD and interval ends of Dp, Dt and Fp; its S0 mean is the measured
        S(b=0) and S0's sd, lower and upper are NaN (the network does not
        estimate S0 or its uncertainty).
    """
    check_noise(noise)
    if getattr(net, "any_protocol", False):
        return _predict_any_protocol(net, signals, b_values=b_values, sigma=sigma, interval=interval,
                                     invalid=invalid, noise=noise)
    if not getattr(net, "takes_sigma", False):
        for name, value in (("sigma", sigma), ("interval", interval)):
            if value is not None:
                raise ValueError(f"{name} is for networks that estimate their uncertainty (IVIMNetUncertainty, "
                                 f"train_for_snr((low, high), method='supervised')); a {type(net).__name__} "
                                 "takes the signals only.")
        return _predict(net, signals, b_values=b_values, invalid=invalid, noise=noise)
    return _predict_uncertainty(net, signals, b_values=b_values, sigma=sigma, interval=interval, invalid=invalid,
                                noise=noise)


def _predict_any_protocol(net, signals, *, b_values, sigma, interval, invalid, noise):
    """``predict`` for ``IVIMNetAnyProtocol``: average the repeats, write the protocol's network, run it."""
    if b_values is None:
        raise ValueError("this network fits any protocol, so it needs the signals' b-values: pass b_values= "
                         "(s/mm^2, one per image on the last axis; repeats allowed).")
    protocol, index = protocol_of(b_values)
    problems = protocol_problems(protocol)
    if problems:
        raise ValueError(f"this protocol lies outside the range the pretrained network was trained for: "
                         f"{'; '.join(problems)}. Fit it with fit_bayes(..., prior=net.prior) or "
                         "fit_lsq instead.")
    if type(signals).__module__.startswith("torch"):
        signals = signals.detach().cpu().numpy()
    s = np.asarray(signals)
    if s.ndim < 1 or s.shape[-1] != len(index):
        raise ValueError(f"signals must be shaped (..., {len(index)}) for {len(index)} b-values (one per image), "
                         f"got shape {s.shape}.")
    if sigma is None:
        sigma = _sigma_of(s, protocol, index, noise)
    cache = net.__dict__.setdefault("_specialised", {})
    key = (tuple(protocol.b_values.tolist()), tuple(protocol.counts.tolist()), next(net.parameters()).device.type)
    if key not in cache:
        cache.clear()  # one protocol at a time is kept
        cache[key] = net.specialise(protocol)
    averaged = average_repeats(s, index, protocol.counts) if len(index) != len(protocol.counts) or \
        np.any(index != np.arange(len(index))) else s
    return _predict_uncertainty(cache[key], averaged, b_values=None, sigma=sigma, interval=interval,
                                invalid=invalid, noise=noise)


def _sigma_of(s, protocol, index, noise="rician"):
    """Noise SD in signal units of one image: from the repeats of the lowest repeated b-value, else least squares.

    Repeated images of one b-value differ by noise only, so their pooled
    within-voxel variance estimates sigma^2 (Gaussian at the lowest repeated
    b-value, where the signal is highest); without repeats, the residuals of
    least squares (``estimate_sigma``).
    """
    from ..classical.fit import estimate_sigma

    flat = s.reshape(-1, s.shape[-1]).astype(float)
    finite = np.isfinite(flat).all(axis=1)
    repeated = np.flatnonzero(protocol.counts > 1)
    if len(repeated):
        columns = np.flatnonzero(index == repeated[0])
        group = flat[finite][:, columns]
        if len(group):
            return float(np.sqrt(np.mean(np.var(group, axis=1, ddof=1))))
    if len(protocol.b_values) <= 4:
        raise ValueError("with 4 b-values and no repeats the noise level cannot be estimated from the signals; "
                         "pass sigma= (the noise SD in signal units).")
    return estimate_sigma(flat[finite], protocol.b_values, absolute=True, noise=noise)


#: ``predict`` warns when more than this share of the voxels has an SNR (S(b=0) / sigma) more than
#: ``_SNR_MARGIN`` times outside the range a network with a noise input was trained on.
_SNR_OUTSIDE_SHARE = 0.1
_SNR_MARGIN = 2.0


def _warn_outside_snr_range(net, s, sigma):
    """Warn when many voxels' SNR lies far outside the network's training range (its answer there is a guess)."""
    lo, hi = net.options["snr_range"]
    s0 = np.asarray(s, dtype=float).reshape(-1, len(net.b_values))[:, 0]
    sig = check_sigma(sigma, len(s0))  # a ValueError saying what sigma must be, before any arithmetic
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = s0 / sig
    outside = (snr < lo / _SNR_MARGIN) | (snr > hi * _SNR_MARGIN)
    if outside.mean() > _SNR_OUTSIDE_SHARE:
        warnings.warn(f"{outside.mean():.0%} of the voxels have an SNR (S(b=0) / sigma, median "
                      f"{np.nanmedian(snr):.3g}) more than {_SNR_MARGIN:g}x outside the range this network was "
                      f"trained on ({lo:g}-{hi:g}); its estimates there are extrapolations. Check sigma (the noise "
                      "SD in signal units).", stacklevel=4)


def _check_acquisition(net, b_values):
    if b_values is not None and not acquisition_matches(net, b_values):
        raise ValueError(
            f"these signals were acquired with b-values {np.asarray(b_values).tolist()} but the "
            f"network was trained on {net.b_values.cpu().numpy().tolist()} s/mm^2; train a network for this "
            "acquisition."
        )


def _predict_uncertainty(net, signals, *, b_values, sigma, interval, invalid, noise="rician"):
    """``predict`` for ``IVIMNetUncertainty``: posterior-mean estimates, or a ``Posterior``."""
    from ..classical.fit import estimate_sigma
    from ..classical.posterior import Posterior

    _check_acquisition(net, b_values)
    level = net.options["level"]
    if interval is not None and not (isinstance(interval, numbers.Real) and not isinstance(interval, bool)
                                     and abs(float(interval) - level) < 1e-6):
        raise ValueError(f"this network was trained for {level:g} intervals only; pass interval={level:g}, or "
                         f"train one for interval={interval!r} (IVIMNetUncertainty(level=...)).")
    if invalid not in ("raise", "nan"):
        raise ValueError(f"invalid must be 'raise' or 'nan', got {invalid!r}.")
    if type(signals).__module__.startswith("torch"):
        signals = signals.detach().cpu().numpy()
    s = np.asarray(signals)
    n_b = len(net.b_values)
    negative = noise == "gaussian"
    if invalid == "nan":
        ok = valid_voxels(s, negative=negative)
        if not ok.any():
            raise ValueError("no voxel can be fitted: every voxel has NaN/inf, a negative value or S(b=0) <= 0.")
        shape, s = ok.shape, s[ok]
        if sigma is not None and np.ndim(sigma) > 0:
            sig = np.asarray(sigma, dtype=float)
            if sig.shape != shape:
                raise ValueError(f"sigma holds one noise SD per voxel: shape {shape} expected, got {sig.shape}.")
            sigma = sig[ok]
    else:
        ok = None  # _encode checks the signals
    if sigma is None:
        sigma = estimate_sigma(s, net.b_values.cpu().numpy().astype(float), absolute=True, noise=noise)
    _warn_outside_snr_range(net, s, sigma)
    est, s = _encode(net, s, sigma, negative=negative)  # (n, 12): mean, lower, upper, sd of (Dp, Dt, Fp)
    if ok is None:
        shape = s.shape[:-1]
    nan = np.full(len(est), np.nan)
    columns = {"mean": 0, "lower": 3, "upper": 6, "sd": 9}
    s0 = {"mean": s.reshape(-1, n_b)[:, 0].astype(float), "sd": nan, "lower": nan, "upper": nan}

    def params(key):
        values = [*est[:, columns[key] : columns[key] + 3].T, s0[key]]
        if ok is not None:
            full = []
            for v in values:
                f = np.full(shape, np.nan)
                f[ok] = v
                full.append(f)
            values = full
        return IVIMParams(*(np.reshape(v, shape) for v in values))

    if interval is None:
        return params("mean")
    return Posterior(*(params(key) for key in ("mean", "sd", "lower", "upper")))


@invalid_option(position=1)
def _predict(net, signals, *, b_values=None, noise="rician") -> IVIMParams:
    """``predict`` for networks without a noise input (the original behaviour).

    Each voxel's signal is normalised by its S(b=0), the network runs in eval
    mode without gradients (on the GPU if the network is there), and the
    network's labelling (``net.swapped``, decided once by
    ``decide_labelling`` when it was trained) is applied to every voxel
    alike: each voxel's estimate depends on its own signal only, never on the
    other voxels in the call (up to float32 rounding, see ``predict``).

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
    _check_acquisition(net, b_values)
    est, s = _encode(net, signals, negative=noise == "gaussian")
    Dp, Dt, Fp = est[:, 0], est[:, 1], est[:, 2]
    if getattr(net, "swapped", False):
        Dp, Dt, Fp = Dt, Dp, 1 - Fp
    s0_rel = est[:, 3] if est.shape[1] > 3 else 1.0  # networks that fit S0 return it 4th
    S0 = s0_rel * s[..., 0].reshape(-1)
    shape = s.shape[:-1]
    return IVIMParams(Dp.reshape(shape), Dt.reshape(shape), Fp.reshape(shape), S0.reshape(shape))
