"""Scans per minute of ``fit_cohort`` with 1 and 2 dask workers; writes benchmarks/results/cohort.json.

Usage: .venv/bin/python benchmarks/cohort.py [--scans 20] [--max-epochs 1000] [--quick]

The cohort: the three shipped volunteers (100 x 96 x 1 voxels, 60 volumes: b = 0 and 6 directions
at 8 b-values up to 500 s/mm^2) copied in turn into ``--scans`` scans, each with its own added noise
(Gaussian in quadrature, sigma 1 % of the body's median S(b=0), seeded by the scan's number), in a
BIDS-like folder with the ROI labels as ``*_dseg.nii.gz``. One acquisition, so one network.

For each method (``lsq``, and the default network method with a network trained once beforehand, so
that training is excluded from the per-scan rate and timed on its own) and each number of workers
(0 = in this process; 1 and 2 on a LocalCluster reached by its address), every scan's outputs are
deleted and the whole ``fit_cohort`` call is timed: discovery, all fits and writes, cohort.csv. The
cluster is started and its workers import what a fit needs beforehand, both timed apart (fixed costs of a
run, not per scan). ``cpu_seconds_per_scan`` is the CPU time (user + system) of the workers during the
run, per scan: unlike the wall time it does not grow when other processes share the cores. The peak
resident memory of a worker is the largest ``worker_rss_mb`` that the tasks report (ru_maxrss).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ivim_demo as iv  # noqa: E402
from ivim_demo.imaging import cohort  # noqa: E402


def make_cohort(root, n_scans):
    """``n_scans`` noisy copies of the shipped volunteers as sub-XX/dwi/sub-XX_dwi.nii.gz (+ .bval, _dseg)."""
    import nibabel as nib

    shapes = set()
    for k in range(n_scans):
        paths = iv.load_example(f"volunteer{k % 3 + 1}").paths
        img = nib.load(paths["dwi"])
        data = np.asarray(img.dataobj, float)
        body = np.asarray(nib.load(paths["mask"]).dataobj) > 0
        sigma = 0.01 * np.median(data[..., 0][body])
        rng = np.random.default_rng(k)
        noisy = np.sqrt((data + sigma * rng.standard_normal(data.shape)) ** 2
                        + (sigma * rng.standard_normal(data.shape)) ** 2)
        folder = Path(root) / f"sub-{k + 1:02d}" / "dwi"
        bvals = np.loadtxt(paths["bvals"])
        iv.save_dwi(noisy, bvals, img.affine, folder / f"sub-{k + 1:02d}_dwi.nii.gz",
                    folder / f"sub-{k + 1:02d}_dwi.bval")
        shutil.copy(paths["rois"], folder / f"sub-{k + 1:02d}_dseg.nii.gz")
        shapes.add(data.shape)
    return sorted(shapes)


def _warm():
    """What a worker imports for its first scan (torch, matplotlib, scipy, ivim_demo)."""
    import ivim_demo.cli  # noqa: F401
    import ivim_demo.imaging.image_fit  # noqa: F401
    import ivim_demo.imaging.plots  # noqa: F401


def _cpu_seconds():
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def run(root, out, method, workers, options):
    """One timed ``fit_cohort`` call with every scan refitted, in this process (0) or on a started, warmed
    LocalCluster of ``workers`` processes (its start and warm-up timed apart)."""
    import logging

    from dask.distributed import Client, LocalCluster

    for sub in Path(out).glob("sub-*"):
        shutil.rmtree(sub)
    setup, cluster, client = {}, None, None
    if workers:
        t = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
        setup["cluster_start_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        client.run(_warm)
        setup["worker_import_seconds"] = time.perf_counter() - t
    else:
        _warm()
    try:
        cpu = (lambda: sum(client.run(_cpu_seconds).values())) if workers else _cpu_seconds
        load, cpu0, start = os.getloadavg()[0], cpu(), time.perf_counter()
        rows = iv.fit_cohort(root, out, method=method, progress=False,
                             **({"scheduler": cluster.scheduler_address} if workers else {"workers": 0}), **options)
        wall, cpu1 = time.perf_counter() - start, cpu()
    finally:
        if workers:
            client.close()
            cluster.close()
    statuses = {r["status"] for r in rows}
    if statuses != {"fitted"}:
        raise RuntimeError(f"expected every scan fitted, got {statuses}: "
                           f"{[r['reason'] for r in rows if r['status'] == 'failed'][:3]}")
    n = len(rows)
    return rows, {"method": method, "workers": workers, "wall_seconds": wall, "scans_per_minute": 60 * n / wall,
                  "seconds_per_scan": wall / n, "cpu_seconds_per_scan": (cpu1 - cpu0) / n,
                  "task_seconds_median": float(np.median([r["seconds"] for r in rows])),
                  "worker_rss_mb_max": float(max(r["worker_rss_mb"] for r in rows)), **setup,
                  "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=1000, help="training limit of the network")
    parser.add_argument("--quick", action="store_true", help="4 scans, 2 epochs: to check the script runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cohort.json"))
    args = parser.parse_args(argv)
    n, epochs = (4, 2) if args.quick else (args.scans, args.max_epochs)
    network = iv.DEFAULT_METHOD
    work = Path(tempfile.mkdtemp(prefix="cohort-bench-"))
    try:
        root, out = work / "study", work / "out"
        shape = make_cohort(root, n)
        acquisitions, _ = iv.group_scans(iv.find_scans(root))
        start = time.perf_counter()
        models, failed = iv.train_models(acquisitions, str(out), method=network, max_epochs=epochs, progress=False)
        train_seconds = time.perf_counter() - start
        assert len(models) == 1 and not failed, (models, failed)
        history = iv.load_model(next(iter(models.values()))[0]).history
        result = {
            "date": datetime.date.today().isoformat(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "torch": __import__("torch").__version__, "dask": __import__("dask").__version__},
            "scans": n, "scan_shapes": [list(s) for s in shape], "voxels_per_scan_mean": None,
            "note": "wall: the whole fit_cohort call (discovery, fits, writes, cohort.csv) with every scan refitted, "
                    "on a LocalCluster started and warmed (imports) beforehand, both timed apart "
                    "(cluster_start_seconds, worker_import_seconds); workers 0 = in this process. "
                    "cpu_seconds_per_scan: user + system CPU of the worker processes (of this process for 0) "
                    "during the run, per scan. "
                    f"The {network} network is trained once beforehand (training_seconds) and reused, as a "
                    "rerun of fit_cohort does. The machine is shared with other sessions: the 1-minute load "
                    "average before and after each run (which counts this benchmark's own processes too, about 1 "
                    "per busy worker) says how busy it was (2 cores).",
            "training": {"method": network, "seconds": train_seconds, "pool_voxels": cohort.POOL_VOXELS,
                         "max_epochs": epochs, "epochs": history.get("epochs"),
                         "best_epoch": history.get("best_epoch")},
            "runs": [],
        }
        for method in ("lsq", network):
            options = {"max_epochs": epochs} if method == network else {}
            for workers in (0, 1, 2):
                rows, numbers = run(root, out, method, workers, options)
                result["voxels_per_scan_mean"] = float(np.mean([r["voxels"] for r in rows]))
                result["runs"].append(numbers)
                print(json.dumps(numbers), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
