"""IVIM-NET_orig and IVIM-NET_optim on the settings of Kaandorp et al. 2021, to reproduce their numbers.

Kaandorp et al., "Improved unsupervised physics-informed deep learning for
intravoxel incoherent motion modeling and evaluation in pancreatic cancer
patients", MRM 2021;86:2250-2265; their code is github oliverchampion/IVIMNET
(commit 699b3d3, ``hyperparams.py``, ``IVIMNET/simulations.py`` and
``IVIMNET/deep.py``). Everything here is a setting read from there or a number
printed in the paper; ``benchmarks/kaandorp2021.py`` runs it.

Where this reproduction departs from their code, on purpose:

* ``IVIMNet`` (the seed's network) reads the b > 0 columns (width 10); their
  orig reads every column, the constant b = 0 one included (width 11).
* Every simulated signal gets noise (their loop left the last one noise-free).
* Which output is Dp is decided once, on the training signals (``decide_labelling``);
  theirs decided it on the signals being scored. Their ``predict_IVIM`` returns 0 for
  signals that fail its filter; at SNR 20 none of the scored signals does here, and
  this project refuses rather than returns 0.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_whole
from ..core.metrics import cv_net, nrmse, spearman
from ..core.signal_model import IVIMParams, ivim
from ..core.threads import process_pool
from ..simulation.simulate import sample_params
from .infer import predict
from .networks import IVIMNet, IVIMNetOptim
from .training import train

__all__ = ["KAANDORP_B_VALUES", "KAANDORP_BOX", "KAANDORP_SNR", "KAANDORP_N", "KAANDORP_N_EVAL", "KAANDORP_REPEATS",
           "KAANDORP_NETWORKS", "KAANDORP_TRAINING", "KAANDORP_PUBLISHED", "kaandorp_data", "kaandorp_network",
           "ivimnet_training_filter", "train_published", "score_published", "reproduce_kaandorp", "kaandorp_rows",
           "PAPER_NAMES"]

#: b-values of IVIMNET's simulations, s/mm^2.
KAANDORP_B_VALUES = np.array([0, 5, 10, 20, 30, 40, 60, 150, 300, 500, 700], dtype=float)
#: Simulated range, uniform in each parameter (mm^2/s and fraction).
KAANDORP_BOX = {"Dp": (0.01, 0.1), "Dt": (0.0005, 0.003), "Fp": (0.05, 0.55)}
#: The SNR of the published table (S0 = 1, Gaussian noise SD 1/SNR).
KAANDORP_SNR = 20
#: Simulated signals: all train the networks (90 % training, 10 % validation); the first
#: ``KAANDORP_N_EVAL`` of them score the networks, as in IVIMNET's ``sim``.
KAANDORP_N = 1_000_000
KAANDORP_N_EVAL = 10_000
#: Retrainings on the same signals (other weight initialisation and shuffling), for CV_NET.
KAANDORP_REPEATS = 5

#: The two networks, as IVIMNET's ``net_pars``: optim is bounded by a sigmoid to [0, 0, 0.005, 0.7] -
#: [0.005, 0.7, 0.2, 2.0] (Dt, Fp, Dp, S0) widened by 30 % of each range, with S0 fitted as a second
#: amplitude, one sub-network per parameter, 2 hidden layers as wide as the b-values, batch norm and
#: dropout 0.1 (not after the last hidden layer); orig is the seed's network (3 layers, abs(), S0 fixed).
KAANDORP_NETWORKS = {
    "optim": {"bounds": {"Dp": (0.005, 0.2), "Dt": (0.0, 0.005), "Fp": (0.0, 0.7), "S0": (0.7, 2.0)},
              "widen": 0.3, "amplitudes": True, "dropout_last": False, "fit_s0": True, "parallel": True,
              "batch_norm": True, "dropout": 0.1, "depth": 2},
    "orig": {},
}

#: ``train`` options, as IVIMNET's ``train_pars``: Adam with weight decay 1e-4, batch 128, at most 500
#: batches per epoch, a 10 % validation split, patience 10, the last epoch's weights kept
#: (``select_best = False``), the reconstruction clamped to [0, 3] in the loss; lr 3e-5 (optim) and
#: 1e-3 (orig).
_COMMON = {"batch_size": 128, "batches_per_epoch": 500, "validation_fraction": 0.1, "patience": 10,
           "max_epochs": 1000, "weight_decay": 1e-4, "weights": "last", "clip": (0.0, 3.0), "noise": "gaussian"}
KAANDORP_TRAINING = {"optim": {**_COMMON, "lr": 3e-5}, "orig": {**_COMMON, "lr": 1e-3}}

#: Kaandorp et al. 2021 at SNR 20 (their Table 2 / text): NRMSE = RMSE / mean(true); rho = |Spearman| between
#: the estimated Dp and Fp; CV_NET = sqrt(mean over voxels of the variance across retrainings) / mean(true).
KAANDORP_PUBLISHED = {
    "optim": {"NRMSE": {"D": 0.177, "f": 0.220, "Dstar": 0.386}, "rho_Dstar_f": 0.22,
              "CV_NET": {"D": 0.013, "f": 0.020, "Dstar": 0.036}},
    "orig": {"NRMSE": {"D": 0.196, "f": 0.267, "Dstar": 0.393}, "rho_Dstar_f": 0.74,
             "CV_NET": {"D": 0.104, "f": 0.054, "Dstar": 0.110}},
}


def kaandorp_data(n=KAANDORP_N, *, snr=KAANDORP_SNR, seed=0):
    """Signals simulated as IVIMNET's ``sim_signal`` does (Gaussian noise), and their truth.

    .. math:: S(b) = F_p e^{-b D_p} + (1 - F_p) e^{-b D_t} + \\epsilon, \\quad
              \\epsilon \\sim N(0, 1/\\mathrm{SNR})

    with (Dp, Dt, Fp) uniform in ``KAANDORP_BOX`` and S0 = 1 (the networks and
    ``train`` divide by the noisy S(b=0) themselves).

    Parameters
    ----------
    n : int
        Number of signals.
    snr : float, keyword-only
        Signal-to-noise ratio at b = 0.
    seed : int or numpy.random.Generator
        One generator draws the parameters, then the noise.

    Returns
    -------
    signals : ndarray, shape (n, 11)
        At ``KAANDORP_B_VALUES``.
    truth : IVIMParams
    """
    n = check_whole(n, name="n")
    if not (isinstance(snr, (int, float)) and np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number, got {snr!r}.")
    rng = np.random.default_rng(seed)
    p = sample_params(n, box=KAANDORP_BOX, seed=rng)
    clean = ivim(KAANDORP_B_VALUES, p.Dp[:, None], p.Dt[:, None], p.Fp[:, None])
    return clean + rng.normal(0.0, 1.0 / snr, clean.shape), IVIMParams(p.Dp, p.Dt, p.Fp, np.ones(n))


def kaandorp_network(name, *, seed=0):
    """A fresh IVIM-NET_orig or IVIM-NET_optim for ``KAANDORP_B_VALUES``, as IVIMNET builds it.

    Parameters
    ----------
    name : {"optim", "orig"}
        ``"orig"``: the seed's ``IVIMNet``; ``"optim"``: ``IVIMNetOptim`` with ``KAANDORP_NETWORKS["optim"]``.
    seed : int, keyword-only
        Seed of the weight initialisation.

    Returns
    -------
    IVIMNet or IVIMNetOptim
    """
    if name not in KAANDORP_NETWORKS:
        raise ValueError(f"name must be one of {list(KAANDORP_NETWORKS)}, got {name!r}.")
    if name == "orig":
        return IVIMNet(KAANDORP_B_VALUES, seed=seed)
    return IVIMNetOptim(KAANDORP_B_VALUES, seed=seed, **KAANDORP_NETWORKS[name])


def ivimnet_training_filter(signals, b_values=KAANDORP_B_VALUES):
    """IVIMNET's ``learn_IVIM`` filter of training signals, and its clipping.

    Normalised by S(b=0), a signal is kept when the 95th percentile of its
    samples at b < 50 is below 1.3, at b > 50 below 1.2 and at b > 150 below
    1.0; samples above 1.5 are then set to 1.5. (IVIMNET's ``predict_IVIM``
    tests the 0.95th percentile instead, which keeps nearly every signal: the
    two filters differ, a pitfall this project avoids elsewhere. Here it
    applies to training only, as in their code.)

    Parameters
    ----------
    signals : ndarray, shape (n, n_b)
    b_values : array_like
        In s/mm^2.

    Returns
    -------
    kept : ndarray, shape (m, n_b)
        The kept signals, normalised and clipped.
    keep : ndarray of bool, shape (n,)
    """
    b = np.asarray(b_values, float)
    x = np.asarray(signals, float)
    x = x / x[:, b == 0].mean(axis=1, keepdims=True)
    keep = ((np.percentile(x[:, b < 50], 95, axis=1) < 1.3) & (np.percentile(x[:, b > 50], 95, axis=1) < 1.2)
            & (np.percentile(x[:, b > 150], 95, axis=1) < 1.0))
    return np.minimum(x[keep], 1.5), keep


def train_published(name, *, n=KAANDORP_N, seed=0, data_seed=0, max_epochs=None):
    """Train IVIM-NET_orig or _optim exactly as IVIMNET's ``sim`` does, on ``kaandorp_data(n, seed=data_seed)``.

    The signals pass ``ivimnet_training_filter``; the network (``kaandorp_network(name, seed=seed)``)
    trains with ``KAANDORP_TRAINING[name]``, ``seed`` also seeding the validation split and shuffling.

    Parameters
    ----------
    name : {"optim", "orig"}
    n : int, keyword-only
        Simulated signals (published: 1,000,000).
    seed : int
        The retraining: weights, split and shuffling.
    data_seed : int
        Seed of the simulated signals (the same for every retraining).
    max_epochs : int, optional
        Fewer epochs than IVIMNET's 1000 (tests).

    Returns
    -------
    IVIMNet or IVIMNetOptim
        Trained, with ``.history`` (``TrainHistory.as_dict()``).
    """
    signals, _ = kaandorp_data(n, seed=data_seed)
    kept, _ = ivimnet_training_filter(signals)
    net = kaandorp_network(name, seed=seed)
    options = dict(KAANDORP_TRAINING[name])
    if max_epochs is not None:
        options["max_epochs"] = max_epochs
    net.history = train(net, kept, seed=seed, progress=False, **options).as_dict()
    return net


#: The paper's names of the parameters, as ``KAANDORP_PUBLISHED`` and ``score_published`` use them.
PAPER_NAMES = {"Dt": "D", "Fp": "f", "Dp": "Dstar"}


def score_published(estimates, truth):
    """Score retrained networks as IVIMNET's ``sim`` does.

    Parameters
    ----------
    estimates : sequence of IVIMParams
        One per retraining, each of the same voxels.
    truth : IVIMParams
        The voxels' true parameters.

    Returns
    -------
    dict
        ``NRMSE`` (RMSE / mean truth, averaged over retrainings), its SD
        over retrainings ``NRMSE_sd`` and each retraining's, in order, ``NRMSE_each``, ``rho_Dstar_f`` (|Spearman| of the
        estimated Dp and Fp, averaged; 1 for a network whose Dp or Fp is
        constant, as IVIMNET's code sets it) and ``rho_Dstar_f_sd``, ``CV_NET``
        (``metrics.cv_net`` across retrainings; None for one) keyed by the
        paper's names (D, f, Dstar), the shape of ``KAANDORP_PUBLISHED``.
    """
    if not estimates:
        raise ValueError("no estimates to score: give one IVIMParams per retrained network.")
    n = np.size(truth.Dt)
    for e in estimates:
        if any(np.size(getattr(e, p)) != n for p in PAPER_NAMES):
            raise ValueError(f"every retraining's estimates must cover the {n} voxels of truth, got "
                             f"{[np.size(getattr(e, p)) for p in PAPER_NAMES]}.")
    out = {"NRMSE": {}, "NRMSE_sd": {}, "NRMSE_each": {}, "CV_NET": {}}
    several = len(estimates) > 1
    for name, paper in PAPER_NAMES.items():
        t = np.asarray(getattr(truth, name), float)
        per = [nrmse(getattr(e, name), t) for e in estimates]
        out["NRMSE_each"][paper] = per
        out["NRMSE"][paper] = float(np.mean(per))
        out["NRMSE_sd"][paper] = float(np.std(per, ddof=1)) if several else None
        out["CV_NET"][paper] = cv_net([getattr(e, name) for e in estimates], t) if several else None
    rhos = [abs(spearman(e.Dp, e.Fp)) for e in estimates]
    rhos = [1.0 if np.isnan(r) else r for r in rhos]  # a constant estimate: 1, as IVIMNET's print_errors
    out["rho_Dstar_f"] = float(np.mean(rhos))
    out["rho_Dstar_f_sd"] = float(np.std(rhos, ddof=1)) if several else None
    return out


def _train_and_predict(job):
    """One retraining's estimates of the first ``n_eval`` signals (module-level for worker processes)."""
    name, seed, n, n_eval, data_seed, max_epochs = job
    net = train_published(name, n=n, seed=seed, data_seed=data_seed, max_epochs=max_epochs)
    signals, _ = kaandorp_data(n, seed=data_seed)
    return predict(net, signals[:n_eval], noise="gaussian"), net.history


