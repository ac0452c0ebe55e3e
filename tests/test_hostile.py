"""What a hostile run of the command line found, kept from coming back: every failure is one line and
exit 2 (130 for Ctrl-C), and a failed run leaves no partial outputs and the previous ones untouched."""
import errno
import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest

import ivim_demo as iv
from ivim_demo.cli import main as cli
from ivim_demo.imaging.mask import VALLEY_DOUBT


@pytest.fixture()
def scan(tmp_path):
    ex = iv.phantom_example(shape=(16, 16, 1), directions=2, seed=8)
    ph = iv.anatomical_phantom((16, 16, 1), directions=2, seed=8)
    iv.save_dwi(ph.dwi, ph.b_values, np.eye(4), tmp_path / "d.nii.gz", tmp_path / "d.bval")
    return tmp_path, ph, ex


def _run(capsys, *args):
    code = cli([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line_error(code, err, *words):
    assert code == 2, err
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


def test_truncated_image_is_one_line(scan, capsys):
    folder, _, _ = scan
    data = (folder / "d.nii.gz").read_bytes()
    for name, payload in (("t.nii.gz", data[: len(data) // 2]), ("t.nii", gzip.decompress(data)[:2000])):
        (folder / name).write_bytes(payload)
        code, err = _run(capsys, "fit", folder / name, "--bvals", folder / "d.bval", "--out", folder / "o")
        _one_line_error(code, err, name)
        assert not (folder / "o").exists()


def test_mask_that_is_not_nifti_is_one_line(scan, capsys):
    folder, _, _ = scan
    (folder / "mask.nii.gz").write_text("not an image")
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--mask",
                     folder / "mask.nii.gz", "--out", folder / "o", "--method", "lsq")
    _one_line_error(code, err, "mask")


@pytest.mark.parametrize("factor", [1e6, 1e-3])
def test_b_values_in_other_units_are_refused(scan, capsys, factor):
    folder, ph, _ = scan
    (folder / "x.bval").write_text(" ".join(f"{b * factor:g}" for b in ph.b_values))
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "x.bval", "--out", folder / "o",
                     "--method", "lsq")
    _one_line_error(code, err, "s/mm^2")


def test_complex_image_is_refused(scan, capsys):
    folder, ph, _ = scan
    nib.save(nib.Nifti1Image(ph.dwi.astype(np.complex64), np.eye(4)), folder / "c.nii.gz")
    code, err = _run(capsys, "fit", folder / "c.nii.gz", "--bvals", folder / "d.bval", "--out", folder / "o")
    _one_line_error(code, err, "complex", "magnitude")


def test_negative_value_in_one_direction_excludes_and_counts_the_voxel(scan, capsys):
    folder, ph, _ = scan
    dwi = ph.dwi.copy()
    body = np.argwhere(ph.labels > 0)[:3]
    for k, (x, y, z) in enumerate(body):
        dwi[x, y, z, 1 + k] = -3.0  # one direction of one b-value
    iv.save_dwi(dwi, ph.b_values, np.eye(4), folder / "n.nii.gz", folder / "n.bval")
    code, err = _run(capsys, "fit", folder / "n.nii.gz", "--bvals", folder / "n.bval", "--out", folder / "o",
                     "--method", "lsq", "--mask", _mask(folder, ph.labels > 0))
    assert code == 0 and "3 voxel(s) in the mask excluded" in err
    summary = json.loads((folder / "o" / "summary.json").read_text())
    assert summary["excluded_voxels"] == 3 and summary["voxels"] == int((ph.labels > 0).sum()) - 3
    fp = nib.load(folder / "o" / "Fp.nii.gz").get_fdata()
    assert all(fp[tuple(v)] == 0 for v in body)


def _mask(folder, mask):
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), folder / "m.nii.gz")
    return folder / "m.nii.gz"


def test_ctrl_c_exits_130_and_writes_nothing(scan, capsys, monkeypatch):
    folder, _, _ = scan
    out = folder / "o"
    assert cli(["fit", str(folder / "d.nii.gz"), "--bvals", str(folder / "d.bval"), "--out", str(out),
                "--method", "lsq"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(iv.plots, "save_figure", interrupted)  # while writing the outputs
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--out", out,
                     "--method", "segmented")
    assert code == 130 and len(err.splitlines()) == 1 and "interrupted" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_disk_full_is_one_line_and_leaves_nothing(scan, capsys, monkeypatch):
    folder, _, _ = scan

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib, "save", full)
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--out", folder / "o",
                     "--method", "lsq")
    _one_line_error(code, err, "No space left on device")
    assert not (folder / "o").exists() and not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_corrupt_checkpoint_is_one_line(scan, capsys):
    folder, ph, _ = scan
    model = iv.save_model(iv.IVIMNet(np.unique(ph.b_values), seed=0), folder / "net.pt")
    raw = bytearray(model and (folder / "net.pt").read_bytes())
    (folder / "half.pt").write_bytes(bytes(raw[: len(raw) // 2]))
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--out", folder / "o",
                     "--model", folder / "half.pt")
    _one_line_error(code, err, "half.pt")


def test_non_integer_b_values_are_kept(tmp_path):
    data = np.ones((2, 2, 1, 5), np.float32)
    (tmp_path / "b").write_text("0 2.5 2.5 999.6 1000.4")
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "d.nii.gz")
    dwi, b, _ = iv.load_dwi(tmp_path / "d.nii.gz", tmp_path / "b")
    np.testing.assert_allclose(b, [0, 2.5, 1000.0])
    assert dwi.shape == (2, 2, 1, 3)


@pytest.mark.parametrize("factor", [1e6, 1e-3])
def test_api_refuses_b_values_in_other_units(factor):
    signals, _ = iv.training_data(10, seed=0)
    with pytest.raises(ValueError, match="s/mm\\^2"):
        iv.fit_lsq(signals, iv.SEED_B_VALUES * factor)
    with pytest.raises(ValueError, match="s/mm\\^2"):
        iv.IVIMNet(iv.SEED_B_VALUES * factor)


def test_network_bounds_with_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="unknown key 'fp'"):
        iv.IVIMNetOptim(iv.SEED_B_VALUES, bounds={"fp": (0, 1)})
    assert iv.IVIMNetOptim(iv.SEED_B_VALUES, bounds={"f": (0, 1)}).options["bounds"]["Fp"] == [0, 1]  # OSIPI's name


