"""The paper's comparison: IVIM-NET against classical fits over SNR."""
from __future__ import annotations

import time

import numpy as np

from ..core.checks import check_positive
from ..nets.infer import predict
from ..imaging.methods import method as registered, methods as registered_methods
from ..core.metrics import PARAMS, cv_across, normalised_bias, nrmse, spearman
from ..core.signal_model import SEED_B_VALUES
from ..nets.jobs import train_jobs
from ..simulation.simulate import training_data

__all__ = ["ABLATION", "ABLATION_EPOCH_CAP", "SPREAD_COLUMNS", "fit_all", "score", "compare_over_snr", "compare_at_snr", "ablation", "held_out"]


def fit_all(signals, b_values, *, snr=None, sigma=None, net=None, bayes_grid=(40, 40, 40)):
    """Estimate with every method: IVIM-NET (when ``net`` is given) and every classical method registered
    (``imaging.methods``: LSQ, segmented, Bayes, and any added).

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
    noise = _noise_sd(signals, snr, sigma)
    classical = [registered(m) for m in registered_methods("classical")]  # every classical method registered
    methods = {m.label: (lambda m=m: m.load()(signals, b_values, sigma=noise if m.needs_sigma else None,
                                                context="simulation", grid=bayes_grid))
               for m in classical}
    if net is not None:
        methods = {registered("ivimnet").label: lambda: predict(net, signals, b_values=b_values), **methods}
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


#: Score columns that vary between trainings: for networks trained more than once, rows give their
#: mean over the trainings and, as ``<column>_sd``, their standard deviation.
SPREAD_COLUMNS = ("nrmse", "bias", "rho_truth", "rho_Dp_Fp", "rho_Dt_Fp")


def compare_over_snr(snrs, *, n_test, n_train, n_repeats=1, networks=None, b_values=SEED_B_VALUES, seed=0,
                     max_epochs=1000, bayes_grid=(40, 40, 40), workers=1, cache=None, progress=True):
    """Everything the paper compares, at each SNR in ``snrs``.

    At each SNR: simulates ``n_test`` held-out voxels from the box (S0 = 1,
    Rician noise, sigma = 1/SNR), trains ``n_repeats`` networks of each kind
    in ``networks`` on ``n_train`` voxels at that SNR (seeds ``seed``,
    ``seed + 1``, ...), fits with every classical method and scores them
    all. All trainings run first, stacked (``train_jobs``: networks of one
    kind train together, ``workers`` stacks at a time).

    Parameters
    ----------
    snrs : sequence of float
        SNRs at b = 0.
    networks : dict of str -> str, optional
        Row label -> ``train_for_snr`` method; default ``{"IVIM-NET": "ivimnet"}``.
    n_repeats : int
        Trainings per network and SNR. With more than one, a network's score
        columns (``SPREAD_COLUMNS``) are the mean over its trainings, with
        their standard deviation over trainings in ``<column>_sd``, and ``cv``
        is the coefficient of variation of its estimates across trainings.
    cache : str or os.PathLike, optional
        Folder of trained networks shared between runs (see ``train_jobs``).
    progress : bool
        Print a line when the trainings start and end and one per SNR scored.

    Returns
    -------
    rows : list of dict
        ``score`` rows with ``snr``, plus ``trainings``, ``cv``,
        ``train_seconds`` and ``epochs`` (means over trainings) for the
        networks.
    estimates : dict of float -> dict of str -> IVIMParams
        Per SNR, each method's estimates (a network's: its first training).
    truths : dict of float -> IVIMParams
    """
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a whole number >= 1, got {n_repeats!r}.")
    snrs = list(snrs)
    networks = networks or {"IVIM-NET": "ivimnet"}
    jobs = [{"snr": snr, "method": method, "seed": seed + k, "n": n_train, "b_values": b_values,
             "max_epochs": max_epochs} for snr in snrs for method in networks.values() for k in range(n_repeats)]
    start = time.perf_counter()
    if progress:
        print(f"training {len(jobs)} networks ({len(networks)} kinds x {len(snrs)} SNRs x {n_repeats} seeds), "
              f"{workers} stack(s) at a time ...", flush=True)
    trained = iter(train_jobs(jobs, workers=workers, cache=cache))
    if progress:
        print(f"trained in {time.perf_counter() - start:.0f} s", flush=True)
    rows, estimates, truths = [], {}, {}
    for snr in snrs:
        signals, truths[snr] = held_out(snr, n_test, b_values, seed)
        nets = {label: [next(trained) for _ in range(n_repeats)] for label in networks}
        runs, seconds = {}, {}
        for label, group in nets.items():
            t0 = time.perf_counter()
            runs[label] = [predict(group[0], signals, b_values=b_values)]
            seconds[label] = time.perf_counter() - t0
            runs[label] += [predict(net, signals) for net in group[1:]]
        estimates[snr] = {label: r[0] for label, r in runs.items()}
        classical, classical_seconds = fit_all(signals, b_values, snr=snr, bayes_grid=bayes_grid)
        estimates[snr].update(classical)
        seconds.update(classical_seconds)
        at_snr = score(classical, truths[snr], seconds=seconds, extra={"snr": snr})
        for label, group in nets.items():
            at_snr += _over_trainings(runs[label], truths[snr], label, seconds[label], group, {"snr": snr})
        order = list(estimates[snr])
        rows += sorted(at_snr, key=lambda r: (order.index(r["method"]), PARAMS.index(r["param"])))
        if progress:
            print(f"SNR {snr:>5g}: scored after {time.perf_counter() - start:.0f} s", flush=True)
    return rows, estimates, truths


def compare_at_snr(snr, **options):
    """``compare_over_snr`` at one SNR: ``(rows, estimates, truth)`` of that SNR (same options)."""
    rows, estimates, truths = compare_over_snr([snr], **options)
    return rows, estimates[snr], truths[snr]


def _over_trainings(runs, truth, label, seconds, nets, extra):
    """Score rows of one network trained ``len(runs)`` times: means (and SDs) over the trainings."""
    timing = None if seconds is None else {label: seconds}
    scored = [score({label: est}, truth, seconds=timing, extra=extra) for est in runs]
    rows = []
    for i, row in enumerate(scored[0]):
        row = dict(row)
        param = row["param"]
        if len(runs) > 1:
            for column in SPREAD_COLUMNS:
                values = [s[i][column] for s in scored]
                row[column], row[f"{column}_sd"] = float(np.mean(values)), float(np.std(values, ddof=1))
            row["cv"] = cv_across([getattr(r, param) for r in runs])
        else:
            row["cv"] = float("nan")
        row["trainings"] = len(runs)
        row.update(_training_summary(nets))
        rows.append(row)
    return rows


def _capped(train_options, max_epochs):
    """A step's own epoch cap (``ABLATION_EPOCH_CAP``) never raises the ablation's ``max_epochs``."""
    if "max_epochs" not in train_options:
        return train_options
    return {**train_options, "max_epochs": min(train_options["max_epochs"], max_epochs)}


def held_out(snr, n, b_values, seed):
    """The held-out test voxels the comparison and the ablation score on.

    ``training_data(n, b_values, sigma=1/snr, seed=seed + 7919)``: S0 = 1, Rician noise at SNR ``snr``,
    parameters uniform on the seed's box; the same seed gives the same voxels.

    Returns
    -------
    signals : numpy.ndarray
        ``(n, n_b)``.
    truth : IVIMParams
    """
    return training_data(n, b_values, sigma=1.0 / snr, seed=seed + 7919)


def _training_summary(nets) -> dict:
    """Mean training time and epochs of one or more trained networks (from their ``.history``), and how
    many of them ran to their epoch limit without early stopping (``capped``)."""
    return {"train_seconds": float(np.mean([net.history["seconds"] for net in nets])),
            "epochs": float(np.mean([net.history["epochs"] for net in nets])),
            "capped": int(sum(not net.history.get("stopped_early", True) for net in nets))}


#: Most epochs of the ablation's steps 3-5. Bounded outputs without batch norm learn slowly at
#: lr 1e-3: their validation loss keeps falling by tiny amounts, so early stopping (10 epochs without
#: any improvement) came after 132, 362 and 250 epochs in single full-size trainings (a step ran
#: up to 8 minutes on one core). Capped, each such training stops at this many epochs; the
#: ablation's ``capped`` column counts the trainings that hit the cap.
ABLATION_EPOCH_CAP = 100

#: IVIM-NET_orig to IVIM-NET_optim one change at a time: (label, method, net_options, train_options).
#: Validation stopping comes first: the seed stops when the *summed training loss* has not improved
#: for 10 epochs, and with dropout or batch norm that loss keeps creeping down for hundreds of epochs
#: (a full-size step ran > 15 min on 2 cores), so every later step stops on the 10 % validation split.
#: Steps 3-5 keep the seed's depth (3 hidden layers) and stop at ``ABLATION_EPOCH_CAP`` epochs at the
#: latest; step 6 is the published network (= "optim").
_CAP = {"max_epochs": ABLATION_EPOCH_CAP}
ABLATION = [
    ("orig (seed)", "ivimnet", {}, {}),
    ("+ validation stopping", "ivimnet", {}, {"validation_fraction": 0.1}),
    ("+ bounded outputs", "optim", {"parallel": False, "fit_s0": False, "batch_norm": False, "dropout": 0.0,
                                    "depth": 3}, _CAP),
    ("+ one sub-network per parameter", "optim", {"fit_s0": False, "batch_norm": False, "dropout": 0.0,
                                                  "depth": 3}, _CAP),
    ("+ S0 fitted", "optim", {"batch_norm": False, "dropout": 0.0, "depth": 3}, _CAP),
    ("+ batch norm, dropout, 2 layers (= optim)", "optim", {}, {}),
    ("supervised", "supervised_optim", {}, {}),
]


def ablation(snr, *, n_test, n_train, steps=ABLATION, n_repeats=1, b_values=SEED_B_VALUES, seed=0, max_epochs=1000,
             workers=1, cache=None):
    """Train each step of an ablation (see ``ABLATION``) and score it on held-out voxels.

    Each step is trained ``n_repeats`` times (seeds ``seed``, ``seed + 1``,
    ...; the trainings of one step run stacked, ``workers`` steps at a time;
    ``cache``: see ``train_jobs``).

    Returns
    -------
    list of dict
        ``score`` rows (method = step label) with ``trainings``,
        ``train_seconds`` and ``epochs``; with ``n_repeats > 1`` the score
        columns are means over the trainings with ``<column>_sd`` beside them
        (see ``compare_over_snr``).
    """
    signals, truth = held_out(snr, n_test, b_values, seed)
    jobs = [{"snr": snr, "method": method, "seed": seed + k, "n": n_train, "b_values": b_values,
             "max_epochs": max_epochs, "net_options": net_opts, "train_options": _capped(train_opts, max_epochs)}
            for _, method, net_opts, train_opts in steps for k in range(n_repeats)]
    trained = iter(train_jobs(jobs, workers=workers, cache=cache))
    rows = []
    for label, *_ in steps:
        nets = [next(trained) for _ in range(n_repeats)]
        rows += _over_trainings([predict(net, signals) for net in nets], truth, label, None, nets, {"snr": snr})
    for row in rows:
        if n_repeats == 1:
            row.pop("cv", None)
    return rows
