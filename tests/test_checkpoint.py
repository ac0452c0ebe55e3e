"""Checkpoints that cannot silently change a network, and labelling that cannot depend on the batch."""
import os
import warnings
import zipfile

import numpy as np
import pytest
import torch

import ivim_demo as iv
from ivim_demo.nets import checkpoint
from ivim_demo.nets.infer import decide_labelling
from tolerances import assert_estimates_close_to_rounding, network_rounding

pytestmark = pytest.mark.numerics  # run again under other numeric paths (Makefile)


def _net(seed=0):
    net = iv.IVIMNet(iv.SEED_B_VALUES, seed=seed)
    net.eval()
    return net


def _payload(net, fmt=checkpoint.FORMAT, **changes):
    """A checkpoint dict as save_model writes it (checksum recomputed after ``changes`` to the weights)."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    payload = {"format": fmt, "class": type(net).__name__, "settings": net.settings(), "state_dict": state}
    if fmt == checkpoint.FORMAT:
        payload.update(swapped=False, history={})
        payload["checksum"] = checkpoint._checksum(payload)
    return payload


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- weights that cannot give a map ---------------------------------------------------------------

def test_save_refuses_nan_weights(tmp_path):
    net = _net()
    with torch.no_grad():
        net.encoder[2].weight[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf weights \(encoder\.2\.weight\).*retrain"):
        iv.save_model(net, tmp_path / "nan.pt")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", [checkpoint.FORMAT, checkpoint.FORMAT_V1])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_load_refuses_non_finite_weights(tmp_path, fmt, bad):
    net = _net()
    weight = net.encoder[-1].bias.detach().clone()
    weight[0] = bad
    torch.save(_payload(net, fmt, encoder__6__bias=weight), tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"NaN or inf weights \(encoder\.6\.bias\).*all-NaN maps.*retrain"):
        iv.load_model(tmp_path / "nan.pt")


# --- weights that do not fit the network ----------------------------------------------------------

@pytest.mark.parametrize("fmt", [checkpoint.FORMAT, checkpoint.FORMAT_V1])
def test_load_refuses_missing_unexpected_and_misshapen_weights(tmp_path, fmt):
    net = _net()
    cases = {
        r"lacks weights \['encoder\.4\.weight'\].*retrain": _payload(net, fmt, encoder__4__weight=None),
        r"has weights \['extra'\] that the IVIMNet.*does not have.*retrain": _payload(net, fmt, extra=torch.ones(3)),
        r"weight 'encoder\.0\.weight' is torch\.float32 \(7, 6\).*needs torch\.float32 \(7, 7\).*retrain":
            _payload(net, fmt, encoder__0__weight=torch.ones(7, 6)),
        r"weight 'encoder\.0\.bias' is torch\.int64.*needs torch\.float32.*retrain":
            _payload(net, fmt, encoder__0__bias=torch.ones(7, dtype=torch.int64)),
        r"stored b-values differ from those in its settings":
            _payload(net, fmt, b_values=torch.arange(8, dtype=torch.float32)),
    }
    for i, (message, payload) in enumerate(cases.items()):
        torch.save(payload, tmp_path / f"{i}.pt")
        with pytest.raises(ValueError, match=message):
            iv.load_model(tmp_path / f"{i}.pt")


def test_load_refuses_incomplete_unknown_and_newer_files(tmp_path):
    payload = _payload(_net())
    del payload["checksum"]
    torch.save(payload, tmp_path / "nosum.pt")
    with pytest.raises(ValueError, match="corrupt or incomplete.*'checksum'"):
        iv.load_model(tmp_path / "nosum.pt")
    torch.save({**_payload(_net()), "format": "ivim-demo-checkpoint/3"}, tmp_path / "new.pt")
    with pytest.raises(ValueError, match="does not read.*update ivim-demo"):
        iv.load_model(tmp_path / "new.pt")
    torch.save({**_payload(_net(), checkpoint.FORMAT_V1), "settings": {"b_values": [0, 10], "nope": 1}},
               tmp_path / "settings.pt")
    with pytest.raises(ValueError, match="settings that do not build a IVIMNet"):
        iv.load_model(tmp_path / "settings.pt")


def test_save_refuses_networks_load_model_cannot_build(tmp_path):
    with pytest.raises(ValueError, match="save_model saves the networks of ivim_demo.nets.networks"):
        iv.save_model(torch.nn.Linear(3, 3), tmp_path / "lin.pt")
    assert os.listdir(tmp_path) == []


# --- damaged files --------------------------------------------------------------------------------

def test_checksum_mismatch_is_refused(tmp_path):
    net = _net()
    payload = _payload(net)
    with torch.no_grad():
        payload["state_dict"]["encoder.2.weight"][0, 0] += 1e-6  # one weight, checksum not updated
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match=r"is corrupt \(checksum mismatch\).*retrain"):
        iv.load_model(tmp_path / "edited.pt")
    flag = _payload(net)
    flag["swapped"] = True  # the labelling is covered too
    torch.save(flag, tmp_path / "flag.pt")
    with pytest.raises(ValueError, match=r"checksum mismatch"):
        iv.load_model(tmp_path / "flag.pt")


def _check_flips(net, path, positions, masks):
    """Flip bytes of the saved file one at a time: each copy must be refused or load the same network."""
    data = bytearray(path.read_bytes())
    refused = 0
    for pos in positions:
        for mask in masks:
            broken = path.with_name("broken.pt")
            flipped = bytearray(data)
            flipped[pos] ^= mask
            broken.write_bytes(bytes(flipped))
            try:
                loaded = iv.load_model(broken)
            except ValueError:
                refused += 1
                continue
            assert _same_weights(loaded, net) and loaded.swapped == net.swapped, (
                f"byte {pos} ^ {mask:#x} changed the network silently")
    return refused


def test_flipped_bytes_in_the_weights_are_detected(tmp_path):
    net = iv.IVIMNetOptim(iv.SEED_B_VALUES, seed=3)  # weights, biases, batch-norm statistics, bounds
    net.eval()
    path = tmp_path / "net.pt"
    iv.save_model(net, path)
    data = path.read_bytes()
    regions = []  # the tensors' bytes: the zip entries .../data/<n> that torch.save writes, one per tensor
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename:
                header = data[info.header_offset : info.header_offset + 30]
                start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(
                    header[28:30], "little")
                assert data[start : start + info.file_size] == archive.read(info)
                regions.append(np.arange(start, start + info.file_size))
    assert len(regions) == len(net.state_dict())
    inside = np.concatenate(regions)
    positions = np.random.default_rng(0).choice(inside, size=60, replace=False)
    masks = (0x01, 0x80, 0xFF)
    # a flipped weight byte always changes a weight: every flip must be refused
    assert _check_flips(net, path, positions, masks) == len(positions) * len(masks)


def test_flipped_bytes_anywhere_never_change_weights_silently(tmp_path):
    net = _net(seed=2)
    decide_labelling(net, iv.training_data(500, seed=0)[0])
    path = tmp_path / "net.pt"
    iv.save_model(net, path, history={"loss": [3.0, 2.0]})
    size = len(path.read_bytes())
    refused = _check_flips(net, path, range(0, size, 11), (0xFF,))
    assert refused > 0


# --- what save_model writes, load_model reads -----------------------------------------------------

def test_history_with_numpy_values_round_trips(tmp_path):
    net = _net()
    history = {"loss": np.array([3.0, 2.5, np.nan]), "best_epoch": np.int64(1), "seconds": np.float32(1.5),
               "stopped_early": np.bool_(True), "curves": {"lr": np.array([[1e-3], [2e-4]])},
               "notes": ("seed", np.float64(0.25)), "none": None}
    iv.save_model(net, tmp_path / "net.pt", history=history)
    loaded = iv.load_model(tmp_path / "net.pt").history
    assert loaded["loss"][:2] == [3.0, 2.5] and np.isnan(loaded["loss"][2])
    assert loaded["best_epoch"] == 1 and type(loaded["best_epoch"]) is int
    assert loaded["seconds"] == 1.5 and type(loaded["seconds"]) is float
    assert loaded["stopped_early"] is True
    assert loaded["curves"] == {"lr": [[1e-3], [2e-4]]}
    assert loaded["notes"] == ["seed", 0.25] and loaded["none"] is None


def test_train_history_round_trips(tmp_path):
    signals, _ = iv.training_data(600, sigma=0.02, seed=1)
    net = _net()
    history = iv.train(net, signals, max_epochs=2, seed=0, progress=False)
    loaded = iv.load_model(iv.save_model(net, tmp_path / "net.pt", history=history))
    assert loaded.history == history.as_dict()
    assert _same_weights(loaded, net)


@pytest.mark.parametrize("history, where", [
    ({"bad": np.array(["a", "b"])}, r"history\['bad'\] is an array of <U1"),
    ({"bad": {1: 2.0}}, r"history\['bad'\] has keys that are not strings"),
    ({"bad": [1.0, {3, 4}]}, r"history\['bad'\]\[1\] is a set"),
    ({"bad": np.float64}, r"history\['bad'\] is a type"),
    ([1.0, 2.0], r"history must be a TrainHistory or a dict"),
])
def test_history_that_cannot_be_stored_is_refused(tmp_path, history, where):
    with pytest.raises(ValueError, match=where):
        iv.save_model(_net(), tmp_path / "net.pt", history=history)
    assert os.listdir(tmp_path) == []


def test_interrupted_save_leaves_no_partial_file(tmp_path, monkeypatch):
    old, new = _net(seed=1), _net(seed=2)
    path = tmp_path / "net.pt"
    iv.save_model(old, path)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kw):
        real_save(obj, f, *args, **kw)
        f.seek(0)
        f.truncate(len(before) // 2)  # half a file on disk ...
        raise OSError("No space left on device")  # ... then the disk fills up

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        iv.save_model(new, path)
    with pytest.raises(OSError, match="No space left"):
        iv.save_model(new, tmp_path / "fresh.pt")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["net.pt"]  # no temporary file left, no half-written fresh.pt
    assert path.read_bytes() == before  # the previous checkpoint is untouched
    assert _same_weights(iv.load_model(path), old)


# --- labelling: decided once per network, kept in the checkpoint -----------------------------------

def _constant_net(outputs):
    """A network whose three outputs are the constants ``outputs`` for every voxel."""
    net = _net()
    with torch.no_grad():
        net.encoder[-1].weight.zero_()
        net.encoder[-1].bias.copy_(torch.tensor(outputs))
    return net


def _swapped_net():
    """Outputs (0.001, 0.04, 0.75): Dt in output 0, Dp in output 1."""
    return _constant_net([0.001, 0.04, 0.75])


def test_decide_labelling_and_predict_apply_it_to_every_voxel():
    net = _swapped_net()
    signals = iv.training_data(10, seed=0)[0]
    est = iv.predict(net, signals)  # never decided: not swapped
    np.testing.assert_allclose(est.Dp, 0.001, rtol=1e-5)
    assert decide_labelling(net, signals) is True and net.swapped is True
    est = iv.predict(net, signals)
    np.testing.assert_allclose(est.Dp, 0.04, rtol=1e-6)
    np.testing.assert_allclose(est.Dt, 0.001, rtol=1e-5)
    np.testing.assert_allclose(est.Fp, 0.25, rtol=1e-6)


def test_bounded_network_is_never_swapped():
    net = iv.IVIMNetOptim(iv.SEED_B_VALUES, seed=0)
    net.swapped = True
    assert decide_labelling(net, iv.training_data(100, seed=0)[0]) is False and net.swapped is False


def test_train_decides_the_labelling_on_the_training_signals():
    signals, _ = iv.training_data(1000, sigma=0.02, seed=2)
    net = _net(seed=1)
    net.swapped = "stale"
    iv.train(net, signals, max_epochs=2, seed=0, progress=False)
    with torch.no_grad():
        raw = net.encode(torch.tensor(signals[:, 1:] / signals[:, :1], dtype=torch.float32)).numpy()
    assert net.swapped is bool(raw[:, 0].mean() < raw[:, 1].mean())


@pytest.mark.parametrize("swapped", [True, False])
def test_labelling_survives_save_and_load(tmp_path, swapped):
    net = _swapped_net() if swapped else _constant_net([0.04, 0.001, 0.25])
    signals = iv.training_data(50, seed=3)[0]
    assert decide_labelling(net, signals) is swapped
    loaded = iv.load_model(iv.save_model(net, tmp_path / "net.pt"))
    assert loaded.swapped is swapped
    for a, b in zip(iv.predict(loaded, signals), iv.predict(net, signals)):
        np.testing.assert_array_equal(a, b)


def test_format_1_files_load_with_a_warning_and_their_labelling(tmp_path):
    """Hostile round three, B11: old files without a checksum loaded flipped bytes silently; they now warn,
    and the shipped networks are all checksummed (format 2), so they load silently."""
    net = _swapped_net()
    torch.save(_payload(net, checkpoint.FORMAT_V1), tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="without a checksum"):
        loaded = iv.load_model(tmp_path / "old.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shipped = {name: iv.explorer_network(name) for name in iv.B_VALUE_SETS}
    assert loaded.swapped is True and _same_weights(loaded, net)
    # the seed explorer network learned Dt in output 0 (decided when it was a format-1 file, kept on re-saving)
    assert {name: n.swapped for name, n in shipped.items()} == {
        "seed (8 b-values)": True, "sparse (4 b-values)": False, "dense (12 b-values)": False}
    est = iv.predict(shipped["seed (8 b-values)"], iv.training_data(500, seed=5)[0])
    assert 0.02 < est.Dp.mean() < 0.07 and 0.0005 < est.Dt.mean() < 0.002


# --- one voxel's estimate does not depend on the others ------------------------------------------

#: b = 0 signal 1000x too low, nothing at the three lowest b > 0: the voxel that flipped whole batches
OUTLIER = np.array([1e-3, 0, 0, 0, 1, 1, 1, 1])


def _assert_others_unchanged(net, signals, outlier):
    """The other voxels' estimates with the outlier in the call equal those without it, up to the float32
    rounding of the network's forward pass (a GEMM of another shape may round a row differently); the
    labelling cannot flip: a swap moves Dp by far more than that (checked on the voxels themselves)."""
    alone = iv.predict(net, signals)
    n = len(signals)
    assert np.abs(alone.Dt - alone.Dp).max() > 100 * network_rounding(net)  # a flip would show
    for where in (0, n // 2, n):
        mixed = iv.predict(net, np.insert(signals, where, outlier, axis=0))
        keep = np.delete(np.arange(n + 1), where)
        assert_estimates_close_to_rounding(iv.IVIMParams(*(v[keep] for v in mixed)), alone, net,
                                           err_msg=f"outlier at {where} of {n}")
    return mixed


def test_an_outlier_voxel_does_not_flip_the_other_voxels():
    net = iv.explorer_network("seed (8 b-values)")  # learned Dt in output 0
    signals, truth = iv.training_data(300, seed=1)
    mixed = _assert_others_unchanged(net, signals, OUTLIER)
    assert 0.02 < mixed.Dp[:300].mean() < 0.07
    # precondition: the seed's per-batch rule on these 301 voxels would have flipped all 300 ordinary ones
    Dp, Dt, Fp = iv.swap_guard(mixed.Dt, mixed.Dp, 1 - mixed.Fp)  # the network's raw outputs
    assert Dp[:300].mean() < 0.005


@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 200, 1000])
def test_estimates_do_not_depend_on_the_number_of_voxels(trained_net, n):
    signals, _ = iv.training_data(n, sigma=0.02, seed=n)
    _assert_others_unchanged(trained_net[0], signals, OUTLIER)
    optim = iv.IVIMNetOptim(iv.SEED_B_VALUES, seed=1).eval()  # batch norm in eval mode: per voxel too
    _assert_others_unchanged(optim, signals, OUTLIER)
