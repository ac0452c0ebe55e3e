"""Fitting a whole image: masked voxels in, full-size maps, residuals and warnings out."""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from ..core.checks import check_b_values, check_noise, check_positive, check_signals
from ..classical.fit import estimate_sigma, fit_lsq
from ..nets.infer import predict
from .method_fits import LEVEL
from .methods import DEFAULT_METHOD, METHODS, NETWORK_METHODS, method as registered, methods
from ..core.signal_model import IVIMParams
from ..nets.networks import acquisition_matches
from .quality import decay_warnings, quality_measures, quality_warnings, residual

__all__ = ["METHODS", "NETWORK_METHODS", "VolumeFit", "fit_volume", "method_of"]


class VolumeFit(NamedTuple):
    """What ``fit_volume`` returns.

    Attributes
    ----------
    maps : IVIMParams
        Dp, Dt (mm^2/s), Fp, S0 (signal units), each shaped like the image
        without its b-value axis; 0 outside the mask.
    residual : numpy.ndarray
        RMS fit residual relative to S(b=0) (see ``quality.residual``); 0
        outside the mask.
    info : dict
        ``method``, ``voxels``, ``fit_seconds``, ``residual_median``,
        ``warnings`` (list of str, empty when nothing is wrong), ``quality``
        (what the warnings judge, see ``quality_measures``; not for ``lsq``)
        and, where they apply, ``train_seconds``, ``epochs``, ``best_epoch``, ``sigma``
        (``bayes``'s noise SD, signal units), ``noise_sd`` (``supervised``: the noise SD in
        signal units the network was given as input), ``network`` and ``sd_maps`` (what ``sd``
        holds, when there are SD maps).
    net : torch.nn.Module or None
        The network used (trained here or given); None for classical fits.
    sd : IVIMParams or None
        Posterior standard deviations of Dp, Dt, Fp and S0 (same units as
        ``maps``; 0 outside the mask) when the method yields a posterior
        (``bayes``, and ``supervised`` with its ``IVIMNetUncertainty``; see
        ``info["sd_maps"]`` for what they are), else None. The supervised
        network does not estimate S0's uncertainty: its S0 SD is NaN inside
        the mask.
    """

    maps: IVIMParams
    residual: np.ndarray
    info: dict
    net: object
    sd: IVIMParams = None


def method_of(net) -> str:
    """The network method a trained network was made with (recorded by ``train_on_scan``), else
    ``"ivimnet"`` for the seed's ``IVIMNet`` and ``"optim"`` for other networks."""
    recipe = (getattr(net, "history", None) or {}).get("recipe")
    if recipe in methods("network"):
        return recipe
    return "ivimnet" if type(net).__name__ == "IVIMNet" else "optim"


#: What the SD maps of each method that yields a posterior are (recorded as ``info["sd_maps"]``).
SD_MAPS = {
    "bayes": "posterior SD of the exact posterior with S0 unknown (fit_bayes, s0='marginal'): uniform prior on "
             "IN_VIVO_BOX for (Dp, Dt, Fp) and on S0 > 0, Rician noise with one SD in signal units for every "
             "voxel (recorded as sigma), IVIM model assumed right",
    "supervised": "the supervised network's estimate of the posterior SD (IVIMNetUncertainty's variance head, "
                  "trained on simulations of this scan: uniform prior on IN_VIVO_BOX with Dp and Dt log-uniform, "
                  "Rician noise with the noise SD recorded as noise_sd, IVIM model assumed right); within a few % "
                  "of the exact posterior's on simulations, not checked voxel by voxel here",
    "pretrained": "the shipped any-protocol network's estimate of the posterior SD (IVIMNetAnyProtocol, trained once "
                  "on simulations of many protocols: IN_VIVO_PRIOR with Dp and Dt log-uniform, Rician noise with the "
                  "noise SD recorded as sigma, IVIM model assumed right); see benchmarks/results/pretrained.json",
}


def _split_posterior(est):
    """(means, SDs) of a ``Posterior``; (est, None) for plain estimates."""
    from ..classical.posterior import Posterior

    return (est.mean, est.sd) if isinstance(est, Posterior) else (est, None)


