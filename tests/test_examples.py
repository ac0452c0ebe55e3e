"""The shipped real scans (Wetscherek et al. 2015): loading, units, a known fit, and their converter."""
import importlib.util
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import ivim_demo as iv
from ivim_demo.teaching.examples import REFERENCE_MAPS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "ivim_demo" / "data" / "wetscherek"
SOURCE = ROOT.parent / "shared" / "data" / "wetscherek-ivim"
B = [0, 10, 25, 50, 100, 200, 300, 400, 500]


@pytest.fixture(scope="module", params=iv.EXAMPLES)
def example(request):
    return request.param, iv.load_example(request.param)


def test_example_shapes_b_values_and_labels(example):
    name, ex = example
    assert ex.dwi.ndim == 4 and ex.dwi.shape[2:] == (1, 9) and ex.dwi.dtype == np.float32
    np.testing.assert_array_equal(ex.b_values, B)
    np.testing.assert_array_equal(ex.affine, np.eye(4))
    assert ex.mask.dtype == bool and ex.mask.shape == ex.dwi.shape[:3] and ex.mask.any()
    assert ex.rois.shape == ex.dwi.shape[:3]
    assert set(np.unique(ex.rois)) == {0, *ex.roi_names}
    for label in ex.roi_names:
        inside = ex.rois == label
        assert inside.any() and ex.mask[inside].all(), f"{name}: ROI {label} empty or outside the mask"
    # the NIfTI keeps every direction and b0 (60 volumes); the example is its average per b-value
    assert nib.load(ex.paths["dwi"]).shape == ex.dwi.shape[:3] + (60,)
    bvals = np.loadtxt(ex.paths["bvals"])
    assert len(bvals) == 60 and (bvals == 0).sum() == 12 and all((bvals == b).sum() == 6 for b in B[1:])
    dwi, b, _ = iv.load_dwi(ex.paths["dwi"], ex.paths["bvals"])
    np.testing.assert_array_equal(dwi, ex.dwi)
    # the body (volunteers) or the water (phantoms, whose mask is the whole image) is much brighter than air
    signal = ex.mask if name.startswith("volunteer") else ex.rois > 0
    s0 = ex.dwi[..., 0]
    assert np.all(ex.dwi >= 0) and np.median(s0[signal]) > 5 * np.median(s0[~signal])


def test_reference_maps_are_in_mm2_per_s_and_fractions(example):
    name, ex = example
    if not name.startswith("volunteer"):
        assert ex.reference is None
        return
    assert tuple(ex.reference) == REFERENCE_MAPS
    liver = ex.rois == 2
    for key in ("D", "Dhighb"):
        assert 0.5e-3 < np.median(ex.reference[key][liver]) < 3e-3, key
    for key in ("f", "fhighb"):
        assert np.all((ex.reference[key] >= 0) & (ex.reference[key] <= 1)), key
        assert 0 < np.median(ex.reference[key][liver]) < 1, key
    for key, ref in ex.reference.items():
        assert ref.shape == ex.mask.shape and np.all(ref[~ex.mask] == 0), key


def test_lsq_on_volunteer1_liver_matches_the_authors():
    ex = iv.load_example("volunteer1")
    liver = ex.rois == 2
    est = iv.fit_lsq(ex.dwi[liver], ex.b_values)
    D, f = np.median(ex.reference["D"][liver]), np.median(ex.reference["f"][liver])
    # measured: median Dt 1.208e-3 vs authors' D 1.262e-3 mm^2/s (-4.3 %); Fp 0.235 vs f 0.210
    assert abs(np.median(est.Dt) / D - 1) < 0.10
    assert abs(np.median(est.Fp) - f) < 0.05


def test_flowing_pipe_has_a_larger_perfusion_fraction_than_static_water():
    fp = {}
    for name in ("phantom_flow", "phantom_static"):
        ex = iv.load_example(name)
        for label, roi in ex.roi_names.items():
            fp[name, roi] = np.median(iv.fit_lsq(ex.dwi[ex.rois == label], ex.b_values).Fp)
    # measured: flowing pipe 0.70 (the upper bound), bottle 0.00, still pipe 0.00
    assert fp["phantom_flow", "pipe"] > fp["phantom_flow", "bottle"] + 0.3
    assert fp["phantom_static", "pipe"] < 0.1  # without flow the pipe looks like the bottle


def test_unknown_example_name_says_which_exist():
    with pytest.raises(ValueError, match="volunteer1.*phantom_flow"):
        iv.load_example("liver")


