"""Saving and loading trained networks with the acquisition they belong to.

A checkpoint (format ``ivim-demo-checkpoint/2``) holds the network class, its
constructor settings, its weights, its compartment labelling (``swapped``,
see ``infer.decide_labelling``), the training history, and a sha256 checksum
over all of these, so a damaged file is refused instead of giving silently
different maps.  Files are written atomically.  Files of the older format
``/1`` (no checksum, no labelling) still load, with a warning: their labelling
is decided at load time on simulated signals from ``PARAMETER_BOX``. The
shipped networks are all ``/2``.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping

import numpy as np
import torch

from ..core.files import write_atomically
from . import networks
from .any_protocol import IVIMNetAnyProtocol
from .infer import decide_labelling
from ..simulation.simulate import training_data

__all__ = ["save_model", "load_model"]

FORMAT = "ivim-demo-checkpoint/2"
#: Older format still read: no checksum and no labelling.
FORMAT_V1 = "ivim-demo-checkpoint/1"
_REDO = "retrain the network or re-save it from the original with save_model"
#: Simulated voxels on which the labelling of a /1 checkpoint is decided (seed's box, sigma 0.01, seed 0).
_LEGACY_VOXELS = 4096
#: Network classes a checkpoint may name: those of ``networks.NETWORKS`` and the any-protocol network.
CLASSES = {**networks.NETWORKS, "IVIMNetAnyProtocol": IVIMNetAnyProtocol}


def save_model(net, path, *, history=None) -> str:
    """Save a network's weights with its b-values, settings and labelling.

    The file records the network class, its constructor settings (b-values
    in s/mm^2, bounds, layer options), the weights, whether its outputs are
    swapped (``net.swapped``, see ``decide_labelling``), the history, and a
    sha256 checksum over all of them, so ``load_model`` rebuilds exactly the
    trained network, refuses a damaged file, and ``predict`` can refuse data
    acquired with other b-values.  The file is written to a temporary file in
    the same folder, read back, and only then renamed to ``path``: an
    interrupted save never leaves a partial checkpoint.

    Parameters
    ----------
    net : torch.nn.Module
        One of the networks in ``ivim_demo.nets.networks``, with finite weights.
    path : str or os.PathLike
        Output file (``.pt``); parent folders are created.
    history : TrainHistory or dict, optional
        Stored alongside (loss curve, best epoch, time); default the
        network's own ``.history`` when it has one.  numpy arrays and scalars
        are stored as lists and plain numbers; anything else that is not a
        number, string, list or dict of them is refused.

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    name = type(net).__name__
    if CLASSES.get(name) is not type(net):
        raise ValueError(
            f"save_model saves the networks of ivim_demo.nets.networks ({', '.join(CLASSES)}), "
            f"got a {name}."
        )
    state = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in net.state_dict().items()}
    bad = _non_finite(state)
    if bad:
        raise ValueError(
            f"the network has NaN or inf weights ({', '.join(bad)}), so every estimate would be NaN; "
            "retrain it (e.g. with a lower lr) before saving."
        )
    if history is None:
        history = getattr(net, "history", None)
    payload = {
        "format": FORMAT,
        "class": name,
        "settings": net.settings(),
        "swapped": bool(getattr(net, "swapped", False)),
        "history": _plain_history(history),
        "state_dict": state,
    }
    payload["checksum"] = _checksum(payload)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"cannot save to {path!r}: a part of its folder is a file, not a folder.") from None

    def loads_back(tmp):  # what is written must load back
        try:
            _read_payload(tmp)
        except ValueError as err:
            raise ValueError(f"could not write a checkpoint that loads back to {path!r}: {err}") from None

    write_atomically(path, lambda f: torch.save(payload, f), verify=loads_back)
    return path


