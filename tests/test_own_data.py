"""The real-data path: NIfTI in, masks, whole-volume fits, maps out, command line."""
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import ivim_demo as iv

B = iv.SEED_B_VALUES
AFFINE = np.array([[1.5, 0, 0, -40], [0, 1.5, 0, -30], [0, 0, 5, 10], [0, 0, 0, 1.0]])


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """The anatomical phantom written as a scanner export: 3 directions per b > 0."""
    folder = tmp_path_factory.mktemp("scan")
    ph = iv.anatomical_phantom((32, 32, 2), snr=100, directions=3, seed=4)
    iv.save_dwi(ph.dwi, ph.b_values, AFFINE, folder / "dwi.nii.gz", folder / "dwi.bval")
    return folder, ph


def test_load_dwi_averages_directions_and_keeps_geometry(scan):
    folder, ph = scan
    dwi, b, affine = iv.load_dwi(folder / "dwi.nii.gz", folder / "dwi.bval")
    assert dwi.shape == (32, 32, 2, 8)
    np.testing.assert_array_equal(b, B)
    np.testing.assert_allclose(affine, AFFINE)
    k = 3  # b = 60: the geometric mean of its three direction volumes
    vols = ph.dwi[..., ph.b_values == B[k]].astype(float)
    np.testing.assert_allclose(dwi[..., k], np.exp(np.log(vols).mean(axis=-1)), rtol=1e-5)
    np.testing.assert_allclose(dwi[..., 0], ph.dwi[..., 0], rtol=1e-6)
    arith, _, _ = iv.load_dwi(folder / "dwi.nii.gz", folder / "dwi.bval", average="arithmetic")
    np.testing.assert_allclose(arith[..., k], vols.mean(axis=-1), rtol=1e-5)


def test_load_dwi_sorts_shuffled_volumes(tmp_path):
    ph = iv.anatomical_phantom((16, 16, 1), seed=1)
    order = np.array([3, 0, 7, 1, 5, 2, 6, 4])
    iv.save_dwi(ph.dwi[..., order], ph.b_values[order], np.eye(4), tmp_path / "d.nii.gz", tmp_path / "b.txt")
    dwi, b, _ = iv.load_dwi(tmp_path / "d.nii.gz", tmp_path / "b.txt")
    np.testing.assert_array_equal(b, B)
    np.testing.assert_allclose(dwi, ph.dwi, rtol=1e-6)


def _write(tmp_path, data, bvals):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4)), tmp_path / "d.nii.gz")
    (tmp_path / "b.txt").write_text(" ".join(str(b) for b in bvals))
    return tmp_path / "d.nii.gz", tmp_path / "b.txt"


@pytest.mark.parametrize(
    "data_shape, bvals, message",
    [
        ((4, 4, 2), [0, 10], "must be 4-D"),
        ((4, 4, 1, 3), [0, 10], "one b-value per volume"),
        ((4, 4, 1, 2), [10, 20], "no b=0 volume"),
        ((4, 4, 1, 2), [0, -20], "finite and >= 0"),
    ],
)
def test_load_dwi_bad_input(tmp_path, data_shape, bvals, message):
    img, bv = _write(tmp_path, np.ones(data_shape), bvals)
    with pytest.raises(ValueError, match=message):
        iv.load_dwi(img, bv)


def test_load_dwi_missing_files(tmp_path):
    img, bv = _write(tmp_path, np.ones((2, 2, 1, 2)), [0, 10])
    with pytest.raises(ValueError, match="DWI image not found"):
        iv.load_dwi(tmp_path / "nope.nii.gz", bv)
    with pytest.raises(ValueError, match="bvals file not found"):
        iv.load_dwi(img, tmp_path / "nope.bval")


