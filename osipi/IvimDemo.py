"""ivim-demo's fits in OSIPI TF2.4's standardized layout (src/standardized/ of the IVIM code collection).

Copy this file to ``src/standardized/IvimDemo.py`` of github.com/OSIPI/TF2.4_IVIM-MRI_CodeCollection (with
``ivim-demo`` installed in that environment) and add the class names to ``tests/IVIMmodels/unit_tests/
algorithms.json``; outside the collection the classes work on their own (``tests/test_osipi.py`` runs them
on OSIPI's unit-test cases). Each class fits one voxel (or an array of voxels) per call of
``ivim_fit(signals, bvalues)`` and returns OSIPI's ``{"D", "f", "Dp"}`` (D and Dp in mm^2/s, f a fraction).

OSIPI's names map to ivim-demo's: D is Dt, f is Fp, Dp and S0 are spelled alike (``checks.OSIPI_NAMES``).
OSIPI's data are real-valued (Gaussian noise): negative samples are legal, so every fit here uses
``noise="gaussian"``.
"""
from __future__ import annotations

import numpy as np

import ivim_demo as iv

try:  # inside the OSIPI collection
    from src.wrappers.OsipiBase import OsipiBase
except ImportError:  # pragma: no cover - standalone use
    OsipiBase = object

#: OSIPI's bounds in its unit tests (S0 relative to the measured S(b=0)).
OSIPI_BOUNDS = {"S0": (0.7, 1.3), "f": (0.0, 1.0), "Dp": (0.005, 0.2), "D": (0.0, 0.005)}


class _IvimDemo(OsipiBase):
    id_author = "ivim-demo"
    id_return_parameters = "f, D*, D"
    id_units = "seconds per milli metre squared or milliseconds per micro metre squared"
    required_bvalues = 4
    required_thresholds = [0, 0]
    required_bounds = False
    required_bounds_optional = True
    required_initial_guess = False
    required_initial_guess_optional = False
    accepted_dimensions = 1

    def __init__(self, bvalues=None, thresholds=None, bounds=None, initial_guess=None):
        if OsipiBase is not object:
            super().__init__(bvalues, thresholds, bounds, initial_guess)
        self.bvalues = None if bvalues is None else np.asarray(bvalues, dtype=float)
        self.bounds = dict(OSIPI_BOUNDS if bounds is None or not isinstance(bounds, dict) else bounds)

    def ivim_fit(self, signals, bvalues=None, **kwargs):
        """Fit ``signals`` (..., n_b) acquired at ``bvalues`` (s/mm^2); ``{"D", "f", "Dp"}``."""
        b = np.asarray(self.bvalues if bvalues is None else bvalues, dtype=float)
        order = np.argsort(b, kind="stable")
        s = np.asarray(signals, dtype=float)[..., order]
        est = self._fit(s, b[order])
        out = float if s.ndim == 1 else np.asarray  # one voxel: plain numbers, as OSIPI's algorithms return
        return {"D": out(est.Dt), "f": out(est.Fp), "Dp": out(est.Dp)}


class IvimDemoLsq(_IvimDemo):
    """Bounded least squares (``iv.fit_lsq``), vectorised Levenberg-Marquardt from a segmented start."""

    id_algorithm_type = "Bi-exponential fit, bounded least squares"

    def _fit(self, s, b):
        return iv.fit_lsq(s, b, bounds=self.bounds, noise="gaussian")


class IvimDemoSegmented(_IvimDemo):
    """Segmented fit (``iv.fit_segmented``): Dt from b >= 200 s/mm^2, then Fp and Dp."""

    id_algorithm_type = "Bi-exponential fit, segmented"

    def _fit(self, s, b):
        return iv.fit_segmented(s, b, bounds=self.bounds, noise="gaussian")


class IvimDemoBayes(_IvimDemo):
    """The exact posterior mean with S0 unknown (``iv.fit_bayes``), Gaussian noise.

    The prior is uniform on the bounds' D, f and Dp (OSIPI's by default); ``prior="in_vivo"`` uses
    ``iv.IN_VIVO_PRIOR`` instead (Dp and Dt log-uniform), the choice for real tissue. The noise SD is
    estimated from the least-squares residuals of the voxels given (``iv.estimate_sigma``).
    """

    id_algorithm_type = "Bi-exponential fit, Bayesian posterior mean"

    def __init__(self, bvalues=None, thresholds=None, bounds=None, initial_guess=None, prior="bounds"):
        super().__init__(bvalues, thresholds, bounds, initial_guess)
        if prior not in ("bounds", "in_vivo"):
            raise ValueError(f"prior must be 'bounds' or 'in_vivo', got {prior!r}.")
        self.prior = prior

    def _fit(self, s, b):
        prior = iv.IN_VIVO_PRIOR if self.prior == "in_vivo" else {k: self.bounds[k] for k in ("D", "f", "Dp")}
        flat = s.reshape(-1, len(b))
        sigma = iv.estimate_sigma(flat, b, absolute=True, noise="gaussian")
        return iv.fit_bayes(s, b, sigma=sigma, prior=prior, noise="gaussian")


