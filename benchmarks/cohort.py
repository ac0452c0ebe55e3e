"""Scans per minute of ``fit_cohort`` with 1 and 2 dask workers; writes benchmarks/results/cohort.json.

Usage: .venv/bin/python benchmarks/cohort.py [--scans 20] [--max-epochs 1000] [--quick]

The cohort: the three shipped volunteers (100 x 96 x 1 voxels, 60 volumes: b = 0 and 6 directions
at 8 b-values up to 500 s/mm^2) copied in turn into ``--scans`` scans, each with its own added noise
(Gaussian in quadrature, sigma 1 % of the body's median S(b=0), seeded by the scan's number), in a
BIDS-like folder with the ROI labels as ``*_dseg.nii.gz``. One acquisition, so one network.

For each method (``lsq``, and the default network method with a network trained once beforehand, so
that training is excluded from the per-scan rate and timed on its own) and each number of workers
(0 = in this process, 1, 2 on a LocalCluster), every scan's outputs are deleted and the whole
``fit_cohort`` call is timed: discovery, cluster start and stop, all fits and writes. The cluster's
start and stop alone are timed too, so ``seconds_per_scan`` = (wall - cluster) / scans. The peak resident
memory of the worker processes is the largest ``worker_rss_mb`` that the tasks report (ru_maxrss).
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
from ivim_demo import cohort  # noqa: E402


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


def cluster_seconds(workers):
    """Start and stop a LocalCluster as ``fit_cohort`` does, with a client (and one task on each worker)."""
    import logging

    from dask.distributed import Client, LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.gather(client.map(lambda x: x, range(workers)))
    client.close()
    cluster.close()
    return time.perf_counter() - start


def run(root, out, method, workers, options):
    for sub in Path(out).glob("sub-*"):
        shutil.rmtree(sub)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    rows = iv.fit_cohort(root, out, method=method, workers=workers, progress=False, **options)
    wall = time.perf_counter() - start
    statuses = {r["status"] for r in rows}
    if statuses != {"fitted"}:
        raise RuntimeError(f"expected every scan fitted, got {statuses}: "
                           f"{[r['reason'] for r in rows if r['status'] == 'failed'][:3]}")
    return wall, rows, [round(load, 2), round(os.getloadavg()[0], 2)]


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
            "note": "wall: the whole fit_cohort call (discovery, cluster start/stop, fits, writes) with every "
                    "scan refitted; seconds_per_scan = (wall - cluster_seconds) / scans; workers 0 = in-process. "
                    f"The {network} network is trained once beforehand (training_seconds) and reused, as a "
                    "rerun of fit_cohort does. The machine is shared with other sessions: the 1-minute load "
                    "average before and after each run says how busy it was (2 cores).",
            "training": {"method": network, "seconds": train_seconds, "pool_voxels": cohort.POOL_VOXELS,
                         "max_epochs": epochs, "epochs": history.get("epochs"),
                         "best_epoch": history.get("best_epoch")},
            "runs": [],
        }
        clusters = {w: cluster_seconds(w) for w in (1, 2)}
        for method in ("lsq", network):
            options = {"max_epochs": epochs} if method == network else {}
            for workers in (0, 1, 2):
                wall, rows, load = run(root, out, method, workers, options)
                cluster = clusters.get(workers, 0.0)
                per_scan = (wall - cluster) / n
                result["voxels_per_scan_mean"] = float(np.mean([r["voxels"] for r in rows]))
                result["runs"].append({
                    "method": method, "workers": workers, "wall_seconds": wall, "cluster_seconds": cluster,
                    "scans_per_minute": 60 * n / wall, "seconds_per_scan": per_scan,
                    "task_seconds_median": float(np.median([r["seconds"] for r in rows])),
                    "worker_rss_mb_max": float(max(r["worker_rss_mb"] for r in rows)),
                    "load_average_before_after": load,
                })
                print(json.dumps(result["runs"][-1]), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
