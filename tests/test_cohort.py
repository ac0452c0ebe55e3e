"""Cohorts: scans found in a BIDS-like folder, fitted on dask or in-process, resumable, one network per acquisition."""
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import ivim_demo as iv
from ivim_demo import cli
from ivim_demo.imaging import cohort
from tolerances import assert_close_to_rounding, network_rounding, rounding

B_A = iv.SEED_B_VALUES
B_B = np.array([0, 20, 50, 100, 200, 400, 600, 800.0])
AFFINE = np.array([[2.0, 0, 0, -16], [0, 2.0, 0, -16], [0, 0, 5, 0], [0, 0, 0, 1.0]])
#: (subject, session, b-values, with a label image): two acquisitions, one subject with two sessions.
SCANS = [("sub-01", None, B_A, True), ("sub-02", None, B_A, True), ("sub-03", "ses-1", B_A, True),
         ("sub-03", "ses-2", B_B, True), ("sub-04", None, B_B, True), ("sub-05", None, B_B, False)]
MAPS = ("Dp", "Dt", "Fp", "S0", "residual")


def _make_study(root):
    """Six 16 x 16 x 1 anatomical phantoms (3 directions per b > 0) as scanner exports; their truth by scan id."""
    truth = {}
    for k, (sub, ses, b, with_labels) in enumerate(SCANS):
        ph = iv.anatomical_phantom((16, 16, 1), snr=100, directions=3, b_values=b, seed=k)
        folder = root.joinpath(sub, *([ses] if ses else []), "dwi")
        stem = "_".join(p for p in (sub, ses) if p)
        iv.save_dwi(ph.dwi, ph.b_values, AFFINE, folder / f"{stem}_dwi.nii.gz", folder / f"{stem}_dwi.bval")
        if with_labels:
            nib.save(nib.Nifti1Image(ph.labels.astype(np.int16), AFFINE), folder / f"{stem}_dseg.nii.gz")
        truth[stem] = ph
    return truth


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return root, _make_study(root)


@pytest.fixture(scope="module")
def scheduler():
    """One 2-worker LocalCluster (processes) for the module; tests reach it by its address."""
    from dask.distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture(scope="module")
def fitted(study, tmp_path_factory):
    """The study fitted with least squares in this process."""
    root, _ = study
    out = tmp_path_factory.mktemp("fitted") / "out"
    rows = iv.fit_cohort(root, out, method="lsq", scheduler="serial", progress=False)
    return out, rows


def _maps(out, row):
    folder = out / row["output"]
    return {name: np.asarray(nib.load(folder / f"{name}.nii.gz").dataobj) for name in MAPS}


def _assert_same_network_maps(got, want, b_values, net, scan):
    """Maps of one scan fitted by one network (IVIMNetUncertainty) in two processes.

    Another process's MKL need not take this one's path (another thread setting or data alignment may pick
    another kernel), so Dp, Dt and Fp are equal up to the network's float32 rounding: it computes each as its
    box's low end plus the box's width times a sigmoid of sums of order-1 terms, so ``network_rounding`` times
    that width. S0 is the measured S(b=0), passed through: exact. The residual (RMS relative to S(b=0), where the
    model is S(b=0) times the shape the maps give) moves by at most the RMS change of that shape (triangle
    inequality), plus the float32 rounding of the stored maps and residual (within 4 float32 epsilons).
    """
    np.testing.assert_array_equal(got["S0"], want["S0"], err_msg=scan)
    for name, width in zip(("Dp", "Dt", "Fp"), (net.hi - net.lo).tolist()):
        assert_close_to_rounding(got[name], want[name], network_rounding(net), scale=width, err_msg=f"{scan}: {name}")
    shape = [iv.ivim(b_values, *(m[k].astype(float)[..., None] for k in ("Dp", "Dt", "Fp"))) for m in (got, want)]
    bound = np.sqrt(np.mean((shape[0] - shape[1]) ** 2, axis=-1)) + rounding(np.float32, 4)
    assert (np.abs(got["residual"].astype(float) - want["residual"]) <= bound).all(), scan


def _csv(out):
    with open(out / "cohort.csv", newline="") as f:
        return list(csv.DictReader(f))


def _staging_left(out):
    return [os.path.join(d, n) for d, subdirs, _ in os.walk(out) for n in subdirs if ".partial-" in n or ".old-" in n]