def test_help_loads_neither_torch_nor_matplotlib():
    import subprocess
    import sys

    code = ("import runpy, sys; sys.argv = ['ivim_demo', '--help']\n"
            "try:\n    runpy.run_module('ivim_demo', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "usage:" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_invalid_voxels_become_nan_and_leave_the_others_alone(trained_net):
    signals, _ = iv.training_data(300, sigma=0.02, seed=3)
    bad = signals.copy()
    bad[5, 3], bad[17, 0], bad[40, 6] = -0.01, 0.0, np.nan  # a real-valued sample, no S(b=0), a NaN
    net, _ = trained_net
    fits = {"lsq": lambda s, **k: iv.fit_lsq(s, iv.SEED_B_VALUES, **k),
            "segmented": lambda s, **k: iv.fit_segmented(s, iv.SEED_B_VALUES, **k),
            "bayes": lambda s, **k: iv.fit_bayes(s, iv.SEED_B_VALUES, sigma=0.02, grid=(10, 10, 10), **k),
            "predict": lambda s, **k: iv.predict(net, s, **k)}
    keep = np.ones(300, bool)
    keep[[5, 17, 40]] = False
    for name, fit in fits.items():
        with pytest.raises(ValueError):
            fit(bad)
        est = fit(bad, invalid="nan")
        alone = fit(signals[keep])  # the same 297 voxels in one call as invalid="nan" fits: the same shapes
        for got, ref in zip(est, alone):
            assert np.isnan(got[~keep]).all(), name
            np.testing.assert_allclose(got[keep], ref, rtol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="invalid must be"):
        iv.fit_lsq(signals, iv.SEED_B_VALUES, invalid="drop")


def test_out_holding_other_files_is_refused_and_kept(scan, capsys):
    folder, _, _ = scan
    (folder / "notes.txt").write_text("mine")
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--out", folder,
                     "--method", "lsq")
    _one_line_error(code, err, "did not write")
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "d.nii.gz").is_file()


