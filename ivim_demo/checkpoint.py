"""Saving and loading trained networks with the acquisition they belong to."""
from __future__ import annotations

import os

import torch

from . import networks

__all__ = ["save_model", "load_model"]

FORMAT = "ivim-demo-checkpoint/1"


def save_model(net, path, *, history=None) -> str:
    """Save a network's weights with its b-values and settings.

    The file records the network class, its constructor settings (b-values
    in s/mm^2, bounds, layer options) and the weights, so ``load_model``
    rebuilds exactly the trained network and ``predict`` can refuse data
    acquired with other b-values.

    Parameters
    ----------
    net : torch.nn.Module
        One of the networks in ``ivim_demo.networks``.
    path : str or os.PathLike
        Output file (``.pt``); parent folders are created.
    history : TrainHistory or dict, optional
        Stored alongside (loss curve, best epoch, time); default the
        network's own ``.history`` when it has one.

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if history is None:
        history = getattr(net, "history", None)
    payload = {
        "format": FORMAT,
        "class": type(net).__name__,
        "settings": net.settings(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "history": _history_dict(history),
    }
    torch.save(payload, path)
    return path


def _history_dict(history) -> dict:
    if history is None:
        return {}
    return history.as_dict() if hasattr(history, "as_dict") else dict(history)


def load_model(path):
    """Load a network saved by ``save_model`` (safely: ``weights_only=True``).

    Returns
    -------
    torch.nn.Module
        The network in eval mode on the CPU, with ``.history`` (a dict, may be
        empty) attached.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"no checkpoint at {path!r}; train one first (notebook 02 or train()).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle with code in it, ...
        raise ValueError(f"{path!r} is not a readable ivim-demo checkpoint: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not an ivim-demo checkpoint (format {FORMAT}).")
    cls = networks.NETWORKS.get(payload["class"])
    if cls is None:
        raise ValueError(f"{path!r} holds an unknown network class {payload['class']!r}.")
    settings = dict(payload["settings"])
    net = cls(settings.pop("b_values"), **settings)
    net.load_state_dict(payload["state_dict"])
    net.eval()
    net.history = payload.get("history", {})
    return net