def test_mask_excludes_and_counts_invalid_voxels():
    ph = iv.anatomical_phantom((24, 24, 1), seed=2)
    dwi = ph.dwi.copy()
    body = np.argwhere(ph.labels > 0)
    dwi[tuple(body[0])][3] = np.nan
    dwi[tuple(body[1])][0] = 0.0
    dwi[tuple(body[2])][5] = -1.0
    with pytest.warns(UserWarning, match="3 voxel"):
        mask, excluded = iv.make_mask(dwi, mask=ph.labels > 0, return_excluded=True)
    assert excluded == 3
    assert not mask[tuple(body[0])] and not mask[tuple(body[1])] and not mask[tuple(body[2])]
    assert mask.sum() == (ph.labels > 0).sum() - 3
    # Otsu on the b=0 image separates body from air
    assert (iv.make_mask(ph.dwi) == (ph.labels > 0)).mean() > 0.99
    maps = iv.fit_volume(dwi, B, mask, method="segmented").maps
    assert np.isfinite(np.stack(maps)).all()  # no NaN anywhere: excluded voxels are 0
    assert maps.Dt[tuple(body[0])] == 0


def test_mask_errors():
    ph = iv.anatomical_phantom((16, 16, 1), seed=2)
    with pytest.raises(ValueError, match="empty"):
        iv.make_mask(ph.dwi, 1e9)
    with pytest.raises(ValueError, match="mask has shape"):
        iv.make_mask(ph.dwi, mask=np.ones((3, 3, 1), bool))
    with pytest.raises(ValueError, match="empty"):
        iv.fit_volume(ph.dwi, B, np.zeros((16, 16, 1), bool), method="lsq")
    with pytest.raises(ValueError, match="method must be"):
        iv.fit_volume(ph.dwi, B, ph.labels > 0, method="magic")


def test_save_maps_round_trip(tmp_path):
    ph = iv.anatomical_phantom((16, 16, 2), seed=3)
    mask = ph.labels > 0
    paths = iv.save_maps(ph.truth, AFFINE, tmp_path, mask=mask)
    assert set(paths) == {"Dp", "Dt", "Fp", "S0"}
    img = nib.load(paths["Dt"])
    np.testing.assert_allclose(img.affine, AFFINE)
    assert img.shape == (16, 16, 2)
    np.testing.assert_allclose(img.get_fdata()[mask], ph.truth.Dt[mask], rtol=1e-6)
    assert (img.get_fdata()[~mask] == 0).all()


def _cli(*args):
    """Run the command line in this process (fast); returns the exit code."""
    from ivim_demo.cli import main

    return main([str(a) for a in args])


def _median_errors(out, ph, names):
    errs = {}
    for name in names:
        est = nib.load(out / f"{name}.nii.gz").get_fdata()
        for label in (2, 4, 5):  # liver, kidney cortex, pancreas
            true = getattr(iv.TISSUES[label][1], name)
            errs[(name, iv.TISSUES[label][0])] = abs(np.median(est[ph.labels == label]) - true) / true
    return errs


def test_cli_lsq_end_to_end(scan, tmp_path):
    folder, ph = scan
    out = tmp_path / "lsq"
    assert _cli("fit", folder / "dwi.nii.gz", "--bvals", folder / "dwi.bval", "--out", out, "--method", "lsq") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "lsq" and summary["voxels"] == int((ph.labels > 0).sum())
    assert summary["b_values"] == B.tolist() and summary["excluded_voxels"] == 0
    assert (out / "overview.png").stat().st_size > 10_000
    for key, err in _median_errors(out, ph, ["Dt", "Fp"]).items():  # SNR 100: within 5 % / 15 %
        assert err < (0.05 if key[0] == "Dt" else 0.15), (key, err)


def test_cli_ivimnet_with_a_trained_model(scan, tmp_path, trained_net):
    folder, ph = scan
    model = iv.save_model(trained_net[0], tmp_path / "net.pt")
    out = tmp_path / "net"
    assert _cli("fit", folder / "dwi.nii.gz", "--bvals", folder / "dwi.bval", "--out", out, "--model", model,
                "--no-progress") == 0
    assert not list(out.glob("*.pt"))  # the given model is used, not retrained
    assert json.loads((out / "summary.json").read_text())["method"] == "ivimnet"  # read off the model
    errs = _median_errors(out, ph, ["Dt", "Fp"])
    # the seed net after a short training on the box: Dt within 45 % in all three tissues, Fp within 25 % in liver
    # and pancreas; kidney cortex (Dt 1.9e-3, at the box's edge) is left out for Fp. Measured over 5 training seeds
    # of the fixture on 4 numeric paths (which send the training elsewhere, as another seed does): Dt 5-35 %
    # (this seed 13-26 %), Fp 2-12 %; an untrained net: Dt 1300-35000 %, Fp 17-280 %
    assert max(errs[("Dt", t)] for t in ("liver", "kidney cortex", "pancreas")) < 0.45, errs
    assert max(errs[("Fp", t)] for t in ("liver", "pancreas")) < 0.25, errs


