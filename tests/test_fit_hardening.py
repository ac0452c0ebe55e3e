"""Hardening of the classical fits: option checks, chunked memory, the fast Bayes path, the noise
estimate, light imports. Each test pins a finding of a hostile test run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ivim_demo as iv
from ivim_demo.core.checks import check_box, check_grid, check_positive, check_whole
from tolerances import BAYES_F32_RTOL, assert_close_to_rounding, bayes_float64_rtol

pytestmark = pytest.mark.numerics  # run again under other numeric paths (Makefile)

B = iv.SEED_B_VALUES
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def voxels():
    """Signals at SNR 20 with S0 varying between voxels."""
    signals, truth = iv.training_data(1200, sigma=0.05, seed=31)
    return signals * np.random.default_rng(31).uniform(100, 2000, (1200, 1)), truth


# ---------------------------------------------------------------- 1. options are validated


@pytest.mark.parametrize("chunk", [-1, 0, 2.5, True, "64", None])
@pytest.mark.parametrize("fit", ["fit_lsq", "fit_segmented", "fit_bayes", "estimate_sigma"])
def test_bad_chunk_is_refused(fit, chunk):
    kw = {"sigma": 0.05} if fit == "fit_bayes" else {}
    with pytest.raises(ValueError, match=r"chunk must be a whole number >= 1, got"):
        getattr(iv, fit)(iv.training_data(10, seed=0)[0], B, chunk=chunk, **kw)


@pytest.mark.parametrize("grid", [(40, 40), (40, 40, 40, 40), (1, 40, 40), (40, 40.5, 40), (40, -3, 40), 40, "abc"])
def test_bad_grid_is_refused(grid):
    with pytest.raises(ValueError, match=r"grid must be 3 whole numbers >= 2 \(points along Dp, Dt, Fp\)"):
        iv.fit_bayes(iv.training_data(5, seed=0)[0], B, sigma=0.05, grid=grid)


PRIOR = dict(iv.PARAMETER_BOX)


@pytest.mark.parametrize(
    "prior, message",
    [
        ({**PRIOR, "Fp": (0, 1.5)}, r"prior\['Fp'\] = \(0, 1.5\) is not physical: Fp is a fraction: it must lie "
                                    r"within \[0, 1\]"),
        ({"Dstar": (0.01, 0.1), "D": (0.0005, 0.002), "f": (0.1, 0.4)},
         r"prior has unknown key 'Dstar'; the allowed keys are Dp, Dt, Fp"),
        ({"Dp": (0.01, 0.1), "Fp": (0.1, 0.4)}, r"prior needs a \(low, high\) pair for each of Dp, Dt, Fp; missing 'Dt'"),
        ({**PRIOR, "S0": (0.5, 1.5)}, r"prior has unknown key 'S0'; the allowed keys are Dp, Dt, Fp"),
        ({**PRIOR, "Dt": (0.002, 0.0005)}, r"prior\['Dt'\] must be a \(lower, upper\) pair of finite numbers with "
                                           r"lower < upper"),
        ({**PRIOR, "Dp": (-0.01, 0.1)}, r"prior\['Dp'\] = \(-0.01, 0.1\) is not physical: Dp must be >= 0"),
        ({**PRIOR, "Dp": (0.01, np.inf)}, r"finite numbers"),
        ({**PRIOR, "Dp": 0.05}, r"pair"),
        ([(0.01, 0.1)] * 3, r"prior must be a Prior \(e.g. net.prior or iv.IN_VIVO_PRIOR\) or a dict of \(low, high\) "
                            r"ranges for Dp, Dt and Fp; got list"),
    ],
)
def test_bad_prior_is_refused_with_the_key_and_the_allowed_keys(prior, message):
    with pytest.raises(ValueError, match=message):
        iv.fit_bayes(iv.training_data(5, seed=0)[0], B, sigma=0.05, prior=prior)


@pytest.mark.parametrize("fit", ["fit_lsq", "fit_segmented", "lsq_reference"])
@pytest.mark.parametrize(
    "bounds, message",
    [
        ({"F": (0.0, 1.0)}, r"bounds has unknown key 'F'; the allowed keys are Dp, Dt, Fp, S0"),
        ({"dp": (0.01, 0.1)}, r"unknown key 'dp'.*case-sensitive"),
        ({"S0": (-0.5, 2.0)}, r"bounds\['S0'\] = \(-0.5, 2.0\) is not physical: S0 is relative to the measured "
                              r"S\(b=0\): it must be >= 0"),
        ({"Dt": (-0.001, 0.003)}, r"bounds\['Dt'\] .* Dt must be >= 0"),
        ({"Fp": (0.0, 1.2)}, r"bounds\['Fp'\] .* within \[0, 1\]"),
        ({"Dp": (0.05, 0.02)}, r"lower < upper"),
        ({"Dp": (np.nan, 0.1)}, r"finite numbers"),
    ],
)
def test_bad_bounds_are_refused(fit, bounds, message):
    with pytest.raises(ValueError, match=message):
        getattr(iv, fit)(iv.training_data(5, seed=0)[0], B, bounds=bounds)


def test_sample_params_box_uses_the_same_check():
    with pytest.raises(ValueError, match=r"box\['Fp'\] = \(0.1, 1.2\) is not physical"):
        iv.sample_params(10, box={**PRIOR, "Fp": (0.1, 1.2)})
    with pytest.raises(ValueError, match=r"box has unknown key 'S0'; the allowed keys are Dp, Dt, Fp"):
        iv.training_data(10, box={**PRIOR, "S0": (0.5, 1.5)})
    with pytest.raises(ValueError, match=r"box needs a \(low, high\) pair .* missing 'Dt', 'Fp'"):
        iv.sample_params(10, box={"Dp": (0.01, 0.1)})
    p = iv.sample_params(2000, box={"Dp": (0.0, 0.2), "Dt": (0.0, 0.003), "Fp": (0.0, 1.0)}, seed=1)
    assert p.Fp.min() >= 0 and p.Fp.max() <= 1 and p.Dt.max() <= 0.003


@pytest.mark.parametrize("kw, message", [({"max_iter": 0}, "max_iter must be a whole number >= 1"),
                                         ({"tol": 0.0}, "tol must be a positive number"),
                                         ({"tol": np.nan}, "tol must be a positive number")])
def test_lsq_iteration_options_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        iv.fit_lsq(iv.training_data(5, seed=0)[0], B, **kw)


def test_check_helpers_return_clean_values():
    box = check_box({"Dt": [0, 0.004], "Fp": np.array([0.0, 1.0])}, name="bounds", keys=("Dp", "Dt", "Fp", "S0"),
                    defaults=iv.FIT_BOUNDS)
    assert box == {"Dp": iv.FIT_BOUNDS["Dp"], "Dt": (0.0, 0.004), "Fp": (0.0, 1.0), "S0": iv.FIT_BOUNDS["S0"]}
    assert list(box) == ["Dp", "Dt", "Fp", "S0"] and all(type(v) is float for pair in box.values() for v in pair)
    assert check_whole(np.int64(5), name="n") == 5 and check_whole(8.0, name="n") == 8
    assert check_grid([10, np.int32(12), 14.0]) == (10, 12, 14)
    assert check_positive(np.float32(0.5), name="sigma") == 0.5
    with pytest.raises(ValueError, match="n must be a whole number >= 2, got 1"):
        check_whole(1, name="n", minimum=2)


def test_widest_physical_prior_and_bounds_give_finite_maps(voxels):
    signals, _ = voxels
    wide = {"Dp": (0.0, 0.5), "Dt": (0.0, 0.01), "Fp": (0.0, 1.0)}
    est = iv.fit_bayes(signals[:50], B, sigma=0.05, prior=wide, grid=(12, 12, 12))
    for name in iv.PARAMS:
        v = getattr(est, name)
        assert np.isfinite(v).all() and v.min() >= wide[name][0] and v.max() <= wide[name][1]
    for fit in (iv.fit_lsq, iv.fit_segmented):  # Dp lower bound 0: linear Dp grid in the segmented start
        est = fit(signals[:200], B, bounds={"Dp": (0.0, 0.3), "Fp": (0.0, 1.0)})
        assert np.isfinite(np.stack(est)).all() and est.Dp.min() >= 0 and est.Dp.max() <= 0.3


# ---------------------------------------------------------------- 2. chunked = unchunked


@pytest.mark.parametrize("fit", ["fit_lsq", "fit_segmented"])
def test_chunks_do_not_change_lsq_or_segmented(voxels, fit):
    signals, _ = voxels
    whole = getattr(iv, fit)(signals, B)
    for chunk in (7, 500):
        part = getattr(iv, fit)(signals, B, chunk=chunk)
        for name in iv.IVIMParams._fields:
            np.testing.assert_allclose(getattr(part, name), getattr(whole, name), rtol=1e-11, atol=1e-300)


@pytest.mark.parametrize("s0", ["marginal", "ratio"])
def test_chunks_do_not_change_bayes_or_sigma(voxels, s0):
    signals, _ = voxels
    # float32 and float64 paths; other chunks are other matrix shapes, rounded differently (tolerances.py):
    # within the path's rounding of each parameter's largest value
    for sigma, rtol in ((0.1, BAYES_F32_RTOL), (0.01, bayes_float64_rtol(0.01))):
        whole = iv.fit_bayes(signals[:300], B, sigma=sigma, grid=(20, 20, 20), s0=s0)
        part = iv.fit_bayes(signals[:300], B, sigma=sigma, grid=(20, 20, 20), chunk=7, s0=s0)
        for name in ("Dp", "Dt", "Fp"):
            assert_close_to_rounding(getattr(part, name), getattr(whole, name), rtol, err_msg=name)
        np.testing.assert_allclose(part.S0, whole.S0, rtol=rtol)  # each voxel's S0 on its own scale
    assert iv.estimate_sigma(signals, B, chunk=7) == pytest.approx(iv.estimate_sigma(signals, B), rel=1e-12)


def test_chunked_fits_keep_shapes_and_input_dtype_semantics(voxels):
    signals, _ = voxels
    cube = signals[:120].reshape(4, 5, 6, 8)
    for est in (iv.fit_lsq(cube, B, chunk=9), iv.fit_segmented(cube, B, chunk=9),
                iv.fit_bayes(cube, B, sigma=0.05, grid=(8, 8, 8), chunk=9)):
        assert all(v.shape == (4, 5, 6) for v in est)
        np.testing.assert_allclose(est.S0 / cube[..., 0], np.clip(est.S0 / cube[..., 0], 0.7, 1.3))
    single = signals[:300].astype(np.float32)
    a, b = iv.fit_lsq(single, B, chunk=64), iv.fit_lsq(single.astype(float), B)
    for name in iv.IVIMParams._fields:  # float32 input is fitted in float64, as before
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-11, atol=1e-300)


def test_input_is_not_modified(voxels):
    signals, _ = voxels
    before = signals.copy()
    iv.fit_lsq(signals[:100], B, chunk=16)
    iv.fit_bayes(signals[:100], B, sigma=0.05, grid=(8, 8, 8), chunk=16)
    np.testing.assert_array_equal(signals, before)


# ---------------------------------------------------------------- 3. fast Bayes = exact posterior


def brute_force_posterior_mean(signals, sigma, prior, grid):
    """Posterior mean with the exact Rician likelihood (scipy's i0e), one voxel at a time, float64."""
    from scipy.special import i0e

    axes = [np.linspace(*prior[k], n + 1) for k, n in zip(iv.PARAMS, grid)]
    axes = [(a[:-1] + a[1:]) / 2 for a in axes]
    theta = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    m = iv.ivim(B, theta[:, :1], theta[:, 1:2], theta[:, 2:3])
    out = []
    for v in signals / signals[:, :1]:
        z = v * m / sigma**2
        ll = (np.log(i0e(z)) + z - m**2 / (2 * sigma**2)).sum(axis=1)
        w = np.exp(ll - ll.max())
        out.append(w @ theta / w.sum())
    return np.array(out)


@pytest.mark.parametrize("sigma", [0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002])
def test_bayes_matches_the_exact_rician_posterior_at_every_snr(sigma):
    signals, _ = iv.training_data(12, sigma=sigma, seed=40)
    signals[0, 6:] = 0.0  # magnitude 0 at the high b-values (z = 0)
    signals[1, 3] = 3.0  # an outlier far above the model
    est = iv.fit_bayes(signals, B, sigma=sigma, s0="ratio")  # the default 40^3 grid; the ratio posterior's formula
    ref = brute_force_posterior_mean(signals, sigma, iv.PARAMETER_BOX, (40, 40, 40))
    # float32 path at sigma >= 0.02: BAYES_F32_RTOL of each parameter's largest value (measured within 3.3e-6
    # relative, per value, on every numeric path)
    for k, name in enumerate(("Dp", "Dt", "Fp")):
        assert_close_to_rounding(getattr(est, name), ref[:, k], BAYES_F32_RTOL, err_msg=name)


def test_bayes_matches_the_exact_posterior_for_a_wide_prior():
    # model values down to ~1e-7: log I0e is interpolated piecewise
    wide = {"Dp": (0.0, 0.5), "Dt": (0.0, 0.01), "Fp": (0.0, 1.0)}
    signals, _ = iv.training_data(10, sigma=0.03, seed=41, box=wide)
    est = iv.fit_bayes(signals, B, sigma=0.03, prior=wide, grid=(16, 15, 14), s0="ratio")
    ref = brute_force_posterior_mean(signals, 0.03, wide, (16, 15, 14))
    for k, name in enumerate(("Dp", "Dt", "Fp")):
        assert_close_to_rounding(getattr(est, name), ref[:, k], BAYES_F32_RTOL, err_msg=name)


def test_bayes_restores_torch_threads():
    import torch

    threads = torch.get_num_threads()
    iv.fit_bayes(iv.training_data(20, seed=0)[0], B, sigma=0.05, grid=(6, 6, 6))
    assert torch.get_num_threads() == threads


# ---------------------------------------------------------------- 4. unbiased noise estimate


@pytest.mark.parametrize("sigma", [0.005, 0.02, 0.1])
def test_estimate_sigma_is_unbiased(sigma):
    signals, _ = iv.training_data(20_000, sigma=sigma, seed=42)
    assert iv.estimate_sigma(signals * 800.0, B) / sigma == pytest.approx(1.0, abs=0.02)


# ---------------------------------------------------------------- 5. light imports


def run_python(code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement", ["import ivim_demo.core.signal_model", "import ivim_demo", "import ivim_demo.classical.fit",
                                       "import ivim_demo.simulation.simulate, ivim_demo.core.checks, ivim_demo.core.metrics"])
def test_light_imports_load_neither_torch_nor_matplotlib(statement):
    loaded = run_python(f"import json, sys; {statement}; "
                        "print(json.dumps([m for m in ('torch', 'matplotlib') if m in sys.modules]))")
    assert loaded == []


def test_lazy_package_keeps_every_public_name():
    out = run_python(
        "import json, sys, numpy as np, ivim_demo as iv\n"
        "est = iv.fit_lsq(iv.training_data(20, seed=0)[0], iv.SEED_B_VALUES)\n"
        "light = 'torch' not in sys.modules\n"
        "import ivim_demo.nets.training\n"
        "names = [n for n in iv.__all__ if not hasattr(iv, n)]\n"
        "print(json.dumps({'light': light, 'missing': names, 'train_is_function': callable(iv.train) and "
        "iv.train.__name__ == 'train', 'fit_is_module': iv.fit.fit_lsq is iv.fit_lsq, "
        "'dir': sorted(set(iv.__all__) - set(dir(iv))), 'shape': list(est.Dp.shape)}))"
    )
    assert out == {"light": True, "missing": [], "train_is_function": True, "fit_is_module": True, "dir": [],
                   "shape": [20]}
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        iv.not_a_name  # noqa: B018
