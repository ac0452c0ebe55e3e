"""Command line: ``python -m ivim_demo fit DWI.nii.gz --bvals BVALS --out DIR``.

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


def _parser():
    p = argparse.ArgumentParser(prog="python -m ivim_demo", description="IVIM parameter maps from DWI.",
                                epilog=USAGE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit IVIM to a 4-D DWI NIfTI and write parameter maps")
    f.add_argument("dwi", help="4-D diffusion-weighted NIfTI (x, y, z, volumes)")
    f.add_argument("--bvals", required=True, help="FSL-style bvals file, one b-value (s/mm^2) per volume")
    f.add_argument("--out", required=True, help="output folder for the maps, overview PNG and summary JSON")
    f.add_argument("--mask", help="NIfTI mask (non-zero = fit); default: the b=0 image's tissue (Otsu "
                                  "threshold when the image has background, else every valid voxel)")
    f.add_argument("--method", choices=METHODS,
                   help=f"default {DEFAULT_METHOD}: a network trained on simulations of this scan (its "
                        "b-values, signal levels and noise); ivimnet/optim: trained on the scan's voxels; "
                        "with --model: the method the model was trained with")
    f.add_argument("--model", help="a trained network checkpoint to use instead of training (network methods)")
    f.add_argument("--sigma", type=float, help="noise SD relative to S(b=0) for bayes (default: estimated)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--max-epochs", type=int, default=1000)
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _staging_folder(out):
    """A new empty folder beside ``out`` to write into; checks ``out`` can be written before any fitting."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file; give a folder to write the maps into.")
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    except OSError as err:
        raise ValueError(f"cannot write to --out {out!r} ({err.strerror}); choose a writable folder.") from None


def _publish(staging, out):
    """Replace ``out`` by the complete ``staging`` folder (the previous outputs stay until then)."""
    out = os.path.abspath(out)
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rename(out, os.path.join(old, "out"))
    os.rename(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fit(args, staging):
    import warnings

    import nibabel as nib
    import numpy as np

    from . import checkpoint, image_fit, mask, nifti, plots

    dwi, b_values, affine = nifti.load_dwi(args.dwi, args.bvals)
    user_mask = nifti.load_mask(args.mask) if args.mask else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the count goes into the summary and the message below
        keep, excluded = mask.make_mask(dwi, mask=user_mask, return_excluded=True)
    if excluded:
        print(f"warning: {excluded} voxel(s) in the mask excluded (NaN/inf, negative or S(b=0) <= 0); "
              "their maps are 0", file=sys.stderr)
    net, method = None, args.method or DEFAULT_METHOD
    if args.model:
        if args.method is not None and args.method not in NETWORK_METHODS:
            raise ValueError(f"--model only applies to the network methods {', '.join(NETWORK_METHODS)}.")
        net = checkpoint.load_model(args.model)
        method = args.method or image_fit.method_of(net)
    fit = image_fit.fit_volume(dwi, b_values, keep, method=method, net=net, sigma=args.sigma, seed=args.seed,
                            max_epochs=args.max_epochs, progress=not args.no_progress)
    paths = nifti.save_maps(fit.maps, affine, staging, mask=keep)
    res_path = os.path.join(staging, "residual.nii.gz")
    nib.save(nib.Nifti1Image(np.where(keep, fit.residual, 0).astype(np.float32), np.asarray(affine, float)),
             res_path)
    paths["residual"] = res_path
    if fit.net is not None and not args.model:
        paths["model"] = checkpoint.save_model(fit.net, os.path.join(staging, f"{method}.pt"))
    z = int(np.argmax(keep.reshape(-1, keep.shape[-1]).sum(axis=0))) if keep.ndim == 3 else None
    sl = (lambda a: a[..., z]) if z is not None else (lambda a: a)
    fig = plots.plot_maps({method: type(fit.maps)(*(sl(m) for m in fit.maps))},
                          title=f"IVIM maps ({method}), slice {z}"
                                + (" - WARNING: see summary.json" if fit.info["warnings"] else ""))
    paths["overview"] = plots.save_figure(fig, "overview", staging)
    n_voxels = int(np.prod(keep.shape))
    out = os.path.abspath(args.out)
    summary = {**fit.info, "input": os.path.abspath(args.dwi), "b_values": b_values.tolist(),
               "shape": list(dwi.shape), "mask": os.path.abspath(args.mask) if args.mask else "automatic",
               "mask_voxels": int(keep.sum()) + excluded, "mask_fraction": (int(keep.sum()) + excluded) / n_voxels,
               "excluded_voxels": excluded, "seed": args.seed,
               "outputs": {k: os.path.join(out, os.path.basename(v)) for k, v in paths.items()}}
    with open(os.path.join(staging, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return fit.info


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    staging = None
    try:
        staging = _staging_folder(args.out)
        info = _fit(args, staging)
        _publish(staging, args.out)
        staging = None
    except ValueError as err:  # bad input: one line, no traceback
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written (previous outputs, if any, are unchanged)", file=sys.stderr)
        return 130
    except OSError as err:
        reason = " ".join(str(err.strerror or err).split())
        print(f"error: cannot write the outputs ({reason}); previous outputs, if any, are unchanged. "
              "Free disk space or choose another --out.", file=sys.stderr)
        return 2
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    for warning in info["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"fitted {info['voxels']} voxels with {info['method']}; maps in {args.out}")
    return 0
