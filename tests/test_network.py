import copy

import numpy as np
import pytest
import torch

import ivim_demo as iv

pytestmark = pytest.mark.numerics  # run again under other numeric paths (Makefile)


def test_network_is_the_seed_architecture():
    net = iv.IVIMNet(iv.SEED_B_VALUES)
    linear = [m for m in net.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(7, 7)] * 3 + [(7, 3)]
    assert sum(isinstance(m, torch.nn.ELU) for m in net.encoder) == 3
    X_pred, Dp, Dt, Fp = net(torch.rand(5, 7))
    assert X_pred.shape == (5, 7) and Dp.shape == Dt.shape == Fp.shape == (5, 1)
    assert (Dp >= 0).all() and (Dt >= 0).all() and (Fp >= 0).all()
    # the decoder is the IVIM equation at b > 0
    expected = iv.ivim(net.b_values_no0, Dp, Dt, Fp)
    torch.testing.assert_close(X_pred, expected)


def test_network_init_is_seeded_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = iv.IVIMNet(iv.SEED_B_VALUES, seed=4), iv.IVIMNet(iv.SEED_B_VALUES, seed=4), iv.IVIMNet(iv.SEED_B_VALUES, seed=5)
    after = torch.rand(3)
    torch.testing.assert_close(before, after)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb)
    assert not torch.equal(a.encoder[0].weight, c.encoder[0].weight)


def test_training_recovers_dt_and_fp(trained_net, held_out):
    net, history = trained_net
    signals, truth = held_out
    est = iv.predict(net, signals)
    assert est.Dt.shape == (2000,)
    # the seed's network after a short training (20k voxels, <= 80 epochs) on SNR 200 data. How far it gets depends
    # on the numeric path (another CPU's or MKL's rounding sends the training elsewhere, as another seed does): over
    # 5 training seeds on 4 numeric paths, median Dt error 5-28 %, median Fp error 0.013-0.061, rank correlation
    # 0.85-0.96 (Dt) and 0.77-0.95 (Fp). An untrained net: Dt error 1200-30000 %, Fp error 0.07-0.71, Dt rank
    # correlation -0.87 to 0.43 (its Fp ranking can be right by chance, up to 0.93: the Dt checks fail it)
    assert np.median(np.abs(est.Dt - truth.Dt) / truth.Dt) < 0.35
    assert np.median(np.abs(est.Fp - truth.Fp)) < 0.08
    assert iv.spearman(est.Dt, truth.Dt) > 0.7
    assert iv.spearman(est.Fp, truth.Fp) > 0.6
    np.testing.assert_allclose(est.S0, signals[:, 0])


def test_history_records_training(trained_net):
    _, history = trained_net
    assert history.epochs == len(history.loss) >= 1
    assert history.loss[history.best_epoch] == min(history.loss)
    assert history.seconds > 0


def _train(seed, **kw):
    signals, _ = iv.training_data(3000, sigma=0.01, seed=5)
    net = iv.IVIMNet(iv.SEED_B_VALUES, seed=seed)
    return net, iv.train(net, signals, seed=seed, progress=False, **kw)


def test_same_seed_same_weights_and_predictions():
    (a, ha), (b, hb) = _train(1, max_epochs=3), _train(1, max_epochs=3)
    assert ha.loss == hb.loss
    for va, vb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(va, vb)
    signals, _ = iv.training_data(50, seed=8)
    np.testing.assert_array_equal(iv.predict(a, signals).Dp, iv.predict(b, signals).Dp)
    c, hc = _train(2, max_epochs=3)
    assert hc.loss != ha.loss


def test_best_not_last_weights_are_restored():
    # a high learning rate makes the loss jump around, so the best epoch is not the last
    kw = dict(lr=0.05, max_epochs=12, patience=4)
    net, history = _train(3, **kw)
    assert history.best_epoch < history.epochs - 1, "precondition: last epoch is not the best"
    # training is deterministic: a run stopped right after the best epoch has the best weights
    ref, _ = _train(3, **{**kw, "max_epochs": history.best_epoch + 1})
    for va, vb in zip(net.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(va, vb)


def test_swap_guard():
    Dp, Dt, Fp = np.array([0.001, 0.0012]), np.array([0.05, 0.03]), np.array([0.8, 0.7])
    sDp, sDt, sFp = iv.swap_guard(Dp, Dt, Fp)
    np.testing.assert_array_equal(sDp, Dt)
    np.testing.assert_array_equal(sDt, Dp)
    np.testing.assert_allclose(sFp, [0.2, 0.3])
    same = iv.swap_guard(Dt, Dp, Fp)
    np.testing.assert_array_equal(same[0], Dt)


def test_predict_applies_swap_guard_to_a_swapped_network():
    net = iv.IVIMNet(iv.SEED_B_VALUES)
    with torch.no_grad():  # force outputs (Dp, Dt, Fp) = (0.001, 0.04, 0.75): swapped labelling
        last = net.encoder[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.001, 0.04, 0.75]))
    signals = iv.training_data(10, seed=0)[0]
    iv.decide_labelling(net, signals)  # train() does this once, on the training signals
    est = iv.predict(net, signals)
    np.testing.assert_allclose(est.Dp, 0.04, rtol=1e-6)
    np.testing.assert_allclose(est.Dt, 0.001, rtol=1e-5)
    np.testing.assert_allclose(est.Fp, 0.25, rtol=1e-6)


