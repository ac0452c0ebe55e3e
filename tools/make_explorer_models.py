"""Train the small networks the explorer (notebook 00) ships with.

Usage: .venv/bin/python tools/make_explorer_models.py

One seed-architecture IVIM-NET per b-value set in ``ivim_demo.explorer.B_VALUE_SETS``,
trained on 20k voxels from the seed's box at SNR 50, seed 0; written to ivim_demo/data/.
"""
from pathlib import Path

import ivim_demo as iv
from ivim_demo.explorer import B_VALUE_SETS, _model_file

OUT = Path(__file__).resolve().parents[1] / "ivim_demo" / "data"

for name, b in B_VALUE_SETS.items():
    signals, _ = iv.training_data(20_000, b, sigma=1 / 50, seed=0)
    net = iv.IVIMNet(b, seed=0)
    history = iv.train(net, signals, seed=0, progress=False)
    path = iv.save_model(net, OUT / _model_file(name), history=history)
    print(f"{name}: {history.epochs} epochs, {history.seconds:.1f} s -> {path}")
