"""Priors over the IVIM parameters: a box, and which parameters are drawn log-uniformly.

One object says what a simulation draws, what a supervised network was
trained on and what the exact posterior (``fit_bayes``) assumes, so the three
can be made the same by passing it around (``net.prior``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .checks import check_box, check_whole
from .signal_model import PARAMETER_BOX, IVIMParams

__all__ = ["Prior", "IN_VIVO_BOX", "IN_VIVO_LOG", "IN_VIVO_PRIOR", "SEED_PRIOR", "as_generator", "as_prior"]

#: Prior box for real scans: wide enough for abdominal tissue (Dp and Dt in mm^2/s, Fp a fraction),
#: unlike the seed's simulation box (Fp 0.1-0.4, Dt up to 0.002) ...
IN_VIVO_BOX = {"Dp": (0.005, 0.2), "Dt": (0.0003, 0.005), "Fp": (0.0, 0.7)}
#: ... with Dp and Dt drawn log-uniformly. A diffusion coefficient is a scale: uniform over
#: 0.0003-0.005 puts 74 % of the prior above 0.0015 mm^2/s and pulls the posterior mean of a noisy
#: voxel towards 0.0027; log-uniform has its median at 0.0012, where most abdominal tissue lies.
IN_VIVO_LOG = ("Dp", "Dt")

_LOGGABLE = ("Dp", "Dt")


def as_generator(seed):
    """``seed`` itself when it is a ``numpy.random.Generator`` (one stream threaded through), else a new
    ``numpy.random.default_rng(seed)``; a ValueError for anything that is not a seed."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, float, str, bytes)):
        raise ValueError(f"seed must be a whole number >= 0, a sequence of them or a numpy Generator; got {seed!r}.")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be a whole number >= 0, a sequence of them or a numpy Generator; "
                         f"got {seed!r}.") from None


@dataclass(frozen=True)
class Prior:
    """A prior on (Dp, Dt, Fp): independent, each uniform or log-uniform over its range.

    .. math:: p(D) \\propto 1 \\;\\; (\\text{uniform}) \\quad\\text{or}\\quad
        p(D) \\propto 1/D \\;\\; (\\text{log-uniform}), \\quad lo \\le D \\le hi

    Parameters
    ----------
    box : dict
        ``{"Dp": (lo, hi), "Dt": (lo, hi), "Fp": (lo, hi)}``: Dp and Dt in
        mm^2/s (>= 0), Fp a fraction within [0, 1] (see ``checks.check_box``).
    log : tuple of str, keyword-only
        Parameters among ``"Dp"``, ``"Dt"`` drawn log-uniformly (their low
        end must be > 0); the others are uniform.

    Examples
    --------
    >>> prior = Prior(IN_VIVO_BOX, log=("Dp", "Dt"))
    >>> prior.sample(3, seed=0).Dt.shape
    (3,)
    """

    box: dict
    log: tuple = field(default=(), kw_only=True)

    def __post_init__(self):
        box = check_box(dict(self.box), name="prior box")
        log = (self.log,) if isinstance(self.log, str) else tuple(self.log)
        unknown = [k for k in log if k not in _LOGGABLE]
        if unknown:
            raise ValueError(f"log names the diffusion coefficients to draw log-uniformly ('Dp', 'Dt'); "
                             f"got {unknown}.")
        if any(box[k][0] <= 0 for k in log):
            raise ValueError(f"a log-uniform range needs a lower end > 0; got {({k: box[k] for k in log})}.")
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "log", tuple(k for k in _LOGGABLE if k in log))

    def sample(self, n, seed=0) -> IVIMParams:
        """Draw ``n`` parameter sets (S0 = 1).

        Dp, then Dt, then Fp are drawn from one generator, ``n`` values each
        (so a seed gives the same draws as ``sample_params``).

        Parameters
        ----------
        n : int
            Number of samples, >= 1.
        seed : int or numpy.random.Generator

        Returns
        -------
        IVIMParams
            Arrays of shape ``(n,)``; S0 is 1.
        """
        n = check_whole(n, name="n")
        rng = as_generator(seed)
        draws = {k: (np.exp(rng.uniform(*np.log(self.box[k]), size=n)) if k in self.log
                     else rng.uniform(*self.box[k], size=n)) for k in ("Dp", "Dt", "Fp")}
        return IVIMParams(draws["Dp"], draws["Dt"], draws["Fp"], np.ones(n))

    def to_dict(self) -> dict:
        """``{"box": {name: [lo, hi]}, "log": [names]}``, as stored in checkpoints and summaries."""
        return {"box": {k: [lo, hi] for k, (lo, hi) in self.box.items()}, "log": list(self.log)}


def as_prior(prior, *, default=None, name="prior") -> Prior:
    """A ``Prior`` from a ``Prior``, a box dict (uniform) or None (``default``, else the seed's box)."""
    if isinstance(prior, Prior):
        return prior
    if prior is None:
        return default if default is not None else SEED_PRIOR
    if isinstance(prior, dict):
        return Prior(check_box(prior, name=name))
    raise ValueError(f"{name} must be a Prior (e.g. net.prior or iv.IN_VIVO_PRIOR) or a dict of (low, high) "
                     f"ranges for Dp, Dt and Fp; got {type(prior).__name__}.")


#: The seed's simulation prior: uniform on ``PARAMETER_BOX``.
SEED_PRIOR = Prior(PARAMETER_BOX)
#: The prior for real abdominal scans: ``IN_VIVO_BOX`` with Dp and Dt log-uniform.
IN_VIVO_PRIOR = Prior(IN_VIVO_BOX, log=IN_VIVO_LOG)
