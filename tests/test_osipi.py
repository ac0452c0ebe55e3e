"""OSIPI TF2.4's IVIM unit-test cases (vendored in tests/data/osipi/, Apache-2.0) through the adapter in
osipi/IvimDemo.py, one voxel per call with OSIPI's bounds and tolerances, as OSIPI's own test runs them.
Timings (OSIPI's 0.5 s per call) are measured by benchmarks/osipi.py, not asserted here."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "osipi"))
import IvimDemo  # noqa: E402
import unit_cases  # noqa: E402


def test_the_vendored_cases_are_osipi_s():
    cases = unit_cases.cases()
    assert len(cases) == 124
    negative = [c for c in cases if (c[3] < 0).any()]
    assert {c[1] for c in negative} >= {"Artery", "Vein"}  # real-valued data: negative samples are legal
    assert (Path(unit_cases.DATA) / "NOTICE").read_text().count("f91b53cefa1c25495516d165b55a16117da4f8dc") == 1


@pytest.mark.parametrize("cls", [IvimDemo.IvimDemoLsq, IvimDemo.IvimDemoSegmented])
def test_least_squares_and_segmented_pass_every_case(cls):
    rows = unit_cases.run(lambda b, bounds: cls(bvalues=b, bounds=bounds))
    failed = [(r["file"], r["tissue"], r["estimate"], r["error"]) for r in rows if not r["accurate"]]
    assert failed == [] and len(rows) == 124


def test_bayes_with_osipi_bounds_passes_the_cases_it_is_given():
    """The exact posterior (uniform prior on OSIPI's bounds, Gaussian noise, sigma from the voxel's own
    least-squares residuals) on the first three files (43 cases; all 124 in benchmarks/osipi.py)."""
    files = ("generic.json", "generic_brain.json", "generic_one.json")
    rows = unit_cases.run(lambda b, bounds: IvimDemo.IvimDemoBayes(bvalues=b, bounds=bounds), files=files)
    failed = [(r["file"], r["tissue"], r["estimate"], r["error"]) for r in rows if not r["accurate"]]
    assert failed == [] and len(rows) == 43


def test_adapter_returns_osipi_s_keys_for_one_voxel_and_for_many():
    case = unit_cases.cases(("generic.json",))[0]
    fit = IvimDemo.IvimDemoLsq(bvalues=case[2])
    one = fit.ivim_fit(case[3], case[2])
    assert set(one) == {"D", "f", "Dp"} and all(isinstance(v, float) for v in one.values())
    many = fit.ivim_fit([case[3]] * 3, case[2])
    assert many["D"].shape == (3,)
