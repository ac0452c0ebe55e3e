"""Command line: ``python -m ivim_demo fit DWI.nii.gz --bvals BVALS --out DIR`` and ``... cohort DIR --out OUT``.

Imports stay light until a command runs: ``--help`` loads neither torch nor matplotlib.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from .methods import DEFAULT_METHOD, METHODS, NETWORK_METHODS

USAGE_EXAMPLE = (
    "python -m ivim_demo fit dwi.nii.gz --bvals dwi.bval --out maps/\n"
    "  (fits the masked voxels of dwi.nii.gz with a network trained for this scan, then writes\n"
    "   Dp/Dt/Fp/S0/residual maps, an overview PNG and summary.json with any warnings)"
)


def _shared_options(p):
    """Options that ``fit`` and ``cohort`` share."""
    p.add_argument("--average", choices=("geometric", "arithmetic"), default="geometric",
                   help="how the directions of a b-value are averaged: geometric (default, the trace-weighted "
                        "image; a direction reading 0 makes it 0) or arithmetic")
    p.add_argument("--seed", type=int, default=0, help="seeds the network's simulation, initialisation and "
                                                       "training (same seed, same maps)")
    p.add_argument("--max-epochs", type=int, default=1000,
                   help="upper limit of training epochs (training stops earlier, on a validation split)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

COHORT_EXAMPLE = (
    "python -m ivim_demo cohort study/ --out study-maps/ --method lsq\n"
    "  (fits study/sub-*/[ses-*/]dwi/*_dwi.nii.gz on a local dask cluster, writes each scan's maps into\n"
    "   study-maps/sub-*/[ses-*/]dwi/SCAN/ and one row per scan into study-maps/cohort.csv; exit 1 if a\n"
    "   scan failed: its reason is in cohort.csv)"
)


def _parser():
    p = argparse.ArgumentParser(prog="python -m ivim_demo", description="IVIM parameter maps from DWI.",
                                epilog=USAGE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit IVIM to a 4-D DWI NIfTI and write parameter maps")
    f.add_argument("dwi", help="4-D diffusion-weighted NIfTI (x, y, z, volumes)")
    f.add_argument("--bvals", required=True, help="FSL-style bvals file, one b-value (s/mm^2) per volume")
    f.add_argument("--out", required=True,
                   help="output folder for the maps, overview PNG and summary JSON: new, empty, or the outputs of an "
                        "earlier run (replaced as a whole once the new set is complete); a folder holding other "
                        "files is refused")
    f.add_argument("--mask", help="NIfTI mask (non-zero = fit); default: the b=0 image's tissue (Otsu "
                                  "threshold when the image has background, else every valid voxel)")
    f.add_argument("--method", choices=METHODS,
                   help=f"default {DEFAULT_METHOD}: a network trained for this scan on simulations of it (its "
                        "b-values, signal levels and noise), which also writes posterior SD maps *_sd.nii.gz; "
                        "ivimnet (the paper's network) and optim "
                        "(IVIM-NET_optim): trained, unsupervised, on the scan's own voxels; lsq: least squares per "
                        "voxel; segmented: Dt from b >= 200 first, then Fp and Dp; bayes: posterior mean on a grid (S0 "
                        "unknown, uniform prior on IN_VIVO_BOX), also writes posterior SD maps *_sd.nii.gz. "
                        "Networks train for about 0.5-3 minutes on one slice. With --model: read off the model")
    f.add_argument("--model", help="a trained network checkpoint (e.g. an earlier run's supervised.pt) to use "
                                   "instead of training; it must match the scan's b-values")
    f.add_argument("--sigma", type=float, help="bayes only: the noise SD of the direction-averaged image in its "
                                               "signal units (earlier versions took it relative to S(b=0)); "
                                               "default: estimated from least-squares residuals")
    _shared_options(f)
    c = sub.add_parser("cohort", help="fit every scan of a study folder on dask (one network per acquisition, "
                                      "resumable) and write cohort.csv",
                       epilog=COHORT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("dir", help="study folder: sub-*/[ses-*/]dwi/*_dwi.nii.gz, each with its *_dwi.bval beside it")
    c.add_argument("--out", required=True,
                   help="output folder: maps of each scan in OUT/sub-*/[ses-*/]dwi/SCAN/, the networks in "
                        "OUT/models/, and OUT/cohort.csv; rerun with the same options to resume (scans whose "
                        "outputs are current are skipped)")
    c.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"default {DEFAULT_METHOD}; a network method trains one network per acquisition (b-value "
                        "set) on voxels pooled from all its scans, then fits every scan with it")
    c.add_argument("--labels-glob", help="label images (integer labels) beside each DWI, for per-label medians in "
                                         "cohort.csv (default '*_dseg.nii*'; '' for none)")
    c.add_argument("--scheduler", help="address of a running dask scheduler (e.g. tcp://host:8786) whose workers see "
                                       "DIR and OUT at the same paths; default: a local cluster")
    c.add_argument("--workers", type=int, help="worker processes of the local cluster (default: the number of CPU "
                                               "cores); 0 fits in this process")
    c.add_argument("--pool-voxels", type=int, help="voxels each network is trained on, drawn evenly from the scans "
                                                   "of its acquisition (default 20000)")
    _shared_options(c)
    return p


#: Every file a run writes into --out; a folder holding anything else is not ours to replace.
#: Posterior SD maps, written when the method yields a posterior (``VolumeFit.sd``; ``--method bayes`` and
#: ``supervised``).
SD_MAP_NAMES = ("Dp", "Dt", "Fp")
OUTPUT_FILES = {"Dp.nii.gz", "Dt.nii.gz", "Fp.nii.gz", "S0.nii.gz", "residual.nii.gz", "overview.png",
                "summary.json", *(f"{m}.pt" for m in NETWORK_METHODS), *(f"{p}_sd.nii.gz" for p in SD_MAP_NAMES)}


def _check_out(out):
    """``out`` may be replaced: missing, empty, or an earlier run's outputs and nothing else."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file; give a folder to write the maps into.")
    if os.path.isdir(out):
        others = sorted(set(os.listdir(out)) - OUTPUT_FILES)
        if others:
            raise ValueError(f"--out {out!r} holds files this tool did not write ({', '.join(others[:3])}"
                             f"{', ...' if len(others) > 3 else ''}), which a run would delete; give a new or "
                             "empty folder.")


