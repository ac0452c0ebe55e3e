"""Whole studies: every scan of a BIDS-like folder fitted on dask, one network per acquisition, resumable.

``fit_cohort(root, out)`` finds the scans (``find_scans``), groups them by acquisition (their b-values,
``group_scans``), trains one network per acquisition on a bounded, seeded sample of voxels pooled from all
its scans (``train_models``; classical methods train nothing), then fits every scan as one dask task
(``fit_scan``) and writes ``OUT/cohort.csv``. A scan whose outputs were made with the same model and
options is skipped, so a run that was stopped resumes where it was.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time

import numpy as np

from .methods import DEFAULT_METHOD, method as registered
from .outputs import Staging, check_enough_b_values, write_outputs
from .study import LABELS_GLOB, find_scans, group_scans, one_line, read_b_values
from ..core.threads import one_torch_thread
from ..core.files import write_atomically

__all__ = ["COHORT_COLUMNS", "POOL_VOXELS", "pooled_voxels", "train_models", "fit_scan", "fit_cohort"]

#: Voxels, in total over all the scans of an acquisition, that its network is trained on.
POOL_VOXELS = 20_000
#: Columns of ``cohort.csv`` (per-label medians ``label<k>_voxels``, ``label<k>_Dp``, ... follow).
COHORT_COLUMNS = ("scan", "subject", "session", "acquisition", "status", "reason", "voxels", "Dp_median",
                  "Dt_median", "Fp_median", "residual_median", "warnings", "model_sha256", "output", "seconds",
                  "worker_rss_mb")
_STAGING = re.compile(r"^\..+\.(partial|old)-")


def _load(scan, average):
    """The scan's direction-averaged DWI, b-values, affine, and the voxels to fit (training uses the same)."""
    from . import mask, nifti

    if scan.bval is None:
        read_b_values(None)
    dwi, b, affine = nifti.load_dwi(scan.dwi, scan.bval, average=average)
    check_enough_b_values(b)
    keep, excluded, report = mask.make_mask(dwi, b_values=b, warn=False, return_excluded=True, return_report=True)
    return dwi, b, affine, keep, excluded, report


