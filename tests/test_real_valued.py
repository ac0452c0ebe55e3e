"""Real-valued (phase-corrected) data and OSIPI's conventions (#24): Gaussian noise, where negative samples
are legal, and OSIPI's parameter names and bounds."""
import numpy as np
import pytest

import ivim_demo as iv

B = iv.SEED_B_VALUES


def _gaussian(n, sigma, seed):
    p = iv.sample_params(n, seed=seed)
    clean = iv.ivim(B, p.Dp[:, None], p.Dt[:, None], p.Fp[:, None])
    noisy = clean + sigma * np.random.default_rng([seed, 1]).standard_normal(clean.shape)
    noisy[:, 0] = np.abs(noisy[:, 0])  # S(b=0) must stay > 0 to normalise
    return noisy, p


def test_a_single_voxel_with_negative_samples_is_fitted_under_gaussian_noise():
    S, _ = _gaussian(400, 0.1, 3)
    voxel = S[(S < 0).any(axis=1)][:1]
    assert voxel.size and (voxel < 0).any()
    for fit, kwargs in ((iv.fit_lsq, {}), (iv.fit_segmented, {}), (iv.fit_bayes, {"sigma": 0.1, "grid": (12, 12, 12)})):
        with pytest.raises(ValueError, match="noise='gaussian'"):
            fit(voxel, B, **kwargs)
        est = fit(voxel, B, noise="gaussian", **kwargs)
        assert np.isfinite(est.Dt).all() and np.isfinite(est.Fp).all(), fit.__name__
    with pytest.raises(ValueError, match="noise must be 'rician'"):
        iv.fit_lsq(voxel, B, noise="normal")


def test_gaussian_posterior_is_calibrated_on_gaussian_data():
    S, p = _gaussian(600, 0.05, 4)
    post = iv.fit_bayes(S, B, sigma=0.05, noise="gaussian", grid=(24, 24, 24), interval=0.9)
    cover = iv.coverage(post, p)
    assert all(0.85 <= c <= 0.95 for c in cover.values()), cover  # 600 voxels: +-4 binomial SDs
    mixed = S.copy()
    mixed[0, 0] = -1.0  # S(b=0) <= 0 cannot be normalised, whatever the noise
    est = iv.fit_bayes(mixed[:20], B, sigma=0.05, noise="gaussian", grid=(12, 12, 12), invalid="nan")
    assert np.isnan(est.Dt[0]) and np.isfinite(est.Dt[1:]).all()


def test_gaussian_and_rician_posteriors_agree_where_the_noise_cannot_reach_zero():
    """At SNR 100 with signals >= 0.3 a Rician sample is Gaussian to within ~1e-4 of sigma: same posterior."""
    p = iv.sample_params(50, seed=5)
    clean = iv.ivim(B, p.Dp[:, None], p.Dt[:, None], p.Fp[:, None])
    S = iv.add_rician_noise(clean, 0.01, 6)
    a = iv.fit_bayes(S, B, sigma=0.01, grid=(16, 16, 16))
    g = iv.fit_bayes(S, B, sigma=0.01, grid=(16, 16, 16), noise="gaussian")
    for k in ("Dp", "Dt", "Fp"):
        width = iv.PARAMETER_BOX[k][1] - iv.PARAMETER_BOX[k][0]
        assert np.abs(getattr(a, k) - getattr(g, k)).max() < 0.01 * width


def test_osipi_names_and_bounds_are_accepted():
    S, _ = iv.training_data(30, sigma=0.02, seed=1)
    osipi = {"D": (0, 0.005), "f": (0, 1), "Dp": (0.005, 0.2), "S0": (0, 2)}
    ours = {"Dt": (0, 0.005), "Fp": (0, 1), "Dp": (0.005, 0.2), "S0": (0, 2)}
    a, b = iv.fit_lsq(S, B, bounds=osipi), iv.fit_lsq(S, B, bounds=ours)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    net = iv.IVIMNetOptim(B, bounds=osipi)  # an S0 lower bound of 0, as OSIPI's network test
    assert net.options["bounds"]["S0"] == [0.0, 2.0] and net.options["bounds"]["Fp"] == [0.0, 1.0]
    prior = iv.Prior({"D": (0.0003, 0.005), "f": (0, 1), "Dp": (0.005, 0.2)}, log=("Dt",))
    assert prior.box["Dt"] == (0.0003, 0.005)
    with pytest.raises(ValueError, match="both 'D'"):
        iv.fit_lsq(S, B, bounds={"D": (0, 0.005), "Dt": (0, 0.003)})


