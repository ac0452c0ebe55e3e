"""Do network fits of real scans keep the organs apart? Writes benchmarks/results/in_vivo.json.

Usage: .venv/bin/python benchmarks/in_vivo.py [--quick] [--workers 2] [--rescore]

Every network method (``ivimnet``, ``optim``, ``supervised``; trained for the scan as
``python -m ivim_demo fit`` does) with training seeds 0, 1, 2, and every classical fit
once, on each shipped volunteer and on the anatomical phantom (64 x 64 x 4, SNR 50,
3 directions, seed 0). Each fit's liver and spleen medians are checked by what the series can
tell (``ivim_demo.check_scan``: organ contrast, Dt within 25/35 % of least squares on the same
series: ``checks`` and ``passed``), and compared, as context, with the reference (the scan
authors' maps, or the phantom's truth: ``ivim_demo.check_agreement``, ``reference_checks``);
the fit's own warnings are recorded: a collapsed map must be flagged. On the phantom, whose every voxel has a known truth, the per-voxel NRMSE of
each parameter is recorded too. ``--quick`` runs one dataset with seed 0 (a smoke test);
``--datasets`` and ``--methods`` re-run some datasets or methods and keep the others' rows;
``--rescore`` recomputes the checks of the rows in the JSON without fitting again.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import ivim_demo as iv
from ivim_demo.core import threads as iv_threads

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "in_vivo.json"
DATASETS = ("volunteer1", "volunteer2", "volunteer3", "phantom")
SEEDS = (0, 1, 2)


def load(name):
    return iv.phantom_example(seed=0) if name == "phantom" else iv.load_example(name)


def run(job):
    """One fit of one dataset; returns a JSON-ready row."""
    name, method, seed = job
    ex = load(name)
    keep = iv.make_mask(ex.dwi, mask=ex.mask, warn=False)
    start = time.perf_counter()
    fit = iv.fit_volume(ex.dwi, ex.b_values, keep, method=method, seed=seed, progress=False)
    seconds = time.perf_counter() - start
    rois = iv.roi_medians(fit.maps, ex.rois, ex.roi_names, mask=keep, reference=ex.reference)
    accuracy = None
    if "Dp" in ex.reference:  # a phantom: every voxel's truth is known
        truth = iv.IVIMParams(ex.reference["Dp"], ex.reference["D"], ex.reference["f"], None)
        accuracy = {p: iv.nrmse(getattr(fit.maps, p)[keep], getattr(truth, p)[keep]) for p in iv.PARAMS}
    return {"dataset": name, "method": method, "seed": seed, "rois": rois, "warnings": fit.info["warnings"],
            "epochs": fit.info.get("epochs"), "residual_median": fit.info["residual_median"],
            "quality": fit.info.get("quality"), "voxel_nrmse": accuracy, "seconds": seconds,
            "date": datetime.date.today().isoformat()}  # rows kept from earlier runs keep theirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=DATASETS,
                        help="re-run only these; their rows replace the ones in the existing JSON")
    parser.add_argument("--methods", nargs="+", choices=iv.METHODS, default=iv.METHODS,
                        help="re-run only these methods; their rows replace the ones in the existing JSON")
    parser.add_argument("--rescore", action="store_true", help="recompute the checks of the JSON's rows; no fits")
    args = parser.parse_args()
    if args.rescore:
        if not OUT.is_file():
            raise SystemExit(f"--rescore needs {OUT}: run the benchmark first.")
        result = json.loads(OUT.read_text())
        result["rows"] = score(result["rows"])
        result.update(agreement=iv.AGREEMENT, scan_checks=iv.SCAN_CHECKS)
        OUT.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"rescored {OUT}")
        return
    datasets, seeds = (args.datasets[:1], SEEDS[:1]) if args.quick else (tuple(args.datasets), SEEDS)
    methods = tuple(args.methods)
    jobs = [(d, m, s) for d in datasets for m in iv.NETWORK_METHODS if m in methods for s in seeds]
    jobs += [(d, m, None) for d in datasets for m in iv.METHODS if m not in iv.NETWORK_METHODS and m in methods]
    jobs.sort(key=lambda j: j[1] != "optim")  # the slowest first, so the two workers finish together
    with iv_threads.process_pool(args.workers) as pool:
        rows = []
        for row in pool.map(run, jobs):
            rows.append(row)
            print(f"{row['dataset']:11s} {row['method']:10s} seed {row['seed']}: "
                  f"{row['seconds']:.0f} s  {row['quality']}  {row['warnings']}", flush=True)
    if (set(datasets) != set(DATASETS) or set(methods) != set(iv.METHODS)) and OUT.is_file():  # keep the others
        rows += [r for r in json.loads(OUT.read_text())["rows"] if r["dataset"] not in datasets
                 or r["method"] not in methods]
    rows.sort(key=lambda r: (DATASETS.index(r["dataset"]), iv.METHODS.index(r["method"]), r["seed"] or 0))
    rows = score(rows)
    result = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} CPU cores "
              f"({platform.machine()}, torch {__import__('torch').__version__})", "quick": args.quick,
              "agreement": iv.AGREEMENT, "scan_checks": iv.SCAN_CHECKS, "rows": rows}
    if not args.quick:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"wrote {OUT}")


def score(rows):
    """Each row's ``checks`` (``check_scan`` against the least-squares row of its dataset) and ``passed``, and its
    ``reference_checks`` (``check_agreement``: the authors' maps or the phantom's truth, context)."""
    lsq = {r["dataset"]: r["rois"] for r in rows if r["method"] == "lsq"}
    missing = sorted({r["dataset"] for r in rows} - set(lsq))
    if missing:
        raise SystemExit(f"no least-squares row for {missing}: check_scan compares with it; run --methods lsq.")
    for r in rows:
        r["checks"] = iv.check_scan(r["rois"], lsq[r["dataset"]])
        r["passed"] = all(c["ok"] for c in r["checks"])
        r["reference_checks"] = iv.check_agreement(r["rois"])
        r["reference_passed"] = all(c["ok"] for c in r["reference_checks"])
    return rows


if __name__ == "__main__":
    main()
