import numpy as np
import pytest

import ivim_demo as iv


def test_explore_returns_curves_and_estimates():
    r = iv.explore(0.05, 0.001, 0.2, 100.0, "seed (8 b-values)", n_repeats=100, seed=1)
    np.testing.assert_array_equal(r["b"], iv.SEED_B_VALUES)
    np.testing.assert_allclose(r["curve"], r["perfusion"] + r["tissue"])
    np.testing.assert_allclose(r["curve"][0], 1.0)
    np.testing.assert_allclose(r["tissue"][0], 0.8)
    assert r["noisy"].shape == (8,)
    # at SNR 100 both methods are close on Dt and Fp (mean over repeats)
    for method in ("LSQ", "IVIM-NET"):
        est = r["estimates"][method]
        assert est["mean"][1] == pytest.approx(0.001, rel=0.15), method
        assert est["mean"][2] == pytest.approx(0.2, abs=0.06), method
        assert all(sd >= 0 for sd in est["sd"])
    # the LSQ fit of a nearly noise-free signal is exact
    clean = iv.explore(0.05, 0.001, 0.2, 1e6, n_repeats=2)["estimates"]["LSQ"]["first"]
    np.testing.assert_allclose(clean, (0.05, 0.001, 0.2), rtol=1e-3)


def test_explore_noise_widens_the_spread():
    hi = iv.explore(snr=100.0, n_repeats=200)["estimates"]["LSQ"]["sd"]
    lo = iv.explore(snr=10.0, n_repeats=200)["estimates"]["LSQ"]["sd"]
    assert all(l > h for l, h in zip(lo, hi))


@pytest.mark.parametrize("b_set", list(iv.B_VALUE_SETS))
def test_shipped_networks_match_their_b_value_sets(b_set):
    net = iv.explorer_network(b_set)
    assert net.settings()["b_values"] == iv.B_VALUE_SETS[b_set].tolist()
    r = iv.explore(b_set=b_set, n_repeats=5)
    assert len(r["noisy"]) == len(iv.B_VALUE_SETS[b_set])


def test_explore_rejects_bad_values():
    with pytest.raises(ValueError, match="0 < Fp < 1"):
        iv.explore(Fp=1.5)
    with pytest.raises(ValueError, match="unknown b-value set"):
        iv.explore(b_set="nope")


def test_explorer_widget_is_wired_to_explore():
    import matplotlib

    matplotlib.use("Agg")
    ui = iv.explorer_widget(n_repeats=5)
    controls = {c.description: c for c in ui.children[:-1]}
    assert set(controls) == {"Dp (mm²/s)", "Dt (mm²/s)", "Fp", "SNR", "b-values"}
    assert ui.result["truth"] == (0.05, 0.001, 0.2)
    controls["Fp"].value = 0.3
    controls["b-values"].value = "dense (12 b-values)"
    assert ui.result["truth"][2] == 0.3 and len(ui.result["b"]) == 12
