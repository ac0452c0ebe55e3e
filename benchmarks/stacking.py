"""What stacking buys: seconds per epoch of K networks trained together (train_stack) against one.

Usage: .venv/bin/python benchmarks/stacking.py [--quick]

For the seed's network (IVIMNet) and IVIM-NET_optim (IVIMNetOptim, published settings), K = 1, 5 and
20 networks, each on its own 100k simulated voxels (SNR 20), trained for 3 epochs with early stopping
out of reach; the wall time per epoch (the mean of epochs 2-3) on one thread. Writes
benchmarks/results/stacking.json with the load average around each run (the machine may be shared).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
import warnings
from pathlib import Path

import torch

import ivim_demo as iv

ROOT = Path(__file__).resolve().parents[1]
B = iv.SEED_B_VALUES
MAKERS = {"orig": lambda k: iv.IVIMNet(B, seed=k), "optim": lambda k: iv.IVIMNetOptim(B, seed=k)}
OPTIONS = {"orig": {}, "optim": {"lr": iv.OPTIM_LR, "validation_fraction": 0.1}}


def seconds_per_epoch(kind, k, n):
    """Wall seconds per epoch of ``k`` stacked networks: (time of 3 epochs - time of 1) / 2, so the set-up
    (simulation, stacking, labelling, warnings) cancels."""
    signals = [iv.training_data(n, B, sigma=0.05, seed=100 + i)[0] for i in range(k)]

    def run(epochs):
        nets = [MAKERS[kind](i) for i in range(k)]
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a few epochs: the networks have not learned yet
            iv.train_stack(nets, signals, seeds=range(k), max_epochs=epochs, patience=epochs + 1, progress=False,
                           **OPTIONS[kind])
        return time.perf_counter() - start

    return (run(3) - run(1)) / 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n, sizes = (5000, (1, 5)) if args.quick else (100_000, (1, 5, 20))
    rows = []
    for kind in MAKERS:
        for k in sizes:
            load = os.getloadavg()[0]
            s = seconds_per_epoch(kind, k, n)
            rows.append({"network": kind, "networks_stacked": k, "seconds_per_epoch": round(s, 3),
                         "per_network": round(s / k, 3), "load_before_after": [round(load, 2),
                                                                              round(os.getloadavg()[0], 2)]})
            print(rows[-1], flush=True)
    one = {r["network"]: r["seconds_per_epoch"] for r in rows if r["networks_stacked"] == 1}
    for r in rows:
        r["times_one_network"] = round(r["seconds_per_epoch"] / one[r["network"]], 2)
    result = {"date": datetime.date.today().isoformat(), "quick": args.quick, "voxels_per_network": n,
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__}, "rows": rows}
    if not args.quick:
        (ROOT / "benchmarks" / "results" / "stacking.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
