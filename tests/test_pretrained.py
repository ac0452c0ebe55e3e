"""The shipped any-protocol network, its prior object, protocols and retraining (small versions of
benchmarks/pretrained.py)."""
import json
import os

import numpy as np
import pytest
import torch

import ivim_demo as iv
from ivim_demo.nets import pretrained as pt
from ivim_demo.nets.protocols import Protocol, average_repeats, draw_protocols, protocol_of, protocol_problems
from tolerances import network_rounding

PARAMS = ("Dp", "Dt", "Fp")


@pytest.fixture(scope="module")
def net():
    return iv.load_pretrained()


def _voxels(prior, b, snr, n, seed):
    p = prior.sample(n, seed=seed)
    clean = iv.ivim(np.asarray(b, float), p.Dp[:, None], p.Dt[:, None], p.Fp[:, None])
    return iv.add_rician_noise(clean, 1.0 / snr, np.random.default_rng([seed, 1])), p


# --- the prior object --------------------------------------------------------------------------------

def test_prior_draws_as_sample_params_and_refuses_bad_logs():
    prior = iv.Prior(iv.IN_VIVO_BOX, log=("Dt", "Dp"))
    assert prior.log == ("Dp", "Dt")
    a, b = prior.sample(500, seed=4), iv.sample_params(500, box=iv.IN_VIVO_BOX, log=("Dp", "Dt"), seed=4)
    for k in iv.IVIMParams._fields:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    for k, (lo, hi) in iv.IN_VIVO_BOX.items():
        assert lo <= getattr(a, k).min() and getattr(a, k).max() <= hi
    # log-uniform: half the draws below the geometric centre, not the arithmetic one
    assert abs(np.mean(a.Dt < np.sqrt(0.0003 * 0.005)) - 0.5) < 0.07
    with pytest.raises(ValueError, match="log names"):
        iv.Prior(iv.IN_VIVO_BOX, log=("Fp",))
    with pytest.raises(ValueError, match="lower end > 0"):
        iv.Prior({**iv.IN_VIVO_BOX, "Dt": (0.0, 0.003)}, log=("Dt",))
    with pytest.raises(ValueError, match="unknown key"):
        iv.Prior({**iv.IN_VIVO_BOX, "Dstar": (0.0, 0.003)})


def test_fit_bayes_learns_the_log_uniform_prior():
    """Under voxels drawn from a log-uniform prior, the posterior mean under that prior beats the one
    under the uniform box (it is the least-squares optimum), and a uniform Prior equals its box dict."""
    prior = iv.IN_VIVO_PRIOR
    b = iv.SEED_B_VALUES
    S, p = _voxels(prior, b, 20, 400, 3)
    log = iv.fit_bayes(S, b, sigma=0.05, prior=prior, grid=(24, 24, 24), interval=0.9)
    box = iv.fit_bayes(S, b, sigma=0.05, prior=iv.IN_VIVO_BOX, grid=(24, 24, 24))
    same = iv.fit_bayes(S, b, sigma=0.05, prior=iv.Prior(iv.IN_VIVO_BOX), grid=(24, 24, 24))
    np.testing.assert_array_equal(same.Dt, box.Dt)  # the same computation, same shapes
    for k, factor in (("Dp", 0.85), ("Dt", 1.0)):  # measured: 0.69 and 0.86 of the uniform prior's NRMSE
        assert iv.nrmse(getattr(log.mean, k), getattr(p, k)) < factor * iv.nrmse(getattr(box, k), getattr(p, k))
        inside = (getattr(log.lower, k) <= getattr(p, k)) & (getattr(p, k) <= getattr(log.upper, k))
        assert 0.84 <= inside.mean() <= 0.96  # 90 % intervals, 400 voxels: +-3.5 binomial SDs


# --- protocols ---------------------------------------------------------------------------------------

def test_protocol_of_reads_repeats_in_any_order():
    protocol, index = protocol_of([500, 0, 10, 500, 0, 10, 200, 500])
    np.testing.assert_array_equal(protocol.b_values, [0, 10, 200, 500])
    np.testing.assert_array_equal(protocol.counts, [2, 2, 1, 3])
    np.testing.assert_array_equal(protocol.b_values[index], [500, 0, 10, 500, 0, 10, 200, 500])
    s = np.arange(16, dtype=float).reshape(2, 8)
    np.testing.assert_allclose(average_repeats(s, index, protocol.counts)[0], [2.5, 3.5, 6, (0 + 3 + 7) / 3])
    with pytest.raises(ValueError, match="no b = 0"):
        protocol_of([10, 20, 500])


def test_drawn_protocols_lie_in_the_range_and_are_seeded():
    b, c = draw_protocols(400, seed=5)
    b2, c2 = draw_protocols(400, seed=5)
    np.testing.assert_array_equal(b, b2)
    np.testing.assert_array_equal(c, c2)
    k = (c > 0).sum(axis=1)
    assert k.min() == 4 and k.max() == 25
    for i in range(len(b)):
        assert protocol_problems(Protocol(b[i, : k[i]], c[i, : k[i]])) == []
        assert np.all(np.diff(b[i, : k[i]]) > 0) and b[i, 0] == 0
    assert (c[:, 1] > 1).any() and (c[:, 1] == 1).any()  # repeated and averaged protocols both drawn


