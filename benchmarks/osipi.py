"""OSIPI TF2.4's IVIM unit-test cases, every fit, one voxel per call: pass counts and times.

Writes benchmarks/results/osipi.json: per method, the cases passing OSIPI's accuracy rule (osipi/unit_cases.py),
those under its 0.5 s per call, and the median and largest time per call, on this machine.

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
    path = ROOT / "benchmarks" / "results" / "osipi.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
