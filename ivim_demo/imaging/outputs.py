"""What a fit of one scan leaves on disk: maps, residual, SD maps, overview PNG and summary.json, written
into a staging folder that replaces the output folder only when complete.

Shared by the ``fit`` command and ``fit_cohort`` (one scan each). Light at import (no numpy, torch or
matplotlib until something is written), so the command line's ``--help`` stays fast.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

from .methods import methods

__all__ = ["OUTPUT_FILES", "SD_MAP_NAMES", "SD_ROW", "Staging", "check_enough_b_values", "check_out", "sd_limits",
           "write_outputs"]

#: Posterior SD maps, written when the method yields a posterior (``VolumeFit.sd``; ``--method bayes`` and
#: ``supervised``).
SD_MAP_NAMES = ("Dp", "Dt", "Fp")
#: Every file a run writes into --out besides a network's ``METHOD.pt``; a folder holding anything else is
#: not ours to replace.
OUTPUT_FILES = {"Dp.nii.gz", "Dt.nii.gz", "Fp.nii.gz", "S0.nii.gz", "residual.nii.gz", "fitted_mask.nii.gz",
                "overview.png", "summary.json", *(f"{p}_sd.nii.gz" for p in SD_MAP_NAMES)}


def check_out(out):
    """``out`` may be replaced: missing, empty, or an earlier run's outputs and nothing else; not a mount point."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file; give a folder to write the maps into.")
    if os.path.ismount(out):
        raise ValueError(f"--out {out!r} is a mount point, which cannot be replaced by a new folder; give a folder "
                         "inside it.")
    if os.path.isdir(out):
        ours = OUTPUT_FILES | {f"{m}.pt" for m in methods("network")}  # and a network registered later
        others = sorted(set(os.listdir(out)) - ours)
        if others:
            raise ValueError(f"--out {out!r} holds files this tool did not write ({', '.join(others[:3])}"
                             f"{', ...' if len(others) > 3 else ''}), which a run would delete; give a new or "
                             "empty folder.")


class Staging:
    """A new folder beside ``out`` that a run writes into, moved into place only when complete.

    Created before any fitting (so an unwritable ``--out`` is refused at once); removed, with any parent
    folders it had to create, when the run fails or is interrupted.
    """

    def __init__(self, out):
        # a symbolic link is followed: the folder it points to gets the outputs, and the link stays
        self.out = os.path.realpath(out) if os.path.islink(out) else os.path.abspath(out)
        self.published = False
        check_out(self.out)
        if os.path.isdir(self.out):
            _check_replaceable(self.out)
        parent, self.created = os.path.dirname(self.out), []
        while not os.path.exists(parent):
            self.created.append(parent)
            parent = os.path.dirname(parent)
        try:
            os.makedirs(os.path.dirname(self.out), exist_ok=True)
            self.path = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out)}.partial-",
                                         dir=os.path.dirname(self.out))
        except OSError as err:
            self.discard()
            raise ValueError(f"cannot write to --out {self.out!r} ({err.strerror}); choose a writable folder.") from None

    def publish(self):
        """Replace ``out`` by the complete set (the previous outputs stay until then).

        Ctrl-C and SIGTERM are held back from the first rename until the previous outputs are deleted, so a
        signal leaves either the previous outputs or the new ones in ``out``, never neither; one that
        arrives meanwhile is delivered afterwards (``published`` is then True).
        """
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o777 & ~umask)  # mkdtemp makes it private; the maps are for colleagues too
        with _signals_held():
            old = None
            if os.path.exists(self.out):
                check_out(self.out)
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out)}.old-", dir=os.path.dirname(self.out))
                try:
                    os.rename(self.out, os.path.join(old, "out"))
                except OSError:
                    os.rmdir(old)
                    raise
            try:
                os.rename(self.path, self.out)
            except OSError:
                if old is not None:  # put the previous outputs back
                    os.rename(os.path.join(old, "out"), self.out)
                    os.rmdir(old)
                raise
            self.path, self.created, self.published = None, [], True
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)

    def discard(self):
        if getattr(self, "path", None):
            shutil.rmtree(self.path, ignore_errors=True)
        for folder in self.created:  # deepest first
            try:
                os.rmdir(folder)
            except OSError:
                break


