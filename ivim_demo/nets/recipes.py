"""One call from an SNR (or a range of SNRs) to a trained network: the recipes notebooks 05, 06 and 09 use.

Networks trained for one scan are in ``scan_training``, many trainings at once
(stacked, cached) in ``jobs``.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_b_values
from ..core.signal_model import PARAMETER_BOX, SEED_B_VALUES, ivim
from ..simulation.simulate import add_rician_noise, sample_params, training_data
from .networks import IVIMNet, IVIMNetOptim, IVIMNetUncertainty, check_snr_range
from .training import train

__all__ = ["RECIPES", "ALIASES", "canonical", "SEED_TRAINING", "OPTIM_LR", "SNR_RANGE_TRAINING", "seed_network",
           "train_for_snr", "training_recipe"]

#: The seed's training settings (``train``'s defaults), as notebooks record them with a checkpoint.
SEED_TRAINING = {"batch_size": 128, "lr": 1e-3, "patience": 10}

#: Learning rate of the "optim" recipe. Kaandorp et al. publish 3e-5; with 100k voxels and
#: epochs of 781 batches that did not converge within 9 minutes on 2 cores, while 1e-3 and 3e-4
#: reached the same accuracy at SNR 20 (NRMSE Dp/Dt/Fp 0.60/0.16/0.22 and 0.61/0.16/0.22) in
#: 26 and 52 epochs. On IVIMNET's own settings (1M signals, 500 batches per epoch;
#: benchmarks/kaandorp2021.py) 3e-5 converges in 150-174 epochs and changes the recipe's NRMSE
#: D/f/D* from 0.173/0.213/0.489 to 0.175/0.221/0.461. We use 1e-3; pass
#: ``train_options={"lr": 3e-5}`` for the published value, or ``nets.published.train_published``
#: for IVIMNET's whole recipe.
OPTIM_LR = 1e-3

#: Old names of ``RECIPES``' methods, still accepted: the seed's network was "orig" (IVIM-NET_orig) here and
#: "ivimnet" in the command line and the registry; it is "ivimnet" everywhere now. (The bounded
#: IVIMNetOptim trained at one SNR was "supervised" too; it is "supervised_optim", as "supervised" is
#: IVIMNetUncertainty everywhere.)
ALIASES = {"orig": "ivimnet"}


def canonical(method) -> str:
    """A ``RECIPES`` method's name, with ``ALIASES`` resolved; a ValueError naming the choices otherwise."""
    method = ALIASES.get(method, method) if isinstance(method, str) else method
    if method not in RECIPES:
        raise ValueError(f"method must be one of {list(RECIPES)}, got {method!r}.")
    return method


#: method -> what ``train_for_snr`` builds and how it trains it.
RECIPES = {
    "ivimnet": "the seed's IVIMNet (IVIM-NET_orig); unsupervised, lr 1e-3, stops on the training loss (Barbieri "
               "et al.)",
    "optim": "IVIMNetOptim with the published settings; unsupervised, lr 1e-3 (see OPTIM_LR), "
             "10 % validation split (Kaandorp et al.)",
    "supervised_optim": "IVIMNetOptim bounded to the simulation box, no S0 output, no dropout; trained at one "
                        "SNR on the true parameters (box-normalised MSE), lr 1e-3 divided by 5 after 3 epochs "
                        "without improvement, 10 % validation split",
    "supervised": "IVIMNetUncertainty (the network of the command line's default method), the noise level an "
                  "input; trained on the true parameters at SNRs drawn log-uniformly from a (low, high) range "
                  "(SNR_RANGE_TRAINING) for the posterior mean, the 5 % and 95 % quantiles and the posterior SD "
                  "of each parameter",
}

#: How ``train_for_snr((low, high), method="supervised")`` trains ``IVIMNetUncertainty`` by default:
#: training voxels, mini-batch size, and ``train`` options.
SNR_RANGE_TRAINING = {"n": 1_000_000, "batch_size": 512, "lr": 1e-3, "lr_patience": 3, "validation_fraction": 0.1}


