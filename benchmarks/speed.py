"""Time every estimator on this machine and write benchmarks/results/speed.json.

Usage: .venv/bin/python benchmarks/speed.py [--quick]

Measures, in one run on one machine: IVIM-NET training at the seed's full size
(100k voxels, SNR 100, seed 0), network inference on 1M voxels, and voxels/s of
the batched LSQ, segmented and Bayes fits (the exact posterior, fit_bayes's default, and
its s0="ratio" approximation) and of the per-voxel scipy reference.
README numbers are quoted from the JSON this writes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import ivim_demo as iv

B = iv.SEED_B_VALUES


def timed(fn, repeats=1):
    """Best wall time of ``repeats`` calls, and the last result."""
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed.json"))
    args = parser.parse_args(argv)
    n_train, n_infer, n_fit, n_ref = (3000, 10_000, 2000, 20) if args.quick else (100_000, 1_000_000, 20_000, 300)

    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "device": str(iv.device())},
        "quick": args.quick,
    }

    signals, _ = iv.training_data(n_train, B, sigma=0.01, seed=0)
    net = iv.IVIMNet(B, seed=0)
    history = iv.train(net, signals, seed=0, progress=False, max_epochs=3 if args.quick else 1000)
    result["training"] = {"voxels": n_train, "snr": 100, "seconds": history.seconds, "epochs": history.epochs,
                          "best_epoch": history.best_epoch, "seconds_per_epoch": history.seconds / history.epochs}

    dwi, _ = iv.phantom(seed=0)
    big = np.tile(dwi.reshape(-1, len(B)), (n_infer // dwi[..., 0].size + 1, 1))[:n_infer]
    t, _ = timed(lambda: iv.predict(net, big), repeats=3)
    result["inference"] = {"voxels": n_infer, "seconds": t, "voxels_per_second": n_infer / t}

    fits = {}
    for snr in (20, 100):
        x, _ = iv.training_data(n_fit, B, sigma=1 / snr, seed=1)
        for name, fn, n in [
            ("lsq", lambda: iv.fit_lsq(x, B), n_fit),
            ("segmented", lambda: iv.fit_segmented(x, B), n_fit),
            ("bayes_40^3_grid", lambda: iv.fit_bayes(x[:2000], B, sigma=1 / snr), min(n_fit, 2000)),  # exact
            ("bayes_ratio_40^3_grid", lambda: iv.fit_bayes(x[:2000], B, sigma=1 / snr, s0="ratio"), min(n_fit, 2000)),
            ("scipy_curve_fit_per_voxel", lambda: iv.lsq_reference(x[:n_ref], B), n_ref),
        ]:
            t, _ = timed(fn)
            fits.setdefault(name, {})[f"snr{snr}"] = {"voxels": n, "seconds": t, "voxels_per_second": n / t}
    result["fits"] = fits
    for snr in ("snr20", "snr100"):
        fits["lsq"][snr]["speedup_vs_scipy"] = (
            fits["lsq"][snr]["voxels_per_second"] / fits["scipy_curve_fit_per_voxel"][snr]["voxels_per_second"])

    part = dwi[::4, ::4] if args.quick else dwi
    t, _ = timed(lambda: iv.fit_bayes(part, B, sigma=15.0))  # the phantom's noise SD, in signal units
    result["bayes_phantom_seconds"] = {"voxels": int(part[..., 0].size), "seconds": t}

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
