"""Files that one notebook writes and the next reads, with a fallback.

Each notebook can run on its own: when an earlier notebook's output is
missing, these helpers make it through the package and say so in a warning.
"""
from __future__ import annotations

import csv
import io
import json
import os
import warnings

import numpy as np

from ..nets.checkpoint import load_model, save_model
from ..core.files import write_atomically
from ..core.signal_model import IVIMParams

__all__ = ["save_dataset", "load_dataset", "dataset_settings", "load_or_make_dataset", "load_or_make_model",
           "save_table", "load_table", "TIMING_COLUMNS"]


def _plain_settings(settings):
    """``settings`` as JSON would give it back (tuples become lists, numpy numbers plain), for comparing."""
    return None if settings is None else json.loads(json.dumps(settings, default=lambda v: v.item()))


def save_dataset(path, signals, params: IVIMParams, b_values, *, settings=None) -> str:
    """Save signals ``(..., n_b)``, their true parameters and b-values (s/mm^2) as ``.npz``.

    ``settings`` (a dict of plain values, e.g. the notebook's sample count, noise and seed) is stored
    with them, so that ``load_or_make_dataset`` can tell whether the file answers another notebook's
    parameters.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    extra = {} if settings is None else {"settings": np.array(json.dumps(_plain_settings(settings)))}
    np.savez_compressed(path, signals=signals, b_values=b_values, **params._asdict(), **extra)
    return path


def load_dataset(path):
    """Load what ``save_dataset`` wrote.

    Returns
    -------
    signals : numpy.ndarray
    params : IVIMParams
    b_values : numpy.ndarray
    """
    with np.load(os.fspath(path)) as f:
        return f["signals"], IVIMParams(*(f[k] for k in IVIMParams._fields)), f["b_values"]


def dataset_settings(path):
    """The ``settings`` a dataset was saved with (None for a file saved without)."""
    with np.load(os.fspath(path)) as f:
        return json.loads(str(f["settings"])) if "settings" in f.files else None


def _reuse(path, stored, settings, *, made_by: str, what: str) -> bool:
    """Whether the file at ``path`` may be used for ``settings``; warns when it is remade."""
    if not os.path.isfile(path):
        warnings.warn(f"{os.fspath(path)} not found (it is written by {made_by}); {what} now.", stacklevel=3)
        return False
    wanted = _plain_settings(settings)
    if wanted is None or stored == wanted:
        return True
    warnings.warn(f"{os.fspath(path)} was made with {stored if stored is not None else 'unrecorded settings'}, "
                  f"but this notebook's parameters ask for {wanted}: {what} again with this notebook's parameters "
                  "(and saving it over the old file).", stacklevel=3)
    return False


def load_or_make_dataset(path, make, *, made_by: str, settings=None):
    """Load a dataset, or make and save it when the file is missing or was made with other settings.

    Parameters
    ----------
    path : str or os.PathLike
    make : callable
        Returns ``(signals, params, b_values)``.
    made_by : str
        The notebook that normally writes ``path``, named in the warning.
    settings : dict, optional
        What this notebook would make the dataset with (e.g. ``{"n": N_SAMPLES, "sigma": SIGMA, "seed":
        SEED}``, the keys the writing notebook saved). When the file was saved with other settings (or
        none), it is made again, saved and a warning says so. ``None``: any existing file is used.
    """
    stored = dataset_settings(path) if os.path.isfile(path) else None
    if _reuse(path, stored, settings, made_by=made_by, what="making it"):
        return load_dataset(path)
    signals, params, b_values = make()
    save_dataset(path, signals, params, b_values, settings=settings)
    return signals, params, b_values


def load_or_make_model(path, make, *, made_by: str, settings=None):
    """Load a checkpoint, or train one and save it when the file is missing or was trained otherwise.

    Parameters
    ----------
    path : str or os.PathLike
    make : callable
        Returns ``(net, history)``, e.g. by calling ``train``.
    made_by : str
        The notebook that normally writes ``path``, named in the warning.
    settings : dict, optional
        What this notebook would train with (e.g. ``{"n": ..., "sigma": ..., "seed": ..., "max_epochs":
        ...}``), compared with the ``made_with`` entry of the checkpoint's history (``save_model(...,
        history={..., "made_with": settings})``); on a difference the network is trained again, saved and
        a warning says so. ``None``: any existing checkpoint is used.
    """
    net = load_model(path) if os.path.isfile(path) else None
    stored = (getattr(net, "history", None) or {}).get("made_with")
    if _reuse(path, stored, settings, made_by=made_by, what="training a network"):
        return net
    net, history = make()
    net.history = {**history.as_dict(), **({} if settings is None else {"made_with": _plain_settings(settings)})}
    save_model(net, path, history=net.history)
    return net


#: Wall-clock columns: they change on every run, so ``save_table`` keeps them out of committed tables.
TIMING_COLUMNS = ("ms_per_1000_voxels", "train_seconds")


def save_table(rows, folder, name: str, *, timings_folder=None):
    """Write result rows (list of dicts) as ``folder/NAME.json`` and ``folder/NAME.csv``.

    The columns in ``TIMING_COLUMNS`` are left out, so that a re-run with the same results leaves
    the files unchanged; with ``timings_folder`` the complete rows, timings included, are also
    written there (``timings_folder/NAME.json`` and ``.csv``, e.g. the notebook's OUTPUT_DIR).

    Returns
    -------
    tuple of str
        The two paths in ``folder``.
    """
    if timings_folder is not None:
        _write_table(rows, timings_folder, name)
    return _write_table([{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows], folder, name)


def _write_table(rows, folder, name):
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(os.fspath(folder), name)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(stem + ".json", lambda f: f.write(json.dumps(rows, indent=1).encode("utf-8")))
    write_atomically(stem + ".csv", lambda f: f.write(text.getvalue().encode("utf-8")))
    return stem + ".json", stem + ".csv"


def load_table(path):
    """Rows written by ``save_table`` (give the ``.json`` path)."""
    with open(path) as f:
        return json.load(f)
