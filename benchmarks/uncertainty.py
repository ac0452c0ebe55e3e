"""One supervised network for all SNRs, with uncertainty: accuracy against the exact posterior, calibration, speed.

Usage: .venv/bin/python benchmarks/uncertainty.py [--quick] [--seeds 0 1 2]

Writes benchmarks/results/uncertainty.json. For each training seed,
``train_for_snr(UNCERTAINTY_SNR_RANGE, method="supervised", seed=seed)``
(``IVIMNetUncertainty``: SNR 5-200 log-uniform, ``SNR_RANGE_TRAINING``: 1M
simulated voxels from ``PARAMETER_BOX``, data seeded ``seed + 1000``) is
scored on held-out voxels simulated from the same prior (uniform over
``PARAMETER_BOX``, S0 = 1, Rician noise of SD 1/SNR in every sample, data
seeded ``10_000 + SNR``, so never the training voxels), the network given the
true noise level (``sigma=1/SNR``):

* ``nrmse``: at SNR 10, 20, 50 and 100, the NRMSE of the network's mean and
  of the exact posterior mean ``fit_bayes(..., s0="marginal")`` (default
  40^3 grid, the true sigma) on the SAME first ``posterior_voxels`` voxels,
  and their ratio (acceptance: <= 1.10 for Dp, Dt and Fp);
* ``coverage``: at SNR 10, 15, 20, 30, 50, 75 and 100, the fraction of the
  ``coverage_voxels`` held-out voxels whose network 90 % interval contains
  the truth (acceptance: 0.87-0.93 for every parameter; binomial SD
  alongside), and the same for the exact posterior's 90 % interval on the
  posterior voxels;
* ``sd``: the network's SD and interval width against the posterior's, as
  the median ratio per voxel (posterior voxels);
* ``speed``: ``predict(net, signals, sigma=..., interval=0.9)`` on 1M voxels
  (best of 3, after a warm-up call, torch's default threads), wall clock with
  the load average around it (the machine is shared), and voxels per
  CPU-second of this process times the number of torch threads.
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
PARAMS = iv.PARAMS
NRMSE_SNRS = (10, 20, 50, 100)
COVERAGE_SNRS = (10, 15, 20, 30, 50, 75, 100)
LEVEL = 0.9


def held_out(n, snr):
    """Held-out voxels at one SNR (seed 10_000 + SNR: disjoint from the training seeds' data)."""
    return iv.training_data(n, B, sigma=1 / snr, seed=10_000 + snr)


def coverage(post, truth, n=None):
    n = len(truth.Dp) if n is None else n
    return {k: float(np.mean((getattr(post.lower, k)[:n] <= getattr(truth, k)[:n])
                             & (getattr(truth, k)[:n] <= getattr(post.upper, k)[:n]))) for k in PARAMS}


def speed(net, n):
    signals, _ = iv.training_data(n, B, sigma=0.02, seed=7)
    iv.predict(net, signals[:10_000], sigma=0.02, interval=LEVEL)  # warm-up
    runs = []
    for _ in range(3):
        load = os.getloadavg()[0]
        start, cpu = time.perf_counter(), time.process_time()
        iv.predict(net, signals, sigma=0.02, interval=LEVEL)
        runs.append({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                     "load_average_1min_before_after": [load, os.getloadavg()[0]]})
    best = min(runs, key=lambda r: r["seconds"])
    threads = torch.get_num_threads()
    return {"voxels": n, "runs": runs, "voxels_per_second": n / best["seconds"], "torch_threads": threads,
            "voxels_per_cpu_second_times_threads": n / min(r["cpu_seconds"] for r in runs) * threads}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "uncertainty.json"))
    args = parser.parse_args(argv)
    training = dict(iv.SNR_RANGE_TRAINING)
    if args.quick:
        training["n"] = 20_000
        n_post, n_cov, grid, n_speed = 200, 2000, (16, 16, 16), 100_000
    else:
        n_post, n_cov, grid, n_speed = 5000, 20_000, (40, 40, 40), 1_000_000
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "quick": args.quick,
        "settings": {"b_values": B.tolist(), "prior": {k: list(v) for k, v in iv.PARAMETER_BOX.items()}, "s0": 1.0,
                     "snr_range": list(iv.UNCERTAINTY_SNR_RANGE), "training": training,
                     "max_epochs": args.max_epochs, "training_seeds": args.seeds,
                     "training_data_seed": "training seed + 1000", "held_out_data_seed": "10000 + SNR",
                     "posterior": {"method": "fit_bayes(s0='marginal', interval=0.9), sigma = 1/SNR",
                                   "grid": list(grid), "voxels": n_post},
                     "coverage_voxels": n_cov, "level": LEVEL, "nrmse_snrs": list(NRMSE_SNRS),
                     "coverage_snrs": list(COVERAGE_SNRS)},
        "posterior": {},
        "seeds": {},
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    data = {snr: held_out(n_cov, snr) for snr in COVERAGE_SNRS}
    posts = {}
    for snr in NRMSE_SNRS:  # the exact posterior on the first n_post held-out voxels
        signals, truth = data[snr]
        start = time.perf_counter()
        posts[snr] = iv.fit_bayes(signals[:n_post], B, sigma=1 / snr, s0="marginal", interval=LEVEL, grid=grid)
        result["posterior"][str(snr)] = {
            "seconds": time.perf_counter() - start,
            "nrmse": {k: iv.nrmse(getattr(posts[snr].mean, k), getattr(truth, k)[:n_post]) for k in PARAMS},
            "coverage": coverage(posts[snr], truth, n_post)}
        print("posterior", snr, result["posterior"][str(snr)], flush=True)

    for seed in args.seeds:
        start = time.perf_counter()
        net = iv.train_for_snr(iv.UNCERTAINTY_SNR_RANGE, method="supervised", seed=seed, max_epochs=args.max_epochs,
                               n=training["n"], progress=False)
        seconds = time.perf_counter() - start
        mine = {"training": {"seconds_with_data": seconds, "seconds": net.history["seconds"],
                             "epochs": net.history["epochs"], "best_epoch": net.history["best_epoch"],
                             "warnings": net.history["warnings"]},
                "settings": net.settings(), "nrmse": {}, "coverage": {}, "sd": {}}
        for snr in COVERAGE_SNRS:
            signals, truth = data[snr]
            est = iv.predict(net, signals, sigma=1 / snr, interval=LEVEL)
            mine["coverage"][str(snr)] = {**coverage(est, truth),
                                          "binomial_sd": float(np.sqrt(LEVEL * (1 - LEVEL) / n_cov))}
            if snr in posts:
                ref = posts[snr]
                nr = {k: iv.nrmse(getattr(est.mean, k)[:n_post], getattr(truth, k)[:n_post]) for k in PARAMS}
                exact = result["posterior"][str(snr)]["nrmse"]
                mine["nrmse"][str(snr)] = {"network": nr, "posterior": exact,
                                           "ratio": {k: nr[k] / exact[k] for k in PARAMS}}
                mine["sd"][str(snr)] = {
                    "median_sd_ratio": {k: float(np.median(getattr(est.sd, k)[:n_post] / getattr(ref.sd, k)))
                                        for k in PARAMS},
                    "median_width_ratio": {k: float(np.median(
                        (getattr(est.upper, k)[:n_post] - getattr(est.lower, k)[:n_post])
                        / (getattr(ref.upper, k) - getattr(ref.lower, k)))) for k in PARAMS}}
        if seed == args.seeds[0]:
            mine["speed"] = speed(net, n_speed)
        result["seeds"][str(seed)] = mine
        print("seed", seed, json.dumps(mine, indent=1), flush=True)
        out_path.write_text(json.dumps(result, indent=1) + "\n")  # after every seed: a partial result survives

    ratios = [r["ratio"][k] for s in result["seeds"].values() for r in s["nrmse"].values() for k in PARAMS]
    covs = [c[k] for s in result["seeds"].values() for c in s["coverage"].values() for k in PARAMS]
    first = result["seeds"][str(args.seeds[0])]
    result["acceptance"] = {
        "nrmse_ratio_max": max(ratios), "nrmse_within_10_percent": max(ratios) <= 1.10,
        "coverage_min": min(covs), "coverage_max": max(covs), "coverage_87_93": 0.87 <= min(covs) and max(covs) <= 0.93,
        "voxels_per_second": first["speed"]["voxels_per_second"],
        "voxels_per_cpu_second_times_threads": first["speed"]["voxels_per_cpu_second_times_threads"],
        "at_least_1M_voxels_per_second": first["speed"]["voxels_per_second"] >= 1e6}
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["acceptance"], indent=1))


if __name__ == "__main__":
    main()