def reproduce_kaandorp(names=("optim", "orig"), *, n=KAANDORP_N, n_eval=None, repeats=KAANDORP_REPEATS,
                       data_seed=0, workers=1, max_epochs=None):
    """Kaandorp et al.'s simulation study at SNR 20, on their settings, beside their published numbers.

    Every network of ``names`` is trained ``repeats`` times (seeds 0, 1, ...) on the same ``n``
    signals (``train_published``) and scored on the first ``n_eval`` of them, as IVIMNET's code
    scores (``score_published``).

    Parameters
    ----------
    names : sequence of {"optim", "orig"}
    n, n_eval : int, keyword-only
        Published: 1,000,000 and 10,000. ``n_eval`` defaults to
        ``KAANDORP_N_EVAL``, or ``n`` when that is smaller.
    repeats : int or dict
        Retrainings of every network, or ``{name: retrainings}`` (at least 2 for CV_NET; default 5).
    data_seed : int
        Seed of the simulated signals.
    workers : int
        Trainings run at a time, in separate processes (each single-threaded); the result does
        not depend on it.
    max_epochs : int, optional
        A cap below IVIMNET's 1000 epochs (tests).

    Returns
    -------
    dict
        ``{"measured": {name: score}, "published": KAANDORP_PUBLISHED (those names),
        "trainings": {name: [history, ...]}}``.
    """
    names = tuple(dict.fromkeys(names))  # a name twice would double its retrainings
    workers = check_whole(workers, name="workers")
    for name in names:
        if name not in KAANDORP_NETWORKS:
            raise ValueError(f"names must be among {list(KAANDORP_NETWORKS)}, got {name!r}.")
    n = check_whole(n, name="n")
    counts = repeats if isinstance(repeats, dict) else {name: repeats for name in names}
    if set(counts) != set(names):
        raise ValueError(f"repeats must be one number or one per network of {list(names)}, got {repeats!r}.")
    counts = {name: check_whole(counts[name], name=f"repeats of {name}") for name in names}
    n_eval = min(KAANDORP_N_EVAL, n) if n_eval is None else check_whole(n_eval, name="n_eval")
    if n_eval > n:
        raise ValueError(f"n_eval ({n_eval}) cannot exceed n ({n}): the networks are scored on the first n_eval "
                         "of their training signals.")
    jobs = [(name, seed, n, n_eval, data_seed, max_epochs) for name in names for seed in range(counts[name])]
    if workers <= 1:
        results = [_train_and_predict(job) for job in jobs]
    else:
        with process_pool(workers) as pool:
            results = list(pool.map(_train_and_predict, jobs))
    _, truth = kaandorp_data(n, seed=data_seed)
    truth = IVIMParams(*(a[:n_eval] for a in truth))
    out = {"measured": {}, "published": {name: KAANDORP_PUBLISHED[name] for name in names}, "trainings": {}}
    for name in names:
        mine = [r for job, r in zip(jobs, results) if job[0] == name]
        out["measured"][name] = score_published([e for e, _ in mine], truth)
        out["trainings"][name] = [h for _, h in mine]
    return out


