"""The classical methods of the registry (``methods.REGISTRY``) as one kind of function each:
``fit(signals, b_values, *, sigma, context, noise="rician", **options)``.

``context="scan"``: a real scan, fitted under the in-vivo prior (``IN_VIVO_BOX``) with credible intervals
where the method has them; ``context="simulation"``: signals simulated from the seed's box (the
comparisons of notebooks 05 and 06), ``options`` may set the Bayes ``grid``.
"""
from __future__ import annotations

import functools

from ..classical.fit import fit_bayes, fit_lsq, fit_segmented
from ..core.prior import IN_VIVO_BOX

__all__ = ["LEVEL", "lsq", "segmented", "bayes", "pretrained"]

#: Credible level a scan's posterior methods are asked for (its SDs do not depend on it).
LEVEL = 0.9


def lsq(signals, b_values, *, sigma=None, context="scan", noise="rician", **options):
    """``fit_lsq`` (bounded least squares); ``sigma`` and ``context`` are not needed. ``noise``: the
    images' noise, ``"rician"`` (magnitude) or ``"gaussian"`` (real-valued: negative samples are legal)."""
    return fit_lsq(signals, b_values, noise=noise)


def segmented(signals, b_values, *, sigma=None, context="scan", noise="rician", **options):
    """``fit_segmented``; ``sigma`` and ``context`` are not needed; ``noise`` as for ``lsq``."""
    return fit_segmented(signals, b_values, noise=noise)


def bayes(signals, b_values, *, sigma, context="scan", noise="rician", grid=(40, 40, 40)):
    """``fit_bayes``'s exact posterior (S0 unknown) at noise SD ``sigma`` (signal units) with the Rician or
    Gaussian likelihood (``noise``): on a scan under the uniform prior on ``IN_VIVO_BOX`` with 90 %
    intervals and SDs (a ``Posterior``), on simulations under the seed's box on a ``grid`` (posterior means)."""
    if context == "scan":
        return fit_bayes(signals, b_values, sigma=sigma, prior=IN_VIVO_BOX, interval=LEVEL, noise=noise)
    return fit_bayes(signals, b_values, sigma=sigma, grid=grid, noise=noise)


def pretrained(signals, b_values, *, sigma, context="scan", noise="rician"):
    """The shipped any-protocol network (``load_pretrained``) at noise SD ``sigma`` (signal units): a
    ``Posterior`` of its posterior means, 90 % intervals and SDs under its prior (``IN_VIVO_PRIOR``).
    Refuses protocols outside the range it was trained for (``protocols.PROTOCOL_RANGE``); ``noise``
    as ``predict``'s."""
    from ..nets.infer import predict

    return predict(_shipped_network(), signals, b_values=b_values, sigma=sigma, interval=LEVEL, noise=noise)


@functools.lru_cache(maxsize=1)
def _shipped_network():
    """The shipped network, loaded (and checked against its checksum) once per process."""
    from ..nets.pretrained import load_pretrained

    return load_pretrained()