def test_mask_on_another_grid_is_refused(scan, capsys):
    folder, ph, _ = scan
    flipped = np.diag([-1.0, 1, 1, 1])
    flipped[0, 3] = 15
    nib.save(nib.Nifti1Image((ph.labels[::-1] > 0).astype(np.uint8), flipped), folder / "m.nii.gz")
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--mask",
                     folder / "m.nii.gz", "--out", folder / "o", "--method", "lsq")
    _one_line_error(code, err, "voxel grid")


@pytest.fixture()
def big_scan(tmp_path):
    ph = iv.anatomical_phantom((32, 32, 2), directions=1, seed=9)
    iv.save_dwi(ph.dwi, ph.b_values, np.eye(4), tmp_path / "d.nii.gz", tmp_path / "d.bval")
    return tmp_path, ph, None


def test_too_few_voxels_to_train_on_is_one_clear_line(scan, capsys):
    folder, _, _ = scan
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--out", folder / "o",
                     "--method", "ivimnet")
    _one_line_error(code, err, "at least 500 masked voxels", "supervised")


def test_model_of_another_method_is_refused(big_scan, capsys, tmp_path):
    folder, ph, _ = big_scan
    code = cli(["fit", str(folder / "d.nii.gz"), "--bvals", str(folder / "d.bval"), "--out", str(tmp_path / "a"),
                "--method", "ivimnet", "--max-epochs", "2", "--no-progress"])
    assert code == 0
    capsys.readouterr()
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--out", tmp_path / "b",
                     "--model", tmp_path / "a" / "ivimnet.pt", "--method", "supervised")
    _one_line_error(code, err, "ivimnet network")
    assert cli(["fit", str(folder / "d.nii.gz"), "--bvals", str(folder / "d.bval"), "--out", str(tmp_path / "c"),
                "--model", str(tmp_path / "a" / "ivimnet.pt")]) == 0
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["method"] == "ivimnet" and summary["model"].endswith("ivimnet.pt")


def test_sigma_without_bayes_and_too_few_b_values_are_refused(scan, capsys):
    folder, ph, _ = scan
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--out", folder / "o",
                     "--method", "lsq", "--sigma", "0.1")
    _one_line_error(code, err, "--sigma")
    keep = np.isin(ph.b_values, [0, 10, 150, 1000])
    iv.save_dwi(ph.dwi[..., keep], ph.b_values[keep], np.eye(4), folder / "f.nii.gz", folder / "f.bval")
    code, err = _run(capsys, "fit", folder / "f.nii.gz", "--bvals", folder / "f.bval", "--out", folder / "o",
                     "--method", "ivimnet")
    _one_line_error(code, err, "at least 5 distinct b-values")


