"""Fitting a whole image: masked voxels in, full-size maps out."""
from __future__ import annotations

import time

import numpy as np

from .checks import check_b_values, check_signals
from .fit import estimate_sigma, fit_bayes, fit_lsq, fit_segmented
from .infer import predict
from .model import IVIMParams
from .networks import IVIMNet, acquisition_matches
from .train import train

__all__ = ["METHODS", "fit_volume"]

#: Methods ``fit_volume`` (and the command line) accept.
METHODS = ("ivimnet", "lsq", "segmented", "bayes")


def fit_volume(dwi, b_values, mask, *, method="ivimnet", net=None, sigma=None, seed=0, max_epochs=1000,
               progress=True):
    """Fit IVIM to the masked voxels of an image.

    Exactly the voxels in ``mask`` are fitted, and for ``ivimnet`` without a
    ``net`` the network is first trained, unsupervised, on those same voxels
    (as the paper does in vivo): training and inference see the same voxels.

    Parameters
    ----------
    dwi : array_like
        ``(..., n_b)`` with b = 0 first (e.g. from ``load_dwi``).
    b_values : array_like
        b-values in s/mm^2.
    mask : array_like of bool
        Voxels to fit, shaped ``dwi.shape[:-1]`` (see ``make_mask``).
    method : {"ivimnet", "lsq", "segmented", "bayes"}
    net : IVIMNet, optional
        A trained network; it must have been trained on these b-values.
    sigma : float, optional
        Noise relative to S(b=0) for ``bayes``; estimated from LSQ residuals
        when not given.
    seed : int
        Seeds the network's initialisation and training.
    max_epochs : int
        Training limit for ``ivimnet`` without ``net``.
    progress : bool
        Progress bar while training.

    Returns
    -------
    maps : IVIMParams
        Each ``dwi.shape[:-1]``; 0 outside the mask.
    info : dict
        ``method``, ``voxels``, ``fit_seconds`` and, where they apply,
        ``train_seconds``, ``epochs``, ``sigma``.
    net : IVIMNet or None
        The network used (trained here or given).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    b = check_b_values(b_values)
    d = np.asarray(dwi)
    m = np.asarray(mask, dtype=bool)
    if m.shape != d.shape[:-1]:
        raise ValueError(f"mask shape {m.shape} does not match the image's {d.shape[:-1]}.")
    if not m.any():
        raise ValueError("the mask is empty: no voxel to fit.")
    voxels = check_signals(d[m], n_b=len(b))
    info = {"method": method, "voxels": int(m.sum())}
    start = time.perf_counter()
    if method == "ivimnet":
        if net is None:
            net = IVIMNet(b, seed=seed)
            history = train(net, voxels, seed=seed, max_epochs=max_epochs, progress=progress)
            info.update(train_seconds=history.seconds, epochs=history.epochs, best_epoch=history.best_epoch)
            net.history = history.as_dict()
        elif not acquisition_matches(net, b):
            raise ValueError(
                f"the model was trained on b-values {net.b_values.tolist()} but this data has "
                f"{b.tolist()} s/mm^2; train a new model on this data (omit --model)."
            )
        start = time.perf_counter()
        est = predict(net, voxels, b_values=b)
    elif method == "lsq":
        est = fit_lsq(voxels, b)
    elif method == "segmented":
        est = fit_segmented(voxels, b)
    else:
        sigma = estimate_sigma(voxels, b) if sigma is None else sigma
        info["sigma"] = float(sigma)
        est = fit_bayes(voxels, b, sigma=sigma)
    info["fit_seconds"] = time.perf_counter() - start
    maps = []
    for values in est:
        full = np.zeros(m.shape)
        full[m] = values
        maps.append(full)
    return IVIMParams(*maps), info, (net if method == "ivimnet" else None)