def test_find_scans_reads_the_layout(study):
    root, _ = study
    scans = iv.find_scans(root)
    assert [s.scan_id for s in scans] == ["sub-01", "sub-02", "sub-03_ses-1", "sub-03_ses-2", "sub-04", "sub-05"]
    s = scans[2]
    assert (s.subject, s.session) == ("sub-03", "ses-1")
    assert s.folder == os.path.join("sub-03", "ses-1", "dwi", "sub-03_ses-1")
    assert s.bval.endswith("sub-03_ses-1_dwi.bval") and s.labels.endswith("sub-03_ses-1_dseg.nii.gz")
    assert scans[0].session is None and scans[5].labels is None
    acquisitions, failed = iv.group_scans(scans)
    assert failed == {}
    assert sorted(len(a.scans) for a in acquisitions) == [3, 3]
    by_b = {a.b_values[-1]: a for a in acquisitions}
    np.testing.assert_array_equal(by_b[B_A[-1]].b_values, B_A)
    np.testing.assert_array_equal(by_b[B_B[-1]].b_values, B_B)
    assert [s.scan_id for s in by_b[B_A[-1]].scans] == ["sub-01", "sub-02", "sub-03_ses-1"]


def test_pooled_voxels_are_bounded_seeded_and_drawn_from_the_fit_masks(study):
    root, truth = study
    acq = next(a for a in iv.group_scans(iv.find_scans(root))[0] if a.b_values[-1] == B_A[-1])
    pool = cohort.pooled_voxels(acq, n_voxels=90, seed=3)
    assert pool.shape == (90, len(B_A))  # 30 from each of the 3 scans
    np.testing.assert_array_equal(pool, cohort.pooled_voxels(acq, n_voxels=90, seed=3))
    assert not np.array_equal(pool, cohort.pooled_voxels(acq, n_voxels=90, seed=4))
    dwi, b, _ = iv.load_dwi(acq.scans[0].dwi, acq.scans[0].bval)
    masked = dwi[iv.make_mask(dwi, b_values=b, warn=False)]
    assert (pool[:30, None, :] == masked[None]).all(axis=-1).any(axis=1).all()  # every voxel is a masked one
    big = cohort.pooled_voxels(acq, n_voxels=10**6, seed=3)  # more than there are: every masked voxel once
    assert len(big) == sum(iv.make_mask(*iv.load_dwi(s.dwi, s.bval)[:1], b_values=iv.load_dwi(s.dwi, s.bval)[1],
                                        warn=False).sum() for s in acq.scans)


def test_serial_and_distributed_give_identical_maps(study, fitted, scheduler, tmp_path):
    root, _ = study
    out, serial = fitted
    rows = iv.fit_cohort(root, tmp_path / "out", method="lsq", scheduler=scheduler, progress=False)
    assert [r["status"] for r in serial] == ["fitted"] * 6 and [r["status"] for r in rows] == ["fitted"] * 6
    # exact: least squares is float64 numpy (no torch, no MKL), each voxel's iterations its own, in the same
    # chunks in either process
    for a, b in zip(serial, rows):
        maps_a, maps_b = _maps(out, a), _maps(tmp_path / "out", b)
        for name in MAPS:
            assert np.array_equal(maps_a[name], maps_b[name]), (a["scan"], name)
        assert a["Dt_median"] == b["Dt_median"] and a.get("label2_Fp") == b.get("label2_Fp")
    folder = tmp_path / "out" / "sub-03" / "ses-2" / "dwi" / "sub-03_ses-2"
    assert {"Dp.nii.gz", "Dt.nii.gz", "Fp.nii.gz", "S0.nii.gz", "residual.nii.gz", "fitted_mask.nii.gz",
            "overview.png", "summary.json"} == set(os.listdir(folder))
    np.testing.assert_allclose(nib.load(folder / "Dt.nii.gz").affine, AFFINE)
    assert not _staging_left(tmp_path / "out")


