"""IVIM-NET_optim, validation stopping, supervised training, the SNR recipes."""
import numpy as np
import pytest
import torch

import ivim_demo as iv

pytestmark = pytest.mark.numerics  # run again under other numeric paths (Makefile)

B = iv.SEED_B_VALUES


def test_optim_shapes_switches_and_bounds():
    net = iv.IVIMNetOptim(B)
    assert net.settings()["width"] == 8 and net.settings()["depth"] == 2
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) == 2
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 2
    net.eval()
    X = torch.cat([torch.rand(50, 8), 1e3 * torch.randn(50, 8)])  # also absurd inputs
    X_pred, Dp, Dt, Fp, S0 = net(X)
    assert X_pred.shape == (100, 8) and S0.shape == (100, 1)
    for p, name in zip((Dp, Dt, Fp, S0), ("Dp", "Dt", "Fp", "S0")):
        lo, hi = iv.FIT_BOUNDS[name]
        assert p.min() >= lo and p.max() <= hi, name
    torch.testing.assert_close(X_pred, iv.ivim(net.b_values, Dp, Dt, Fp, S0))
    plain = iv.IVIMNetOptim(B, fit_s0=False, parallel=False, batch_norm=False, dropout=0.0)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.Dropout)) for m in plain.modules())
    assert plain.encode(torch.rand(3, 8)).shape == (3, 3)
    assert plain(torch.rand(3, 8))[4].eq(1).all()
    with pytest.raises(ValueError, match="lower < upper"):
        iv.IVIMNetOptim(B, bounds={"Dp": (0.1, 0.01)})


def test_parallel_subnetworks_are_independent():
    net = iv.IVIMNetOptim(B, batch_norm=False, dropout=0.0)
    net.eval()
    X = torch.rand(20, 8)
    before = net.encode(X)
    with torch.no_grad():  # change only the Dt sub-network (group 1) of the hidden layer
        net.encoder[2].weight[1] += 0.5
    after = net.encode(X)
    changed = (after - before).abs().max(dim=0).values > 0
    assert changed.tolist() == [False, True, False, False]


def test_unsupervised_optim_recovers_low_noise_parameters_within_bounds():
    signals, _ = iv.training_data(20_000, sigma=0.005, seed=31)
    net = iv.IVIMNetOptim(B, seed=0)
    history = iv.train(net, signals, lr=1e-3, max_epochs=30, seed=0, progress=False)
    assert history.val_loss, "IVIMNetOptim stops on a validation split by default"
    test, truth = iv.training_data(1000, sigma=0.005, seed=32)
    est = iv.predict(net, test)
    assert np.median(np.abs(est.Dt - truth.Dt) / truth.Dt) < 0.1
    assert np.median(np.abs(est.Fp - truth.Fp)) < 0.04
    assert np.median(np.abs(est.S0 / test[:, 0] - 1)) < 0.02
    assert est.Dp.min() >= iv.FIT_BOUNDS["Dp"][0] and est.Dp.max() <= iv.FIT_BOUNDS["Dp"][1]
    assert iv.spearman(est.Dp, truth.Dp) > 0.5


def test_validation_stopping_uses_the_held_out_loss():
    signals, _ = iv.training_data(4000, sigma=0.05, seed=33)
    net = iv.IVIMNet(B, seed=0)
    h = iv.train(net, signals, validation_fraction=0.25, lr=0.01, patience=3, max_epochs=60, seed=0, progress=False)
    assert len(h.val_loss) == len(h.loss) == h.epochs
    assert h.val_loss[h.best_epoch] == min(h.val_loss)
    if h.stopped_early:
        assert h.epochs == h.best_epoch + 1 + 3
    with pytest.raises(ValueError, match="validation_fraction"):
        iv.train(net, signals, validation_fraction=1.0, progress=False)
    # the seed's default stays: no validation split for IVIMNet
    assert iv.train(net, signals, max_epochs=2, progress=False).val_loss == []


def test_supervised_training_approaches_the_posterior_mean():
    signals, truth = iv.training_data(20_000, sigma=0.05, seed=34)  # SNR 20
    net = iv.IVIMNetOptim(B, bounds=iv.PARAMETER_BOX, fit_s0=False, dropout=0.0, seed=0)
    iv.train(net, signals, targets=truth, max_epochs=30, seed=0, progress=False)
    test, t_truth = iv.training_data(600, sigma=0.05, seed=35)
    est = iv.predict(net, test)
    bayes = iv.fit_bayes(test, B, sigma=0.05, grid=(24, 24, 24))
    lsq = iv.fit_lsq(test, B)
    for name in iv.PARAMS:
        e, b_, l_ = (iv.nrmse(getattr(x, name), getattr(t_truth, name)) for x in (est, bayes, lsq))
        assert e < 1.15 * b_, (name, e, b_)  # near the accuracy limit after a short training
        assert e < l_, (name, e, l_)


def test_supervised_rejects_bad_targets():
    signals, truth = iv.training_data(500, seed=36)
    net = iv.IVIMNetOptim(B)
    with pytest.raises(ValueError, match="one finite value per voxel"):
        iv.train(net, signals, targets=iv.IVIMParams(truth.Dp[:10], truth.Dt, truth.Fp, truth.S0), progress=False)


