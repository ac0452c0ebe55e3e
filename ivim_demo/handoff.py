"""Files that one notebook writes and the next reads, with a fallback.

Each notebook can run on its own: when an earlier notebook's output is
missing, these helpers make it through the package and say so in a warning.
"""
from __future__ import annotations

import csv
import json
import os
import warnings

import numpy as np

from .checkpoint import load_model, save_model
from .signal_model import IVIMParams

__all__ = ["save_dataset", "load_dataset", "load_or_make_dataset", "load_or_make_model", "save_table", "load_table"]


def save_dataset(path, signals, params: IVIMParams, b_values) -> str:
    """Save signals ``(..., n_b)``, their true parameters and b-values (s/mm^2) as ``.npz``."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, signals=signals, b_values=b_values, **params._asdict())
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


def load_or_make_dataset(path, make, *, made_by: str):
    """Load a dataset, or make and save it when the file is missing.

    Parameters
    ----------
    path : str or os.PathLike
    make : callable
        Returns ``(signals, params, b_values)``.
    made_by : str
        The notebook that normally writes ``path``, named in the warning.
    """
    if os.path.isfile(path):
        return load_dataset(path)
    warnings.warn(f"{os.fspath(path)} not found (it is written by {made_by}); making it now.", stacklevel=2)
    signals, params, b_values = make()
    save_dataset(path, signals, params, b_values)
    return signals, params, b_values


def load_or_make_model(path, make, *, made_by: str):
    """Load a checkpoint, or train one and save it when the file is missing.

    Parameters
    ----------
    path : str or os.PathLike
    make : callable
        Returns ``(net, history)``, e.g. by calling ``train``.
    made_by : str
        The notebook that normally writes ``path``, named in the warning.
    """
    if os.path.isfile(path):
        return load_model(path)
    warnings.warn(f"{os.fspath(path)} not found (it is written by {made_by}); training a network now.",
                  stacklevel=2)
    net, history = make()
    net.history = history.as_dict()
    save_model(net, path)
    return net


def save_table(rows, folder, name: str):
    """Write result rows (list of dicts) as ``folder/NAME.json`` and ``folder/NAME.csv``.

    Returns
    -------
    tuple of str
        The two paths.
    """
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(os.fspath(folder), name)
    with open(stem + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return stem + ".json", stem + ".csv"


def load_table(path):
    """Rows written by ``save_table`` (give the ``.json`` path)."""
    with open(path) as f:
        return json.load(f)