def seed_network(*, n=100_000, sigma=0.01, seed=0, max_epochs=1000, progress=True):
    """Exactly what notebooks 01 and 02 do: the seed's training set and network.

    ``training_data(n, SEED_B_VALUES, sigma=sigma, seed=seed)``, ``IVIMNet(seed=seed)``
    and ``train(..., seed=seed)`` with the seed's settings.

    Returns
    -------
    net : IVIMNet
    history : TrainHistory
    """
    signals, _ = training_data(n, SEED_B_VALUES, sigma=sigma, seed=seed)
    net = IVIMNet(SEED_B_VALUES, seed=seed)
    return net, train(net, signals, seed=seed, max_epochs=max_epochs, progress=progress)


def train_for_snr(snr, *, b_values=SEED_B_VALUES, method="optim", n=None, seed=0, max_epochs=1000,
                  progress=True, net_options=None, train_options=None, box=None):
    """Simulate training data at one SNR and return a network trained on it.

    Parameters
    ----------
    snr : float or (float, float)
        SNR at b = 0 of the training data (Rician sigma = 1/SNR, S0 = 1). A
        ``(low, high)`` pair (``method="supervised"`` only, e.g.
        ``UNCERTAINTY_SNR_RANGE`` = (5, 200)) trains one network for all
        SNRs in between: ``IVIMNetUncertainty``, whose input includes the
        noise level, on voxels whose SNR is drawn log-uniformly from the
        range (one per voxel), for the posterior mean, 90 % interval and SD of
        each parameter (see ``predict(net, signals, sigma=..., interval=0.9)``).
    b_values : array_like
        b-values in s/mm^2, starting at 0.
    method : {"ivimnet", "optim", "supervised_optim", "supervised"}
        See ``RECIPES``; ``"orig"`` is an old name of ``"ivimnet"`` (``ALIASES``).
        The supervised ones need the prior of the data to match
        the simulation box: they learn the posterior mean for that prior.
    n : int, optional
        Training voxels, drawn uniformly from ``box``; default 100 000, and
        ``SNR_RANGE_TRAINING["n"]`` (1 000 000) for an SNR range.
    seed : int
        Seeds the data (``seed + 1000``), the weights and the training.
    max_epochs : int
    progress : bool
    net_options : dict, optional
        Overrides of the network's constructor options (``"optim"`` and
        ``"supervised_optim"``: any ``IVIMNetOptim`` keyword; ``"supervised"``: any
        ``IVIMNetUncertainty`` keyword, e.g. ``width``), e.g. to switch one
        IVIM-NET_optim change off.
    train_options : dict, optional
        Overrides of ``train``'s options (``lr``, ``validation_fraction``,
        ``patience``, ...); they win over the recipe and the arguments above.
    box : dict, optional
        ``{"Dp": (lo, hi), "Dt": ..., "Fp": ...}`` (mm^2/s, mm^2/s, fraction)
        the training parameters are drawn from; default ``PARAMETER_BOX``.
        The supervised network is bounded to it, so make it cover the tissue
        you expect: that box is the prior its estimates lean towards.

    Returns
    -------
    torch.nn.Module
        The trained network in eval mode, with ``.history`` (dict).
    """
    if np.ndim(snr) == 1 or canonical(method) == "supervised":
        return _train_for_snr_range(snr, b_values=b_values, method=method, n=n, seed=seed, max_epochs=max_epochs,
                                    progress=progress, net_options=net_options, train_options=train_options, box=box)
    net, signals, targets, options = training_recipe(snr, b_values=b_values, method=method, n=n, seed=seed,
                                                     max_epochs=max_epochs, progress=progress,
                                                     net_options=net_options, train_options=train_options, box=box)
    history = train(net, signals, targets=targets, **options)
    net.history = history.as_dict()
    return net