def test_failed_run_leaves_no_new_parent_folders_and_outputs_are_readable(scan, capsys):
    import os
    import stat

    folder, _, _ = scan
    code, err = _run(capsys, "fit", folder / "missing.nii.gz", "--bvals", folder / "d.bval", "--out",
                     folder / "new" / "deep" / "maps")
    assert code == 2 and not (folder / "new").exists()
    assert cli(["fit", str(folder / "d.nii.gz"), "--bvals", str(folder / "d.bval"), "--out", str(folder / "o"),
                "--method", "lsq"]) == 0
    mode = stat.S_IMODE(os.stat(folder / "o").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask


@pytest.mark.parametrize("delay", [0.3, 1.5])  # while torch and matplotlib load, and later
def test_sigterm_cleans_up_like_ctrl_c(big_scan, delay):
    import signal
    import subprocess
    import sys
    import time

    folder, _, _ = big_scan
    proc = subprocess.Popen([sys.executable, "-m", "ivim_demo", "fit", str(folder / "d.nii.gz"), "--bvals",
                             str(folder / "d.bval"), "--out", str(folder / "o"), "--method", "ivimnet",
                             "--no-progress"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".o.partial") for p in folder.iterdir()):
        time.sleep(0.1)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not (folder / "o").exists() and not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_api_refuses_what_is_not_a_network_and_a_net_with_a_classical_method(scan):
    _, _, ex = scan
    keep = iv.make_mask(ex.dwi)
    for net, method in (("file.pt", "ivimnet"), (iv.IVIMNet(ex.b_values), "lsq")):
        with pytest.raises(ValueError):
            iv.fit_volume(ex.dwi, ex.b_values, keep, method=method, net=net)
    with pytest.raises(ValueError, match="path"):
        iv.load_dwi(None, "x.bval")
    with pytest.raises(ValueError, match="method must be"):
        iv.make_mask(ex.dwi, method=None)
    with pytest.raises(ValueError, match="complex"):
        iv.make_mask(ex.dwi.astype(np.complex64))
    nan_mask = np.where(keep, 1.0, np.nan)  # NaN is outside, as in make_mask and the command line
    fit = iv.fit_volume(ex.dwi, ex.b_values, nan_mask, method="lsq")
    assert fit.info["voxels"] == int(keep.sum())


# --- round three: numbers out of range -----------------------------------------------------------------

def test_network_reads_signals_of_any_scale(trained_net):
    """B7: signals x 1e297 overflowed float32 before the division by S(b=0): all-NaN maps, no error."""
    net, _ = trained_net
    S, _ = iv.training_data(50, sigma=0.02, seed=3)
    small, huge = iv.predict(net, S), iv.predict(net, S * 1e297)
    assert np.isfinite(huge.Dt).all()
    np.testing.assert_allclose(huge.Dt, small.Dt, rtol=1e-6, atol=0)  # the same normalised input


def test_damaged_weights_are_refused_not_mapped_to_nan(trained_net):
    """B8: a checkpoint whose checksum is valid but whose weights are x 1e30 gave all-NaN maps silently."""
    net, _ = trained_net
    damaged = iv.IVIMNet(iv.SEED_B_VALUES)
    damaged.load_state_dict({k: v * 1e30 if k.endswith("weight") else v for k, v in net.state_dict().items()})
    S, _ = iv.training_data(20, sigma=0.02, seed=3)
    with pytest.raises(ValueError, match="weights are damaged"):
        iv.predict(damaged, S)


def test_noise_far_outside_a_network_s_range_is_warned(trained_net):
    """B9: sigma 1e9 or 1e-9 gave a constant map with no word; B10: a numpy float interval was refused."""
    net = iv.load_pretrained()
    S, _ = iv.training_data(50, sigma=0.02, seed=3)
    for sigma in (1e9, 1e-9):
        with pytest.warns(UserWarning, match="outside the range this network was trained on"):
            iv.predict(net, S, b_values=iv.SEED_B_VALUES, sigma=sigma)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SNR 50, inside 5-200: no warning
        post = iv.predict(net, S, b_values=iv.SEED_B_VALUES, sigma=0.02, interval=np.float32(0.9))
    assert isinstance(post, iv.Posterior)


@pytest.mark.parametrize("scale", [1e-300, 1e297])
def test_bayes_fits_signals_of_any_scale_and_refuses_sigmas_it_cannot_resolve(scale):
    """B6: sigma 1e-200 hung, 1e-8 ran out of memory, 1e300 overflowed; signals x 1e297 hung."""
    S, _ = iv.training_data(20, sigma=0.05, seed=2)
    one = iv.fit_bayes(S, iv.SEED_B_VALUES, sigma=0.05, grid=(12, 12, 12), interval=0.9)
    scaled = iv.fit_bayes(S * scale, iv.SEED_B_VALUES, sigma=0.05 * scale, grid=(12, 12, 12), interval=0.9)
    np.testing.assert_allclose(scaled.mean.Dt, one.mean.Dt, rtol=1e-6)
    np.testing.assert_allclose(scaled.mean.S0, one.mean.S0 * scale, rtol=1e-6)
    for sigma in (1e300, 1e-200, 1e-8):
        with pytest.raises(ValueError, match=r"fit_bayes works for SNRs from 0.01 to 1e\+06"):
            iv.fit_bayes(S, iv.SEED_B_VALUES, sigma=sigma)


def test_bayes_sigma_far_out_of_range_is_one_line(scan, capsys):
    """B5: --sigma 1e300 ended in an OverflowError traceback, exit 1."""
    folder, _, _ = scan
    code, err = _run(capsys, "fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--out", folder / "o",
                     "--method", "bayes", "--sigma", "1e300", "--no-progress")
    _one_line_error(code, err, "SNR", "0.01 to 1e+06")
    assert not (folder / "o").exists()


def test_typed_arguments_are_refused_by_name(tmp_path):
    """B14: type errors leaked as TypeError, RuntimeError, AttributeError or FileExistsError."""
    net = iv.IVIMNet(iv.SEED_B_VALUES)
    S, truth = iv.training_data(300, sigma=0.05, seed=1)
    for kwargs, name in (({"lr": "0.001"}, "lr"), ({"seed": 1.5}, "seed"), ({"seed": None}, "seed"),
                         ({"validation_fraction": "0.1"}, "validation_fraction")):
        with pytest.raises(ValueError, match=name):
            iv.train(net, S, max_epochs=1, progress=False, **kwargs)
    with pytest.raises(ValueError, match="targets must be an IVIMParams"):
        iv.train(iv.IVIMNetOptim(iv.SEED_B_VALUES), S, targets=(truth.Dp, truth.Dt, truth.Fp), max_epochs=1,
                 progress=False)
    with pytest.raises(ValueError, match="seed must be"):
        iv.phantom(seed="abc")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        iv.save_model(net, tmp_path / "file" / "net.pt")
    with pytest.raises(ValueError, match="width must be"):
        iv.IVIMNetOptim(iv.SEED_B_VALUES, width=0)


# --- round three: outputs -------------------------------------------------------------------------------

def _lsq(folder, out):
    return ("fit", folder / "d.nii.gz", "--bvals", folder / "d.bval", "--out", out, "--method", "lsq",
            "--no-progress")


def test_out_that_is_a_symlink_gets_the_outputs_in_its_target(scan, capsys):
    """B2: a symlinked --out was replaced by a real folder, leaving its target empty."""
    folder, _, _ = scan
    (folder / "real").mkdir()
    (folder / "link").symlink_to(folder / "real")
    code, err = _run(capsys, *_lsq(folder, folder / "link"))
    assert code == 0, err
    assert (folder / "link").is_symlink() and (folder / "real" / "Dt.nii.gz").is_file()
    assert not [p for p in os.listdir(folder) if p.startswith(".")]


def _no_fitting(monkeypatch):
    from ivim_demo.imaging import image_fit

    def refuse(*args, **kwargs):
        raise AssertionError("fitting started before --out was checked")

    monkeypatch.setattr(image_fit, "fit_volume", refuse)


def test_out_that_is_a_mount_point_is_refused_before_fitting(scan, capsys, monkeypatch):
    """B3: a mount point failed with "Device or resource busy" after the whole fit."""
    from ivim_demo.imaging import outputs

    folder, _, _ = scan
    (folder / "mnt").mkdir()
    real = os.path.ismount
    monkeypatch.setattr(outputs.os.path, "ismount", lambda p: p == str(folder / "mnt") or real(p))
    _no_fitting(monkeypatch)
    code, err = _run(capsys, *_lsq(folder, folder / "mnt"))
    _one_line_error(code, err, "mount point")


def test_out_that_cannot_be_replaced_is_refused_before_fitting(scan, capsys, monkeypatch):
    """B4: an immutable --out (chattr +i) was refused only after training, leaving .out.old-* behind."""
    from ivim_demo.imaging import outputs

    folder, _, _ = scan
    (folder / "o").mkdir()
    real = os.rename

    def immutable(src, dst):
        if str(src) == str(folder / "o"):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "rename", immutable)
    _no_fitting(monkeypatch)
    code, err = _run(capsys, *_lsq(folder, folder / "o"))
    _one_line_error(code, err, "cannot be replaced", "Operation not permitted")
    assert sorted(os.listdir(folder)) == ["d.bval", "d.nii.gz", "o"]


