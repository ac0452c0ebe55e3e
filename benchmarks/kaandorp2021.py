"""Kaandorp et al. 2021 reproduced on their settings: writes benchmarks/results/kaandorp2021.json.

Usage: .venv/bin/python benchmarks/kaandorp2021.py [--variants optim orig project] [--workers 2] [--quick]

IVIM-NET_orig and IVIM-NET_optim are trained ``KAANDORP_REPEATS`` times (seeds 0-4: weight
initialisation and shuffling) on the same 1,000,000 signals simulated at SNR 20 as IVIMNET's code
does (``ivim_demo.nets.published``), and scored as their code scores them: on the first 10,000 of
those signals, NRMSE averaged over retrainings, rho = |Spearman(Dp, Fp)| of the estimates averaged
over retrainings, and CV_NET across retrainings. The same numbers on 10,000 independent signals are
recorded as ``held_out``. The variant ``project`` is this project's own ``optim`` recipe
(``train_for_snr(method="optim")``: FIT_BOUNDS, S0 as a factor, dropout after every hidden layer, lr
``OPTIM_LR``, best weights, no weight decay) on the same signals, with 500 batches per epoch; the
variants ``project+...`` (``PROJECT_STEPS``) add one of IVIMNET's settings each.

Each training's estimates are cached in ``benchmarks/.cache/kaandorp2021`` (one file per variant and
seed), so an interrupted run resumes where it stopped (the cache knows no settings: delete the folder
after changing the code or the settings); the JSON is written once every variant asked for has all
its trainings. ``--quick`` trains on 20,000 signals for at most 3 epochs (a smoke test;
nothing written).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import numpy as np

import ivim_demo as iv
from ivim_demo.core import threads as iv_threads
from ivim_demo.nets import published as kp
from ivim_demo.nets.training import train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "kaandorp2021.json"
CACHE = ROOT / "benchmarks" / ".cache" / "kaandorp2021"
DATA_SEED, HELD_OUT_SEED = 0, 1
#: The project's optim recipe with one of IVIMNET's settings at a time: which difference matters?
PROJECT_STEPS = {
    "project+lr": ({}, {"lr": 3e-5}),
    "project+dropout": ({"dropout_last": False}, {}),
    "project+amplitudes": ({"amplitudes": True, "widen": 0.3, "bounds": kp.KAANDORP_NETWORKS["optim"]["bounds"]},
                           {"clip": (0.0, 3.0)}),
    "project+decay_last": ({}, {"weight_decay": 1e-4, "weights": "last"}),
}
VARIANTS = ("optim", "orig", "project", *PROJECT_STEPS)


def run(job):
    """Train one network and cache its estimates; returns the cache file."""
    variant, seed, quick = job
    path = CACHE / f"{variant}_{seed}{'_quick' if quick else ''}.npz"
    if path.is_file():
        return path
    n = 20_000 if quick else kp.KAANDORP_N
    max_epochs = 3 if quick else None
    if variant.startswith("project"):  # the project's optim recipe (no filter), with one IVIMNET setting or none
        net_options, train_options = PROJECT_STEPS.get(variant, ({}, {}))
        signals, _ = kp.kaandorp_data(n, seed=DATA_SEED)
        net = iv.IVIMNetOptim(kp.KAANDORP_B_VALUES, seed=seed, **net_options)
        options = {"lr": iv.OPTIM_LR, "validation_fraction": 0.1, "batches_per_epoch": 500,
                   "max_epochs": max_epochs or 1000, "noise": "gaussian", **train_options}
        net.history = train(net, signals, seed=seed, progress=False, **options).as_dict()
    else:
        net = kp.train_published(variant, n=n, seed=seed, data_seed=DATA_SEED, max_epochs=max_epochs)
        signals, _ = kp.kaandorp_data(n, seed=DATA_SEED)
    held_out, _ = kp.kaandorp_data(kp.KAANDORP_N_EVAL, seed=HELD_OUT_SEED)
    est = iv.predict(net, signals[:kp.KAANDORP_N_EVAL], noise="gaussian")  # IVIMNET scores the first 10,000
    est_held = iv.predict(net, held_out, noise="gaussian")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, first=np.stack([est.Dp, est.Dt, est.Fp]), held_out=np.stack([est_held.Dp, est_held.Dt, est_held.Fp]),
             history=json.dumps({**net.history, "loss": None, "val_loss": None, "lr": None}))
    tmp.replace(path)
    return path


def score(estimates, truth):
    """``score_published`` of cached (repeats, 3, n) estimates, and how far each network shrinks D*: the slope of
    its estimates against the truth (1: follows the data, 0: one answer for all) and their SD (truth: ``truth_sd``),
    means over retrainings."""
    est = np.asarray(estimates)
    out = kp.score_published([iv.IVIMParams(*e, None) for e in est], truth)
    out["Dstar_slope"] = float(np.mean([np.polyfit(truth.Dp, e[0], 1)[0] for e in est]))
    out["Dstar_estimate_sd"] = float(np.mean([e[0].std() for e in est]))
    out["Dstar_truth_sd"] = float(np.std(truth.Dp))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=kp.KAANDORP_REPEATS,
                        help="retrainings of each variant asked for (seeds 0, 1, ...)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    jobs = [(v, s, args.quick) for v in args.variants for s in range(repeats)]
    with iv_threads.process_pool(args.workers) as pool:
        paths = {}
        for job, path in zip(jobs, pool.map(run, jobs)):
            paths[job[:2]] = path
            history = json.loads(str(np.load(path)["history"]))
            print(f"{job[0]:8s} seed {job[1]}: {history['epochs']} epochs, {history['seconds']:.0f} s, "
                  f"best epoch {history['best_epoch']}, warnings {history['warnings']}", flush=True)
    _, truth = kp.kaandorp_data(20_000 if args.quick else kp.KAANDORP_N, seed=DATA_SEED)
    truth = iv.IVIMParams(*(a[:kp.KAANDORP_N_EVAL] for a in truth))
    _, truth_held = kp.kaandorp_data(kp.KAANDORP_N_EVAL, seed=HELD_OUT_SEED)
    measured, held_out, trainings = {}, {}, {}
    for v in args.variants:
        files = [np.load(paths[(v, s)]) for s in range(repeats)]
        measured[v] = {**score([f["first"] for f in files], truth), "repeats": repeats}
        held_out[v] = {**score([f["held_out"] for f in files], truth_held), "repeats": repeats}
        trainings[v] = [json.loads(str(f["history"])) for f in files]
        print(v, json.dumps(measured[v]))
    if args.quick:
        return
    result = {"date": datetime.date.today().isoformat(),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}, torch {__import__('torch').__version__})",
              "settings": {"b_values": kp.KAANDORP_B_VALUES.tolist(), "box": kp.KAANDORP_BOX, "snr": kp.KAANDORP_SNR,
                           "n": kp.KAANDORP_N, "n_eval": kp.KAANDORP_N_EVAL,
                           "data_seed": DATA_SEED, "held_out_seed": HELD_OUT_SEED,
                           "networks": kp.KAANDORP_NETWORKS, "training": kp.KAANDORP_TRAINING},
              "published": kp.KAANDORP_PUBLISHED, "measured": measured, "held_out": held_out,
              "trainings": trainings}
    if OUT.is_file():  # keep variants not re-run
        old = json.loads(OUT.read_text())
        for block in ("measured", "held_out", "trainings"):
            result[block] = {**{k: v for k, v in old.get(block, {}).items() if k not in args.variants},
                             **result[block]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
