"""Barbieri et al. 2020's own comparison, on their settings: IVIM-NET, least squares and their Bayesian fit.

Settings read from their code (github sebbarb/deep_ivim, ``related_code/``:
``hyperparameters.py``, ``phantom_data_gen.py``, ``phantom_train_NN.py``,
``phantom_BP.py``, ``phantom_rmse.py``): the seed's b-values and parameter box,
S0 = 1500, Rician noise; one network trained on signals whose noise SD is
drawn uniformly in 0-165 per signal; test sets of 10,000 signals at noise SD
15, 30, ..., 150 (SNR 100 down to 10); absolute RMSE. Their Bayesian fit ("BP")
is the posterior *mode* under priors estimated from least-squares fits of the
test data (``classical.map_fit``). Beside it we put the exact posterior mean
under the true (box) prior, which they did not have: ``fit_bayes``.

Departures from their code: least squares is this project's ``fit_lsq`` (S0
fitted, ``FIT_BOUNDS``), theirs fitted the normalised b > 0 signal with S0 = 1
and bounds (0, 1) (falling back to a segmented fit when it failed); so their
prior is fitted to estimates off their bounds, ours to those off
``FIT_BOUNDS``. Our network keeps its best epoch, theirs kept the last.
"""
from __future__ import annotations

import numpy as np

from ..classical.fit import fit_bayes, fit_lsq
from ..classical.map_fit import empirical_prior, fit_map
from ..core.checks import check_whole
from ..core.metrics import PARAMS
from ..core.signal_model import FIT_BOUNDS, PARAMETER_BOX, SEED_B_VALUES, IVIMParams, ivim
from ..nets.ensemble import train_stack
from ..nets.infer import predict
from ..nets.networks import IVIMNet
from ..simulation.simulate import add_rician_noise, sample_params

__all__ = ["BARBIERI_S0", "BARBIERI_TRAINING_SD", "BARBIERI_TEST_SD", "BARBIERI_N_TEST", "BARBIERI_METHODS",
           "barbieri_data", "compare_barbieri"]

#: Signal at b = 0 of every simulated voxel.
BARBIERI_S0 = 1500.0
#: Training signals: noise SD drawn uniformly in this range, per signal.
BARBIERI_TRAINING_SD = (0.0, 165.0)
#: Test sets: one per noise SD (SNR = 1500 / SD: 100 down to 10).
BARBIERI_TEST_SD = tuple(range(15, 151, 15))
#: Signals per test set.
BARBIERI_N_TEST = 10_000
#: The methods of ``compare_barbieri``, as its rows name them.
BARBIERI_METHODS = ("IVIM-NET", "LSQ", "BP (theirs: MAP, empirical prior)", "exact posterior (true prior)")


def barbieri_data(n, *, sd, seed=0):
    """Signals simulated as Barbieri et al.'s ``phantom_data_gen.py``: seed's box and b-values, S0 1500, Rician noise.

    .. math:: S(b) = \\left|1500\\,(F_p e^{-b D_p} + (1 - F_p) e^{-b D_t}) + n_r + i\\,n_i\\right|,
              \\quad n_r, n_i \\sim N(0, \\sigma^2)

    Parameters
    ----------
    n : int
        Number of signals.
    sd : float or (float, float), keyword-only
        The noise SD (signal units): one value, or a range from which each
        signal's SD is drawn uniformly (training).
    seed : int or numpy.random.Generator

    Returns
    -------
    signals : ndarray, shape (n, 8)
        Raw magnitude signals at ``SEED_B_VALUES`` (divide by S(b=0) to normalise, as every fit here does).
    truth : IVIMParams
        S0 = 1500.
    """
    n = check_whole(n, name="n")
    rng = np.random.default_rng(seed)
    p = sample_params(n, box=PARAMETER_BOX, seed=rng)
    if np.ndim(sd) == 0:
        sigma = float(sd)
    else:
        lo, hi = (float(v) for v in sd)
        if not 0 <= lo < hi:
            raise ValueError(f"sd must be a noise SD or a (low, high) range with 0 <= low < high, got {sd!r}.")
        sigma = rng.uniform(lo, hi, (n, 1))
    clean = BARBIERI_S0 * ivim(SEED_B_VALUES, p.Dp[:, None], p.Dt[:, None], p.Fp[:, None])
    return add_rician_noise(clean, sigma, rng), IVIMParams(p.Dp, p.Dt, p.Fp, np.full(n, BARBIERI_S0))