def test_cli_trains_on_the_data_reproducibly(scan, tmp_path):
    folder, ph = scan
    maps = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert _cli("fit", folder / "dwi.nii.gz", "--bvals", folder / "dwi.bval", "--out", out,
                    "--method", "ivimnet", "--seed", 3, "--max-epochs", 5, "--no-progress") == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["epochs"] == 5 and summary["voxels"] == int((ph.labels > 0).sum())
        assert iv.load_model(out / "ivimnet.pt").settings()["b_values"] == B.tolist()
        maps.append(nib.load(out / "Fp.nii.gz").get_fdata())
    np.testing.assert_array_equal(maps[0], maps[1])


def test_cli_refuses_model_for_other_b_values(scan, tmp_path, capsys):
    folder, _ = scan
    model = iv.save_model(iv.IVIMNet([0, 50, 100, 200, 400, 800], seed=0), tmp_path / "other.pt")
    code = _cli("fit", folder / "dwi.nii.gz", "--bvals", folder / "dwi.bval", "--out", tmp_path / "o",
                "--model", model)
    err = capsys.readouterr().err
    assert code == 2
    assert "trained on b-values" in err and len(err.strip().splitlines()) == 1


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    """As a user runs it: a separate process, exit code 2, one line, no traceback."""
    img, bv = _write(tmp_path, np.ones((4, 4, 1, 3)), [0, 10])
    proc = subprocess.run([sys.executable, "-m", "ivim_demo", "fit", str(img), "--bvals", str(bv), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: 2 b-values in '{bv}' but 3 volumes in the image; "
                                   "there must be one b-value per volume.")


def test_cli_missing_file(tmp_path, capsys):
    assert _cli("fit", tmp_path / "missing.nii.gz", "--bvals", tmp_path / "b", "--out", tmp_path / "o") == 2
    assert capsys.readouterr().err.startswith("error: DWI image not found")


def test_cli_reports_excluded_voxels(tmp_path, capsys):
    ph = iv.anatomical_phantom((16, 16, 1), seed=5)
    dwi = ph.dwi.copy()
    dwi[8, 8, 0, 2] = np.nan
    iv.save_dwi(dwi, ph.b_values, np.eye(4), tmp_path / "d.nii.gz", tmp_path / "b.txt")
    code = _cli("fit", tmp_path / "d.nii.gz", "--bvals", tmp_path / "b.txt", "--out", tmp_path / "o",
                "--method", "segmented")
    assert code == 0
    assert "1 voxel(s) in the mask excluded" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["excluded_voxels"] == 1
    assert nib.load(tmp_path / "o" / "Dt.nii.gz").get_fdata()[8, 8, 0] == 0


def test_anatomical_phantom_truth():
    ph = iv.anatomical_phantom((32, 32, 3), snr=1e9, variation=0.0, seed=0)
    assert ph.dwi.shape == (32, 32, 3, 8) and ph.labels.shape == (32, 32, 3)
    assert set(np.unique(ph.labels)) == set(iv.TISSUES)
    for label, (name, values) in iv.TISSUES.items():
        inside = ph.labels == label
        np.testing.assert_allclose(ph.truth.Dt[inside], values.Dt)
        expected = iv.ivim(B, values.Dp, values.Dt, values.Fp, values.S0)
        np.testing.assert_allclose(ph.dwi[inside].mean(axis=0), expected, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="snr"):
        iv.anatomical_phantom(snr=0)


# --- posterior SD maps (--method bayes) ------------------------------------------------------------------------------

SD_TRUTH = iv.IVIMParams(0.05, 0.0012, 0.2, 500.0)
SD_SIGMA = 10.0  # signal units: SNR 50 at b = 0


@pytest.fixture(scope="module")
def uniform_scan(tmp_path_factory):
    """A 14 x 14 x 1 image whose inner 10 x 10 voxels are one tissue (so each is a noise realisation of the
    same truth), Rician noise of SD_SIGMA; the rim is noise only and outside the mask file."""
    folder = tmp_path_factory.mktemp("uniform")
    rng = np.random.default_rng(8)
    mask = np.zeros((14, 14, 1), bool)
    mask[2:12, 2:12] = True
    clean = np.where(mask[..., None], SD_TRUTH.S0 * iv.ivim(B, SD_TRUTH.Dp, SD_TRUTH.Dt, SD_TRUTH.Fp), 0.0)
    dwi = np.hypot(clean + rng.normal(0, SD_SIGMA, clean.shape), rng.normal(0, SD_SIGMA, clean.shape))
    iv.save_dwi(dwi, B, AFFINE, folder / "dwi.nii.gz", folder / "dwi.bval")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), folder / "mask.nii.gz")
    return folder, mask