def test_cohort_csv_values_match_the_phantom_truth(study, fitted):
    root, truth = study
    out, rows = fitted
    table = _csv(out)
    assert [r["scan"] for r in table] == [r["scan"] for r in rows]
    for row in table:
        ph = truth[row["scan"]]
        dwi, b, _ = iv.load_dwi(root / row["output"].rsplit(os.sep, 1)[0] / f"{row['scan']}_dwi.nii.gz",
                                root / row["output"].rsplit(os.sep, 1)[0] / f"{row['scan']}_dwi.bval")
        keep = iv.make_mask(dwi, b_values=b, warn=False)
        np.testing.assert_array_equal(nib.load(out / row["output"] / "fitted_mask.nii.gz").get_fdata() > 0, keep)
        assert int(row["voxels"]) == keep.sum()
        maps = _maps(out, row)
        assert float(row["Fp_median"]) == pytest.approx(np.median(maps["Fp"][keep]), rel=1e-6)  # float32 map
        # least squares, SNR 100 in liver (fat 42), 3 directions: Dt within 10 % of the truth's median. The
        # whole-mask Fp median lies 0.027-0.034 above the truth's (measured): fat, 59 % of the mask, holds the
        # median at its ~85th percentile, where the noisier estimates of fat's low Fp spread upwards; per
        # label the estimates are within 0.015 (fat) and 0.004 (liver) of the truth.
        assert float(row["Dt_median"]) == pytest.approx(np.median(ph.truth.Dt[keep]), rel=0.10), row["scan"]
        assert float(row["Fp_median"]) == pytest.approx(np.median(ph.truth.Fp[keep]), abs=0.04), row["scan"]
        if row["scan"] == "sub-05":  # no label image
            assert row["label2_Dt"] == ""
            continue
        for label in (1, 2):  # fat (73 voxels) and liver (30): the labels large enough for a median
            inside = keep & (ph.labels == label)
            assert int(row[f"label{label}_voxels"]) == inside.sum()
            assert float(row[f"label{label}_Dt"]) == pytest.approx(np.median(ph.truth.Dt[inside]), rel=0.05)
            assert float(row[f"label{label}_Fp"]) == pytest.approx(np.median(ph.truth.Fp[inside]), abs=0.02)


def test_resume_skips_what_is_done_and_recovers_from_a_kill(study, fitted, tmp_path):
    root, _ = study
    done, first = fitted
    out = tmp_path / "out"
    shutil.copytree(done, out)
    run = lambda **kw: iv.fit_cohort(root, out, method="lsq", scheduler="serial", progress=False, **kw)  # noqa: E731
    assert [r["status"] for r in run()] == ["skipped"] * 6
    (out / first[0]["output"] / "Dt.nii.gz").unlink()  # one map of a scan lost: the scan is refitted
    assert [r["status"] for r in run()] == ["fitted"] + ["skipped"] * 5
    before = _maps(out, first[1])
    shutil.rmtree(out / first[1]["output"])
    rows = run()
    assert [r["status"] for r in rows] == ["skipped", "fitted"] + ["skipped"] * 4
    assert all(np.array_equal(before[k], v) for k, v in _maps(out, first[1]).items())
    assert rows[3]["Dt_median"] == first[3]["Dt_median"]  # a skipped row reads its values back from summary.json
    # a kill: a half-written staging folder, a scan's outputs missing, the dead run's lock
    target = out / first[4]["output"]
    shutil.rmtree(target)
    partial = target.parent / f".{target.name}.partial-x1y2"
    partial.mkdir()
    (partial / "Dp.nii.gz").write_bytes(b"\x1f\x8b half")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (out / ".cohort.lock").write_text(f"{socket.gethostname()} {dead.stdout.strip()}")
    rows = run()
    assert [r["status"] for r in rows] == ["skipped"] * 4 + ["fitted", "skipped"]
    assert not _staging_left(out) and not (out / ".cohort.lock").exists()
    assert set(os.listdir(target)) >= {"Dp.nii.gz", "summary.json"}
    # an input that changed, and other options, refit
    os.utime(root / "sub-02" / "dwi" / "sub-02_dwi.bval")
    assert [r["status"] for r in run()] == ["skipped", "fitted"] + ["skipped"] * 4
    assert [r["status"] for r in run(average="arithmetic")] == ["fitted"] * 6


def test_a_live_run_holds_the_output_folder(study, tmp_path):
    root, _ = study
    out = tmp_path / "out"
    out.mkdir()
    import socket

    (out / ".cohort.lock").write_text(f"{socket.gethostname()} {os.getpid()}")
    with pytest.raises(ValueError, match="another cohort run"):
        iv.fit_cohort(root, out, method="lsq", scheduler="serial", progress=False)


