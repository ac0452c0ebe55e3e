"""Command line: ``python -m ivim_demo fit DWI.nii.gz --bvals BVALS --out DIR`` and ``... cohort DIR --out OUT``.

Imports stay light until a command runs: ``--help`` loads neither torch nor matplotlib.
"""
from __future__ import annotations

import argparse
import os
import sys

from .imaging.methods import DEFAULT_METHOD, METHODS, method as registered, methods
from .imaging.outputs import Staging, check_enough_b_values, write_outputs

USAGE_EXAMPLE = (
    "python -m ivim_demo fit dwi.nii.gz --bvals dwi.bval --out maps/\n"
    "  (fits the masked voxels of dwi.nii.gz with a network trained for this scan, then writes\n"
    "   Dp/Dt/Fp/S0/residual maps, an overview PNG and summary.json with any warnings)"
)


def _shared_options(p):
    """Options that ``fit`` and ``cohort`` share."""
    p.add_argument("--average", choices=("geometric", "arithmetic"),
                   help="how the directions of a b-value are averaged: geometric (default for magnitude images, "
                        "the trace-weighted image; a direction reading 0 makes it 0) or arithmetic (default for "
                        "real-valued images, fit only)")
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


def _other_methods():
    """Help lines of methods registered besides the built-in ones, which ``--method``'s help describes."""
    others = [m for m in methods() if m not in METHODS]
    return "".join(f"; {m}: {registered(m).help}" for m in others)


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
    f.add_argument("--noise", choices=("auto", "rician", "gaussian"), default="auto",
                   help="the images' noise: rician (magnitude images) or gaussian (real-valued or phase-corrected "
                        "images, whose negative samples are legal); default auto: gaussian when the image has a "
                        "negative sample, else rician (stated in summary.json). A cohort reads magnitude images")
    f.add_argument("--half", type=int, choices=(1, 2),
                   help="fit one half of the series' repeated images: of each b > 0 its first (1) or second (2) "
                        "half of directions in acquisition order, and every other b = 0 image; fit both halves "
                        "to measure a method's repeatability (within-subject CV) on your own scan")
    f.add_argument("--mask", help="NIfTI mask (non-zero = fit); default: the voxels whose signal at b <= 100 "
                                  "s/mm^2 is above Otsu's threshold and that decay with b like tissue (air does "
                                  "not); summary.json says when that mask is doubtful")
    f.add_argument("--method", choices=methods(),
                   help=f"default {DEFAULT_METHOD}: a network trained for this scan on simulations of it (its "
                        "b-values, signal levels and noise), which also writes posterior SD maps *_sd.nii.gz; "
                        "ivimnet (the paper's network) and optim "
                        "(IVIM-NET_optim): trained, unsupervised, on the scan's own voxels; lsq: least squares per "
                        "voxel; segmented: Dt from b >= 200 first, then Fp and Dp; bayes: posterior mean on a grid (S0 "
                        "unknown, uniform prior on IN_VIVO_BOX), also writes posterior SD maps *_sd.nii.gz. "
                        "pretrained: the shipped any-protocol network, no training, also writes SD maps. "
                        "Networks train for about 0.5-3 minutes on one slice. With --model: read off the model"
                        + _other_methods())
    f.add_argument("--model", help="a trained network checkpoint (e.g. an earlier run's supervised.pt) to use "
                                   "instead of training; it must match the scan's b-values")
    f.add_argument("--sigma", type=float, help="bayes and pretrained only: the noise SD of the direction-averaged "
                                               "image in its "
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
    c.add_argument("--method", choices=methods(), default=DEFAULT_METHOD,
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
    t = sub.add_parser("pretrain", help="retrain the shipped any-protocol network (--method pretrained) from "
                                        "scratch; rerun the same command to resume")
    t.add_argument("--out", required=True, help="folder for the training state (saved every 1000 steps) and the "
                                                "result, OUT/pretrained.pt (load it with load_pretrained(path))")
    t.add_argument("--steps", type=int, help="optimiser steps (default 250000, the shipped network's: a learning-rate "
                                             "cycle of 150000 steps, then a second of 100000)")
    t.add_argument("--seed", type=int, help="seeds weights, protocols, voxels and noise (default 0)")
    t.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _pretrain(args):
    from .nets.pretrained import PRETRAINED_FILE, train_pretrained

    net = train_pretrained(args.out, steps=args.steps, seed=args.seed, threads=args.threads,
                           progress=not args.no_progress)
    print(f"trained in {net.history['seconds'] / 60:.1f} min; best validation loss "
          f"{net.history['best_validation_loss']:.4g}; network in {os.path.join(args.out, PRETRAINED_FILE)}")
    return 0


def _fit(args, staging):
    from .nets import checkpoint
    from .imaging import image_fit, mask, nifti

    if args.sigma is not None and not registered(args.method or DEFAULT_METHOD).needs_sigma:
        raise ValueError(f"--sigma only applies to --method {', '.join(m for m in methods() if registered(m).needs_sigma)}.")
    scan = nifti.read_scan(args.dwi, args.bvals, average=args.average, noise=args.noise, half=args.half)
    dwi, b_values, affine = scan.dwi, scan.b_values, scan.affine
    check_enough_b_values(b_values)
    user_mask = nifti.load_mask(args.mask, affine=affine) if args.mask else None
    keep, excluded, report = mask.make_mask(dwi, b_values=b_values, mask=user_mask, warn=False,
                                            return_excluded=True, return_report=True, noise=scan.noise)
    net, method = None, args.method or DEFAULT_METHOD
    if args.model:
        net = checkpoint.load_model(args.model)
        trained_as = image_fit.method_of(net)
        if args.method is not None and args.method != trained_as:
            raise ValueError(f"--model {args.model!r} is a {trained_as} network but --method is {args.method}; "
                             f"leave out --method (it is read off the model) or train a {args.method} network.")
        method = trained_as
    fit = image_fit.fit_volume(dwi, b_values, keep, method=method, net=net, sigma=args.sigma, seed=args.seed,
                               max_epochs=args.max_epochs, progress=not args.no_progress, noise=scan.noise)
    return write_outputs(fit, keep, excluded, affine, staging, out=args.out, b_values=b_values, shape=dwi.shape,
                         save_net=not args.model, input=os.path.abspath(args.dwi), average=scan.average,
                         noise_from=scan.noise_why, half=args.half,
                         mask=os.path.abspath(args.mask) if args.mask else "automatic", mask_check=report,
                         model=os.path.abspath(args.model) if args.model else None, seed=args.seed)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a job scheduler, `timeout`) cleans up like Ctrl-C


def _cohort(args):
    from .imaging import cohort

    labels_glob = cohort.LABELS_GLOB if args.labels_glob is None else (args.labels_glob or None)
    pool = cohort.POOL_VOXELS if args.pool_voxels is None else args.pool_voxels
    return cohort.fit_cohort(args.dir, args.out, method=args.method, seed=args.seed, workers=args.workers,
                             scheduler=args.scheduler, average=args.average or "geometric", labels_glob=labels_glob,
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

    from .imaging import image_fit, mask, nifti, plots  # noqa: F401
    from .nets import checkpoint  # noqa: F401

    if cohort:
        import dask.distributed  # noqa: F401


def main(argv=None) -> int:
    import signal
    import warnings

    args = _parser().parse_args(argv)
    if args.command == "pretrain":
        try:
            return _pretrain(args)
        except ValueError as err:
            print("error: " + " ".join(str(err).split()), file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: run the same command again to resume from the last saved step", file=sys.stderr)
            return 130
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
                staging = Staging(args.out)
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
        if cohort:
            told = "the scans already fitted are kept; run the same command again to fit the rest"
        elif staging is not None and staging.published:
            told = f"after the outputs were written: they are complete in {args.out}"
        else:
            told = "nothing was written (previous outputs, if any, are unchanged)"
        print("interrupted: " + told, file=sys.stderr)
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
