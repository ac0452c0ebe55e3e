"""IVIMNET's own settings (Kaandorp et al. 2021): the networks' reproduction options and training options."""
import numpy as np
import pytest
import torch

import ivim_demo as iv
from ivim_demo.nets import published as kp



@pytest.mark.numerics  # floats through other kernels
def test_kaandorp_optim_network_matches_ivimnet():
    net = kp.kaandorp_network("optim", seed=0)
    # bounds widened by 30 % of each range (IVIMNET's boundsrange)
    lo, hi = net.lo.numpy(), net.hi.numpy()
    np.testing.assert_allclose(lo, [0.005 - 0.3 * 0.195, -0.0015, -0.21, 0.7 - 0.39], rtol=1e-5)
    np.testing.assert_allclose(hi, [0.2 + 0.3 * 0.195, 0.0065, 0.91, 2.0 + 0.39], rtol=1e-5)
    # dropout after the first hidden layer only (2 layers)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 1
    assert sum(isinstance(m, torch.nn.Dropout) for m in iv.IVIMNetOptim(kp.KAANDORP_B_VALUES).modules()) == 2
    net.eval()
    X = torch.rand(40, 11)
    X_pred, Dp, Dt, Fp, S0 = net(X)
    # the amplitudes' form: X = Ap e^{-b Dp} + At e^{-b Dt}, Fp = Ap/(Ap + At), S0 = Ap + At
    raw = net.lo + torch.sigmoid(net.encoder(X)) * (net.hi - net.lo)
    ap, at = raw[:, 2:3], raw[:, 3:4]
    b = net.b_values
    torch.testing.assert_close(X_pred, ap * torch.exp(-b * raw[:, 0:1]) + at * torch.exp(-b * raw[:, 1:2]))
    torch.testing.assert_close(Fp, ap / (ap + at))
    torch.testing.assert_close(S0, ap + at)
    assert kp.kaandorp_network("orig").settings()["b_values"] == kp.KAANDORP_B_VALUES.tolist()


def test_reproduction_options_round_trip_a_checkpoint(tmp_path):
    net = kp.kaandorp_network("optim", seed=3).eval()
    assert net.settings()["widen"] == 0.3 and net.settings()["amplitudes"] is True
    assert "widen" not in iv.IVIMNetOptim(kp.KAANDORP_B_VALUES).settings()  # older checkpoints read the same
    iv.save_model(net, tmp_path / "k.pt")
    again = iv.load_model(tmp_path / "k.pt")
    X = torch.rand(5, 11)
    torch.testing.assert_close(again.encode(X), net.encode(X))


def test_reproduction_option_errors():
    with pytest.raises(ValueError, match="needs fit_s0=True"):
        iv.IVIMNetOptim(kp.KAANDORP_B_VALUES, amplitudes=True, fit_s0=False)
    with pytest.raises(ValueError, match="widen"):
        iv.IVIMNetOptim(kp.KAANDORP_B_VALUES, widen=-0.1)
    with pytest.raises(ValueError, match="name must be one of"):
        kp.kaandorp_network("best")


@pytest.mark.numerics  # floats through other kernels
def test_kaandorp_data_and_filter():
    s, truth = kp.kaandorp_data(20_000, seed=0)
    assert s.shape == (20_000, 11)
    for name, (lo, hi) in kp.KAANDORP_BOX.items():
        v = getattr(truth, name)
        assert v.min() >= lo and v.max() <= hi and abs(v.mean() - (lo + hi) / 2) < 0.02 * (hi - lo), name
    clean = iv.ivim(kp.KAANDORP_B_VALUES, truth.Dp[:, None], truth.Dt[:, None], truth.Fp[:, None])
    assert np.std(s - clean) == pytest.approx(1 / kp.KAANDORP_SNR, rel=0.02)  # every sample has noise
    assert (s - clean != 0).all()
    kept, keep = kp.ivimnet_training_filter(s)
    assert keep.mean() > 0.99 and kept.max() <= 1.5 and len(kept) == keep.sum()
    bad = s[:1].copy()
    bad[0, 8:] = 2.0  # rises at high b: not IVIM-like
    assert not kp.ivimnet_training_filter(bad)[1][0]


def _short(net, weights, **kw):
    s, _ = kp.kaandorp_data(4_000, seed=1)
    return iv.train(net, s, lr=3e-3, batch_size=64, batches_per_epoch=20, max_epochs=60, patience=2,
                    validation_fraction=0.2, noise="gaussian", progress=False, weights=weights, seed=0, **kw)