def _converter():
    spec = importlib.util.spec_from_file_location("convert_wetscherek", ROOT / "tools" / "convert_wetscherek.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _labels(holds):
    """Per-image (b, T, betta) for breath-holds given as (T, betta, bA, bB); b = 0 labelled betta 2."""
    b, T, betta = [], [], []
    for t, profile, b_a, b_b in holds:
        b += [0] + [b_a] * 6 + [0] + [b_b] * 6 + [0]
        T += [t] * 15
        betta += [2] + [profile] * 6 + [2] + [profile] * 6 + [2]
    return np.array(b), np.array(T), np.array(betta)


def test_converter_selects_whole_bipolar_breath_holds_at_one_diffusion_time():
    convert = _converter()
    b, T, betta = _labels([(100, 2, 10, 25), (100, 1, 10, 25), (70, 1, 50, 100), (100, 1, 200, 300)])
    np.testing.assert_array_equal(convert.select_series(b, T, betta, diffusion_time=100),
                                  np.r_[15:30, 45:60])
    np.testing.assert_array_equal(convert.select_series(b, T, betta, diffusion_time=70), np.r_[30:45])
    with pytest.raises(ValueError, match="no bipolar breath-hold at T = 40"):
        convert.select_series(b, T, betta, diffusion_time=40)
    with pytest.raises(ValueError, match="whole number"):
        convert.select_series(b[:-1], T[:-1], betta[:-1])


@pytest.mark.skipif(not SOURCE.is_dir(), reason=f"source data not available ({SOURCE}); only needed to regenerate")
def test_converter_reproduces_the_committed_files(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_wetscherek.py"), str(SOURCE),
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = {p.name for p in tmp_path.iterdir()}
    committed = {p.name for p in DATA.iterdir()} - {"README.md"}
    assert written == committed
    for name in sorted(written):
        new, old = (tmp_path / name).read_bytes(), (DATA / name).read_bytes()
        if new != old and name.endswith(".gz"):
            same = zlib.decompress(new, 31) == zlib.decompress(old, 31)
            pytest.fail(f"{name} differs; uncompressed content {'identical (zlib version?)' if same else 'differs'}")
        assert new == old, name


def test_write_example_study_lays_out_subjects(tmp_path):
    subjects = iv.write_example_study(tmp_path / "study", names=("volunteer2", "volunteer1"))
    assert subjects == {"sub-01": "volunteer2", "sub-02": "volunteer1"}
    dwi, b, _ = iv.load_dwi(tmp_path / "study" / "sub-01" / "dwi" / "sub-01_dwi.nii.gz",
                            tmp_path / "study" / "sub-01" / "dwi" / "sub-01_dwi.bval")
    ex = iv.load_example("volunteer2")
    np.testing.assert_array_equal(dwi, ex.dwi)
    np.testing.assert_array_equal(b, ex.b_values)
    labels = iv.load_mask(tmp_path / "study" / "sub-01" / "dwi" / "sub-01_dseg.nii.gz")
    np.testing.assert_array_equal(np.asarray(labels).astype(int), ex.rois)
    with pytest.raises(ValueError, match="shipped examples"):
        iv.write_example_study(tmp_path / "x", names=("volunteer9",))


def test_reference_roi_medians_are_the_authors_maps_in_cohort_columns():
    ref = iv.reference_roi_medians("volunteer1")
    ex = iv.load_example("volunteer1")
    liver = (ex.rois == 2) & ex.mask
    assert ref["label2_Dt"] == pytest.approx(float(np.median(ex.reference["D"][liver])))
    assert ref["label2_Fp"] == pytest.approx(float(np.median(ex.reference["f"][liver])))
    assert set(ref) == {f"label{k}_{p}" for k in (1, 2, 3, 4) for p in ("Dt", "Fp")}
    assert 0.0005 < ref["label4_Dt"] < ref["label2_Dt"] < 0.002  # spleen below liver, in mm^2/s
    with pytest.raises(ValueError, match="volunteer1-volunteer3"):
        iv.reference_roi_medians("phantom_flow")


def test_plot_cohort_rois_draws_each_scan_and_reference():
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"scan": "sub-01", "status": "fitted", "label2_Dt": 0.0012, "label2_Fp": 0.2},
            {"scan": "sub-02", "status": "failed"},
            {"scan": "sub-03", "status": "skipped", "label2_Dt": 0.0010, "label2_Fp": 0.3}]
    fig = iv.plot_cohort_rois(rows, {2: "liver"}, reference={"sub-01": {"label2_Dt": 0.0013, "label2_Fp": 0.25}})
    dt_axis = fig.axes[0]
    fit_line, ref_line = dt_axis.lines
    np.testing.assert_allclose(fit_line.get_ydata(), [1.2, 1.0])  # 10^-3 mm^2/s; the failed scan left out
    np.testing.assert_allclose(ref_line.get_ydata(), [1.3, np.nan])
    assert [t.get_text() for t in dt_axis.get_xticklabels()] == ["sub-01", "sub-03"]


def test_plot_cohort_rois_labels_medians_of_few_voxels_with_their_count():
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"scan": "sub-01", "status": "fitted", "label3_Dt": 0.002, "label3_Fp": 0.2, "label3_voxels": 25},
            {"scan": "sub-02", "status": "fitted", "label3_Dt": 0.0012, "label3_Fp": 0.6, "label3_voxels": "1"}]
    fig = iv.plot_cohort_rois(rows, {3: "kidney"})
    for ax in fig.axes[:2]:
        assert [t.get_text() for t in ax.texts] == ["n = 1"]
