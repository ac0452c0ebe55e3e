"""The fitting methods by name: one registry for the command line, ``fit_volume`` and the comparisons.

Light on purpose (no numpy, torch or scipy at import), so the command line's ``--help`` stays fast.
"""
from __future__ import annotations

__all__ = ["NETWORK_METHODS", "CLASSICAL_METHODS", "METHODS", "DEFAULT_METHOD", "LABELS", "classical_fit"]

#: Networks: trained for a scan (``train_on_scan``) unless a trained network is given.
NETWORK_METHODS = ("ivimnet", "optim", "supervised")
#: Classical per-voxel fits (``ivim_demo.classical.fit``).
CLASSICAL_METHODS = ("lsq", "segmented", "bayes")
#: Every method ``fit_volume`` and the command line accept.
METHODS = NETWORK_METHODS + CLASSICAL_METHODS
#: The command line's and ``fit_volume``'s default (see the README's real-scan results for why).
DEFAULT_METHOD = "supervised"
#: How tables and figures name each method.
LABELS = {"ivimnet": "IVIM-NET", "optim": "IVIM-NET_optim", "supervised": "supervised", "lsq": "LSQ",
          "segmented": "segmented", "bayes": "Bayes"}


def classical_fit(name):
    """The function behind a classical method: ``fit_lsq``, ``fit_segmented`` or ``fit_bayes``."""
    if name not in CLASSICAL_METHODS:
        raise ValueError(f"{name!r} is not a classical method; choose one of {', '.join(CLASSICAL_METHODS)}.")
    from ..classical import fit

    return getattr(fit, f"fit_{name}")