def test_train_keeps_the_last_weights_only_when_asked():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        best = iv.IVIMNetOptim(kp.KAANDORP_B_VALUES, seed=0)
        last = iv.IVIMNetOptim(kp.KAANDORP_B_VALUES, seed=0)
        h_best, h_last = _short(best, "best"), _short(last, "last")
    assert h_best.loss == h_last.loss and h_best.best_epoch == h_last.best_epoch  # the same training
    assert h_last.stopped_early and h_last.best_epoch == h_last.epochs - 3  # the last epoch was not the best
    X = torch.rand(8, 11)
    assert not torch.allclose(best.encode(X), last.encode(X))
    with pytest.raises(ValueError, match="weights must be"):
        _short(iv.IVIMNetOptim(kp.KAANDORP_B_VALUES), "final")


def test_weight_decay_and_clip_options():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain, decayed = (kp.kaandorp_network("optim", seed=0) for _ in range(2))
        h0 = _short(plain, "best", clip=(0.0, 3.0))
        h1 = _short(decayed, "best", clip=(0.0, 3.0), weight_decay=0.1)
    assert h0.loss != h1.loss
    # with a negative Dp allowed, exp(-b Dp) overflows the loss unless the reconstruction is clamped: a network
    # whose Dp output sits at its (negative) lower bound, hardly moved by one epoch at a tiny lr
    s, _ = kp.kaandorp_data(4_000, seed=1)
    losses = {}
    for clip in (None, (0.0, 3.0)):
        net = kp.kaandorp_network("optim", seed=0)
        with torch.no_grad():
            net.encoder[-1].bias[0] = -50.0  # group 0 is Dp: sigmoid(-50) ~ 0, Dp = its widened lower bound < 0
        assert float(net.lo[0]) < 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            losses[clip] = iv.train(net, s, lr=1e-9, batch_size=64, batches_per_epoch=5, max_epochs=1,
                                    validation_fraction=0.2, noise="gaussian", progress=False, clip=clip).loss[0]
    assert losses[None] > 1e6 and losses[(0.0, 3.0)] < 5 * 9  # 5 batches, each an MSE of values clamped to [0, 3]
    for bad in ((3.0, 0.0), (0.0,), "0-3"):
        with pytest.raises(ValueError, match="clip must be"):
            _short(iv.IVIMNetOptim(kp.KAANDORP_B_VALUES), "best", clip=bad)
    with pytest.raises(ValueError, match="weight_decay"):
        _short(iv.IVIMNetOptim(kp.KAANDORP_B_VALUES), "best", weight_decay=-1.0)


def test_reproduce_kaandorp_small():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 3 epochs on 4,000 signals: far from trained
        out = kp.reproduce_kaandorp(("orig",), n=4_000, n_eval=500, repeats={"orig": 2}, max_epochs=3)
    assert set(out["measured"]) == {"orig"} and out["published"]["orig"] == kp.KAANDORP_PUBLISHED["orig"]
    m = out["measured"]["orig"]
    assert set(m["NRMSE"]) == set(m["CV_NET"]) == {"D", "f", "Dstar"}
    assert all(v > 0 and np.isfinite(v) for v in (*m["NRMSE"].values(), *m["CV_NET"].values()))
    assert 0 <= m["rho_Dstar_f"] <= 1 and len(out["trainings"]["orig"]) == 2
    assert len(m["NRMSE_each"]["D"]) == 2 and m["NRMSE"]["D"] == pytest.approx(np.mean(m["NRMSE_each"]["D"]))
    assert out["trainings"]["orig"][0]["epochs"] == 3
    # the score is IVIMNET's: the NRMSE of the first retraining's estimates, averaged with the second's
    net = kp.train_published("orig", n=4_000, seed=0, max_epochs=3)
    s, t = kp.kaandorp_data(4_000, seed=0)
    first = iv.predict(net, s[:500], noise="gaussian")
    assert kp.score_published([first], iv.IVIMParams(*(a[:500] for a in t)))["NRMSE"]["D"] == pytest.approx(
        iv.nrmse(first.Dt, t.Dt[:500]))
    with pytest.raises(ValueError, match="cannot exceed n"):
        kp.reproduce_kaandorp(("orig",), n=100, n_eval=500)
    with pytest.raises(ValueError, match="one per network"):
        kp.reproduce_kaandorp(("orig",), n=4_000, repeats={"optim": 2})
    with pytest.raises(ValueError, match="names must be among"):
        kp.reproduce_kaandorp(("both",))
