"""Files one notebook writes and the next reads: reused only when made with the reader's parameters."""
import warnings

import numpy as np
import pytest
import torch

import ivim_demo as iv


def _maker(n, seed, calls):
    def make():
        calls.append((n, seed))
        signals, truth = iv.training_data(n, sigma=0.01, seed=seed)
        return signals, truth, iv.SEED_B_VALUES
    return make


def test_dataset_made_with_other_parameters_is_made_again_and_says_so(tmp_path):
    path, calls = tmp_path / "training_data.npz", []
    signals, truth = iv.training_data(30, sigma=0.01, seed=0)
    iv.save_dataset(path, signals, truth, iv.SEED_B_VALUES, settings={"n": 30, "sigma": 0.01, "seed": 0})
    assert iv.dataset_settings(path) == {"n": 30, "sigma": 0.01, "seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same settings: reused without a word
        again, _, _ = iv.load_or_make_dataset(path, _maker(30, 0, calls), made_by="01",
                                              settings={"seed": 0, "n": 30, "sigma": 0.01})
    assert calls == [] and np.array_equal(again, signals)
    with pytest.warns(UserWarning, match=r"was made with .*'n': 30.* ask for .*'n': 50"):
        made, _, _ = iv.load_or_make_dataset(path, _maker(50, 0, calls), made_by="01",
                                             settings={"n": 50, "sigma": 0.01, "seed": 0})
    assert calls == [(50, 0)] and made.shape == (50, 8)
    assert iv.dataset_settings(path)["n"] == 50 and len(iv.load_dataset(path)[0]) == 50  # saved over the old
    with pytest.warns(UserWarning, match="not found"):
        iv.load_or_make_dataset(tmp_path / "new.npz", _maker(40, 1, calls), made_by="01", settings={"n": 40})
    assert iv.dataset_settings(tmp_path / "new.npz") == {"n": 40}


def test_dataset_without_recorded_settings_is_remade_when_settings_are_asked(tmp_path):
    path, calls = tmp_path / "old.npz", []
    signals, truth = iv.training_data(20, seed=0)
    iv.save_dataset(path, signals, truth, iv.SEED_B_VALUES)  # an older file: no settings
    assert iv.dataset_settings(path) is None
    assert len(iv.load_or_make_dataset(path, _maker(25, 0, calls), made_by="01")[0]) == 20  # no settings asked
    with pytest.warns(UserWarning, match="unrecorded settings"):
        iv.load_or_make_dataset(path, _maker(25, 0, calls), made_by="01", settings={"n": 25})
    assert calls == [(25, 0)]


def test_model_trained_with_other_parameters_is_trained_again(tmp_path):
    path, calls = tmp_path / "ivimnet.pt", []

    def make(seed):
        def train():
            calls.append(seed)
            return iv.seed_network(n=2000, seed=seed, max_epochs=2, progress=False)
        return train

    settings = {**iv.SEED_TRAINING, "n": 2000, "sigma": 0.01, "seed": 0, "max_epochs": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # two epochs: train() may call it not learned
        with pytest.warns(UserWarning, match="not found"):
            first = iv.load_or_make_model(path, make(0), made_by="02", settings=settings)
        assert iv.load_model(path).history["made_with"] == settings
        same = iv.load_or_make_model(path, make(0), made_by="02", settings=dict(settings))
        with pytest.warns(UserWarning, match="'seed': 1"):
            other = iv.load_or_make_model(path, make(1), made_by="02", settings={**settings, "seed": 1})
    assert calls == [0, 1]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), same.state_dict().values()))
    assert other.seed == 1 and iv.load_model(path).history["made_with"]["seed"] == 1


def test_save_table_keeps_timings_out_of_the_committed_table(tmp_path):
    rows = [{"snr": 10, "nrmse": 0.5, "ms_per_1000_voxels": 1.23, "train_seconds": 4.5},
            {"snr": 20, "nrmse": 0.25, "ms_per_1000_voxels": 2.0, "train_seconds": 3.0}]
    json_path, csv_path = iv.save_table(rows, tmp_path / "figures", "t", timings_folder=tmp_path / "data")
    assert iv.load_table(json_path) == [{"snr": 10, "nrmse": 0.5}, {"snr": 20, "nrmse": 0.25}]
    assert open(csv_path).readline().strip() == "snr,nrmse"
    assert iv.load_table(tmp_path / "data" / "t.json") == rows  # the timings, beside the run's data
    timed = [{**r, "ms_per_1000_voxels": 9.9} for r in rows]
    iv.save_table(timed, tmp_path / "again", "t")
    assert open(tmp_path / "again" / "t.json").read() == open(json_path).read()  # same results, same bytes
