import numpy as np
import pytest

import ivim_demo as iv


@pytest.fixture(scope="session")
def trained_net():
    """A seed-architecture network trained briefly on low-noise data (SNR 200)."""
    signals, _ = iv.training_data(20_000, sigma=0.005, seed=11)
    net = iv.IVIMNet(iv.SEED_B_VALUES, seed=0)
    history = iv.train(net, signals, max_epochs=40, patience=10, seed=0, progress=False)
    return net, history


@pytest.fixture(scope="session")
def held_out():
    return iv.training_data(2000, sigma=0.005, seed=99)