def test_cli_bayes_writes_posterior_sd_maps(uniform_scan, tmp_path):
    from PIL import Image

    folder, mask = uniform_scan
    out = tmp_path / "bayes"
    assert _cli("fit", folder / "dwi.nii.gz", "--bvals", folder / "dwi.bval", "--mask", folder / "mask.nii.gz",
                "--out", out, "--method", "bayes", "--sigma", SD_SIGMA, "--no-progress") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sigma"] == SD_SIGMA and summary["voxels"] == mask.sum()
    assert summary["sd_maps"]["maps"] == ["Dp_sd", "Dt_sd", "Fp_sd"]
    assert "posterior SD" in summary["sd_maps"]["what"] and "Rician" in summary["sd_maps"]["what"]
    for name in ("Dp", "Dt", "Fp"):
        assert summary["outputs"][f"{name}_sd"] == str(out.resolve() / f"{name}_sd.nii.gz")
        img = nib.load(out / f"{name}_sd.nii.gz")
        np.testing.assert_allclose(img.affine, AFFINE)
        sd, est = img.get_fdata(), nib.load(out / f"{name}.nii.gz").get_fdata()
        assert sd.shape == mask.shape
        assert np.isfinite(sd).all() and (sd[mask] > 0).all()
        assert (sd[~mask] == 0).all()  # as the maps: 0 outside the fitted voxels
        lo, hi = iv.IN_VIVO_BOX[name]
        assert (sd[mask] < (hi - lo) / 2).all()  # an SD on [lo, hi] cannot exceed half its width
        # one tissue: the spread of the estimates over the voxels is their spread over noise realisations,
        # which the posterior SD should match within a few times (measured: 0.8-1.0 times for all three)
        ratio = np.median(sd[mask]) / est[mask].std()
        assert 1 / 3 < ratio < 3, (name, ratio)
    lsq = tmp_path / "lsq"
    assert _cli("fit", folder / "dwi.nii.gz", "--bvals", folder / "dwi.bval", "--mask", folder / "mask.nii.gz",
                "--out", lsq, "--method", "lsq") == 0
    assert not list(lsq.glob("*_sd.nii.gz")) and "sd_maps" not in json.loads((lsq / "summary.json").read_text())
    # the overview has a second row (the posterior SDs): twice as tall as a one-row overview
    tall, short = (Image.open(d / "overview.png").size[1] for d in (out, lsq))
    assert tall > 1.7 * short