def load_model(path):
    """Load a network saved by ``save_model`` (safely: ``weights_only=True``).

    Refused, with a ``ValueError`` that says what is wrong: a missing or
    unreadable file, a file whose checksum does not match (damaged after it
    was saved), weights that do not fit the network class it names (missing
    or unexpected keys, other shapes), and NaN or inf weights.  Checkpoints
    of the older format ``ivim-demo-checkpoint/1`` carry no checksum and no
    labelling; they load with a warning (damage cannot be detected) and
    their labelling is decided with the seed's rule
    (``decide_labelling``) on simulated signals from ``PARAMETER_BOX``
    (``training_data(4096, b, seed=0)``).

    Returns
    -------
    torch.nn.Module
        The network in eval mode on the CPU, with ``.history`` (a dict, may be
        empty) and ``.swapped`` attached.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"no checkpoint at {path!r}; train one first (notebook 02 or train()).")
    payload = _read_payload(path)
    cls = CLASSES[payload["class"]]
    settings = dict(payload["settings"])
    try:
        net = cls(settings.pop("b_values"), **settings) if "b_values" in settings else cls(**settings)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{path!r} holds settings that do not build a {cls.__name__} ({err}); {_REDO}.") from None
    _check_state(path, net, payload["state_dict"])
    net.load_state_dict(payload["state_dict"])
    net.eval()
    net.history = payload.get("history", {})
    if payload["format"] == FORMAT:
        net.swapped = payload["swapped"]
    else:
        warnings.warn(f"{path!r} is an old checkpoint ({FORMAT_V1}) without a checksum: damage to it cannot be "
                      "detected. Re-save it with save_model(load_model(path), path) once you trust it.", stacklevel=2)
        decide_labelling(net, training_data(_LEGACY_VOXELS, net.b_values.numpy().astype(float), seed=0)[0])
    return net


def _read_payload(path) -> dict:
    """The checked contents of a checkpoint file (format, fields, checksum, class)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle with code in it, ...
        # torch's own message can run to hundreds of characters and suggests unsafe loading: name the kind only
        raise ValueError(f"{path!r} is not a readable ivim-demo checkpoint ({type(err).__name__}); use a .pt file "
                         "written by save_model or the command line, or train a new model.") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (FORMAT, FORMAT_V1):
        if isinstance(fmt, str) and fmt.startswith("ivim-demo-checkpoint/"):
            raise ValueError(
                f"{path!r} has format {fmt!r}, which this ivim-demo does not read ({FORMAT} or {FORMAT_V1}); "
                "update ivim-demo or re-save the model with this version."
            )
        raise ValueError(f"{path!r} is not an ivim-demo checkpoint (format {FORMAT}).")
    fields = {"class": str, "settings": dict, "state_dict": dict}
    if fmt == FORMAT:
        fields.update(swapped=bool, history=dict, checksum=str)
    for key, kind in fields.items():
        if not isinstance(payload.get(key), kind):
            raise ValueError(f"{path!r} is corrupt or incomplete (no valid {key!r} entry); {_REDO}.")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["state_dict"].items()):
        raise ValueError(f"{path!r} is corrupt (its weights are not a dict of tensors); {_REDO}.")
    if fmt == FORMAT_V1 and "checksum" in payload:
        raise ValueError(f"{path!r} is corrupt (a {FORMAT_V1} file with a checksum); {_REDO}.")
    if fmt == FORMAT:
        try:
            expected = _checksum(payload)
        except (TypeError, ValueError):  # settings or history that no save_model wrote
            expected = None
        if expected != payload["checksum"]:
            raise ValueError(
                f"{path!r} is corrupt (checksum mismatch): its weights, settings or history changed after "
                f"it was saved; {_REDO}."
            )
    if payload["class"] not in CLASSES:
        raise ValueError(f"{path!r} holds an unknown network class {payload['class']!r}.")
    return payload


def _check_state(path, net, state):
    """Refuse weights that do not fit ``net`` or are not finite, before torch sees them."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    name = type(net).__name__
    if missing:
        raise ValueError(f"{path!r} lacks weights {missing} of the {name} it names; {_REDO}.")
    if unexpected:
        raise ValueError(f"{path!r} has weights {unexpected} that the {name} it names does not have; {_REDO}.")
    for key, ref in expected.items():
        got = state[key]
        if got.shape != ref.shape or got.is_floating_point() != ref.is_floating_point():
            raise ValueError(
                f"{path!r}: weight {key!r} is {got.dtype} {tuple(got.shape)} but the {name} built from its "
                f"settings needs {ref.dtype} {tuple(ref.shape)}; {_REDO}."
            )
    bad = _non_finite(state)
    if bad:
        raise ValueError(
            f"{path!r} holds NaN or inf weights ({', '.join(bad)}), which would give all-NaN maps; {_REDO}."
        )
    if "b_values" in state and not torch.equal(state["b_values"].to(expected["b_values"].dtype),
                                               expected["b_values"]):
        raise ValueError(f"{path!r}: the stored b-values differ from those in its settings; {_REDO}.")


def _non_finite(state) -> list:
    """Names of the floating-point tensors in ``state`` that hold NaN or inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _checksum(payload) -> str:
    """sha256 over class, settings, labelling, history and every tensor's bytes (keys sorted)."""
    meta = {key: payload[key] for key in ("format", "class", "settings", "swapped", "history")}
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    state = payload["state_dict"]
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"\n{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _plain_history(history) -> dict:
    """``history`` as plain dicts, lists, numbers and strings (what ``weights_only`` loading accepts)."""
    if history is None:
        return {}
    if hasattr(history, "as_dict"):
        history = history.as_dict()
    if not isinstance(history, Mapping):
        raise ValueError(f"history must be a TrainHistory or a dict, got a {type(history).__name__}.")
    return _plain(history, "history")


def _plain(value, where):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.generic):  # numpy scalars (np.float64 is also a float: convert it first)
        value = value.item()
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{where} is an array of {value.dtype}, which a checkpoint cannot store; "
                             "pass numbers, strings, lists or dicts of them.")
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where} has keys that are not strings; a checkpoint stores string keys only.")
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise ValueError(f"{where} is a {type(value).__name__}, which a checkpoint cannot store; "
                     "pass numbers, strings, lists or dicts of them (numpy arrays are converted).")