class _Staging:
    """A new folder beside ``out`` that a run writes into, moved into place only when complete.

    Created before any fitting (so an unwritable ``--out`` is refused at once); removed, with any parent
    folders it had to create, when the run fails or is interrupted.
    """

    def __init__(self, out):
        self.out = os.path.abspath(out)
        _check_out(self.out)
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
        """Replace ``out`` by the complete set (the previous outputs stay until then)."""
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o777 & ~umask)  # mkdtemp makes it private; the maps are for colleagues too
        old = None
        if os.path.exists(self.out):
            _check_out(self.out)
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out)}.old-", dir=os.path.dirname(self.out))
            os.rename(self.out, os.path.join(old, "out"))
        os.rename(self.path, self.out)
        self.path, self.created = None, []
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
        More entries for summary.json (input, mask, model, seed, ...).

    Returns
    -------
    dict
        The summary written.
    """
    import matplotlib.pyplot as plt
    import nibabel as nib
    import numpy as np

    from . import checkpoint, nifti, plots

    method = fit.info["method"]
    paths = nifti.save_maps(fit.maps, affine, folder, mask=keep)
    res_path = os.path.join(folder, "residual.nii.gz")
    nib.save(nib.Nifti1Image(np.where(keep, fit.residual, 0).astype(np.float32), np.asarray(affine, float)),
             res_path)
    paths["residual"] = res_path
    sd = getattr(fit, "sd", None)
    for name in SD_MAP_NAMES if sd is not None else ():
        path = os.path.join(folder, f"{name}_sd.nii.gz")
        nib.save(nib.Nifti1Image(np.where(keep, getattr(sd, name), 0).astype(np.float32),
                                 np.asarray(affine, float)), path)
        paths[f"{name}_sd"] = path
    if fit.net is not None and save_net:
        paths["model"] = checkpoint.save_model(fit.net, os.path.join(folder, f"{method}.pt"))
    z = int(np.argmax(keep.reshape(-1, keep.shape[-1]).sum(axis=0))) if keep.ndim == 3 else None
    sl = (lambda a: a[..., z]) if z is not None else (lambda a: a)
    rows = {method: type(fit.maps)(*(sl(m) for m in fit.maps))}
    if sd is not None:
        rows[SD_ROW] = type(sd)(*(sl(m) for m in sd))
    fig = plots.plot_maps(rows, limits=plots.SCAN_LIMITS, row_limits={SD_ROW: _sd_limits()},
                          title=f"IVIM maps ({method}), slice {z}"
                                + (" - WARNING: see summary.json" if fit.info["warnings"] else ""))
    try:
        paths["overview"] = plots.save_figure(fig, "overview", folder)
    finally:
        plt.close(fig)  # a cohort writes one per scan
    n_voxels = int(np.prod(keep.shape))
    out = os.path.abspath(out)
    summary = {**fit.info, **fields, "b_values": [float(b) for b in b_values], "shape": list(shape),
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


def _sd_limits():
    """Colour limits of the SD row: 0 to the SD of a uniform prior on ``IN_VIVO_BOX`` (width / sqrt(12))."""
    from .recipes import IN_VIVO_BOX

    return {p: (0.0, (hi - lo) / 12**0.5) for p, (lo, hi) in IN_VIVO_BOX.items()}


def _fit(args, staging):
    from . import checkpoint, image_fit, mask, nifti

    if args.sigma is not None and (args.method or DEFAULT_METHOD) != "bayes":
        raise ValueError("--sigma only applies to --method bayes.")
    dwi, b_values, affine = nifti.load_dwi(args.dwi, args.bvals, average=args.average)
    check_enough_b_values(b_values)
    user_mask = nifti.load_mask(args.mask, affine=affine) if args.mask else None
    keep, excluded = mask.make_mask(dwi, mask=user_mask, warn=False, return_excluded=True)
    net, method = None, args.method or DEFAULT_METHOD
    if args.model:
        net = checkpoint.load_model(args.model)
        trained_as = image_fit.method_of(net)
        if args.method is not None and args.method != trained_as:
            raise ValueError(f"--model {args.model!r} is a {trained_as} network but --method is {args.method}; "
                             f"leave out --method (it is read off the model) or train a {args.method} network.")
        method = trained_as
    fit = image_fit.fit_volume(dwi, b_values, keep, method=method, net=net, sigma=args.sigma, seed=args.seed,
                               max_epochs=args.max_epochs, progress=not args.no_progress)
    return write_outputs(fit, keep, excluded, affine, staging, out=args.out, b_values=b_values, shape=dwi.shape,
                         save_net=not args.model, input=os.path.abspath(args.dwi), average=args.average,
                         mask=os.path.abspath(args.mask) if args.mask else "automatic",
                         model=os.path.abspath(args.model) if args.model else None, seed=args.seed)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a job scheduler, `timeout`) cleans up like Ctrl-C


def _cohort(args):
    from . import cohort

    labels_glob = cohort.LABELS_GLOB if args.labels_glob is None else (args.labels_glob or None)
    pool = cohort.POOL_VOXELS if args.pool_voxels is None else args.pool_voxels
    return cohort.fit_cohort(args.dir, args.out, method=args.method, seed=args.seed, workers=args.workers,
                             scheduler=args.scheduler, average=args.average, labels_glob=labels_glob,
                             max_epochs=args.max_epochs, pool_voxels=pool, progress=not args.no_progress)


def _report_cohort(rows, out) -> int:
    """What a cohort run prints: the failures (stderr) and the counts; exit 1 when a scan failed."""
    counts = {status: sum(r["status"] == status for r in rows) for status in ("fitted", "skipped", "failed")}
    for row in rows:
        if row["status"] == "failed":
            print(f"failed: {row['scan']}: {row['reason']}", file=sys.stderr)
    print(f"{len(rows)} scans: {counts['fitted']} fitted, {counts['skipped']} skipped (already done), "
          f"{counts['failed']} failed; table in {os.path.join(out, 'cohort.csv')}")
    return 1 if counts["failed"] else 0


def _import_libraries(cohort=False) -> None:
    """Import the heavy libraries (while ``main`` holds Ctrl-C and SIGTERM back).

    An interrupt that lands inside a C extension's initialisation (torch, matplotlib) does not arrive as a
    clean ``KeyboardInterrupt``: measured, it aborted the process (SIGABRT), turned into an ``ImportError``,
    or made Python exit by SIGINT after ``main`` had returned 130.
    """
    import matplotlib.pyplot  # noqa: F401
    import nibabel  # noqa: F401
    import scipy.optimize  # noqa: F401
    import torch  # noqa: F401

    from . import checkpoint, image_fit, mask, nifti, plots  # noqa: F401

    if cohort:
        import dask.distributed  # noqa: F401


def main(argv=None) -> int:
    import signal
    import warnings

    args = _parser().parse_args(argv)
    staging, cohort = None, False
    handlers, previous, held = {}, {}, []
    if _in_main_thread():  # until the libraries are loaded, an interrupt is only noted
        handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _terminate}
        previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in handlers}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what matters reaches summary.json and the lines below
            cohort = args.command == "cohort"
            if not cohort:
                staging = _Staging(args.out)
            _import_libraries(cohort=cohort)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            if held:
                raise KeyboardInterrupt
            if cohort:
                rows = _cohort(args)
            else:
                summary = _fit(args, staging.path)
                staging.publish()
    except ValueError as err:  # bad input: one line, no traceback
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: " + ("the scans already fitted are kept; run the same command again to fit the rest"
                                 if cohort else "nothing was written (previous outputs, if any, are unchanged)"),
              file=sys.stderr)
        return 130
    except OSError as err:
        reason = " ".join(str(err.strerror or err).split())
        print(f"error: cannot write the outputs ({reason}); "
              + ("the scans already fitted are kept. " if cohort else "previous outputs, if any, are unchanged. ")
              + "Free disk space or choose another --out.", file=sys.stderr)
        return 2
    finally:
        if staging is not None:
            staging.discard()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if cohort:
        return _report_cohort(rows, args.out)
    if summary["excluded_voxels"]:
        print(f"warning: {summary['excluded_voxels']} voxel(s) in the mask excluded (NaN/inf, negative or "
              "S(b=0) <= 0); their maps are 0", file=sys.stderr)
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"fitted {summary['voxels']} voxels with {summary['method']}; maps in {args.out}")
    return 0


def _in_main_thread() -> bool:
    """Signal handlers can only be set from the main thread (tests may call ``main`` from others)."""
    import threading

    return threading.current_thread() is threading.main_thread()