def test_networks_train_on_and_predict_real_valued_signals():
    S, p = _gaussian(20_000, 0.05, 5)
    negative = (S < 0).any(axis=1)
    assert negative.sum() > 10
    net = iv.IVIMNetOptim(B, seed=0)
    with pytest.raises(ValueError, match="noise='gaussian'"):
        iv.train(net, S, max_epochs=2, progress=False)
    history = iv.train(net, S, noise="gaussian", max_epochs=30, batches_per_epoch=100, progress=False)
    assert not history.warnings
    with pytest.raises(ValueError, match="noise='gaussian'"):
        iv.predict(net, S[negative])
    est = iv.predict(net, S[:2000], noise="gaussian")
    assert np.isfinite(est.Dt).all()
    # a real estimator of Dt: it tracks the truth far better than the prior mean does
    rmse = np.sqrt(np.mean((est.Dt - p.Dt[:2000]) ** 2))
    assert rmse < 0.5 * np.std(p.Dt[:2000]), rmse
    shipped = iv.predict(iv.load_pretrained(), S[:200] * 1000, b_values=B, noise="gaussian", sigma=30.0)
    assert np.isfinite(shipped.Dt).all() and np.isfinite(shipped.Fp).all()


def test_the_command_line_tells_a_real_valued_image_and_fits_it(tmp_path, capsys):
    import json

    from ivim_demo.cli import main as cli

    ph = iv.anatomical_phantom((24, 24, 1), snr=30, directions=2, seed=3)
    clean = iv.ivim(ph.b_values, *(getattr(ph.truth, k)[..., None] for k in ("Dp", "Dt", "Fp", "S0")))
    real = clean + np.random.default_rng(0).normal(0, 20.0, clean.shape)
    iv.save_dwi(real.astype(np.float32), ph.b_values, np.eye(4), tmp_path / "d.nii.gz", tmp_path / "d.bval")
    args = ["fit", str(tmp_path / "d.nii.gz"), "--bvals", str(tmp_path / "d.bval"), "--method", "bayes",
            "--no-progress"]
    assert cli(args + ["--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["noise"] == "gaussian" and "negative samples" in summary["noise_from"]
    assert summary["average"] == "arithmetic" and summary["excluded_voxels"] == 0
    assert summary["voxels"] == int((ph.labels > 0).sum())  # the body, air left out, no voxel lost to a sign
    # read as a magnitude image, every voxel with a negative sample is excluded (and counted)
    assert cli(args + ["--out", str(tmp_path / "m"), "--noise", "rician"]) == 0
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["excluded_voxels"] > 100
    capsys.readouterr()
    assert cli(args + ["--out", str(tmp_path / "g"), "--average", "geometric"]) == 2
    assert "averaged geometrically" in capsys.readouterr().err


def test_read_scan_keeps_negative_samples_of_real_valued_images(tmp_path):
    b = np.array([0, 0, 100, 100, 500, 500.0])
    data = np.array([[[[1.0, 1.2, 0.6, 0.5, -0.05, 0.07]]]], dtype=np.float32)
    iv.save_dwi(data, b, np.eye(4), tmp_path / "d.nii.gz", tmp_path / "d.bval")
    scan = iv.read_scan(tmp_path / "d.nii.gz", tmp_path / "d.bval")
    assert scan.noise == "gaussian" and scan.average == "arithmetic"
    np.testing.assert_allclose(scan.dwi[0, 0, 0], [1.1, 0.55, 0.01], rtol=1e-6)
    magnitude = iv.read_scan(tmp_path / "d.nii.gz", tmp_path / "d.bval", noise="rician")
    assert np.isnan(magnitude.dwi[0, 0, 0, 2]) and magnitude.average == "geometric"
    keep = iv.make_mask(scan.dwi, noise="gaussian", warn=False)
    assert keep.all()