@pytest.mark.parametrize("b, problem", [([0, 100, 600], "3 distinct"), ([0, 150, 300, 500, 800], "at or below 100"),
                                        ([0, 10, 20, 60, 150, 300, 2000], "largest b-value 2000"),
                                        ([0, 10, 20, 100, 300], "at or above 150"),
                                        (list(range(0, 1300, 50)), "26 distinct")])
def test_protocol_problems_name_each_way_out(b, problem):
    problems = protocol_problems(protocol_of(b)[0])
    assert any(problem in p for p in problems), problems
    assert protocol_problems(protocol_of([0, 10, 20, 60, 150, 300, 500, 1000])[0]) == []


# --- the architecture --------------------------------------------------------------------------------

@pytest.mark.numerics
def test_specialised_network_is_the_any_protocol_network_for_that_protocol():
    net = iv.IVIMNetAnyProtocol(seed=3).eval()
    b, c = draw_protocols(1, seed=8)
    k = int((c[0] > 0).sum())
    spec = net.specialise(Protocol(b[0, :k], c[0, :k]))
    assert isinstance(spec, iv.IVIMNetUncertainty) and spec.prior == net.prior
    x = torch.rand(1, 50, b.shape[1] - 1) * torch.tensor(c[:, 1:] > 0)
    z = torch.rand(1, 50) * 2 - 1
    with torch.no_grad():
        full = net(x, z, torch.tensor(b, dtype=torch.float32), torch.tensor(c, dtype=torch.float32))
        one = spec(torch.cat([x[0, :, : k - 1], z[0, :, None]], dim=1))
    tol = network_rounding(spec)
    assert float((full - one).abs().max()) <= tol
    other = iv.IVIMNetAnyProtocol(seed=4).eval().specialise(Protocol(b[0, :k], c[0, :k]))
    with torch.no_grad():
        assert float((other(torch.cat([x[0, :, : k - 1], z[0, :, None]], dim=1)) - one).abs().max()) > 100 * tol


@pytest.mark.numerics
def test_retraining_resumes_to_the_same_network(tmp_path, monkeypatch):
    small = {"protocols_per_batch": 4, "voxels_per_protocol": 16, "validation_protocols": 4,
             "validation_voxels": 16, "eval_every": 5, "warmup": 2}
    whole = pt.train_pretrained(tmp_path / "a", steps=10, progress=False, **small)
    assert [h["step"] for h in whole.history["evaluations"]] == [5, 10]
    writes = []
    original = pt._write_atomically

    def interrupt_after_first(path, payload):
        original(path, payload)
        writes.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(pt, "_write_atomically", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        pt.train_pretrained(tmp_path / "b", steps=10, progress=False, **small)
    monkeypatch.setattr(pt, "_write_atomically", original)
    resumed = pt.train_pretrained(tmp_path / "b", steps=10, progress=False, **small)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # same computation, same shapes, same process: the same bits
    loaded = iv.load_pretrained(tmp_path / "b" / "pretrained.pt")
    assert loaded.history["best_validation_loss"] == resumed.history["best_validation_loss"]
    with pytest.raises(ValueError, match="other settings"):
        pt.train_pretrained(tmp_path / "b", steps=12, progress=False, **small)


@pytest.mark.numerics
def test_a_finished_run_extended_by_a_restart_is_the_run_with_that_restart(tmp_path):
    small = {"protocols_per_batch": 4, "voxels_per_protocol": 16, "validation_protocols": 4,
             "validation_voxels": 16, "eval_every": 5, "warmup": 2}
    restart = {"restart_step": 10, "restart_lr": 3e-4}
    at_once = pt.train_pretrained(tmp_path / "a", steps=20, progress=False, **small, **restart)
    pt.train_pretrained(tmp_path / "b", steps=10, progress=False, **small)  # one cycle, finished
    extended = pt.train_pretrained(tmp_path / "b", steps=20, progress=False, **small, **restart)
    assert [h["step"] for h in extended.history["evaluations"]] == [5, 10, 15, 20]
    for (name, a), b in zip(at_once.state_dict().items(), extended.state_dict().values()):
        assert torch.equal(a, b), name
    lrs = [pt._lr(s, {**pt.PRETRAINED_TRAINING, **small, **restart, "steps": 20}) for s in range(20)]
    assert lrs[1] == pytest.approx(1e-3) and lrs[9] < 1e-4 and lrs[11] == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="other settings"):  # a restart earlier than the saved step changes the past
        pt.train_pretrained(tmp_path / "b", steps=30, progress=False, **small, restart_step=8, restart_lr=3e-4)


# --- the shipped network -----------------------------------------------------------------------------

def test_shipped_network_is_checksummed_and_small(net):
    path = os.path.join(os.path.dirname(iv.__file__), "data", "pretrained.pt")
    assert os.path.getsize(path) < 10e6
    assert net.prior == iv.IN_VIVO_PRIOR
    assert net.history["settings"]["steps"] == iv.PRETRAINED_TRAINING["steps"]