def _unmask(values, mask):
    full = np.zeros(mask.shape)
    full[mask] = values
    return full


def fit_volume(dwi, b_values, mask, *, method=DEFAULT_METHOD, net=None, sigma=None, seed=0, max_epochs=1000,
               progress=True, noise="rician") -> VolumeFit:
    """Fit IVIM to the masked voxels of an image and check the result.

    Exactly the voxels in ``mask`` are fitted. A network method without a
    ``net`` first trains one for this scan (``train_on_scan``): ``ivimnet``
    and ``optim`` on the masked voxels themselves (unsupervised, as the paper
    does in vivo: training and inference see the same voxels), ``supervised``
    on simulations with the scan's b-values, S(b=0) levels and noise
    (an ``IVIMNetUncertainty``: it also returns posterior SD maps, ``VolumeFit.sd``).

    Every method's fit is then judged against least squares on the same
    voxels (``quality_warnings``): a flat Fp map (a collapsed network) or a
    residual clearly above least squares' is reported in ``info["warnings"]``.

    Parameters
    ----------
    dwi : array_like
        ``(..., n_b)`` with b = 0 first (e.g. from ``load_dwi``).
    b_values : array_like
        b-values in s/mm^2.
    mask : array_like of bool
        Voxels to fit, shaped ``dwi.shape[:-1]`` (see ``make_mask``).
    method : str
        A registered method (``imaging.methods``: "supervised", "ivimnet",
        "optim", "lsq", "segmented", "bayes", and any registered later);
        default ``DEFAULT_METHOD``.
    net : torch.nn.Module, optional
        A trained network for a network method; it must have been trained on
        these b-values.
    sigma : float, optional
        Noise SD in signal units (the units of ``dwi``) for ``bayes``, the
        same for every voxel; estimated from least-squares residuals
        (``estimate_sigma(..., absolute=True)``) when not given. (Before the
        exact posterior became ``fit_bayes``'s default it was relative to
        S(b=0); a value below 1/1000 of the median S(b=0) is refused as
        probably relative.) ``bayes`` is ``fit_bayes``'s exact posterior with
        S0 unknown and the uniform prior ``IN_VIVO_BOX``; it also returns the
        posterior SD maps (``VolumeFit.sd``).
    seed : int
        Seeds the network's simulation, initialisation and training.
    max_epochs : int
        Training limit for a network method without ``net``.
    progress : bool
        Progress bar while training.
    noise : {"rician", "gaussian"}
        The images' noise: ``"rician"`` (magnitude images, the default) or
        ``"gaussian"`` (real-valued or phase-corrected images: negative
        samples are legal, and the fits, the noise estimate and the Bayes
        likelihood use Gaussian noise; ``read_scan`` tells it from the image).

    Returns
    -------
    VolumeFit
    """
    entry = registered(method)  # a ValueError naming the choices for an unknown method
    network = entry.kind == "network"
    b = check_b_values(b_values)
    d = np.asarray(dwi)
    m = np.asarray(mask)
    m = (np.isfinite(m) & (m != 0)) if m.dtype.kind == "f" else m.astype(bool)  # as make_mask: NaN is outside
    if net is not None:
        import torch

        if not isinstance(net, torch.nn.Module):
            raise ValueError(f"net must be a trained network (e.g. from load_model), got {type(net).__name__}.")
        if not network:
            raise ValueError(f"a network was given but method={method!r} is not a network method "
                             f"({', '.join(methods('network'))}).")
        recipe = (getattr(net, "history", None) or {}).get("recipe")
        if recipe is not None and recipe != method:
            raise ValueError(f"this network was trained as {recipe!r}, not {method!r}; pass method={recipe!r}.")
    if m.shape != d.shape[:-1]:
        raise ValueError(f"mask shape {m.shape} does not match the image's {d.shape[:-1]}.")
    if not m.any():
        raise ValueError("the mask is empty: no voxel to fit.")
    voxels = check_signals(d[m], n_b=len(b), negative=check_noise(noise) == "gaussian")
    info = {"method": method, "voxels": int(m.sum()), "noise": noise}
    if network:
        if net is None:
            net = entry.load()(voxels, b, method=method, seed=seed, max_epochs=max_epochs, progress=progress,
                               noise=noise)
            h = net.history
            info.update(train_seconds=h["seconds"], epochs=h["epochs"], best_epoch=h["best_epoch"])
            if "noise_sd" in h:
                info["noise_sd"] = h["noise_sd"]
        elif not acquisition_matches(net, b):
            raise ValueError(
                f"the model was trained on b-values {net.b_values.tolist()} but this data has "
                f"{b.tolist()} s/mm^2; train a new model on this data (omit --model)."
            )
        info["network"] = type(net).__name__
    start = time.perf_counter()
    if network and getattr(net, "takes_sigma", False):
        # the noise it was trained for when trained here (the same estimate from the same voxels); a network
        # given (e.g. --model, trained on another scan or a cohort's pooled voxels) gets this scan's own noise,
        # as its noise input is relative to each voxel's S(b=0) and a scan's signal units are its own
        noise_sd = info.get("noise_sd")
        if noise_sd is None:
            noise_sd = float(estimate_sigma(voxels, b, absolute=True, noise=noise))
            info["noise_sd"] = noise_sd
        est = predict(net, voxels, b_values=b, sigma=noise_sd, interval=LEVEL, noise=noise)
    elif network:
        est = predict(net, voxels, b_values=b, noise=noise)
    else:  # a classical method of the registry: the in-vivo prior, intervals where it has them
        if entry.needs_sigma:
            sigma = (estimate_sigma(voxels, b, absolute=True, noise=noise) if sigma is None
                     else _check_sigma(sigma, voxels))
            info["sigma"] = float(sigma)
        est = entry.load()(voxels, b, sigma=sigma if entry.needs_sigma else None, context="scan", noise=noise)
    # a method that yields a Posterior (mean, sd, lower, upper) gets SD maps; the network methods plug in by
    # returning one from predict
    est, sd = _split_posterior(est)
    if sd is not None:
        info["sd_maps"] = SD_MAPS.get(method, f"posterior SD ({method})")
    info["fit_seconds"] = time.perf_counter() - start
    res = residual(voxels, b, est)
    lsq = est if method == "lsq" else fit_lsq(voxels, b, noise=noise)
    info["residual_median"] = float(np.median(res))
    info["warnings"] = decay_warnings(voxels, b)
    if network:  # what train() found wrong (a loss that never improved, a constant output)
        info["warnings"] += list((getattr(net, "history", None) or {}).get("warnings", []))
    if method != "lsq":  # the others are judged against least squares on the same voxels
        info["quality"] = quality_measures(est, res, lsq, residual(voxels, b, lsq), n_b=len(b))
        info["warnings"] += quality_warnings(method, info["quality"], network=network)
    maps = IVIMParams(*(_unmask(values, m) for values in est))
    sd_maps = None if sd is None else IVIMParams(*(_unmask(values, m) for values in sd))
    return VolumeFit(maps, _unmask(res, m), info, net if network else None, sd_maps)


#: A given sigma below this fraction of the median S(b=0) is taken for a relative one (an SNR above 1000).
_SIGMA_FLOOR = 1e-3


def _check_sigma(sigma, voxels):
    """``fit_volume``'s sigma: positive, and not one relative to S(b=0) given for a scan in signal units."""
    sigma = check_positive(sigma, name="sigma", what=" (noise SD in signal units)")
    s0 = float(np.median(voxels[:, 0]))
    if sigma < _SIGMA_FLOOR * s0:
        raise ValueError(f"sigma={sigma:g} is below 1/1000 of the median S(b=0) ({s0:.4g}), an SNR above 1000; "
                         f"sigma is the noise SD in signal units (no longer relative to S(b=0)): for a relative "
                         f"noise of {sigma:g} give sigma={sigma * s0:.4g}, or omit it to estimate it.")
    return sigma
