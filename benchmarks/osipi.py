"""OSIPI TF2.4's IVIM unit-test cases, every fit, one voxel per call: pass counts and times.

Writes benchmarks/results/osipi.json: per method, the cases passing OSIPI's accuracy rule (osipi/unit_cases.py),
those under its 0.5 s per call, and the median and largest time per call, on this machine; the networks on
OSIPI's network test (generic_DL.json, all tissues in one call, OSIPI's network tolerances), IVIM-NET_optim
trained on OSIPI's simulated training set with three seeds; and the time of one single-voxel call of
fit_bayes (Rician and Gaussian noise) and fit_lsq, median of 20 after a warm-up.

    python benchmarks/osipi.py
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "osipi"))
import IvimDemo  # noqa: E402
import unit_cases  # noqa: E402

METHODS = {
    "least squares": lambda b, bounds: IvimDemo.IvimDemoLsq(bvalues=b, bounds=bounds),
    "segmented": lambda b, bounds: IvimDemo.IvimDemoSegmented(bvalues=b, bounds=bounds),
    "Bayes, OSIPI's bounds": lambda b, bounds: IvimDemo.IvimDemoBayes(bvalues=b, bounds=bounds),
    "Bayes, in-vivo prior": lambda b, bounds: IvimDemo.IvimDemoBayes(bvalues=b, bounds=bounds, prior="in_vivo"),
}


#: Training seeds of IVIM-NET_optim on OSIPI's training set.
SEEDS = [0, 1, 2]


def single_voxel_times(repeats=20):
    """Median seconds of one call on one voxel (liver-like, SNR 50, the seed's b-values), after a warm-up."""
    import ivim_demo as iv

    b = iv.SEED_B_VALUES.astype(float)
    rng = np.random.default_rng(0)
    voxel = np.abs(iv.ivim(b, 0.05, 0.0012, 0.25, 1000.0) + rng.normal(0, 20.0, b.size))
    calls = {"fit_bayes, Rician": lambda: iv.fit_bayes(voxel, b, sigma=20.0),
             "fit_bayes, Gaussian": lambda: iv.fit_bayes(voxel, b, sigma=20.0, noise="gaussian"),
             "fit_bayes, Rician, in-vivo prior": lambda: iv.fit_bayes(voxel, b, sigma=20.0, prior=iv.IN_VIVO_PRIOR),
             "fit_lsq": lambda: iv.fit_lsq(voxel, b)}
    out = {}
    for name, call in calls.items():
        call()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times))
    return out


def main():
    out = {"date": time.strftime("%Y-%m-%d"), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                           "torch": torch.__version__},
           "source": "OSIPI/TF2.4_IVIM-MRI_CodeCollection f91b53c, tests/IVIMmodels/unit_tests/generic*.json",
           "rule": {"rtol": unit_cases.RTOL, "atol": unit_cases.ATOL, "seconds": unit_cases.SECONDS},
           "methods": {}}
    for name, make in METHODS.items():
        make(np.arange(5.0), unit_cases.bounds({"f": 0.1})).ivim_fit(  # warm-up: imports and first-call set-up
            np.linspace(1, 0.5, 18), unit_cases.cases(("generic.json",))[0][2])
        rows = unit_cases.run(make)
        seconds = [r["seconds"] for r in rows]
        out["methods"][name] = {
            "cases": len(rows), "accurate": sum(r["accurate"] for r in rows),
            "in_time": sum(r["in_time"] for r in rows),
            "passed": sum(r["accurate"] and r["in_time"] for r in rows),
            "median_seconds": float(np.median(seconds)), "max_seconds": float(np.max(seconds)),
            "failed": [{"file": r["file"], "tissue": r["tissue"], "truth": r["truth"], "estimate": r["estimate"],
                        "error": r["error"]} for r in rows if not r["accurate"]]}
        m = out["methods"][name]
        print(f"{name}: {m['accurate']}/{m['cases']} accurate, {m['in_time']} in time, median "
              f"{m['median_seconds']:.4f} s, max {m['max_seconds']:.3f} s", flush=True)
    out["networks"] = {}
    nets = {"shipped network (no training)": [lambda b: IvimDemo.IvimDemoPretrained(bvalues=b)]}
    nets["IVIM-NET_optim, OSIPI's training set"] = [
        (lambda seed: lambda b: IvimDemo.IvimDemoOptim(bvalues=b, seed=seed))(seed) for seed in SEEDS]
    for name, makes in nets.items():
        runs = []
        for make in makes:
            start = time.perf_counter()
            rows = unit_cases.run_networks(make)
            runs.append({"passed": sum(r["accurate"] for r in rows), "cases": len(rows),
                         "worst_over_tolerance": max(r["worst_over_tolerance"] for r in rows),
                         "seconds_with_training": time.perf_counter() - start})
        out["networks"][name] = {"seeds": SEEDS if len(runs) > 1 else None, "runs": runs}
        print(f"{name}: " + ", ".join(f"{r['passed']}/{r['cases']} (worst {r['worst_over_tolerance']:.2f})"
                                      for r in runs), flush=True)
    out["single_voxel_seconds"] = single_voxel_times()
    print(out["single_voxel_seconds"], flush=True)
    path = ROOT / "benchmarks" / "results" / "osipi.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