class IvimDemoPretrained(_IvimDemo):
    """The shipped network for any protocol (``iv.load_pretrained()``): no training, the b-values read per call.

    It returns the posterior mean under its training prior (``net.prior``: the in-vivo box, Dp and Dt
    log-uniform), for protocols in its range (``ivim_demo.nets.protocols``; others are refused). The noise SD
    is estimated from the signals given (repeats, else least-squares residuals). It was trained on magnitude
    signals; OSIPI's real-valued samples are passed as they are (``noise="gaussian"``).
    """

    id_algorithm_type = "Deep learnt bi-exponential fit, pretrained for any b-values (supervised, posterior mean)"
    deep_learning = True

    def _fit(self, s, b):
        return iv.predict(_shipped(), s, b_values=b, noise="gaussian")


def _shipped():
    """The shipped network, loaded once per process."""
    global _SHIPPED
    if _SHIPPED is None:
        _SHIPPED = iv.load_pretrained()
    return _SHIPPED


_SHIPPED = None

#: OSIPI's simulated training set for networks (``IVIM_NEToptim.training_data``, OSIPI commit f91b53c):
#: uniform D, f, Dp, S0 = 1, Gaussian noise of SD 1/SNR with SNR uniform per voxel.
OSIPI_TRAINING = {"D": (0.0003, 0.0035), "f": (0.0, 1.0), "Dp": (0.005, 0.12), "SNR": (5.0, 100.0)}
#: OSIPI's bounds in its network test.
OSIPI_DL_BOUNDS = {"S0": (0.0, 2.0), "f": (0.0, 1.0), "Dp": (0.005, 0.2), "D": (0.0, 0.005)}


def osipi_training_signals(b_values, n, *, seed=0):
    """``n`` voxels simulated as OSIPI simulates a network's training set (``OSIPI_TRAINING``), (n, n_b).

    Voxels whose noisy S(b=0) is not positive (none at SNR >= 5 in practice) are dropped.
    """
    rng = np.random.default_rng(seed)
    lo, hi = np.array([OSIPI_TRAINING[k] for k in ("Dp", "D", "f", "SNR")]).T
    Dp, D, f, snr = rng.uniform(lo, hi, size=(n, 4)).T
    b = np.asarray(b_values, dtype=float)
    clean = iv.ivim(b, Dp[:, None], D[:, None], f[:, None])
    noisy = clean + rng.standard_normal(clean.shape) / snr[:, None]
    return noisy[noisy[:, 0] > 0]


class IvimDemoOptim(_IvimDemo):
    """IVIM-NET_optim (``iv.IVIMNetOptim``) trained when built, on OSIPI's simulated training set.

    As OSIPI's ``IVIM_NEToptim``: unsupervised, on ``n`` voxels simulated by ``osipi_training_signals`` with
    the b-values given, OSIPI's bounds (``OSIPI_DL_BOUNDS`` unless given), Gaussian noise. Not as OSIPI's:
    ``n`` 200,000 by default (OSIPI uses 3,000,000) and lr 1e-3 (OSIPI 3e-5), so it trains in about 20 s on
    2 cores; ``seed`` seeds the simulation and the training.
    """

    id_algorithm_type = "Deep learnt bi-exponential fit (IVIM-NET_optim, unsupervised)"
    deep_learning = True

    def __init__(self, bvalues=None, thresholds=None, bounds=None, initial_guess=None, n=200_000, seed=0):
        if bvalues is None:
            raise ValueError("a network is trained for its b-values: pass bvalues= when it is built.")
        super().__init__(bvalues, thresholds, dict(OSIPI_DL_BOUNDS) if bounds is None else bounds, initial_guess)
        order = np.argsort(self.bvalues, kind="stable")
        b = self.bvalues[order]
        names = {"D": "Dt", "f": "Fp", "Dp": "Dp", "S0": "S0"}
        self.net = iv.IVIMNetOptim(b, bounds={names[k]: tuple(v) for k, v in self.bounds.items()}, seed=seed)
        self.history = iv.train(self.net, osipi_training_signals(b, n, seed=seed), noise="gaussian",
                                batches_per_epoch=500, seed=seed, progress=False)

    def _fit(self, s, b):
        return iv.predict(self.net, s, b_values=b, noise="gaussian")