def kaandorp_rows(measured, published=KAANDORP_PUBLISHED):
    """``reproduce_kaandorp``'s scores beside the published ones, one row per network and measure.

    Parameters
    ----------
    measured : dict
        ``{network: score}`` (``reproduce_kaandorp(...)["measured"]`` or the benchmark's JSON).
    published : dict
        The paper's numbers, same shape.

    Returns
    -------
    list of dict
        ``network``, ``measure`` (e.g. ``"NRMSE D"``, ``"rho(D*, f)"``), ``published``, ``measured``
        (a ``(mean, sd)`` pair over retrainings where the SD is known, as ``markdown_table`` prints it)
        and ``ratio`` (measured / published).
    """
    rows = []
    for network, score in measured.items():
        ref = published[network]
        for measure in ("NRMSE", "CV_NET"):
            for paper in PAPER_NAMES.values():
                value, sd = score[measure][paper], score.get(f"{measure}_sd", {}).get(paper)
                if value is None:  # CV_NET of a single retraining
                    continue
                rows.append({"network": network, "measure": f"{measure} {paper}", "published": ref[measure][paper],
                             "measured": value if sd is None else (value, sd), "ratio": value / ref[measure][paper]})
        value, sd = score["rho_Dstar_f"], score.get("rho_Dstar_f_sd")
        rows.append({"network": network, "measure": "rho(D*, f)", "published": ref["rho_Dstar_f"],
                     "measured": value if sd is None else (value, sd), "ratio": value / ref["rho_Dstar_f"]})
    return rows
