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


def test_bayes_with_osipi_bounds_passes_every_case():
    """The exact posterior (uniform prior on OSIPI's bounds, Gaussian noise, sigma from the voxel's own
    least-squares residuals)."""
    rows = unit_cases.run(lambda b, bounds: IvimDemo.IvimDemoBayes(bvalues=b, bounds=bounds))
    failed = [(r["file"], r["tissue"], r["estimate"], r["error"]) for r in rows if not r["accurate"]]
    assert failed == [] and len(rows) == 124


def test_bayes_with_the_in_vivo_prior_misses_only_tissues_outside_it():
    """The in-vivo prior (Fp up to 0.7) pulls tissues outside it inwards: that is the prior doing its job, and
    the misses are exactly those tissues, the f = 1 blood and vessel cases of the four noisy files."""
    rows = unit_cases.run(lambda b, bounds: IvimDemo.IvimDemoBayes(bvalues=b, bounds=bounds, prior="in_vivo"))
    missed = [(r["file"], r["tissue"]) for r in rows if not r["accurate"]]
    outside = [(r["file"], r["tissue"]) for r in rows if r["truth"]["f"] > 0.7]
    assert len(rows) == 124 and len(outside) == 16
    assert missed == outside


@pytest.mark.numerics
def test_the_shipped_network_passes_osipi_s_network_test_with_no_training():
    """generic_DL.json, all 14 tissues in one call, OSIPI's network tolerances."""
    shipped = unit_cases.run_networks(lambda b: IvimDemo.IvimDemoPretrained(bvalues=b))
    assert [r["tissue"] for r in shipped if not r["accurate"]] == [] and len(shipped) == 14


def test_ivim_net_optim_trained_as_osipi_trains_passes_its_network_test():
    """IVIM-NET_optim trained on OSIPI's simulated training set (Gaussian noise, negative samples included)
    as OSIPI trains its networks. One seed here; benchmarks/osipi.py trains three (the worst error of any
    tissue at most 0.56 of its tolerance on this machine), so another CPU's training path has room."""
    optim = unit_cases.run_networks(lambda b: IvimDemo.IvimDemoOptim(bvalues=b, seed=0))
    assert [r["tissue"] for r in optim if not r["accurate"]] == [] and len(optim) == 14


def test_network_adapter_needs_b_values_and_takes_negative_samples():
    with pytest.raises(ValueError, match="bvalues"):
        IvimDemo.IvimDemoOptim()
    case = unit_cases.cases(("generic_DL.json",))[0]
    signal = case[3] / case[3][0]
    signal[-1] = -0.01  # real-valued data: legal
    one = IvimDemo.IvimDemoPretrained(bvalues=case[2]).ivim_fit(signal, case[2])
    assert set(one) == {"D", "f", "Dp"} and 0 < one["D"] < 0.005


def test_adapter_returns_osipi_s_keys_for_one_voxel_and_for_many():
    case = unit_cases.cases(("generic.json",))[0]
    fit = IvimDemo.IvimDemoLsq(bvalues=case[2])
    one = fit.ivim_fit(case[3], case[2])
    assert set(one) == {"D", "f", "Dp"} and all(isinstance(v, float) for v in one.values())
    many = fit.ivim_fit([case[3]] * 3, case[2])
    assert many["D"].shape == (3,)
