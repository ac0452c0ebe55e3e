"""Two halves of a series (split_halves, read_scan(half=), fit --half) and the within-subject CV."""
import json

import numpy as np
import pytest

import ivim_demo as iv

SHIPPED = np.loadtxt(iv.load_example("volunteer1").paths["bvals"])


def test_split_halves_of_the_shipped_series():
    first, second = iv.split_halves(SHIPPED)
    assert not set(first) & set(second)
    b = np.round(SHIPPED)
    for value in np.unique(b):
        n_a, n_b = (b[first] == value).sum(), (b[second] == value).sum()
        assert n_a == n_b == (6 if value == 0 else 3), value
    # b > 0: directions 1-3 and 4-6 in acquisition order
    idx = np.flatnonzero(b == 10)
    assert first[np.isin(first, idx)].tolist() == idx[:3].tolist()
    assert second[np.isin(second, idx)].tolist() == idx[3:].tolist()
    # b = 0: dealt alternately, so both halves have b = 0 images from the whole series
    zeros = np.flatnonzero(b == 0)
    assert first[np.isin(first, zeros)].tolist() == zeros[0::2].tolist()


def test_split_halves_odd_and_refusals():
    first, second = iv.split_halves([0, 0, 0, 100, 100, 100, 500, 500])
    assert first.tolist() == [0, 3, 6] and second.tolist() == [1, 5, 7]  # the middle b=100, the last b=0 left out
    with pytest.raises(ValueError, match=r"b = \[500\] s/mm\^2 has a single volume"):
        iv.split_halves([0, 0, 100, 100, 500])
    with pytest.raises(ValueError, match="finite"):
        iv.split_halves([0, np.nan])


def test_read_scan_half_gives_independent_measurements():
    full, one, two = (iv.load_example("volunteer2", half=h) for h in (None, 1, 2))
    assert one.dwi.shape == two.dwi.shape == full.dwi.shape
    np.testing.assert_array_equal(one.b_values, full.b_values)
    inside = full.mask
    a, b = one.dwi[inside], two.dwi[inside]
    assert not np.allclose(a, b)
    # the geometric mean of all six directions is the geometric mean of the halves' (3 and 3)
    np.testing.assert_allclose(np.sqrt(a[:, 1:] * b[:, 1:]), full.dwi[inside][:, 1:], rtol=1e-4)
    with pytest.raises(ValueError, match="half must be None"):
        iv.load_example("volunteer2", half=3)


def test_repeatability_values():
    labels = np.array([1, 1, 1, 1, 2, 2])
    a = iv.IVIMParams(*(np.array([1.0, 2, 3, 4, 5, 5]) * s for s in (0.01, 0.001, 0.1)), None)
    same = iv.repeatability(a, a, labels, {1: "liver", 2: "spleen", 3: "none"})
    assert same[0]["voxels"] == 4 and same[0]["Dt_wcv_voxel"] == 0 and same[0]["Dt_wcv_median"] == 0
    assert same[0]["Dt_median"] == pytest.approx(0.0025)
    assert same[2]["voxels"] == 0 and np.isnan(same[2]["Fp_wcv_voxel"])
    b = iv.IVIMParams(a.Dp * 1.1, a.Dt + 0.0002, a.Fp, None)
    row = iv.repeatability(a, b, labels, {1: "liver"})[0]
    # Dt differs by 0.0002 everywhere: within-voxel SD 0.0002/sqrt(2) over the mean 0.0026
    assert row["Dt_wcv_voxel"] == pytest.approx(0.0002 / np.sqrt(2) / 0.0026)
    assert row["Dt_wcv_median"] == pytest.approx(0.0002 / np.sqrt(2) / 0.0026)
    assert row["Dp_wcv_median"] == pytest.approx(0.1 / np.sqrt(2) / 1.05)
    mask = np.array([True, True, False, False, True, True])
    assert iv.repeatability(a, b, labels, {1: "liver"}, mask=mask)[0]["voxels"] == 2
    with pytest.raises(ValueError, match="one shape"):
        iv.repeatability(a, b, labels, {1: "liver"}, mask=mask[:3])


def test_cli_fits_one_half(tmp_path):
    from ivim_demo.cli import main

    ex = iv.load_example("volunteer3")
    outs = {}
    for half in (1, 2):
        out = tmp_path / f"half{half}"
        assert main(["fit", ex.paths["dwi"], "--bvals", ex.paths["bvals"], "--mask", ex.paths["mask"], "--out",
                     str(out), "--method", "lsq", "--half", str(half)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["half"] == half and summary["b_values"] == ex.b_values.tolist()
        import nibabel as nib

        outs[half] = nib.load(out / "Dt.nii.gz").get_fdata()
    inside = ex.mask & (outs[1] > 0) & (outs[2] > 0)
    assert inside.sum() > 100 and not np.allclose(outs[1][inside], outs[2][inside])
    # two measurements of one liver: the halves' liver medians agree within 25 %
    liver = inside & (ex.rois == {v: k for k, v in ex.roi_names.items()}["liver"])
    m1, m2 = np.median(outs[1][liver]), np.median(outs[2][liver])
    assert abs(m1 - m2) / ((m1 + m2) / 2) < 0.25


def test_cv_net():
    est = np.array([[1.0, 2.0], [3.0, 2.0]])
    # variances across the two retrainings: 1 and 0; sqrt(mean) = sqrt(0.5); mean truth 2
    assert iv.cv_net(est, [2.0, 2.0]) == pytest.approx(np.sqrt(0.5) / 2)
    with pytest.raises(ValueError, match="n_repeats >= 2"):
        iv.cv_net(est[:1], [2.0, 2.0])


def test_check_scan_against_least_squares():
    lsq = [{"roi": "liver", "Dt": 1.0e-3, "Fp": 0.25}, {"roi": "spleen", "Dt": 0.8e-3, "Fp": 0.08}]
    same = iv.check_scan(lsq, lsq)
    assert [c["ok"] for c in same] == [True, True, True] and same[0]["value"] == 0
    fit = [{"roi": "liver", "Dt": 1.3e-3, "Fp": 0.20}, {"roi": "spleen", "Dt": 1.09e-3, "Fp": 0.15}]
    checks = {c["check"]: c for c in iv.check_scan(fit, lsq)}
    assert checks["liver Dt vs least squares"]["value"] == pytest.approx(0.3) and not checks["liver Dt vs least squares"]["ok"]
    assert not checks["spleen Dt vs least squares"]["ok"]  # 1.09 / 0.8 - 1 = 36 % > 35 %
    assert iv.check_scan([fit[0], {**fit[1], "Dt": 1.07e-3}], lsq)[1]["ok"]  # 34 %
    assert checks["liver Fp - spleen Fp"]["value"] == pytest.approx(0.05) and not checks["liver Fp - spleen Fp"]["ok"]
    with pytest.raises(ValueError, match="liver and spleen"):
        iv.check_scan(fit[:1], lsq)