def test_load_pretrained_refuses_another_network(tmp_path):
    path = iv.save_model(iv.IVIMNet(iv.SEED_B_VALUES), tmp_path / "seed.pt")
    with pytest.raises(ValueError, match="not the any-protocol network"):
        iv.load_pretrained(path)


@pytest.mark.parametrize("b", [[0, 10, 20, 60, 150, 300, 500, 1000], [0, 5, 10, 20, 30, 40, 60, 150, 300, 500, 700]])
def test_shipped_network_is_near_the_posterior_under_its_prior(net, b):
    """Small version of the acceptance (benchmarks/pretrained.py: 2000 voxels, 6 protocols, 4 SNRs)."""
    S, p = _voxels(net.prior, b, 20, 400, 21)
    est = iv.predict(net, S, b_values=b, sigma=0.05, interval=0.9)
    post = iv.fit_bayes(S, b, sigma=0.05, prior=net.prior, grid=(32, 48, 32))
    for k in PARAMS:
        ratio = iv.nrmse(getattr(est.mean, k), getattr(p, k)) / iv.nrmse(getattr(post, k), getattr(p, k))
        assert ratio < 1.15, (k, ratio)
        inside = (getattr(est.lower, k) <= getattr(p, k)) & (getattr(p, k) <= getattr(est.upper, k))
        assert 0.84 <= inside.mean() <= 0.96, (k, inside.mean())


@pytest.mark.numerics
def test_repeats_and_order_are_read_from_the_b_values(net):
    b = np.array([0, 10, 20, 60, 150, 300, 500, 1000.0])
    rng = np.random.default_rng(2)
    p = net.prior.sample(300, seed=rng)
    clean = iv.ivim(b, p.Dp[:, None], p.Dt[:, None], p.Fp[:, None])
    images = iv.add_rician_noise(np.repeat(clean, 3, axis=1), 0.05, rng)  # 3 images per b-value
    b3 = np.repeat(b, 3)
    repeated = iv.predict(net, images, b_values=b3, sigma=0.05)
    order = rng.permutation(len(b3))
    shuffled = iv.predict(net, images[:, order], b_values=b3[order], sigma=0.05)
    for k in PARAMS:
        np.testing.assert_allclose(getattr(shuffled, k), getattr(repeated, k), rtol=0,
                                   atol=network_rounding(net.specialise(protocol_of(b3)[0])))
    single = iv.predict(net, images[:, ::3], b_values=b, sigma=0.05)
    for k in PARAMS:  # three images per b-value: closer to the truth than one
        assert iv.nrmse(getattr(repeated, k), getattr(p, k)) < iv.nrmse(getattr(single, k), getattr(p, k))
    est = iv.predict(net, images, b_values=b3)  # sigma from the spread of the repeated b = 0 images
    assert np.isfinite(est.Dt).all()


def test_bad_input_is_refused_in_one_line(net):
    S = np.ones((4, 8))
    with pytest.raises(ValueError, match="pass b_values"):
        iv.predict(net, S, sigma=0.05)
    with pytest.raises(ValueError, match="outside the range"):
        iv.predict(net, np.ones((4, 3)), b_values=[0, 100, 600], sigma=0.05)
    with pytest.raises(ValueError, match=r"shaped \(\.\.\., 8\)"):
        iv.predict(net, np.ones((4, 7)), b_values=iv.SEED_B_VALUES, sigma=0.05)
    with pytest.raises(ValueError, match="NaN"):
        iv.predict(net, np.full((4, 8), np.nan), b_values=iv.SEED_B_VALUES, sigma=0.05)
    est = iv.predict(net, np.vstack([np.full((1, 8), np.nan), np.linspace(1, 0.3, 8)[None]]),
                     b_values=iv.SEED_B_VALUES, sigma=0.05, invalid="nan")
    assert np.isnan(est.Dt[0]) and np.isfinite(est.Dt[1])


def test_command_line_fits_a_scan_with_the_shipped_network(tmp_path):
    from ivim_demo import cli

    data = os.path.join(os.path.dirname(iv.__file__), "data", "wetscherek")
    out = tmp_path / "maps"
    assert cli.main(["fit", os.path.join(data, "volunteer1_dwi.nii.gz"), "--bvals",
                     os.path.join(data, "volunteer1_dwi.bval"), "--mask", os.path.join(data, "volunteer1_mask.nii.gz"),
                     "--out", str(out), "--method", "pretrained", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "pretrained" and "train_seconds" not in summary and summary["voxels"] > 1000
    assert (out / "Dt_sd.nii.gz").exists() and not (out / "pretrained.pt").exists()
    assert summary["warnings"] == []


def test_fit_all_leaves_the_pretrained_network_out():
    S, _ = iv.training_data(20, sigma=0.05, seed=1)
    estimates, _ = iv.fit_all(S, iv.SEED_B_VALUES, snr=20, bayes_grid=(8, 8, 8))
    assert "pretrained" not in estimates and "LSQ" in estimates