def _check_replaceable(out):
    """Refuse, before any fitting, an ``out`` that cannot be moved aside (immutable, or its folder read-only)."""
    probe = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.probe-{os.getpid()}")
    with _signals_held():
        try:
            os.rename(out, probe)
        except OSError as err:
            raise ValueError(f"--out {out!r} cannot be replaced ({err.strerror}): it may be immutable or its "
                             "folder read-only; choose another --out.") from None
        os.rename(probe, out)


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM back in this block (main thread only): one that arrives is noted and sent again
    when the block ends, to the handlers in place before it. (Blocking them with ``pthread_sigmask`` would
    not do: the kernel hands a process signal to any thread that does not block it, torch's among them.)"""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if received:
            os.kill(os.getpid(), received[0])


def check_enough_b_values(b_values):
    """Refuse an acquisition with fewer than 5 distinct b-values (4 parameters, and one more to judge the fit)."""
    if len(b_values) < 5:
        raise ValueError(f"IVIM fitting needs at least 5 distinct b-values (4 parameters, and one more to judge "
                         f"the fit); this scan has {len(b_values)}: {list(map(float, b_values))} s/mm^2.")


def write_outputs(fit, keep, excluded, affine, folder, *, out, b_values, shape, save_net=True, **fields):
    """Write one scan's outputs into ``folder``: the maps, the residual, the overview PNG and summary.json.

    What ``fit`` and ``cohort`` write for every scan, into a staging folder that becomes ``out``. When
    the fit has posterior SD maps (``fit.sd``: ``bayes``, ``supervised``), also ``Dp_sd``, ``Dt_sd`` and
    ``Fp_sd`` (same units as the maps, 0 outside the fitted voxels like them), a second row of the overview
    and ``sd_maps`` in summary.json.

    Parameters
    ----------
    fit : VolumeFit
        From ``fit_volume``.
    keep : numpy.ndarray of bool
        The voxels that were fitted (maps are 0 outside).
    excluded : int
        Voxels of the mask left out as invalid (see ``make_mask``).
    affine : array_like
        The DWI's 4 x 4 affine.
    folder : str
        Where to write now (the staging folder).
    out : str
        Where the files will be once published (recorded in summary.json).
    b_values : array_like
        The scan's b-values in s/mm^2.
    shape : tuple of int
        The shape of the direction-averaged DWI.
    save_net : bool
        Also save a network trained for this scan as ``METHOD.pt``.
    **fields
        More entries for summary.json (input, mask, model, seed, ...). A ``mask_check`` (the report of
        ``make_mask``) whose ``doubt`` is set adds that doubt to the summary's ``warnings``.

    Returns
    -------
    dict
        The summary written.
    """
    import matplotlib.pyplot as plt
    import nibabel as nib
    import numpy as np

    from ..nets import checkpoint
    from . import nifti, plots

    method = fit.info["method"]
    paths = nifti.save_maps(fit.maps, affine, folder, mask=keep)
    res_path = os.path.join(folder, "residual.nii.gz")
    nib.save(nib.Nifti1Image(np.where(keep, fit.residual, 0).astype(np.float32), np.asarray(affine, float)),
             res_path)
    paths["residual"] = res_path
    mask_path = os.path.join(folder, "fitted_mask.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(keep, np.uint8), np.asarray(affine, float)), mask_path)
    paths["mask"] = mask_path
    sd = getattr(fit, "sd", None)
    for name in SD_MAP_NAMES if sd is not None else ():
        path = os.path.join(folder, f"{name}_sd.nii.gz")
        nib.save(nib.Nifti1Image(np.where(keep, getattr(sd, name), 0).astype(np.float32),
                                 np.asarray(affine, float)), path)
        paths[f"{name}_sd"] = path
    if fit.net is not None and save_net:
        paths["model"] = checkpoint.save_model(fit.net, os.path.join(folder, f"{method}.pt"))
    doubt = (fields.get("mask_check") or {}).get("doubt")
    warned = list(fit.info["warnings"]) + ([f"the automatic mask is doubtful ({doubt}); look at "
                                            "fitted_mask.nii.gz, or pass a mask"] if doubt else [])
    z = int(np.argmax(keep.reshape(-1, keep.shape[-1]).sum(axis=0))) if keep.ndim == 3 else None
    sl = (lambda a: a[..., z]) if z is not None else (lambda a: a)
    rows = {method: type(fit.maps)(*(sl(m) for m in fit.maps))}
    if sd is not None:
        rows[SD_ROW] = type(sd)(*(sl(m) for m in sd))
    fig = plots.plot_maps(rows, limits=plots.SCAN_LIMITS, row_limits={SD_ROW: sd_limits()},
                          title=f"IVIM maps ({method}), slice {z}"
                                + (f", half {fields['half']} of the series" if fields.get("half") else "")
                                + (" - WARNING: see summary.json" if warned else ""))
    try:
        paths["overview"] = plots.save_figure(fig, "overview", folder)
    finally:
        plt.close(fig)  # a cohort writes one per scan
    n_voxels = int(np.prod(keep.shape))
    out = os.path.abspath(out)
    summary = {**fit.info, "warnings": warned, **fields, "b_values": [float(b) for b in b_values], "shape": list(shape),
               "mask_voxels": int(keep.sum()) + excluded, "mask_fraction": (int(keep.sum()) + excluded) / n_voxels,
               "excluded_voxels": excluded,
               **({"sd_maps": {"maps": [f"{p}_sd" for p in SD_MAP_NAMES], "what": fit.info.get("sd_maps", ""),
                               "units": "as the maps: Dp, Dt in mm^2/s, Fp a fraction; 0 outside the fitted voxels",
                               "overview_colour_limits": "0 to the prior's SD on IN_VIVO_BOX (white: the data "
                                                         "narrowed the prior little)"}}
                  if sd is not None else {}),
               "outputs": {k: os.path.join(out, os.path.basename(v)) for k, v in paths.items()}}
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


#: The overview's row of posterior SD maps.
SD_ROW = "posterior SD"


def sd_limits():
    """Colour limits of the SD row: 0 to the SD of a uniform prior on ``IN_VIVO_BOX`` (width / sqrt(12))."""
    from ..core.prior import IN_VIVO_BOX

    return {p: (0.0, (hi - lo) / 12**0.5) for p, (lo, hi) in IN_VIVO_BOX.items()}
