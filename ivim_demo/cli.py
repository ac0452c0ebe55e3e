"""Command line: ``python -m ivim_demo fit DWI.nii.gz --bvals BVALS --out DIR``."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np

from .volume import METHODS

USAGE_EXAMPLE = (
    "python -m ivim_demo fit dwi.nii.gz --bvals dwi.bval --out maps/ --method ivimnet\n"
    "  (trains IVIM-NET on the masked voxels of dwi.nii.gz, then writes Dp/Dt/Fp/S0 maps)"
)


def _parser():
    p = argparse.ArgumentParser(prog="python -m ivim_demo", description="IVIM parameter maps from DWI.",
                                epilog=USAGE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit IVIM to a 4-D DWI NIfTI and write parameter maps")
    f.add_argument("dwi", help="4-D diffusion-weighted NIfTI (x, y, z, volumes)")
    f.add_argument("--bvals", required=True, help="FSL-style bvals file, one b-value (s/mm^2) per volume")
    f.add_argument("--out", required=True, help="output folder for the maps, overview PNG and summary JSON")
    f.add_argument("--mask", help="NIfTI mask (non-zero = fit); default: Otsu threshold of the b=0 image")
    f.add_argument("--method", choices=METHODS, default="ivimnet")
    f.add_argument("--model", help="checkpoint to use instead of training on the data (ivimnet only)")
    f.add_argument("--sigma", type=float, help="noise SD relative to S(b=0) for bayes (default: estimated)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--max-epochs", type=int, default=1000)
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _fit(args):
    import nibabel as nib

    from . import checkpoint, mask, nifti, plots, volume

    dwi, b_values, affine = nifti.load_dwi(args.dwi, args.bvals)
    user_mask = None
    if args.mask:
        if not os.path.isfile(args.mask):
            raise ValueError(f"mask not found: {args.mask!r}.")
        user_mask = np.asarray(nib.load(args.mask).dataobj) != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the count goes into the summary and the message below
        keep, excluded = mask.make_mask(dwi, mask=user_mask, return_excluded=True)
    if excluded:
        print(f"warning: {excluded} voxel(s) in the mask excluded (NaN/inf, negative or S(b=0) <= 0); "
              "their maps are 0", file=sys.stderr)
    net = None
    if args.model:
        if args.method != "ivimnet":
            raise ValueError("--model only applies to --method ivimnet.")
        net = checkpoint.load_model(args.model)
    maps, info, net = volume.fit_volume(dwi, b_values, keep, method=args.method, net=net, sigma=args.sigma,
                                        seed=args.seed, max_epochs=args.max_epochs,
                                        progress=not args.no_progress)
    os.makedirs(args.out, exist_ok=True)
    paths = nifti.save_maps(maps, affine, args.out, mask=keep)
    if args.method == "ivimnet" and not args.model:
        paths["model"] = checkpoint.save_model(net, os.path.join(args.out, "ivimnet.pt"))
    z = int(np.argmax(keep.reshape(-1, keep.shape[-1]).sum(axis=0))) if keep.ndim == 3 else None
    sl = (lambda a: a[..., z]) if z is not None else (lambda a: a)
    fig = plots.plot_maps({args.method: type(maps)(*(sl(m) for m in maps))},
                          title=f"IVIM maps ({args.method}), slice {z}")
    paths["overview"] = plots.save_figure(fig, "overview", args.out)
    summary = {**info, "input": os.path.abspath(args.dwi), "b_values": b_values.tolist(),
               "shape": list(dwi.shape), "excluded_voxels": excluded, "seed": args.seed, "outputs": paths}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"fitted {info['voxels']} voxels with {args.method}; maps in {args.out}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _fit(args)
    except ValueError as err:  # bad input: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
