"""Does dividing each training signal by its noisy S(b=0) change the seed's network?
Writes benchmarks/results/normalisation.json.

Usage: .venv/bin/python benchmarks/normalisation.py [--seeds 5] [--sigma 0.01]

The authors' demo trains on the raw simulated signals with the b = 0 column dropped (S0 = 1, so the
other columns are "normalised" by the true S0, not by the noisy measured S(b=0)), then divides the
test image by its measured S(b=0) at inference. ``iv.train`` divides every training signal by its
own measured S(b=0), as inference does. The demo's variant is obtained exactly by setting the b = 0
column of the training signals to 1 before ``train``: its division is then by 1.

For each training seed, both variants train the seed's network (``IVIMNet``, seed settings) on the
same 100k signals (``training_data(100_000, sigma=SIGMA, seed=seed)``); both are scored on the same
10,000 held-out signals (seed 10,000, normalised by their noisy S(b=0) as at inference): NRMSE and
Spearman rho(Dp, Fp). Reports each seed and the mean and SD over seeds.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import numpy as np
import torch

import ivim_demo as iv

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "normalisation.json"
VARIANTS = ("package: divided by the noisy S(b=0)", "demo: raw signals, b = 0 dropped")


def score(net, signals, truth):
    est = iv.predict(net, signals)
    row = {p: iv.nrmse(getattr(est, p), getattr(truth, p)) for p in iv.PARAMS}
    row["rho_Dp_Fp"] = iv.spearman(est.Dp, est.Fp)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=0.01)
    args = parser.parse_args(argv)
    test, truth = iv.training_data(10_000, sigma=args.sigma, seed=10_000)
    rows = []
    for seed in range(args.seeds):
        signals, _ = iv.training_data(100_000, sigma=args.sigma, seed=seed)
        for variant in VARIANTS:
            x = signals.copy()
            if variant.startswith("demo"):
                x[:, 0] = 1.0
            net = iv.IVIMNet(iv.SEED_B_VALUES, seed=seed)
            history = iv.train(net, x, seed=seed, progress=False)
            rows.append({"seed": seed, "variant": variant, "epochs": history.epochs, **score(net, test, truth)})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    summary = []
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        summary.append({"variant": variant, **{
            k: {"mean": float(np.mean([r[k] for r in mine])), "sd": float(np.std([r[k] for r in mine], ddof=1))}
            for k in (*iv.PARAMS, "rho_Dp_Fp")}})
    result = {"date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()}, torch {torch.__version__}",
              "sigma": args.sigma, "seeds": args.seeds, "rows": rows, "summary": summary}
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(OUT)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