def compare_barbieri(*, n_train=1_000_000, n_test=BARBIERI_N_TEST, sds=BARBIERI_TEST_SD, seeds=(0, 1, 2),
                     bayes_grid=(40, 40, 40), max_epochs=1000, progress=False):
    """Barbieri et al.'s simulation comparison, rerun: absolute RMSE of each method at each noise SD.

    The seed's IVIM-NET is trained (unsupervised, the seed's settings, best weights kept) on
    ``n_train`` signals with noise SD uniform in ``BARBIERI_TRAINING_SD``, once per seed in
    ``seeds`` (stacked); each test set (``n_test`` signals at one SD of ``sds``, drawn with seed
    ``1000 + sd``) is fitted by every network, by least squares (``fit_lsq``), by their Bayesian
    fit (``fit_map`` with ``empirical_prior`` of the least-squares fits of all test sets together,
    as their ``phantom_BP.py``; started also from each voxel's least-squares fit) and by the exact
    posterior mean under the box prior (``fit_bayes`` with the test set's SD).

    Parameters
    ----------
    n_train, n_test : int, keyword-only
        Their code: 1,000,000 and 10,000.
    sds : sequence of float
        Test noise SDs (signal units, S0 = 1500).
    seeds : sequence of int
        Training seeds of the network (its spread over them is reported).
    bayes_grid : tuple of 3 int
        ``fit_bayes``'s grid.
    max_epochs : int
    progress : bool
        Progress bar of the training.

    Returns
    -------
    list of dict
        One row per SD, method and parameter: ``sd``, ``snr``, ``method`` (``BARBIERI_METHODS``),
        ``param``, ``rmse`` (mm^2/s for Dp and Dt, fraction for Fp) and, for IVIM-NET, ``rmse_sd``
        (its SD over training seeds) and ``trainings``.
    """
    n_train, n_test = check_whole(n_train, name="n_train"), check_whole(n_test, name="n_test")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one training seed.")
    signals, _ = barbieri_data(n_train, sd=BARBIERI_TRAINING_SD, seed=12345)
    nets = [IVIMNet(SEED_B_VALUES, seed=s) for s in seeds]
    train_stack(nets, [signals] * len(nets), seeds=seeds, max_epochs=max_epochs, progress=progress)
    tests = {sd: barbieri_data(n_test, sd=sd, seed=1000 + int(sd)) for sd in sds}
    lsq = {sd: fit_lsq(s, SEED_B_VALUES) for sd, (s, _) in tests.items()}
    prior = empirical_prior(IVIMParams(*(np.concatenate([getattr(e, p) for e in lsq.values()]) for p in PARAMS),
                                       None), bounds=FIT_BOUNDS)
    rows = []
    for sd, (s, truth) in tests.items():
        estimates = {
            "LSQ": [lsq[sd]],
            "BP (theirs: MAP, empirical prior)": [fit_map(s, SEED_B_VALUES, prior=prior, start=lsq[sd])],
            "exact posterior (true prior)": [fit_bayes(s, SEED_B_VALUES, sigma=float(sd), grid=bayes_grid)],
            "IVIM-NET": [predict(net, s) for net in nets],
        }
        for method in BARBIERI_METHODS:
            for p in PARAMS:
                per = [float(np.sqrt(np.mean((getattr(e, p) - getattr(truth, p)) ** 2))) for e in estimates[method]]
                row = {"sd": float(sd), "snr": BARBIERI_S0 / float(sd), "method": method, "param": p,
                       "rmse": float(np.mean(per))}
                if method == "IVIM-NET":
                    row.update(rmse_sd=float(np.std(per, ddof=1)) if len(per) > 1 else None, trainings=len(per))
                rows.append(row)
    return rows
