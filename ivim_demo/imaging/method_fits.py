"""The classical methods of the registry (``methods.REGISTRY``) as one kind of function each:
``fit(signals, b_values, *, sigma, context, **options)``.

``context="scan"``: a real scan, fitted under the in-vivo prior (``IN_VIVO_BOX``) with credible intervals
where the method has them; ``context="simulation"``: signals simulated from the seed's box (the
comparisons of notebooks 05 and 06), ``options`` may set the Bayes ``grid``.
"""
from __future__ import annotations

from ..classical.fit import fit_bayes, fit_lsq, fit_segmented
from ..nets.recipes import IN_VIVO_BOX

__all__ = ["LEVEL", "lsq", "segmented", "bayes"]

#: Credible level a scan's posterior methods are asked for (its SDs do not depend on it).
LEVEL = 0.9


def lsq(signals, b_values, *, sigma=None, context="scan", **options):
    """``fit_lsq`` (bounded least squares); ``sigma`` and ``context`` are not needed."""
    return fit_lsq(signals, b_values)


def segmented(signals, b_values, *, sigma=None, context="scan", **options):
    """``fit_segmented``; ``sigma`` and ``context`` are not needed."""
    return fit_segmented(signals, b_values)


def bayes(signals, b_values, *, sigma, context="scan", grid=(40, 40, 40)):
    """``fit_bayes``'s exact posterior (S0 unknown) at noise SD ``sigma`` (signal units): on a scan under
    the uniform prior on ``IN_VIVO_BOX`` with 90 % intervals and SDs (a ``Posterior``), on simulations
    under the seed's box on a ``grid`` (posterior means)."""
    if context == "scan":
        return fit_bayes(signals, b_values, sigma=sigma, prior=IN_VIVO_BOX, interval=LEVEL)
    return fit_bayes(signals, b_values, sigma=sigma, grid=grid)
