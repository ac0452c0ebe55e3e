"""One registry of methods drives the command line, the whole-image fit, the cohort and the comparison: a
method registered once is offered everywhere, without touching another file."""
import json

import numpy as np
import pytest

import ivim_demo as iv
from ivim_demo.cli import main
from ivim_demo.imaging import methods as registry

DATA = iv.examples.__file__.rsplit("/teaching/", 1)[0] + "/data/wetscherek"


@pytest.fixture
def toy(monkeypatch):
    """A classical method, least squares under another name, registered for this test only."""
    calls = []

    def fit_toy(signals, b_values, *, sigma=None, context="scan", **options):
        calls.append(context)
        return iv.fit_lsq(signals, b_values)

    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))  # the registry as it was, after the test
    iv.register(iv.Method("toy", "Toy", "classical", fit_toy, "least squares under another name"))
    return calls


def test_a_registered_method_runs_through_the_cli_and_the_comparison(toy, tmp_path):
    out = tmp_path / "maps"
    args = ["fit", f"{DATA}/phantom_static_dwi.nii.gz", "--bvals", f"{DATA}/phantom_static_dwi.bval", "--mask",
            f"{DATA}/phantom_static_mask.nii.gz", "--no-progress"]
    assert main([*args, "--method", "toy", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["method"] == "toy"
    assert main([*args, "--method", "lsq", "--out", str(tmp_path / "lsq")]) == 0
    nib = pytest.importorskip("nibabel")
    for name in ("Dp", "Dt", "Fp"):  # the toy is least squares: the same maps
        np.testing.assert_array_equal(nib.load(out / f"{name}.nii.gz").get_fdata(),
                                      nib.load(tmp_path / "lsq" / f"{name}.nii.gz").get_fdata())
    signals, _ = iv.training_data(200, seed=3)
    estimates, seconds = iv.fit_all(signals, iv.SEED_B_VALUES, snr=20, bayes_grid=(6, 6, 6))
    assert list(estimates) == ["LSQ", "segmented", "Bayes", "Toy"] and "Toy" in seconds
    np.testing.assert_array_equal(estimates["Toy"].Dt, estimates["LSQ"].Dt)
    assert toy == ["scan", "simulation"]


def test_the_registry_refuses_what_it_cannot_run(toy):
    with pytest.raises(ValueError, match="registered already"):
        iv.register(iv.Method("lsq", "LSQ", "classical", "imaging.method_fits:lsq", "again"))
    with pytest.raises(ValueError, match="one of 'classical', 'network', 'pretrained'"):
        iv.register(iv.Method("odd", "Odd", "quantum", "imaging.method_fits:lsq", "no such kind"))
    with pytest.raises(ValueError, match="method must be one of .*toy.*; got 'nope'"):
        iv.fit_volume(np.ones((2, 2, 8)), iv.SEED_B_VALUES, np.ones((2, 2), bool), method="nope")


def test_built_in_methods_are_the_registry():
    assert registry.methods() == iv.METHODS == ("ivimnet", "optim", "supervised", "lsq", "segmented", "bayes",
                                                "pretrained")
    assert {m: registry.method(m).label for m in iv.METHODS} == iv.LABELS
    assert [m for m in iv.METHODS if registry.method(m).trains_on_scan] == ["ivimnet", "optim"]
    assert [m for m in iv.METHODS if registry.method(m).intervals] == ["supervised", "bayes", "pretrained"]


def test_a_registered_method_runs_through_the_cohort(toy, tmp_path):
    iv.write_example_study(tmp_path / "study", names=("phantom_static",))
    rows = iv.fit_cohort(tmp_path / "study", tmp_path / "out", method="toy", scheduler="serial", progress=False)
    assert [r["status"] for r in rows] == ["fitted"] and float(rows[0]["Dt_median"]) > 0
    assert toy == ["scan"]
