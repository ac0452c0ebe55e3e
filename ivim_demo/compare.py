"""The paper's comparison: IVIM-NET against classical fits over SNR."""
from __future__ import annotations

import time

import numpy as np

from .checks import check_positive
from .infer import predict
from .methods import CLASSICAL_METHODS, LABELS, classical_fit
from .metrics import PARAMS, cv_across, normalised_bias, nrmse, spearman
from .signal_model import SEED_B_VALUES
from .recipes import ABLATION, train_jobs
from .simulate import training_data

__all__ = ["fit_all", "score", "compare_at_snr", "ablation"]


def fit_all(signals, b_values, *, snr=None, sigma=None, net=None, bayes_grid=(40, 40, 40)):
    """Estimate with every method: IVIM-NET (when ``net`` is given), LSQ, segmented, Bayes.

    Bayes is ``fit_bayes``'s exact posterior mean (S0 unknown, uniform prior
    on ``PARAMETER_BOX``), which needs the noise SD in signal units: give
    ``sigma``, or ``snr`` for signals simulated with S0 = 1 (then sigma =
    1 / snr).

    Parameters
    ----------
    signals : array_like
        ``(..., n_b)``, b = 0 first.
    b_values : array_like
        b-values in s/mm^2.
    snr : float, optional
        SNR at b = 0 of signals with S0 = 1 (``training_data``); refused for
        signals whose median S(b=0) is not about 1 (give ``sigma``).
    sigma : float, optional
        Noise SD in signal units (e.g. the phantom's ``sigma``). Exactly one
        of ``snr`` and ``sigma``.
    net : torch.nn.Module, optional
    bayes_grid : tuple of 3 int
        ``fit_bayes``'s grid.

    Returns
    -------
    estimates : dict of str -> IVIMParams
    seconds : dict of str -> float
        Wall time of each method on these signals (the network: inference only).
    """
    options = {"bayes": {"sigma": _noise_sd(signals, snr, sigma), "grid": bayes_grid}}
    methods = {LABELS[m]: (lambda m=m: classical_fit(m)(signals, b_values, **options.get(m, {})))
               for m in CLASSICAL_METHODS}
    if net is not None:
        methods = {LABELS["ivimnet"]: lambda: predict(net, signals, b_values=b_values), **methods}
    estimates, seconds = {}, {}
    for name, run in methods.items():
        start = time.perf_counter()
        estimates[name] = run()
        seconds[name] = time.perf_counter() - start
    return estimates, seconds


def _noise_sd(signals, snr, sigma) -> float:
    """``fit_all``'s noise SD in signal units, from exactly one of ``snr`` (S0 = 1) and ``sigma``."""
    if (snr is None) == (sigma is None):
        raise ValueError("give fit_all exactly one of snr= (signals simulated with S0 = 1: sigma = 1/snr) and "
                         "sigma= (the noise SD in signal units, e.g. the phantom's).")
    if sigma is not None:
        return check_positive(sigma, name="sigma", what=" (noise SD in signal units)")
    snr = check_positive(snr, name="snr")
    s0 = float(np.median(np.asarray(signals, float)[..., 0]))
    if not 0.5 <= s0 <= 2.0:
        raise ValueError(f"snr= means sigma = 1/snr for signals with S0 = 1, but these have a median S(b=0) of "
                         f"{s0:.4g}; pass sigma= (the noise SD in signal units) instead.")
    return 1.0 / snr


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


def compare_at_snr(snr, *, n_test, n_train, n_repeats=1, networks=None, b_values=SEED_B_VALUES, seed=0,
                   max_epochs=1000, bayes_grid=(40, 40, 40), workers=1):
    """Everything the paper compares at one SNR.

    Simulates ``n_test`` held-out voxels from the box (S0 = 1, Rician noise,
    sigma = 1/SNR), trains ``n_repeats`` networks of each kind in ``networks``
    on ``n_train`` voxels at that SNR (seeds ``seed``, ``seed + 1``, ...;
    ``workers`` trainings at a time), fits with every classical method and
    scores them all. Each network's rows report its first training and, as
    ``cv``, the coefficient of variation of its estimates across the repeats.

    Parameters
    ----------
    networks : dict of str -> str, optional
        Row label -> ``train_for_snr`` method; default ``{"IVIM-NET": "orig"}``.

    Returns
    -------
    rows : list of dict
        ``score`` rows with ``snr``, plus ``cv``, ``train_seconds`` and
        ``epochs`` for the networks.
    estimates : dict of str -> IVIMParams
    truth : IVIMParams
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}.")
    networks = networks or {"IVIM-NET": "orig"}
    signals, truth = _held_out(snr, n_test, b_values, seed)
    jobs = [{"snr": snr, "method": method, "seed": seed + k, "n": n_train, "b_values": b_values,
             "max_epochs": max_epochs} for method in networks.values() for k in range(n_repeats)]
    trained = train_jobs(jobs, workers=workers)
    nets = {label: trained[i * n_repeats : (i + 1) * n_repeats] for i, label in enumerate(networks)}
    estimates, seconds = {}, {}
    for label, group in nets.items():
        start = time.perf_counter()
        estimates[label] = predict(group[0], signals, b_values=b_values)
        seconds[label] = time.perf_counter() - start
    classical, classical_seconds = fit_all(signals, b_values, snr=snr, bayes_grid=bayes_grid)
    estimates.update(classical)
    seconds.update(classical_seconds)
    rows = score(estimates, truth, seconds=seconds, extra={"snr": snr})
    repeats = {label: [estimates[label]] + [predict(net, signals) for net in group[1:]]
               for label, group in nets.items()}  # once per network, not once per parameter row
    for row in rows:
        if row["method"] in nets:
            runs = repeats[row["method"]]
            row["cv"] = cv_across([getattr(r, row["param"]) for r in runs]) if n_repeats > 1 else float("nan")
            row.update(_training_summary(nets[row["method"]]))
    return rows, estimates, truth


def _held_out(snr, n, b_values, seed):
    """The test voxels both the comparison and the ablation score on (same seed -> same voxels)."""
    return training_data(n, b_values, sigma=1.0 / snr, seed=seed + 7919)


def _training_summary(nets) -> dict:
    """Mean training time and epochs of one or more trained networks (from their ``.history``)."""
    return {"train_seconds": float(np.mean([net.history["seconds"] for net in nets])),
            "epochs": float(np.mean([net.history["epochs"] for net in nets]))}


def ablation(snr, *, n_test, n_train, steps=ABLATION, b_values=SEED_B_VALUES, seed=0, max_epochs=1000, workers=1):
    """Train each step of an ablation (see ``recipes.ABLATION``) once and score it on held-out voxels.

    Returns
    -------
    list of dict
        ``score`` rows (method = step label) with ``train_seconds`` and ``epochs``.
    """
    signals, truth = _held_out(snr, n_test, b_values, seed)
    jobs = [{"snr": snr, "method": method, "seed": seed, "n": n_train, "b_values": b_values,
             "max_epochs": max_epochs, "net_options": net_opts, "train_options": train_opts}
            for _, method, net_opts, train_opts in steps]
    nets = {label: net for (label, *_), net in zip(steps, train_jobs(jobs, workers=workers))}
    rows = score({label: predict(net, signals) for label, net in nets.items()}, truth, extra={"snr": snr})
    for row in rows:
        row.update(_training_summary([nets[row["method"]]]))
    return rows