def test_predict_keeps_leading_shape(trained_net):
    net, _ = trained_net
    dwi, _ = iv.phantom(seed=0)
    est = iv.predict(net, dwi[:10, :20])
    assert all(getattr(est, k).shape == (10, 20) for k in est._fields)
    np.testing.assert_allclose(est.S0, dwi[:10, :20, 0])


def test_checkpoint_round_trip_and_refusals(trained_net, tmp_path):
    net, history = trained_net
    path = iv.save_model(net, tmp_path / "sub" / "net.pt", history=history)
    loaded = iv.load_model(path)
    assert loaded.settings() == net.settings()
    assert loaded.history["best_epoch"] == history.best_epoch
    signals, _ = iv.training_data(100, seed=1)
    np.testing.assert_array_equal(iv.predict(loaded, signals).Fp, iv.predict(net, signals).Fp)
    # other acquisitions are refused
    with pytest.raises(ValueError, match="8 were expected"):
        iv.predict(loaded, signals[:, :7])
    other_b = [0, 10, 20, 60, 150, 300, 500, 800]
    with pytest.raises(ValueError, match="trained on"):
        iv.predict(loaded, signals, b_values=other_b)
    iv.predict(loaded, signals, b_values=iv.SEED_B_VALUES)  # the right ones pass


def test_load_model_refuses_bad_files(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        iv.load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        iv.load_model(junk)
    code = tmp_path / "code.pt"
    torch.save({"format": "x", "obj": copy.copy}, code)  # a function: refused by weights_only
    with pytest.raises(ValueError, match="not a readable"):
        iv.load_model(code)
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not an ivim-demo checkpoint"):
        iv.load_model(other)


def test_train_rejects_bad_input():
    net = iv.IVIMNet(iv.SEED_B_VALUES)
    signals, _ = iv.training_data(300, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        iv.train(net, signals[:100], progress=False)
    with pytest.raises(ValueError, match="patience"):
        iv.train(net, signals, patience=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        iv.train(net, signals, lr=-1.0, progress=False)
    bad = signals.copy()
    bad[7, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        iv.train(net, bad, progress=False)
    with pytest.raises(ValueError, match="7 b-values"):
        iv.train(net, signals[:, 1:], progress=False)


def test_train_warns_when_the_loss_never_improves():
    with pytest.warns(RuntimeWarning, match="never improved the loss"):
        net, history = _train(0, lr=1e-12, max_epochs=4, patience=3)
    assert any("never improved" in w for w in history.warnings)
    assert history.as_dict()["warnings"] == history.warnings  # what a checkpoint stores


def test_train_warns_about_a_parameter_the_network_gives_as_a_constant(trained_net):
    net, history = copy.deepcopy(trained_net)
    assert history.warnings == []
    signals, _ = iv.training_data(500, sigma=0.01, seed=5)
    with torch.no_grad():  # the Fp output row ignores the input: Fp = |bias| for every signal
        net.encoder[-1].weight[2].zero_()
        net.encoder[-1].bias[2] = 0.3
    found = iv.training_warnings(net, history, signals)
    fp = iv.predict(net, signals).Fp  # 0.3 or 0.7, by the network's labelling
    assert np.ptp(fp) == 0 and fp[0] in (np.float32(0.3), np.float32(0.7))
    assert len(found) == 1 and f"same Fp for every signal ({fp[0]:.3g}," in found[0]


@pytest.mark.parametrize("b_set", list(iv.B_VALUE_SETS))
def test_shipped_explorer_networks_learned(b_set):
    """Each shipped network estimates held-out signals (not its training ones) better than a constant would."""
    net = iv.explorer_network(b_set)
    signals, truth = iv.training_data(2000, iv.B_VALUE_SETS[b_set], sigma=1 / 50, seed=123)
    est = iv.predict(net, signals)
    # answering every signal with the mean truth gives NRMSE = SD / mean: 0.34 (Dt), 0.35 (Fp) here (Dp, 0.47,
    # is no better estimated by these networks at SNR 50: only its spread is checked, below)
    assert iv.nrmse(est.Dt, truth.Dt) < 0.25 and iv.nrmse(est.Fp, truth.Fp) < 0.3
    assert iv.training_warnings(net, iv.TrainHistory(), signals) == []