def _train_for_snr_range(snr, *, b_values, method, n, seed, max_epochs, progress, net_options, train_options, box):
    """``train_for_snr`` with a (low, high) SNR pair: ``IVIMNetUncertainty`` on log-uniform noise levels."""
    if canonical(method) != "supervised":
        raise ValueError(f"an SNR range {snr!r} trains method='supervised' (one network for all SNRs, with "
                         f"the noise level as input); method {method!r} takes one SNR.")
    if np.ndim(snr) != 1:
        raise ValueError(f"method='supervised' (IVIMNetUncertainty) trains on a (low, high) SNR range, e.g. "
                         f"UNCERTAINTY_SNR_RANGE = (5, 200), got snr={snr!r}; for the bounded IVIMNetOptim trained "
                         "at one SNR use method='supervised_optim'.")
    box = PARAMETER_BOX if box is None else box
    low, high = check_snr_range(snr)
    b_values = check_b_values(b_values)
    n = SNR_RANGE_TRAINING["n"] if n is None else n
    rng = np.random.default_rng(seed + 1000)
    params = sample_params(n, box=box, seed=rng)
    sigma = np.exp(-rng.uniform(np.log(low), np.log(high), size=n))  # SNR log-uniform, one per voxel
    signals = add_rician_noise(ivim(b_values, *(v[:, None] for v in params[:3])), sigma[:, None], rng)
    net = IVIMNetUncertainty(b_values, **{"bounds": box, "snr_range": (low, high), "seed": seed,
                                          **(net_options or {})})
    options = _options(seed, max_epochs, progress, {k: v for k, v in SNR_RANGE_TRAINING.items() if k != "n"},
                       train_options)
    net.history = train(net, signals, targets=params, sigma=sigma, **options).as_dict()
    return net


def training_recipe(snr, *, b_values=SEED_B_VALUES, method="optim", n=None, seed=0, max_epochs=1000, progress=True,
                    net_options=None, train_options=None, box=None):
    """What ``train_for_snr`` trains at one SNR, before training.

    Parameters
    ----------
    snr : float
        SNR at b = 0 of the training data.
    b_values, method, n, seed, max_epochs, progress, net_options, train_options, box
        As ``train_for_snr`` (``method`` one of the one-SNR recipes: "ivimnet", "optim", "supervised_optim").

    Returns
    -------
    net : torch.nn.Module
        The untrained network.
    signals : numpy.ndarray
        ``(n, n_b)`` training signals.
    targets : IVIMParams or None
        The true parameters for a supervised recipe, else None.
    options : dict
        ``train``'s keyword arguments.
    """
    method = canonical(method)
    if method == "supervised":
        raise ValueError("method='supervised' trains on a (low, high) SNR range (train_for_snr); for the bounded "
                         "IVIMNetOptim trained at one SNR use method='supervised_optim'.")
    if np.ndim(snr) != 0 or not snr > 0:
        raise ValueError(f"snr must be > 0 (or a (low, high) pair for method='supervised'), got {snr!r}.")
    box = PARAMETER_BOX if box is None else box
    n = 100_000 if n is None else n
    signals, params = training_data(n, b_values, sigma=1.0 / snr, seed=seed + 1000, box=box)
    targets = None
    if method == "ivimnet":
        net = IVIMNet(b_values, **{"seed": seed, **(net_options or {})})
        options = {}
    elif method == "optim":
        net = IVIMNetOptim(b_values, seed=seed, **(net_options or {}))
        options = {"lr": OPTIM_LR, "validation_fraction": 0.1}
    else:
        net = IVIMNetOptim(b_values, **{"bounds": box, "fit_s0": False, "dropout": 0.0, "seed": seed,
                                        **(net_options or {})})
        # the lr decay buys the last few % at high SNR (Dt NRMSE at SNR 100: 0.045 -> 0.042; Bayes 0.040)
        options, targets = {"lr": 1e-3, "lr_patience": 3, "validation_fraction": 0.1}, params
    return net, signals, targets, _options(seed, max_epochs, progress, options, train_options)


def _options(seed, max_epochs, progress, recipe, overrides):
    """``train``'s options of a recipe: the call's seed, epochs and progress, the recipe's own, then overrides."""
    return {"seed": seed, "max_epochs": max_epochs, "progress": progress, **recipe, **(overrides or {})}