def test_signal_while_publishing_leaves_the_new_outputs_and_says_so(scan, capsys, monkeypatch):
    """B1: a signal between the two renames left --out missing, the previous outputs in a hidden folder, and
    "nothing was written"."""
    import signal

    from ivim_demo.imaging import outputs

    folder, _, _ = scan
    assert _run(capsys, *_lsq(folder, folder / "o"))[0] == 0
    before = (folder / "o" / "summary.json").read_text()
    real = os.rename

    def interrupted(src, dst):
        if ".partial-" in str(src):  # the new outputs move into place: Ctrl-C now
            os.kill(os.getpid(), signal.SIGINT)
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "rename", interrupted)
    code, err = _run(capsys, *_lsq(folder, folder / "o"))
    assert code == 130 and "after the outputs were written" in err, err
    assert (folder / "o" / "summary.json").read_text() != before  # the new run's (it records its time)
    assert sorted(os.listdir(folder)) == ["d.bval", "d.nii.gz", "o"]


# B12: the automatic mask tells air from tissue by the signal's decay with b, not by one threshold on S(b=0)


def _two_tissues(rng):
    """A field of view filled by two tissues, S0 1000 and 150 (no air): 40 x 80 voxels, SNR 100 in the first."""
    b = iv.SEED_B_VALUES.astype(float)
    s0 = np.where(np.arange(3200) < 1600, 1000.0, 150.0).reshape(40, 80, 1)
    clean = s0 * (0.1 * np.exp(-b * 0.05) + 0.9 * np.exp(-b * 0.001))
    return np.hypot(clean + rng.normal(0, 10, clean.shape), rng.normal(0, 10, clean.shape)), b