def _file_id(path):
    if path is None:
        return None
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path, text):
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def pooled_voxels(acquisition, *, average="geometric", n_voxels=POOL_VOXELS, seed=0, failed=None):
    """A seeded sample of at most ``n_voxels`` masked voxels, drawn evenly from the acquisition's scans.

    Each scan gives up to ``n_voxels // len(scans)`` voxels of its mask (the one its fit uses), drawn
    without replacement with one ``numpy.random.Generator`` seeded by ``seed`` and the acquisition.
    A scan that cannot be loaded adds its reason to ``failed`` (scan id -> reason) and gives nothing.

    Returns
    -------
    numpy.ndarray
        ``(n, n_b)`` signals, b = 0 first.
    """
    failed = {} if failed is None else failed
    rng = np.random.default_rng([int(seed), int(acquisition.acq_id[4:], 16)])
    quota = max(1, n_voxels // len(acquisition.scans))
    samples = []
    for scan in acquisition.scans:  # one scan in memory at a time
        try:
            dwi, _, _, keep, _, _ = _load(scan, average)
        except ValueError as err:
            failed[scan.scan_id] = one_line(err)
            continue
        voxels = dwi[keep]
        samples.append(voxels[np.sort(rng.choice(len(voxels), min(quota, len(voxels)), replace=False))])
    if not samples:
        return np.empty((0, len(acquisition.b_values)), np.float32)
    return np.concatenate(samples)


def train_models(acquisitions, out, *, method=DEFAULT_METHOD, seed=0, max_epochs=1000, pool_voxels=POOL_VOXELS,
                 average="geometric", progress=True) -> tuple:
    """Train (or reuse) one network per acquisition, saved as ``OUT/models/ACQ/METHOD.pt``.

    A network is reused when ``METHOD.json`` beside it records the same scans (paths, sizes, times),
    options and the checkpoint's sha256. Classical methods train nothing.

    Returns
    -------
    models : dict of str -> (str, str)
        ``acq_id`` -> (checkpoint path, its sha256); empty for classical methods.
    failed : dict of str -> str
        Scans that could not be loaded for training (scan id -> reason); when no scan of an acquisition
        can be, all of them fail and it has no model.
    """
    models, failed = {}, {}
    entry = registered(method)
    if entry.kind != "network":
        return models, failed
    from .. import __version__
    from ..nets import checkpoint

    for acq in acquisitions:
        folder = os.path.join(out, "models", acq.acq_id)
        path, record_path = os.path.join(folder, f"{method}.pt"), os.path.join(folder, f"{method}.json")
        record = {"method": method, "b_values": [float(b) for b in acq.b_values], "seed": seed,
                  "max_epochs": max_epochs, "pool_voxels": pool_voxels, "average": average, "mask": "automatic",
                  "version": __version__,
                  "scans": [[s.scan_id, _file_id(s.dwi), _file_id(s.bval)] for s in acq.scans]}
        try:
            with open(record_path) as f:
                old = json.load(f)
            if os.path.isfile(path) and old.pop("model_sha256", None) == _sha256(path) and old == record:
                models[acq.acq_id] = (path, _sha256(path))
                continue
        except (OSError, ValueError):
            pass
        lost = {}
        voxels = pooled_voxels(acq, average=average, n_voxels=pool_voxels, seed=seed, failed=lost)
        failed.update(lost)
        if not len(voxels):
            continue
        try:
            net = entry.load()(voxels, acq.b_values, method=method, seed=seed, max_epochs=max_epochs,
                                progress=progress)
        except ValueError as err:  # e.g. too few voxels for an unsupervised network
            failed.update({s.scan_id: f"training the {acq.acq_id} network failed: {one_line(err)}"
                           for s in acq.scans if s.scan_id not in failed})
            continue
        checkpoint.save_model(net, path)
        sha = _sha256(path)
        _write_atomic(record_path, json.dumps({**record, "model_sha256": sha}, indent=1))
        models[acq.acq_id] = (path, sha)
    return models, failed


def _stamp(scan, options, model_sha256) -> str:
    """What makes a scan's outputs current: its input files, the options and the model."""
    ident = {"options": options, "model_sha256": model_sha256, "dwi": _file_id(scan.dwi),
             "bval": _file_id(scan.bval), "labels": _file_id(scan.labels)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _columns(fit, keep, labels) -> dict:
    """Whole-mask and per-label medians for cohort.csv."""
    from ..core.metrics import roi_medians

    cols = {"voxels": int(keep.sum()), **{f"{p}_median": float(np.median(getattr(fit.maps, p)[keep]))
                                          for p in ("Dp", "Dt", "Fp")},
            "residual_median": fit.info["residual_median"]}
    if labels is not None:
        present = sorted(int(k) for k in np.unique(labels[keep]) if k > 0)
        for roi in roi_medians(fit.maps, labels, {k: f"label{k}" for k in present}, mask=keep):
            cols.update({f"{roi['roi']}_{p}": roi[p] for p in ("voxels", "Dp", "Dt", "Fp")})
    return cols


def _row(scan, acquisition, status, *, reason="", record=None, warnings=(), **extra) -> dict:
    row = {"scan": scan.scan_id, "subject": scan.subject, "session": scan.session or "",
           "acquisition": acquisition or "", "status": status, "reason": reason}
    if record is not None:
        row.update(record["columns"])
        row.update(warnings="; ".join(warnings), model_sha256=record["model_sha256"] or "", output=scan.folder)
    row.update(extra)
    return row


def fit_scan(scan, out, *, acquisition, method=DEFAULT_METHOD, stamp="", model=None, model_sha256=None, seed=0,
             average="geometric") -> dict:
    """Fit one scan and publish its outputs in ``OUT/scan.folder`` (the task each worker runs).

    Loads the scan, masks it (``make_mask``, as training does), fits it with ``fit_volume`` (with the
    network loaded from ``model`` for a network method) and writes what ``python -m ivim_demo fit`` writes
    (``outputs.write_outputs``) into a staging folder that replaces the output folder only when complete.
    Runs on one torch thread.

    Returns
    -------
    dict
        The scan's ``cohort.csv`` row: status ``"fitted"``, or ``"failed"`` with the one-line reason when
        the scan cannot be read, masked or fitted, or its outputs cannot be written.
    """
    from ..nets import checkpoint
    from . import image_fit, nifti

    start = time.perf_counter()
    with one_torch_thread():
        target = os.path.join(out, scan.folder)
        try:
            dwi, b, affine, keep, excluded, report = _load(scan, average)
            labels = None
            if scan.labels:
                labels = np.nan_to_num(np.asarray(nifti.load_mask(scan.labels, affine=affine), float))
                if labels.shape != keep.shape:
                    raise ValueError(f"the label image {scan.labels!r} has shape {labels.shape}, the scan "
                                     f"{keep.shape}; give labels on the DWI's voxel grid.")
                labels = np.rint(labels).astype(int)
            net = checkpoint.load_model(model) if model else None
            fit = image_fit.fit_volume(dwi, b, keep, method=method, net=net, seed=seed, progress=False)
            record = {"stamp": stamp, "acquisition": acquisition, "model_sha256": model_sha256,
                      "columns": _columns(fit, keep, labels), "labels": scan.labels}
            os.makedirs(os.path.dirname(target), exist_ok=True)
            staging = Staging(target)
            try:
                summary = write_outputs(fit, keep, excluded, affine, staging.path, out=target, b_values=b,
                                        shape=dwi.shape, save_net=False, input=os.path.abspath(scan.dwi),
                                        average=average, mask="automatic", mask_check=report, model=model, seed=seed,
                                        cohort=record)
                staging.publish()
            finally:
                staging.discard()
        except ValueError as err:
            return _row(scan, acquisition, "failed", reason=one_line(err))
        except OSError as err:  # disk full, permissions
            return _row(scan, acquisition, "failed", reason=f"cannot write the outputs to {target!r} "
                                                            f"({one_line(err.strerror or err)}); free disk space or "
                                                            "make OUT writable, then run again")
    return _row(scan, acquisition, "fitted", record=record, warnings=summary["warnings"],
                seconds=round(time.perf_counter() - start, 3), worker_rss_mb=_peak_rss_mb())


def _peak_rss_mb():
    """Peak resident memory of this process (the worker) in MiB, or "" where ``resource`` does not exist."""
    try:
        import resource
    except ImportError:  # Windows
        return ""
    kib = 1 if sys.platform != "darwin" else 1 / 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 1024, 1)


def _current(scan, out, stamp):
    """The summary of a scan's outputs when they were made with ``stamp`` (same inputs, options, model)
    and every file it lists is there."""
    try:
        with open(os.path.join(out, scan.folder, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    record = summary.get("cohort") if isinstance(summary, dict) else None
    if not isinstance(record, dict) or record.get("stamp") != stamp:
        return None
    outputs = summary.get("outputs") or {}
    names = {os.path.basename(p) for p in outputs.values()} if isinstance(outputs, dict) else set()
    folder = os.path.join(out, scan.folder)
    return summary if names and all(os.path.isfile(os.path.join(folder, n)) for n in names) else None


def _write_csv(out, rows):
    labels = sorted({c for r in rows for c in r if c.startswith("label")},
                    key=lambda c: (int(re.match(r"label(\d+)_", c).group(1)), c))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*COHORT_COLUMNS, *labels], restval="")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(os.path.join(out, "cohort.csv"), buf.getvalue())


def _clean_staging(out):
    """Remove the staging folders a killed run left behind (``.NAME.partial-*``, ``.NAME.old-*``)."""
    for folder, subdirs, _ in os.walk(out):
        for name in list(subdirs):
            if _STAGING.match(name):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
                subdirs.remove(name)


class _Lock:
    """``OUT/.cohort.lock``: one run per output folder (a lock left by a dead process is taken over)."""

    def __init__(self, out):
        self.path = os.path.join(out, ".cohort.lock")
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                try:
                    with open(self.path) as f:
                        host, pid = f.read().split()
                    alive = host != socket.gethostname() or _alive(int(pid))
                except (OSError, ValueError):
                    alive = False
                if alive:
                    raise ValueError(f"another cohort run ({host}, process {pid}) is writing to {out!r}; wait for "
                                     f"it to finish, or delete {self.path!r} if it is no longer running.") from None
                os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            return
        raise ValueError(f"cannot take the lock {self.path!r}; delete it if no cohort run is writing there.")

    def release(self):
        try:
            os.remove(self.path)
        except OSError:
            pass


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_options(method, workers, scheduler, pool_voxels, max_epochs, average, seed=0):
    entry = registered(method)  # a ValueError naming the choices for an unknown method
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be a whole number from 0 to 2**32 - 1, got {seed!r}.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be a whole number >= 0 (0: in this process), got {workers!r}.")
    if scheduler is not None and not isinstance(scheduler, str):
        raise ValueError(f"scheduler must be 'serial' or a dask scheduler address such as 'tcp://host:8786', "
                         f"got {scheduler!r}.")
    for name, value in (("pool_voxels", pool_voxels), ("max_epochs", max_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
    if average not in ("geometric", "arithmetic"):
        raise ValueError(f"average must be 'geometric' or 'arithmetic', got {average!r}.")
    from ..nets.scan_training import MIN_SCAN_VOXELS

    if entry.trains_on_scan and pool_voxels < MIN_SCAN_VOXELS:
        raise ValueError(f"{method} trains on the pooled voxels and needs at least {MIN_SCAN_VOXELS}; "
                         f"pool_voxels (--pool-voxels) is {pool_voxels}.")


def _prepare_out(out):
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file; give a folder for the cohort's outputs.")
    try:
        os.makedirs(out, exist_ok=True)
        _write_atomic(os.path.join(out, ".write-test"), "")
        os.remove(os.path.join(out, ".write-test"))
    except OSError as err:
        raise ValueError(f"cannot write to --out {out!r} ({err.strerror}); choose a writable folder.") from None


def fit_cohort(root, out, *, method=DEFAULT_METHOD, seed=0, workers=None, scheduler=None, average="geometric",
               labels_glob=LABELS_GLOB, max_epochs=1000, pool_voxels=POOL_VOXELS, progress=True) -> list:
    """Fit every scan of a study folder, one dask task per scan; resumable.

    Scans are found with ``find_scans`` (``sub-*/[ses-*/]dwi/*_dwi.nii.gz`` with their ``.bval``) and
    grouped by acquisition. For a network method one network per acquisition is trained first, here,
    on at most ``pool_voxels`` voxels pooled evenly from its scans (``train_models``), and every scan of
    that acquisition is fitted with it, so maps are comparable across subjects. Each scan's outputs (what
    ``python -m ivim_demo fit`` writes) land in ``OUT/sub-XX/[ses-YY/]dwi/SCAN_ID/``, complete or not at
    all; a scan whose outputs record the same inputs, options and model sha256 is skipped. A scan that
    fails does not stop the others. ``OUT/cohort.csv`` gets one row per scan (refreshed as scans finish).

    Parameters
    ----------
    root : str or os.PathLike
        The study folder.
    out : str or os.PathLike
        Output folder (created); one run at a time writes into it.
    method : str
        A registered method (``methods.methods()``); default ``DEFAULT_METHOD``.
    seed : int
        Seeds the voxel sample, the network and its training.
    workers : int, optional
        Worker processes of the local dask cluster (default ``os.cpu_count()``); 0 fits in this process.
    scheduler : str, optional
        ``"serial"`` (in this process, as ``workers=0``) or the address of a running dask scheduler
        (its workers must see ``root`` and ``out`` at the same paths and import ``ivim_demo``).
    average : {"geometric", "arithmetic"}
        How the directions of a b-value are averaged (see ``load_dwi``).
    labels_glob : str or None
        Label images beside the scans for per-label medians (default ``LABELS_GLOB``); None: none.
    max_epochs : int
        Training limit of the networks.
    pool_voxels : int
        Voxels each acquisition's network is trained on, in total over its scans.
    progress : bool
        Progress bars (training, and scans done).

    Returns
    -------
    list of dict
        The rows of ``cohort.csv`` (``COHORT_COLUMNS`` and per-label medians), in the order of ``find_scans``;
        ``status`` is ``"fitted"``, ``"skipped"`` (outputs already current) or ``"failed"`` (with ``reason``).
    """
    from .. import __version__

    _check_options(method, workers, scheduler, pool_voxels, max_epochs, average, seed)
    root, out = os.path.abspath(os.fspath(root)), os.path.abspath(os.fspath(out))
    scans = find_scans(root, labels_glob=labels_glob)
    # an existing cluster: connected before any training, so a wrong address is said at once
    client = _connect(scheduler) if scheduler not in (None, "serial") else None
    try:
        _prepare_out(out)
    except ValueError:
        if client is not None:
            client.close()
        raise
    lock = _Lock(out)
    try:
        _clean_staging(out)
        acquisitions, failed = group_scans(scans)
        models, lost = train_models(acquisitions, out, method=method, seed=seed, max_epochs=max_epochs,
                                    pool_voxels=pool_voxels, average=average, progress=progress)
        failed.update(lost)
        acq_of = {s.scan_id: a.acq_id for a in acquisitions for s in a.scans}
        options = {"method": method, "seed": seed, "average": average, "mask": "automatic", "version": __version__}
        network = registered(method).kind == "network"
        if network:
            options.update(max_epochs=max_epochs, pool_voxels=pool_voxels)
        rows, jobs = {}, []
        for scan in scans:
            acq = acq_of.get(scan.scan_id)
            if scan.scan_id in failed:
                rows[scan.scan_id] = _row(scan, acq, "failed", reason=failed[scan.scan_id])
                continue
            model, sha = models.get(acq, (None, None))
            if network and model is None:
                rows[scan.scan_id] = _row(scan, acq, "failed", reason=f"no network for {acq}: none of its scans "
                                                                      "could be loaded for training")
                continue
            stamp = _stamp(scan, options, sha)
            summary = _current(scan, out, stamp)
            if summary is not None:
                rows[scan.scan_id] = _row(scan, acq, "skipped", record=summary["cohort"],
                                          warnings=summary.get("warnings", []))
                continue
            rows[scan.scan_id] = _row(scan, acq, "pending")
            jobs.append((scan, {"acquisition": acq, "method": method, "stamp": stamp, "model": model,
                                "model_sha256": sha, "seed": seed, "average": average}))
        ordered = lambda: [rows[s.scan_id] for s in scans]  # noqa: E731
        _write_csv(out, ordered())
        try:
            _run(jobs, out, rows, ordered, workers=workers, scheduler=scheduler, client=client, progress=progress)
        finally:
            for scan, kwargs in jobs:  # interrupted: scans that finished before their result came back
                summary = _current(scan, out, kwargs["stamp"]) if rows[scan.scan_id]["status"] == "pending" else None
                if summary is not None:
                    rows[scan.scan_id] = _row(scan, kwargs["acquisition"], "fitted", record=summary["cohort"],
                                              warnings=summary.get("warnings", []))
            _write_csv(out, ordered())
        return ordered()
    finally:
        if client is not None:
            client.close()
        _clean_staging(out)  # a worker stopped mid-write (Ctrl-C) leaves its staging folder; no run owns it now
        lock.release()


def _run(jobs, out, rows, ordered, *, workers, scheduler, client, progress, refresh=5.0):
    """Run ``fit_scan`` for every job, in this process or on dask; fills ``rows`` as scans finish."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="scans", unit="scan", disable=not progress or not jobs)
    last = time.monotonic()

    def done(row):
        nonlocal last
        rows[row["scan"]] = row
        bar.update(1)
        if time.monotonic() - last > refresh:
            _write_csv(out, ordered())
            last = time.monotonic()

    try:
        if not jobs:
            return
        if scheduler == "serial" or (scheduler is None and workers == 0):
            for scan, kwargs in jobs:
                done(fit_scan(scan, out, **kwargs))
            return
        _run_dask(jobs, out, done, workers=workers, client=client)
    finally:
        bar.close()


def _run_dask(jobs, out, done, *, workers, client):
    """One task per job on ``client`` (an existing cluster's), or on a LocalCluster started here."""
    import logging

    from dask.distributed import Client, LocalCluster, as_completed

    cluster, own, futures = None, client is None, {}
    token = secrets.token_hex(4)
    try:
        if own:
            _quiet_resource_tracker()
            # no per-worker memory limit: dask's default (the machine's memory / workers) killed every task of a
            # one-slice scan (~420 MB) with 64 workers on 24 GB; one scan per worker bounds the memory instead
            # workers' log lines are not for the command line's user: a task's error reaches its row, and at
            # shutdown a worker whose scheduler closed first logged a heartbeat traceback (seen after Ctrl-C)
            with _workers_ignore_ctrl_c():
                cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                       processes=True, memory_limit=0, dashboard_address=None,
                                       silence_logs=logging.CRITICAL)
                client = Client(cluster)
        for scan, kwargs in jobs:
            fut = client.submit(fit_scan, scan, out, **kwargs, key=f"ivim-fit-{scan.scan_id}-{token}", pure=False)
            futures[fut] = scan, kwargs["acquisition"]
        for fut in as_completed(futures):
            scan, acq = futures[fut]
            try:
                row = fut.result()
            except Exception as err:  # a crashed worker, an error no validation foresaw: this scan only
                reason = f"{type(err).__name__}: {one_line(err)}"
                if type(err).__name__ == "KilledWorker":
                    reason = ("the worker fitting it died (out of memory?); rerun with fewer --workers. "
                              + reason)
                row = _row(scan, acq, "failed", reason=reason)
            done(row)
    except KeyboardInterrupt:
        if not own:
            print("note: scans already running on the cluster's workers may still finish and appear in --out "
                  "(each complete); wait for them before you rerun.", file=sys.stderr)
        raise
    finally:
        with _ctrl_c_held():  # a second Ctrl-C while closing left the cluster open and its workers logging
            if client is not None and futures:
                client.cancel(list(futures))
            if own:  # an existing cluster's client is fit_cohort's to close
                if client is not None:
                    client.close()
                if cluster is not None:
                    cluster.close()


@contextlib.contextmanager
def _ctrl_c_held():
    """Ignore further Ctrl-C inside the block (from the main thread; elsewhere no change): the cleanup it
    guards runs once the first one is being handled, and is short."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _quiet_resource_tracker():
    """Keep multiprocessing's resource tracker from warning of "leaked semaphore objects" at exit.

    The tracker is the process that removes the named semaphores of the LocalCluster's processes when they
    end (it does, after an interrupt too); what it printed after Ctrl-C was its notice that it had to. It
    reads its warning filters from the environment when it starts, which is with the cluster's first process.
    """
    from multiprocessing import resource_tracker

    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (before, "ignore:resource_tracker:UserWarning")))
    try:
        resource_tracker.ensure_running()  # a tracker already running (started earlier) keeps its filters
    finally:
        if before is None:
            del os.environ["PYTHONWARNINGS"]
        else:
            os.environ["PYTHONWARNINGS"] = before


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Start a LocalCluster's worker processes with Ctrl-C (SIGINT) ignored, and this process not interrupted.

    Ctrl-C in a terminal reaches the whole process group. Killed by it, the workers printed tracebacks by the
    dozen before "interrupted:", and one landing while the cluster started left dask's exit handler failing
    on workers still starting. The workers are started through a two-line shell script that ignores SIGINT
    before it runs Python (an ignored signal stays ignored across exec, and Python leaves it so); meanwhile
    this process notes a Ctrl-C and raises ``KeyboardInterrupt`` once the cluster is up, so the caller closes
    it cleanly. Only on POSIX and from the main thread (elsewhere, no change).
    """
    import multiprocessing
    import shlex
    import signal
    import tempfile
    import threading

    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        yield
        return
    spawn = multiprocessing.get_context("spawn")
    python = multiprocessing.spawn.get_executable()
    held = []
    with tempfile.TemporaryDirectory(prefix="ivim-demo-") as folder:
        wrapper = os.path.join(folder, "python-ignoring-ctrl-c")
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\ntrap "" INT\nexec {shlex.quote(os.fsdecode(python))} "$@"\n')
        os.chmod(wrapper, 0o700)
        previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        # blocked in this thread, SIGINT is blocked in the threads it starts now (dask's event loop, which
        # starts the workers), and so in the workers from their fork until the script ignores it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        spawn.set_executable(wrapper)
        try:
            yield
        finally:
            spawn.set_executable(python)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def _connect(scheduler):
    """A dask client of the scheduler at ``scheduler``, or a ValueError that says what to check."""
    from dask.distributed import Client

    try:
        return Client(scheduler, timeout="20s")
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"cannot connect to the dask scheduler at {scheduler!r} ({one_line(err)}); check "
                         "the address (e.g. tcp://host:8786) and that the scheduler is running.") from None