def test_optim_checkpoint_round_trip(tmp_path):
    net = iv.train_for_snr(50, method="optim", n=2000, max_epochs=2, progress=False)
    path = iv.save_model(net, tmp_path / "optim.pt")
    loaded = iv.load_model(path)
    assert loaded.settings() == net.settings()
    assert loaded.history["epochs"] == 2
    test, _ = iv.training_data(200, seed=37)
    for a, b in zip(iv.predict(net, test), iv.predict(loaded, test)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="trained on"):
        iv.predict(loaded, test, b_values=[0, 10, 20, 60, 150, 300, 500, 900])


@pytest.mark.parametrize("method, cls", [("ivimnet", iv.IVIMNet), ("orig", iv.IVIMNet), ("optim", iv.IVIMNetOptim),
                                         ("supervised_optim", iv.IVIMNetOptim)])
def test_train_for_snr_recipes(method, cls):
    """One name per network: "ivimnet" everywhere, "orig" kept as its old alias."""
    net = iv.train_for_snr(20, method=method, n=1500, max_epochs=2, seed=1, progress=False)
    assert isinstance(net, cls) and net.history["epochs"] == 2
    assert bool(net.history["val_loss"]) == (method not in ("ivimnet", "orig"))


def test_train_for_snr_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        iv.train_for_snr(20, method="magic")
    with pytest.raises(ValueError, match="snr"):
        iv.train_for_snr(0)


def test_parallel_trainings_equal_sequential_ones():
    kw = dict(method="orig", n=1500, max_epochs=2)
    together = iv.train_many(20, [0, 1], workers=2, **kw)
    alone = iv.train_many(20, [0, 1], workers=1, **kw)
    # exact: training is single-threaded, and both calls train the two networks as one stack, with the same shapes
    for a, b in zip(together, alone):
        for va, vb in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(va, vb)
    assert not torch.equal(together[0].encoder[0].weight, together[1].encoder[0].weight)


def test_lr_patience_divides_the_learning_rate_on_plateaus():
    signals, _ = iv.training_data(3000, sigma=0.05, seed=38)
    net = iv.IVIMNetOptim(B, seed=0)
    h = iv.train(net, signals, lr=0.01, lr_patience=1, patience=8, max_epochs=40, seed=0, progress=False)
    assert h.lr[0] == 0.01 and len(h.lr) == h.epochs
    assert all(b <= a for a, b in zip(h.lr, h.lr[1:])), "the learning rate only goes down"
    assert min(h.lr) < 0.01, "plateaus of a 3000-voxel training must trigger at least one decay"
    np.testing.assert_allclose(np.log(np.array(h.lr) / 0.01) / np.log(0.2),
                               np.round(np.log(np.array(h.lr) / 0.01) / np.log(0.2)), atol=1e-6)
    assert set(iv.train(iv.IVIMNet(B), signals, max_epochs=3, progress=False).lr) == {1e-3}  # seed: constant
    with pytest.raises(ValueError, match="lr_patience"):
        iv.train(net, signals, lr_patience=0, progress=False)


def test_train_options_override_the_recipe():
    net = iv.train_for_snr(20, method="orig", n=1500, max_epochs=50, seed=1, progress=False,
                           train_options={"max_epochs": 2, "validation_fraction": 0.2})
    assert net.history["epochs"] == 2 and len(net.history["val_loss"]) == 2
    sup = iv.train_for_snr(20, method="supervised_optim", n=1500, max_epochs=2, seed=1, progress=False)
    assert sup.history["lr"] == [1e-3, 1e-3]


def test_every_ablation_step_after_the_seed_stops_on_a_validation_split():
    # stopping on the summed training loss with dropout/batch norm ran > 15 min at full size
    first, *rest = iv.ABLATION
    assert first[1] == "ivimnet" and first[3] == {}
    for label, method, _, train_options in rest:
        default = 0.0 if method == "ivimnet" else 0.1  # the recipes' validation split
        assert train_options.get("validation_fraction", default) > 0, label
    assert [step[1] for step in rest].count("optim") == 4 and rest[-1][1] == "supervised_optim"


def test_train_for_snr_box_sets_the_prior_and_the_supervised_bounds():
    low = {**iv.PARAMETER_BOX, "Fp": (0.02, 0.1)}
    net = iv.train_for_snr(20, method="supervised_optim", n=1500, max_epochs=2, progress=False, box=low)
    assert net.settings()["bounds"]["Fp"] == [0.02, 0.1]
    est = iv.predict(net, iv.training_data(300, sigma=0.05, seed=39)[0])
    assert est.Fp.min() >= 0.02 and est.Fp.max() <= 0.1
    for bad in ({"Dp": (0.01, 0.1)}, {**low, "Fp": (0.3, 0.1)}, {**low, "Fp": (0.5, 1.5)}):
        with pytest.raises(ValueError, match="box"):
            iv.train_for_snr(20, method="supervised_optim", n=1500, max_epochs=1, progress=False, box=bad)
