"""How repeatable is each method on real scans? Writes benchmarks/results/repeatability.json.

Usage: .venv/bin/python benchmarks/repeatability.py [--workers 2] [--methods ...] [--quick]

Each shipped volunteer's series holds 6 directions of every b > 0 value: directions 1-3 and 4-6
(with every other b = 0 image) are two independent measurements in the same breath-holds
(``iv.split_halves``). Every method fits both halves on the same voxels (the full series' mask,
less any voxel invalid in a half); networks are trained on each half, with seeds 0, 1 and 2. Per
volunteer and ROI (liver, spleen, kidney, pancreas): the within-subject CV of each parameter, per
voxel and of the ROI medians (``iv.repeatability``). Across volunteers: the between-subject CV of the
ROI medians (the mean of the two halves). Each fit's maps are cached in
``benchmarks/.cache/repeatability`` so an interrupted run resumes (the cache knows no settings: delete
it after changing the code or the settings); ``--quick`` runs volunteer1 with lsq only and writes
nothing.
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

import ivim_demo as iv
from ivim_demo.core import threads as iv_threads

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "repeatability.json"
CACHE = ROOT / "benchmarks" / ".cache" / "repeatability"
VOLUNTEERS = ("volunteer1", "volunteer2", "volunteer3")
SEEDS = (0, 1, 2)
ORGANS = ("liver", "spleen", "kidney", "pancreas")


def voxels(name):
    """The voxels both halves are fitted on: the full series' mask, less voxels invalid in either half."""
    keep = iv.make_mask(iv.load_example(name).dwi, mask=iv.load_example(name).mask, warn=False)
    for half in iv.HALVES:
        ex = iv.load_example(name, half=half)
        keep &= iv.make_mask(ex.dwi, mask=ex.mask, warn=False)
    return keep


def run(job):
    """Fit one half of one volunteer with one method (and seed); cache and return its maps' file."""
    name, half, method, seed = job
    path = CACHE / f"{name}_half{half}_{method}_{seed}.npz"
    if path.is_file():
        return path
    ex = iv.load_example(name, half=half)
    keep = voxels(name)
    start = time.perf_counter()
    fit = iv.fit_volume(ex.dwi, ex.b_values, keep, method=method, seed=seed, progress=False)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{p: getattr(fit.maps, p) for p in iv.PARAMS}, keep=keep,
             info=json.dumps({"seconds": seconds, "warnings": fit.info["warnings"]}))
    tmp.replace(path)
    return path


def maps_of(path):
    f = np.load(path)
    return iv.IVIMParams(*(f[p] for p in iv.PARAMS), None), f["keep"], json.loads(str(f["info"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=iv.METHODS, default=iv.METHODS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    volunteers, methods = (VOLUNTEERS[:1], ("lsq",)) if args.quick else (VOLUNTEERS, tuple(args.methods))
    jobs = [(v, h, m, s) for v in volunteers for m in methods
            for s in (SEEDS if m in iv.NETWORK_METHODS else (None,)) for h in iv.HALVES]
    jobs.sort(key=lambda j: j[2] not in ("optim", "supervised"))  # the slowest first
    with iv_threads.process_pool(args.workers) as pool:
        paths = {}
        for job, path in zip(jobs, pool.map(run, jobs)):
            paths[job] = path
            info = maps_of(path)[2]
            print(f"{job[0]} half {job[1]} {job[2]:10s} seed {job[3]}: {info['seconds']:.0f} s {info['warnings']}",
                  flush=True)
    rows = []
    for v in volunteers:
        ex = iv.load_example(v)
        for m in methods:
            for s in (SEEDS if m in iv.NETWORK_METHODS else (None,)):
                (a, keep, ia), (b, _, ib) = (maps_of(paths[(v, h, m, s)]) for h in iv.HALVES)
                for r in iv.repeatability(a, b, ex.rois, ex.roi_names, mask=keep):
                    rows.append({"volunteer": v, "method": m, "seed": s, **r,
                                 "warnings": ia["warnings"] + ib["warnings"],
                                 "seconds": ia["seconds"] + ib["seconds"]})
    summary = summarise(rows, methods)
    for line in summary:
        print(json.dumps(line))
    if args.quick:
        return
    result = {"date": datetime.date.today().isoformat(),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}, torch {__import__('torch').__version__})",
              "seeds": SEEDS, "rows": rows, "summary": summary}
    if OUT.is_file() and set(methods) != set(iv.METHODS):  # keep the methods not re-run
        old = json.loads(OUT.read_text())
        result["rows"] = [r for r in old["rows"] if r["method"] not in methods] + rows
        result["summary"] = summarise(result["rows"], [m for m in iv.METHODS
                                                       if any(r["method"] == m for r in result["rows"])])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {OUT}")


def summarise(rows, methods):
    """Per method and organ: the wCVs pooled over volunteers (root mean square), averaged over seeds with their spread,
    and the between-subject CV of the ROI medians across volunteers (per seed, then averaged)."""
    out = []
    for m in methods:
        for organ in ORGANS:
            mine = [r for r in rows if r["method"] == m and r["roi"] == organ and r["voxels"] >= 10]
            if not mine:
                continue
            line = {"method": m, "roi": organ, "volunteers": sorted({r["volunteer"] for r in mine})}
            seeds = sorted({r["seed"] for r in mine}, key=lambda s: -1 if s is None else s)
            for p in iv.PARAMS:
                for kind in ("voxel", "median"):
                    # pooled over volunteers as a root mean square (a mean of |d| / sqrt(2) / m would be biased low)
                    per_seed = [np.sqrt(np.nanmean(np.square([r[f"{p}_wcv_{kind}"] for r in mine if r["seed"] == s])))
                                for s in seeds]
                    line[f"{p}_wcv_{kind}"] = float(np.mean(per_seed))
                    line[f"{p}_wcv_{kind}_sd"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
                between = []
                for s in seeds:
                    medians = [r[f"{p}_median"] for r in mine if r["seed"] == s]
                    if len(medians) >= 2:
                        between.append(np.std(medians, ddof=1) / np.mean(medians))
                line[f"{p}_cv_between"] = float(np.mean(between)) if between else None
            out.append(line)
    return out


if __name__ == "__main__":
    main()
