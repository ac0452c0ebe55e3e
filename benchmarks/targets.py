"""Check the IVIM-NET_optim / supervised targets and write benchmarks/results/targets.json.

Usage: .venv/bin/python benchmarks/targets.py [--quick]

Accuracy, coupling and consistency come from notebook 06's results
(figures/06_beyond.json, written by `make demo`); training time and inference
speed are measured here, on this machine, for the "optim" and "supervised_optim" (labelled "supervised")
recipes at full size (100k voxels, SNR 20, seed 0).
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

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ("IVIM-NET_orig", "IVIM-NET_optim", "supervised")
#: The seed's network is listed for reference: the targets are for the new networks.
REFERENCE = "IVIM-NET_orig"


def _met(network, ok):
    """True/False for the new networks, None (a reference row) for the seed's."""
    return None if network == REFERENCE else bool(ok)


def accuracy_targets(rows):
    """Targets read off notebook 06's rows."""
    out = []
    bayes = {(r["snr"], r["param"]): r["nrmse"] for r in rows if r["method"] == "Bayes"}
    for (snr, param), bayes_nrmse in sorted(bayes.items()):  # a yardstick (the posterior mean), not a bound
        if snr not in (10, 20, 50, 100):
            continue
        best = min((r for r in rows if r["method"] in NETWORKS and r["snr"] == snr and r["param"] == param),
                   key=lambda r: r["nrmse"])
        ratio = best["nrmse"] / bayes_nrmse
        out.append({"target": f"NRMSE({param}) of the best network / Bayes, SNR {snr}", "network": best["method"],
                    "value": ratio, "limit": "<= 1.10", "met": ratio <= 1.10})
    for r in rows:
        if r["method"] in NETWORKS and r["snr"] == 20 and r["param"] == "Dp":
            out.append({"target": "|Spearman rho(Dp, Fp)| at SNR 20", "network": r["method"],
                        "value": abs(r["rho_Dp_Fp"]), "limit": "<= 0.35",
                        "met": _met(r["method"], abs(r["rho_Dp_Fp"]) <= 0.35)})
    for r in rows:
        if r["method"] in NETWORKS and r["snr"] == 20 and r["param"] in ("Dt", "Fp") and "cv" in r:
            out.append({"target": f"CV of {r['param']} over training seeds at SNR 20", "network": r["method"],
                        "value": r["cv"], "limit": "<= 0.05", "met": _met(r["method"], r["cv"] <= 0.05)})
    return out


def speed_targets(quick):
    out = []
    n = 3000 if quick else 100_000
    dwi, _ = iv.phantom(seed=0)
    n_infer = 20_000 if quick else 1_000_000
    big = np.tile(dwi.reshape(-1, 8), (n_infer // 10_000, 1))
    for recipe, method in (("optim", "optim"), ("supervised_optim", "supervised")):
        net = iv.train_for_snr(20, method=recipe, n=n, seed=0, max_epochs=3 if quick else 1000, progress=False)
        seconds = net.history["seconds"]
        out.append({"target": f"training at full size (100k voxels, SNR 20), {method}", "network": method,
                    "value": seconds, "epochs": net.history["epochs"], "limit": "<= 120 s", "met": seconds <= 120})
        best = min(_timed(lambda: iv.predict(net, big)) for _ in range(3))
        rate = len(big) / best
        out.append({"target": f"inference, {len(big):,} voxels, {method}", "network": method, "value": rate,
                    "limit": ">= 1,000,000 voxels/s", "met": rate >= 1e6})
    return out


def _verdict(met):
    return "reference" if met is None else "met" if met else "MISS"


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--results", default=str(ROOT / "figures" / "06_beyond.json"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "targets.json"))
    args = parser.parse_args(argv)
    rows = iv.load_table(args.results)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "device": str(iv.device())},
        "quick": args.quick,
        "targets": accuracy_targets(rows) + speed_targets(args.quick),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for t in result["targets"]:
        print(f"{_verdict(t['met']):<9} {t['target']} [{t['network']}]: {t['value']:.4g} ({t['limit']})")


if __name__ == "__main__":
    main()
