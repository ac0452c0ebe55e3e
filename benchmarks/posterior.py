"""The exact S0-marginal posterior (fit_bayes(..., s0="marginal"), its default): accuracy, calibration, speed.

Usage: .venv/bin/python benchmarks/posterior.py [--quick]

Writes benchmarks/results/posterior.json. On voxels simulated from the prior
the fit assumes (uniform over PARAMETER_BOX, S0 = 1, Rician noise of SD
1/SNR in every sample, seeded), at SNR 20 and 50 and the default 40^3 grid:

* ``brute_force``: the posterior of a slow, obviously correct reference
  (full Rician likelihood on the same (Dp, Dt, Fp) grid times a fine S0 grid,
  ``posterior._brute_force``) on the first voxels: NRMSE of both posterior
  means against the truth, their relative difference, and the largest
  per-voxel difference of mean, SD and interval ends in units of the
  voxel's posterior SD;
* ``coverage``: fraction of voxels whose central interval contains the
  truth, per parameter, at levels 0.5, 0.8, 0.9 and 0.95 (binomial SD
  sqrt(p (1 - p) / n) alongside);
* ``nrmse``: per parameter, of the marginal posterior mean and of the
  ``s0="ratio"`` approximation's mean (S0 taken as the measured S(b=0); the
  default until 2026-11-26) on the same voxels;
* ``speed``: voxels/s of ``s0="marginal", interval=0.9`` (after a warm-up
  call): wall clock, with the load average around it (the machine may be
  shared), and voxels per CPU-second of this process times the number of
  torch threads (what the cores would give if nothing else ran).
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
from ivim_demo.classical.posterior import _brute_force

B = iv.SEED_B_VALUES
FIELDS = iv.IVIMParams._fields
LEVELS = (0.5, 0.8, 0.9, 0.95)


def stacked(params):
    return np.stack([getattr(params, k) for k in FIELDS], axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "posterior.json"))
    args = parser.parse_args(argv)
    grid, n_ref, n_cov = ((12, 12, 12), 10, 500) if args.quick else ((40, 40, 40), 40, 5000)
    reference = {"step_sigma": 0.25, "half_width_sigma": 9.0}

    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "quick": args.quick,
        "settings": {"b_values": B.tolist(), "prior": {k: list(v) for k, v in iv.PARAMETER_BOX.items()},
                     "s0": 1.0, "grid": list(grid), "brute_force_voxels": n_ref, "coverage_voxels": n_cov,
                     "levels": list(LEVELS), "brute_force_s0_grid": reference, "seeds": "SNR (data)"},
        "snr": {},
    }
    iv.fit_bayes(iv.training_data(50, B, sigma=0.05, seed=0)[0], B, sigma=0.05, s0="marginal", interval=0.9,
                 grid=grid)  # warm-up: imports and first-call allocations
    for snr in (20, 50):
        sigma = 1 / snr
        signals, truth = iv.training_data(n_cov, B, sigma=sigma, seed=snr)
        out = {}
        posts = {}
        for level in LEVELS:
            load = os.getloadavg()[0]
            start, cpu = time.perf_counter(), time.process_time()
            posts[level] = iv.fit_bayes(signals, B, sigma=sigma, s0="marginal", interval=level, grid=grid)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            if level == 0.9:
                threads = torch.get_num_threads()
                out["speed"] = {"voxels": n_cov, "seconds": seconds, "voxels_per_second": n_cov / seconds,
                                "load_average_1min_before_after": [load, os.getloadavg()[0]],
                                "cpu_seconds": cpu, "torch_threads": threads,
                                "voxels_per_cpu_second_times_threads": n_cov / cpu * threads}
        out["coverage"] = {}
        for level, post in posts.items():
            inside = (stacked(post.lower) <= stacked(truth)) & (stacked(truth) <= stacked(post.upper))
            out["coverage"][str(level)] = {k: float(v) for k, v in zip(FIELDS, inside.mean(axis=0))}
            out["coverage"][str(level)]["binomial_sd"] = float(np.sqrt(level * (1 - level) / n_cov))
        mean = posts[0.9].mean
        start = time.perf_counter()
        ratio = iv.fit_bayes(signals, B, sigma=sigma, grid=grid, s0="ratio")
        out["ratio_voxels_per_second"] = n_cov / (time.perf_counter() - start)
        out["nrmse"] = {"marginal": {k: iv.nrmse(getattr(mean, k), getattr(truth, k)) for k in FIELDS},
                        "ratio": {k: iv.nrmse(getattr(ratio, k), getattr(truth, k)) for k in FIELDS}}

        start = time.perf_counter()
        ref = _brute_force(signals[:n_ref], B, sigma, iv.PARAMETER_BOX, grid, level=0.9,
                           step=reference["step_sigma"], half_width=reference["half_width_sigma"])
        bf_seconds = time.perf_counter() - start
        fast = posts[0.9]
        sub = {k: getattr(truth, k)[:n_ref] for k in FIELDS}
        nr_fast = {k: iv.nrmse(getattr(fast.mean, k)[:n_ref], sub[k]) for k in FIELDS}
        nr_ref = {k: iv.nrmse(ref["mean"][:, i], sub[k]) for i, k in enumerate(FIELDS)}
        out["brute_force"] = {
            "voxels": n_ref,
            "seconds": bf_seconds,
            "largest_s0_end_weight": float(ref["edge"].max()),
            "nrmse_marginal": nr_fast,
            "nrmse_brute_force": nr_ref,
            "nrmse_relative_difference": {k: nr_fast[k] / nr_ref[k] - 1 for k in FIELDS},
            "largest_difference_in_posterior_sds": {
                field: {k: float(v) for k, v in zip(FIELDS, (np.abs(stacked(getattr(fast, field))[:n_ref]
                                                                     - ref[field]) / ref["sd"]).max(axis=0))}
                for field in ("mean", "sd", "lower", "upper")},
        }
        result["snr"][str(snr)] = out
        print(snr, json.dumps(out, indent=1), flush=True)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
