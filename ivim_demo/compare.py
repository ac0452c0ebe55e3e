"""The paper's comparison: IVIM-NET against classical fits over SNR."""
from __future__ import annotations

import time

import numpy as np

from .fit import fit_bayes, fit_lsq, fit_segmented
from .infer import predict
from .metrics import PARAMS, cv_across, normalised_bias, nrmse, spearman
from .model import SEED_B_VALUES
from .networks import IVIMNet
from .simulate import training_data
from .train import train

__all__ = ["fit_all", "score", "compare_at_snr", "train_network_at_snr"]


def train_network_at_snr(snr, *, n, b_values=SEED_B_VALUES, seed=0, max_epochs=1000, progress=False):
    """Train the seed's IVIM-NET on ``n`` simulated voxels at this SNR (sigma = 1/SNR).

    Returns
    -------
    net : IVIMNet
    history : TrainHistory
    """
    signals, _ = training_data(n, b_values, sigma=1.0 / snr, seed=seed + 1000)
    net = IVIMNet(b_values, seed=seed)
    return net, train(net, signals, seed=seed, max_epochs=max_epochs, progress=progress)


def fit_all(signals, b_values, *, snr, net=None, bayes_grid=(40, 40, 40)):
    """Estimate with every method: IVIM-NET (when ``net`` is given), LSQ, segmented, Bayes.

    Returns
    -------
    estimates : dict of str -> IVIMParams
    seconds : dict of str -> float
        Wall time of each method on these signals (the network: inference only).
    """
    methods = {
        "LSQ": lambda: fit_lsq(signals, b_values),
        "segmented": lambda: fit_segmented(signals, b_values),
        "Bayes": lambda: fit_bayes(signals, b_values, sigma=1.0 / snr, grid=bayes_grid),
    }
    if net is not None:
        methods = {"IVIM-NET": lambda: predict(net, signals, b_values=b_values), **methods}
    estimates, seconds = {}, {}
    for name, run in methods.items():
        start = time.perf_counter()
        estimates[name] = run()
        seconds[name] = time.perf_counter() - start
    return estimates, seconds


def score(estimates: dict, truth, *, seconds=None, extra=None):
    """One row per method and parameter: NRMSE, normalised bias, Spearman rho vs truth,
    and the method's parameter coupling rho(Dp, Fp) and rho(Dt, Fp) (estimates).

    Parameters
    ----------
    estimates : dict of str -> IVIMParams
    truth : IVIMParams
    seconds : dict of str -> float, optional
        Adds ``ms_per_1000_voxels``.
    extra : dict, optional
        Columns added to every row (e.g. ``{"snr": 20}``).
    """
    rows = []
    n = np.size(truth.Dp)
    for method, est in estimates.items():
        coupling = {"rho_Dp_Fp": spearman(est.Dp, est.Fp), "rho_Dt_Fp": spearman(est.Dt, est.Fp)}
        for name in PARAMS:
            e, t = getattr(est, name), getattr(truth, name)
            row = {**(extra or {}), "method": method, "param": name, "nrmse": nrmse(e, t),
                   "bias": normalised_bias(e, t), "rho_truth": spearman(e, t), **coupling}
            if seconds is not None:
                row["ms_per_1000_voxels"] = 1e6 * seconds[method] / n
            rows.append(row)
    return rows


def compare_at_snr(snr, *, n_test, n_train, n_repeats=1, b_values=SEED_B_VALUES, seed=0, max_epochs=1000,
                   bayes_grid=(40, 40, 40), progress=False):
    """Everything the paper compares at one SNR.

    Simulates ``n_test`` held-out voxels from the box (S0 = 1, Rician noise,
    sigma = 1/SNR), trains ``n_repeats`` networks on ``n_train`` voxels at that
    SNR (seeds ``seed``, ``seed + 1``, ...), fits with every method and scores
    them. The network's rows report the first training and, as ``cv``, the
    coefficient of variation of its estimates across the repeated trainings.

    Returns
    -------
    rows : list of dict
        ``score`` rows with ``snr``, plus ``cv`` and ``train_seconds`` for IVIM-NET.
    estimates : dict of str -> IVIMParams
    truth : IVIMParams
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}.")
    signals, truth = training_data(n_test, b_values, sigma=1.0 / snr, seed=seed + 7919)
    nets = [train_network_at_snr(snr, n=n_train, b_values=b_values, seed=seed + k, max_epochs=max_epochs,
                                 progress=progress) for k in range(n_repeats)]
    estimates, seconds = fit_all(signals, b_values, snr=snr, net=nets[0][0], bayes_grid=bayes_grid)
    rows = score(estimates, truth, seconds=seconds, extra={"snr": snr})
    repeats = [estimates["IVIM-NET"]] + [predict(net, signals) for net, _ in nets[1:]]
    for row in rows:
        if row["method"] == "IVIM-NET":
            row["cv"] = cv_across([getattr(r, row["param"]) for r in repeats]) if n_repeats > 1 else float("nan")
            row["train_seconds"] = float(np.mean([h.seconds for _, h in nets]))
    return rows, estimates, truth