def test_mask_keeps_a_dark_tissue_that_fills_half_the_field():
    dwi, b = _two_tissues(np.random.default_rng(0))
    keep, report = iv.make_mask(dwi, b_values=b, return_report=True)
    assert keep.all() and report["background"] is False and report["doubt"] is None
    with pytest.warns(UserWarning, match="doubtful"):  # the same image without b-values above 100 s/mm^2
        assert iv.make_mask(dwi[..., :4], b_values=b[:4]).sum() == 1600


def test_mask_keeps_tissue_in_shadow():
    """A crop of the flow phantom with the upper half of the field 4 x darker (a coil's fall-off)."""
    ex = iv.load_example("phantom_flow")
    tissue = iv.make_mask(ex.dwi, b_values=ex.b_values, warn=False)[28:72, 18:62]
    dwi = ex.dwi[28:72, 18:62].copy()
    dwi[:22] *= 0.25
    keep = iv.make_mask(dwi, b_values=ex.b_values, warn=False)
    assert (iv.make_mask(dwi) & tissue).sum() < 0.9 * tissue.sum()  # by S(b=0) alone (no b-values): cut away
    assert (keep & tissue).sum() >= 0.99 * tissue.sum()
    assert (keep & ~tissue).sum() < 0.5 * (~tissue).sum()  # the rest: air, and the phantom's ringing


def test_mask_drops_air_at_snr_5_and_says_it_is_doubtful():
    ex = iv.phantom_example(snr=5)  # 7,488 air voxels; fat (S0 250) is 2 noise SDs above air
    with pytest.warns(UserWarning, match="doubtful: .* decay with b, but weakly"):
        keep, report = iv.make_mask(ex.dwi, b_values=ex.b_values, return_report=True)
    assert (keep & (ex.rois == 0)).sum() == 0
    assert (keep & (ex.rois >= 2)).sum() == (ex.rois >= 2).sum()  # liver ... tumour, S0 600-1000
    assert (keep & (ex.rois == 1)).sum() < 0.5 * (ex.rois == 1).sum()  # most of the fat goes with the air: doubtful
    assert report["valley"] >= VALLEY_DOUBT  # and the histogram has no gap at the cut either