def test_a_corrupt_scan_fails_alone(study, tmp_path, capsys):
    root, _ = study
    bad = tmp_path / "study"
    shutil.copytree(root, bad)
    dwi = bad / "sub-02" / "dwi" / "sub-02_dwi.nii.gz"
    dwi.write_bytes(dwi.read_bytes()[: dwi.stat().st_size // 2])  # truncated
    (bad / "sub-04" / "dwi" / "sub-04_dwi.bval").unlink()
    out = tmp_path / "out"
    code = cli.main(["cohort", str(bad), "--out", str(out), "--method", "lsq", "--workers", "2",  # own cluster
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    table = {r["scan"]: r for r in _csv(out)}
    assert [table[s]["status"] for s in sorted(table)] == ["fitted", "failed", "fitted", "fitted", "failed", "fitted"]
    assert "truncated or corrupt" in table["sub-02"]["reason"] and "failed: sub-02:" in err
    assert "bvals file" in table["sub-04"]["reason"] and "\n" not in table["sub-02"]["reason"]
    assert not (out / "sub-02" / "dwi" / "sub-02").exists() and not _staging_left(out)
    assert (out / "sub-01" / "dwi" / "sub-01" / "Dt.nii.gz").is_file()


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "no scans found"),
    (lambda p: p / "nope", "cohort folder not found"),
])
def test_bad_folder_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    code = cli.main(["cohort", str(make(tmp_path)), "--out", str(tmp_path / "out"), "--method", "lsq",
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err and "sub-*/" in err


def test_unwritable_out_and_bad_options_are_refused(study, tmp_path, capsys):
    root, _ = study
    (tmp_path / "file").write_text("x")
    code = cli.main(["cohort", str(root), "--out", str(tmp_path / "file"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a file" in err
    code = cli.main(["cohort", str(root), "--out", str(tmp_path / "o"), "--workers", "-1", "--no-progress"])
    assert code == 2 and "workers must be" in capsys.readouterr().err
    with pytest.raises(ValueError, match="pool_voxels must be"):
        iv.fit_cohort(root, tmp_path / "o", pool_voxels=0)


def test_one_network_per_acquisition(study, scheduler, tmp_path):
    root, _ = study
    out = tmp_path / "out"
    options = dict(method="supervised", max_epochs=1, pool_voxels=600, progress=False, scheduler=scheduler)
    rows = iv.fit_cohort(root, out, **options)
    assert [r["status"] for r in rows] == ["fitted"] * 6
    models = sorted((out / "models").glob("acq-*/supervised.pt"))
    assert len(models) == 2
    sha = {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in models}
    assert {r["acquisition"]: r["model_sha256"] for r in rows} == sha  # every scan of an acquisition: its network
    assert len(set(sha.values())) == 2
    for row in rows:
        summary = (out / row["output"] / "summary.json").read_text()
        assert str(out / "models" / row["acquisition"] / "supervised.pt") in summary
    mtimes = [p.stat().st_mtime_ns for p in models]
    assert [r["status"] for r in iv.fit_cohort(root, out, **options)] == ["skipped"] * 6
    assert [p.stat().st_mtime_ns for p in models] == mtimes  # not retrained
    # the same networks in this process give the workers' maps (one scan per acquisition), up to float32 rounding
    distributed = {k: _maps(out, rows[k]) for k in (0, 3)}
    for k in (0, 3):
        shutil.rmtree(out / rows[k]["output"])
    again = iv.fit_cohort(root, out, **{**options, "scheduler": "serial"})
    assert [r["status"] for r in again] == ["fitted", "skipped", "skipped", "fitted", "skipped", "skipped"]
    assert [p.stat().st_mtime_ns for p in models] == mtimes
    for k in (0, 3):
        net = iv.load_model(out / "models" / rows[k]["acquisition"] / "supervised.pt")
        _assert_same_network_maps(_maps(out, again[k]), distributed[k], SCANS[k][2], net, rows[k]["scan"])


def test_cohort_help_loads_neither_torch_nor_dask():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "ivim_demo", "cohort", "--help"],
                         capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    loaded = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert out.returncode == 0 and "--scheduler" in out.stdout and "ivim_demo" in loaded, out.stderr[-500:]
    assert not loaded & {"torch", "matplotlib", "scipy", "dask", "distributed"}, sorted(loaded)


@pytest.mark.parametrize("text, message", [
    ("0 10 20 50 100 200 10 20", None),
    ("10 20 50 100 200 300", "start at b=0"),
    ("0 10 20", "at least 5 distinct b-values"),
    ("", "holds no b-values"),
    ("0 1e6 2e6 3e6 4e6 5e6", "s/mm\\^2"),
    ("0 ten", "cannot read b-values"),
])
def test_read_b_values_groups_as_load_dwi_or_says_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "x_dwi.bval"
    path.write_text(text)
    if message is None:
        np.testing.assert_array_equal(iv.read_b_values(path), [0, 10, 20, 50, 100, 200])
    else:
        with pytest.raises(ValueError, match=message):
            iv.read_b_values(path)


def _summaries(out):
    """Published scan folders (a staging folder's summary.json is not yet an output)."""
    if not out.exists():
        return 0
    return sum("summary.json" in files and ".partial-" not in d and ".old-" not in d for d, _, files in os.walk(out))


@pytest.mark.parametrize("scans_done", [0, 1])
def test_a_real_kill_loses_no_finished_scan_and_the_rerun_completes(study, fitted, tmp_path, scans_done):
    """SIGKILL (no clean-up at all) once cohort.csv is written (fits starting) or after the first scan: every
    scan folder left is complete, and the rerun skips those and fits the rest to the same maps."""
    import signal
    import time

    root, _ = study
    done, first = fitted
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ivim_demo", "cohort", str(root), "--out", str(out),
                             "--method", "lsq", "--workers", "0", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (
            (out / "cohort.csv").exists() and _summaries(out) >= scans_done):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    left = _summaries(out)
    assert left < len(first), "the kill came after the whole run: nothing was tested"
    for row in first:  # what the killed run left: a scan's folder is there complete, or not at all
        folder = out / row["output"]
        if folder.exists():
            assert {f"{m}.nii.gz" for m in MAPS} | {"summary.json"} <= set(os.listdir(folder)), folder
    rows = iv.fit_cohort(root, out, method="lsq", scheduler="serial", progress=False)
    assert [r["status"] for r in rows].count("skipped") == left and {r["status"] for r in rows} <= {"fitted", "skipped"}
    assert not _staging_left(out) and not (out / ".cohort.lock").exists()
    for row, reference in zip(rows, first):  # the same maps as an uninterrupted run
        assert all(np.array_equal(a, b) for a, b in zip(_maps(out, row).values(), _maps(done, reference).values()))


def test_hostile_options_and_a_broken_link_are_said_clearly(study, tmp_path, capsys):
    root, _ = study
    for argv, message in ((["--method", "ivimnet", "--pool-voxels", "30"], "needs at least 500"),
                          (["--method", "lsq", "--seed", "-1"], "seed must be a whole number"),
                          (["--method", "lsq", "--scheduler", "tcp://127.0.0.1:1"], "cannot connect")):
        code = cli.main(["cohort", str(root), "--out", str(tmp_path / "o"), "--no-progress", *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o" / "models").exists()  # refused before any training
    linked = tmp_path / "study"
    shutil.copytree(root, linked)
    broken = linked / "sub-06" / "dwi"
    broken.mkdir(parents=True)
    os.symlink(tmp_path / "nowhere.nii.gz", broken / "sub-06_dwi.nii.gz")
    shutil.copy(linked / "sub-01" / "dwi" / "sub-01_dwi.bval", broken / "sub-06_dwi.bval")
    rows = iv.fit_cohort(linked, tmp_path / "out", method="lsq", scheduler="serial", progress=False)
    bad = [r for r in rows if r["scan"] == "sub-06"]
    assert len(bad) == 1 and bad[0]["status"] == "failed" and "broken link" in bad[0]["reason"]
    assert sum(r["status"] == "fitted" for r in rows) == 6


def test_bayes_cohort_writes_posterior_sd_maps_and_resumes(study, tmp_path):
    """cohort goes through outputs.write_outputs: a posterior method's SD maps are written (and required for a skip)."""
    root, _ = study
    out = tmp_path / "out"
    rows = iv.fit_cohort(root, out, method="bayes", scheduler="serial", progress=False)
    assert [r["status"] for r in rows] == ["fitted"] * len(SCANS), [r["reason"] for r in rows]
    for row in rows:
        folder = out / row["output"]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["sd_maps"]["maps"] == ["Dp_sd", "Dt_sd", "Fp_sd"]
        dt = np.asarray(nib.load(folder / "Dt.nii.gz").dataobj)
        sd = np.asarray(nib.load(folder / "Dt_sd.nii.gz").dataobj)
        fitted = dt != 0
        assert fitted.sum() == int(row["voxels"])
        assert (sd[fitted] > 0).all() and (sd[~fitted] == 0).all() and np.isfinite(sd).all()
    os.remove(out / rows[0]["output"] / "Fp_sd.nii.gz")  # an incomplete output is fitted again
    again = iv.fit_cohort(root, out, method="bayes", scheduler="serial", progress=False)
    assert [r["status"] for r in again] == ["fitted"] + ["skipped"] * (len(SCANS) - 1)
    assert (out / rows[0]["output"] / "Fp_sd.nii.gz").is_file()
