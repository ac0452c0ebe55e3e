"""The fitting methods: one registry that the command line, ``fit_volume``, ``fit_cohort`` and the
comparisons (``fit_all``) read.

Each ``Method`` names the function that fits (a classical method) or trains for a scan (a network), by
``"module:function"`` inside the package, so this module stays light (no numpy, torch or scipy at
import) and the command line's ``--help`` stays fast. A new method is one module with that function
and one ``register`` call (or entry below).
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

__all__ = ["Method", "REGISTRY", "KINDS", "register", "method", "methods", "NETWORK_METHODS", "CLASSICAL_METHODS",
           "PRETRAINED_METHODS", "METHODS", "DEFAULT_METHOD", "LABELS"]


class Method(NamedTuple):
    """One fitting method.

    Attributes
    ----------
    name : str
        What the command line and ``fit_volume`` call it (``--method NAME``).
    label : str
        How tables and figures name it.
    kind : {"classical", "network", "pretrained"}
        ``"classical"`` and ``"pretrained"`` (a network trained once and shipped, which fits any scan
        with no training; the comparisons on the seed's simulations, ``fit_all``, leave it out, as it was
        trained for the in-vivo prior): ``function(signals, b_values, *, sigma, context, **options)`` returns
        ``IVIMParams`` or a ``Posterior`` for signals ``(n, n_b)``; ``sigma`` is the noise SD in signal
        units (or None when ``needs_sigma`` is False), ``context`` is ``"scan"`` (a real scan: the
        in-vivo prior) or ``"simulation"`` (the seed's box; ``options`` may hold ``grid``).
        ``"network"``: ``function(voxels, b_values, *, method, seed, max_epochs, progress)`` trains a
        network for a scan (``train_on_scan``), which ``predict`` then applies.
    function : str or callable
        ``"subpackage.module:function"`` inside ``ivim_demo``, or the callable itself.
    help : str
        One line for ``--help`` and the README.
    needs_sigma : bool
        The fit needs the noise SD (estimated from the scan when not given).
    intervals : bool
        The fit can return credible intervals and posterior SDs (a ``Posterior``).
    trains_on_scan : bool
        A network trained, unsupervised, on the scan's own (or a cohort's pooled) voxels: it needs at
        least ``scan_training.MIN_SCAN_VOXELS`` of them.
    """

    name: str
    label: str
    kind: str
    function: object
    help: str
    needs_sigma: bool = False
    intervals: bool = False
    trains_on_scan: bool = False

    def load(self):
        """The function behind the method."""
        if callable(self.function):
            return self.function
        module, name = self.function.split(":")
        return getattr(importlib.import_module(f"ivim_demo.{module}"), name)


#: Every method, by name, in the order the command line lists them.
REGISTRY: dict = {}
#: The kinds of method (see ``Method.kind``).
KINDS = ("classical", "network", "pretrained")


def register(entry: Method) -> Method:
    """Add a method to the registry (the command line, ``fit_volume``, ``fit_cohort`` and ``fit_all`` then
    offer it). Returns it."""
    if not isinstance(entry, Method):
        raise ValueError(f"register takes a Method, got {type(entry).__name__}.")
    if entry.kind not in KINDS:
        raise ValueError(f"a method's kind is one of {', '.join(map(repr, KINDS))}, got {entry.kind!r}.")
    if entry.name in REGISTRY:
        raise ValueError(f"a method named {entry.name!r} is registered already.")
    REGISTRY[entry.name] = entry
    return entry


def methods(kind=None) -> tuple:
    """Names of the registered methods (of one ``kind``, or all)."""
    return tuple(name for name, m in REGISTRY.items() if kind is None or m.kind == kind)


def method(name) -> Method:
    """The registered method called ``name``; a ``ValueError`` naming the choices otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"method must be one of {', '.join(REGISTRY)}; got {name!r}.")
    return REGISTRY[name]


for _entry in (
    Method("ivimnet", "IVIM-NET", "network", "nets.scan_training:train_on_scan",
           "the seed's IVIM-NET, trained unsupervised on the scan's voxels", trains_on_scan=True),
    Method("optim", "IVIM-NET_optim", "network", "nets.scan_training:train_on_scan",
           "IVIM-NET_optim, trained unsupervised on the scan's voxels", trains_on_scan=True),
    Method("supervised", "supervised", "network", "nets.scan_training:train_on_scan",
           "a network trained on simulations like the scan: posterior means and SDs", intervals=True),
    Method("lsq", "LSQ", "classical", "imaging.method_fits:lsq", "least squares, voxel by voxel"),
    Method("segmented", "segmented", "classical", "imaging.method_fits:segmented",
           "segmented fit: Dt from high b-values first"),
    Method("bayes", "Bayes", "classical", "imaging.method_fits:bayes",
           "the exact posterior mean and SD (uniform prior, Rician noise)", needs_sigma=True, intervals=True),
    Method("pretrained", "pretrained", "pretrained", "imaging.method_fits:pretrained",
           "the shipped any-protocol network: posterior means, intervals and SDs with no training",
           needs_sigma=True, intervals=True),
):
    register(_entry)

#: Networks: trained for a scan (``train_on_scan``) unless a trained network is given (built-in ones).
NETWORK_METHODS = methods("network")
#: Classical per-voxel fits (built-in ones).
CLASSICAL_METHODS = methods("classical")
#: Shipped networks that fit with no training (built-in ones).
PRETRAINED_METHODS = methods("pretrained")
#: Every built-in method (``methods()`` also lists those registered later).
METHODS = NETWORK_METHODS + CLASSICAL_METHODS + PRETRAINED_METHODS
#: The command line's and ``fit_volume``'s default (see the README's real-scan results for why).
DEFAULT_METHOD = "supervised"
#: How tables and figures name each built-in method.
LABELS = {name: m.label for name, m in REGISTRY.items()}