def _tissues(rng, s0s, dts, counts, sigma=10.0):
    """Voxels of tissues (S0, Dt, Fp 0.2) and air (S0 0), Rician noise, the seed's b-values, as (n, 1, n_b)."""
    b = iv.SEED_B_VALUES.astype(float)
    clean = np.concatenate([np.tile(s0 * (0.2 * np.exp(-b * 0.05) + 0.8 * np.exp(-b * dt)), (n, 1))
                            for s0, dt, n in zip(s0s, dts, counts)])
    return np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape))[:, None], b


@pytest.mark.parametrize("s0s, dts", [((0, 100, 1000), (0, 0.0011, 0.0019)),  # air, liver at SNR 10, kidney
                                      ((0, 300, 3000), (0, 0.0008, 0.003)),  # air, white matter, CSF
                                      ((0, 250, 600), (0, 0.0003, 0.0011))])  # air, fat at SNR 25, liver
def test_mask_keeps_a_slowly_diffusing_tissue_beside_a_fast_one(s0s, dts):
    """A dim tissue whose signal falls less than half as much as the brightest one's is tissue when it is
    well above the noise floor (found by the hostile pass: these were dropped whole, with no doubt)."""
    dwi, b = _tissues(np.random.default_rng(1), s0s, dts, (400, 300, 300))
    keep, report = iv.make_mask(dwi, b_values=b, return_report=True, warn=False)
    assert keep[:400].sum() == 0 and keep[400:].all(), report
    assert report["doubt"] is None and report["noise_floor"] < 20


def test_mask_keeps_two_tissues_without_air_whatever_they_diffuse():
    ph = iv.anatomical_phantom((64, 64, 2), snr=200, seed=0)
    body = ph.dwi[12:52, 14:50]  # liver and fat, no air
    assert (ph.labels[12:52, 14:50] > 0).all()
    keep, report = iv.make_mask(body, b_values=ph.b_values, return_report=True, warn=False)
    assert keep.all() and report["background"] is False and report["doubt"] is None


def test_mask_says_when_it_cannot_tell():
    b = iv.SEED_B_VALUES.astype(float)
    with pytest.warns(UserWarning, match="every voxel was kept"):
        assert iv.make_mask(np.ones((3, 5, len(b))), b_values=b).all()  # one level only
    with pytest.raises(ValueError, match="b_values must be finite"):
        iv.make_mask(np.ones((3, 5, len(b))), b_values=np.r_[b[:-1], np.nan])
    dwi = np.ones((3, 5, len(b)))
    dwi[..., -1] = np.nan
    with pytest.raises(ValueError, match="whole volume NaN"):
        iv.make_mask(dwi, b_values=b)


def test_cli_records_a_doubtful_mask(tmp_path, capsys):
    ph = iv.anatomical_phantom((32, 32, 1), snr=5, directions=3, seed=1)
    iv.save_dwi(ph.dwi, ph.b_values, np.eye(4), tmp_path / "d.nii.gz", tmp_path / "d.bval")
    code, err = _run(capsys, "fit", tmp_path / "d.nii.gz", "--bvals", tmp_path / "d.bval", "--out",
                     tmp_path / "o", "--method", "lsq")
    assert code == 0 and "warning: the automatic mask is doubtful (" in err, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["mask_check"]["doubt"]
    assert any("mask is doubtful" in w for w in summary["warnings"])
    fitted = nib.load(tmp_path / "o" / "fitted_mask.nii.gz").get_fdata() > 0
    assert fitted.sum() == summary["voxels"] and not (fitted & (ph.labels == 0)).any()


@pytest.mark.parametrize("delay", [2.0, 6.0])  # while the workers start, and while they fit
def test_ctrl_c_to_a_dask_cohort_prints_one_line(tmp_path, delay):
    """B13: Ctrl-C reaches the whole process group; the workers leave it to the main process."""
    import signal
    import subprocess
    import sys
    import time

    iv.write_example_study(tmp_path / "study", names=("volunteer1", "volunteer2"))
    proc = subprocess.Popen([sys.executable, "-m", "ivim_demo", "cohort", str(tmp_path / "study"), "--out",
                             str(tmp_path / "o"), "--method", "bayes", "--workers", "2", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["interrupted: the scans already fitted are kept; run the same command again to "
                                "fit the rest"], err