def test_cli_supervised_writes_posterior_sd_maps(uniform_scan, tmp_path, capsys):
    """--method supervised (the default) trains an IVIMNetUncertainty for the scan: its SD maps are written like
    bayes's, its checkpoint reproduces them, and it is refused for other b-values."""
    folder, mask = uniform_scan
    out = tmp_path / "sup"
    args = ("fit", folder / "dwi.nii.gz", "--bvals", folder / "dwi.bval", "--mask", folder / "mask.nii.gz")
    assert _cli(*args, "--out", out, "--method", "supervised", "--max-epochs", 10, "--no-progress") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["network"] == "IVIMNetUncertainty" and summary["epochs"] == 10
    assert summary["noise_sd"] == pytest.approx(SD_SIGMA, rel=0.15)  # estimated from the scan, signal units
    assert summary["sd_maps"]["maps"] == ["Dp_sd", "Dt_sd", "Fp_sd"] and "posterior SD" in summary["sd_maps"]["what"]
    sds = {}
    for name in ("Dp", "Dt", "Fp"):
        sd, est = (nib.load(out / f"{name}{s}.nii.gz").get_fdata() for s in ("_sd", ""))
        assert sd.shape == mask.shape
        assert np.isfinite(sd).all() and (sd[mask] > 0).all()
        assert (sd[~mask] == 0).all()  # as the maps: 0 outside the fitted voxels
        lo, hi = iv.IN_VIVO_BOX[name]
        assert (sd[mask] < (hi - lo) / 2).all()
        # one tissue: the spread of the estimates over the voxels is their spread over noise realisations
        # (measured after 10 epochs: 0.62-1.43 times over 5 seeds on 4 numeric paths; trained to convergence 0.87-1.30)
        ratio = np.median(sd[mask]) / est[mask].std()
        assert 1 / 3 < ratio < 3, (name, ratio)
        sds[name] = sd
    from PIL import Image  # the overview has the row of posterior SDs: twice as tall as lsq's one row

    assert _cli(*args, "--out", tmp_path / "lsq", "--method", "lsq") == 0
    assert Image.open(out / "overview.png").size[1] > 1.7 * Image.open(tmp_path / "lsq" / "overview.png").size[1]
    # the checkpoint: the same network, the same noise (estimated from the same voxels), the same SD maps
    net = iv.load_model(out / "supervised.pt")
    assert type(net).__name__ == "IVIMNetUncertainty" and net.history["recipe"] == "supervised"
    again = tmp_path / "again"
    assert _cli(*args, "--out", again, "--model", out / "supervised.pt") == 0
    for name in ("Dp", "Dt", "Fp"):
        np.testing.assert_array_equal(nib.load(again / f"{name}_sd.nii.gz").get_fdata(), sds[name])
    dwi = nib.load(folder / "dwi.nii.gz").get_fdata()
    with pytest.raises(ValueError, match="trained on b-values"):
        iv.fit_volume(dwi[..., :-1], B[:-1], mask, method="supervised", net=net)


def test_cli_refuses_a_sigma_relative_to_s0(uniform_scan, tmp_path, capsys):
    folder, _ = uniform_scan
    code = _cli("fit", folder / "dwi.nii.gz", "--bvals", folder / "dwi.bval", "--mask", folder / "mask.nii.gz",
                "--out", tmp_path / "o", "--method", "bayes", "--sigma", SD_SIGMA / SD_TRUTH.S0)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "signal units" in err
    suggested = float(err.split("give sigma=")[1].split(",")[0])  # the relative noise times the median S(b=0)
    assert suggested == pytest.approx(SD_SIGMA, rel=0.02)
    assert not (tmp_path / "o").exists()


def test_fit_volume_bayes_recovers_the_phantom():
    """The default Bayes (exact posterior, sigma in signal units) on the seed's phantom: Dt of every region."""
    dwi, _ = iv.phantom(sigma=15.0, seed=3)
    labels = iv.phantom_regions()[::4, ::4]
    dwi = dwi[::4, ::4]
    fit = iv.fit_volume(dwi, B, np.ones(dwi.shape[:-1], bool), method="bayes", sigma=15.0, progress=False)
    assert fit.info["sigma"] == 15.0 and fit.sd is not None and fit.sd.Dt.shape == dwi.shape[:-1]
    for region, ref in enumerate(iv.PHANTOM_REGIONS):
        inside = labels == region
        assert np.median(fit.maps.Dt[inside]) == pytest.approx(ref.Dt, rel=0.1), region
        assert 0 < np.median(fit.sd.Dt[inside]) < 0.5 * ref.Dt  # SNR ~100: Dt known to well within its value
    estimated = iv.fit_volume(dwi, B, np.ones(dwi.shape[:-1], bool), method="bayes", progress=False)
    assert estimated.info["sigma"] == pytest.approx(15.0, rel=0.15)  # estimate_sigma(absolute=True): signal units
