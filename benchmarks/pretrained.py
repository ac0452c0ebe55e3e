"""The shipped any-protocol network against the exact posterior under its own prior, protocol by protocol.

For each protocol and SNR: voxels drawn from ``net.prior`` (S0 = 1, Rician
noise with sigma = 1/SNR, the noise level given to both methods), fitted by
the network (``predict(net, S, b_values=b, sigma=..., interval=0.9)``) and by
the exact posterior with S0 unknown under the same prior
(``fit_bayes(S, b, sigma=..., prior=net.prior, interval=0.9)``). Reported:
NRMSE of each, their ratio, the coverage of the 90 % intervals, and the
network's speed. Protocols outside the trained range are run through
``net.specialise`` (``predict`` refuses them) to measure where it stops working
(half as many voxels per cell). The command line's wall time per slice on the
shipped scans is measured too.

    python benchmarks/pretrained.py [--quick] [--out benchmarks/results/pretrained.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ivim_demo as iv  # noqa: E402
from ivim_demo.nets.protocols import Protocol, draw_protocols, protocol_problems  # noqa: E402
from ivim_demo.nets.pretrained import load_pretrained  # noqa: E402

#: The acceptance protocols (s/mm^2). The three drawn ones come from the training rule with a seed fixed
#: before measuring (DRAW_SEED), one image per b-value.
NAMED = {"seed": [0, 10, 20, 60, 150, 300, 500, 1000],
         "volunteers": [0, 10, 25, 50, 100, 200, 300, 400, 500],
         "ivimnet": [0, 5, 10, 20, 30, 40, 60, 150, 300, 500, 700]}
DRAW_SEED = 20261203
#: Outside the range: too few b-values, no low b-value, b_max above and below the range.
OUTSIDE = {"3 b-values": [0, 100, 600],
           "no b<=100 but 0": [0, 150, 300, 500, 800],
           "b_max 2000": [0, 10, 20, 60, 150, 300, 500, 1000, 2000],
           "b_max 3000": [0, 10, 20, 60, 150, 300, 600, 1200, 3000],
           "b_max 150": [0, 5, 10, 20, 40, 60, 100, 150]}
SNRS = (10, 20, 50, 100)
LEVEL = 0.9
GRID = (40, 60, 40)


def protocols():
    """Name -> b-values of the six acceptance protocols."""
    b, c = draw_protocols(3, seed=DRAW_SEED)
    drawn = {f"drawn {i + 1}": b[i, c[i] > 0].tolist() for i in range(3)}
    return {**NAMED, **drawn}


def cell(net, b, snr, n, seed, *, inside=True):
    start = time.perf_counter()
    row = iv.protocol_scores(net, b, snr, n=n, seed=seed, grid=GRID, level=LEVEL, direct=not inside)
    return {**row, "seconds": time.perf_counter() - start}


def signals_for_speed(net, b, n):
    p = net.prior.sample(n, seed=99)
    clean = iv.ivim(np.asarray(b, float), p.Dp[:, None], p.Dt[:, None], p.Fp[:, None])
    return iv.add_rician_noise(clean, 0.05, 100)


def speed(net, n):
    b = NAMED["seed"]
    S = signals_for_speed(net, b, n)
    iv.predict(net, S[:1000], b_values=b, sigma=0.05, interval=LEVEL)  # writes the protocol's network
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        iv.predict(net, S, b_values=b, sigma=0.05, interval=LEVEL)
        best = min(best, time.perf_counter() - t)
    t = time.perf_counter()
    net._specialised = {}
    iv.predict(net, S[:10], b_values=b, sigma=0.05, interval=LEVEL)
    first_call = time.perf_counter() - t
    return {"voxels": n, "seconds": best, "voxels_per_second": n / best, "first_call_10_voxels_seconds": first_call,
            "torch_threads": torch.get_num_threads()}


def cli_times(folder):
    """Wall time of ``python -m ivim_demo fit --method pretrained`` (loading, masking, fitting, writing) on each
    shipped volunteer and the anatomical phantom (64 x 64 x 4, SNR 50, 3 directions, seed 0).

    One untimed run first (the first volunteer): it compiles the package's bytecode and brings the
    libraries into the file cache, as any earlier use of the command has; its time is reported as
    the second value returned. Every timed run starts a new Python process and loads everything again."""
    import subprocess
    import tempfile

    ph = iv.anatomical_phantom((64, 64, 4), snr=50.0, directions=3, seed=0)
    iv.save_dwi(ph.dwi, ph.b_values, np.eye(4), os.path.join(folder, "phantom.nii.gz"),
                os.path.join(folder, "phantom.bval"))
    scans = {name: (iv.load_example(name).paths["dwi"], iv.load_example(name).paths["bvals"],
                    iv.load_example(name).paths["mask"]) for name in ("volunteer1", "volunteer2", "volunteer3")}
    scans["phantom"] = (os.path.join(folder, "phantom.nii.gz"), os.path.join(folder, "phantom.bval"), None)
    out = {}
    cold = None
    for name, (dwi, bvals, mask) in [next(iter(scans.items()))] + list(scans.items()):
        target = tempfile.mkdtemp(dir=folder)
        cmd = [sys.executable, "-m", "ivim_demo", "fit", dwi, "--bvals", bvals, "--out", os.path.join(target, "o"),
               "--method", "pretrained", "--no-progress"] + (["--mask", mask] if mask else [])
        start = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if cold is None:
            cold = seconds
            continue
        summary = json.load(open(os.path.join(target, "o", "summary.json"))) if run.returncode == 0 else {}
        slices = int(iv.load_dwi(dwi, bvals)[0].shape[2])
        out[name] = {"exit": run.returncode, "seconds": seconds, "slices": slices, "seconds_per_slice": seconds / slices,
                     "voxels": summary.get("voxels"), "warnings": summary.get("warnings"),
                     "stderr": run.stderr.strip()[-500:]}
        print(name, out[name], flush=True)
    return out, cold


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 voxels per cell, SNR 20 and 100 only")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pretrained.json"))
    ap.add_argument("--model", default=None, help="checkpoint to measure (default: the shipped network)")
    args = ap.parse_args(argv)
    n = 200 if args.quick else 2000
    snrs = (20, 100) if args.quick else SNRS
    net = load_pretrained(args.model)
    path = args.model or os.path.join(os.path.dirname(iv.__file__), "data", "pretrained.pt")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    out = {"date": time.strftime("%Y-%m-%d"), "quick": args.quick,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                       "torch_threads": torch.get_num_threads()},
           "network": {"file_sha256": digest, "settings": net.settings(),
                       "training_seconds": net.history.get("seconds"),
                       "training_threads": net.history.get("threads")},
           "settings": {"snrs": list(snrs), "voxels_per_cell": n, "level": LEVEL, "posterior_grid": list(GRID),
                        "s0": 1.0, "sigma": "1/SNR, given to both", "draw_seed": DRAW_SEED,
                        "voxel_seed": "[20261203, protocol index, SNR]"},
           "protocols": protocols(), "cells": {}, "outside": {}}
    for i, (name, b) in enumerate(out["protocols"].items()):
        out["cells"][name] = {str(snr): cell(net, b, snr, n, [20261203, i, snr]) for snr in snrs}
        print(name, {s: {k: round(v, 3) for k, v in c["ratio"].items()} for s, c in out["cells"][name].items()},
              flush=True)
    for i, (name, b) in enumerate(OUTSIDE.items()):
        problems = protocol_problems(Protocol(np.asarray(b, float), np.ones(len(b), dtype=int)))
        out["outside"][name] = {"b_values": b, "problems": problems,
                                **{str(snr): cell(net, b, snr, n // 2, [20261204, i, snr], inside=False)
                                   for snr in snrs}}
        print(name, {s: {k: round(v, 3) for k, v in out["outside"][name][str(s)]["ratio"].items()} for s in snrs},
              flush=True)
    out["speed"] = speed(net, 200_000 if args.quick else 1_000_000)
    if args.model is None:  # the command line fits with the shipped network
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            out["command_line"], out["command_line_cold_seconds"] = cli_times(folder)
    ratios = [v for c in out["cells"].values() for s in c.values() for v in s["ratio"].values()]
    covers = [v for c in out["cells"].values() for s in c.values() for v in s["coverage"].values()]
    out["acceptance"] = {"nrmse_ratio_max": max(ratios), "nrmse_within_10_percent": max(ratios) <= 1.10,
                         "coverage_min": min(covers), "coverage_max": max(covers),
                         "coverage_87_93": 0.87 <= min(covers) and max(covers) <= 0.93,
                         "voxels_per_second": out["speed"]["voxels_per_second"],
                         "at_least_1M_voxels_per_second": out["speed"]["voxels_per_second"] >= 1e6}
    if "command_line" in out:
        runs = out["command_line"].values()
        out["acceptance"].update(
            command_line_seconds_per_slice_max=max(r["seconds_per_slice"] for r in runs),
            command_line_under_10_s_per_slice=all(r["exit"] == 0 and r["seconds_per_slice"] < 10 for r in runs),
            command_line_no_warnings=all(r["exit"] == 0 and not r["warnings"] for r in runs))
    print(json.dumps(out["acceptance"], indent=1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
