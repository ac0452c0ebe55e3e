"""Train the small networks the explorer (notebook 00) ships with.

Usage: .venv/bin/python tools/make_explorer_models.py ["sparse (4 b-values)" ...]

One seed-architecture IVIM-NET per b-value set in ``ivim_demo.teaching.explorer.B_VALUE_SETS`` (or the
sets named), trained on 20k voxels from the seed's box at SNR 50; written to ivim_demo/data/.
Each is trained with seed 0, 1, 2, ... until a training raises none of ``train``'s warnings (a
loss that never improved, a network that gives the same estimate for every signal): the first
such seed is kept and recorded in the checkpoint's history. A network that never learns is never
written. (The sparse network shipped before this rule had learned nothing: seed 0 stays flat.)
"""
import sys
import warnings
from pathlib import Path

import ivim_demo as iv
from ivim_demo.teaching.explorer import B_VALUE_SETS, _model_file

OUT = Path(__file__).resolve().parents[1] / "ivim_demo" / "data"
SEEDS = range(10)


def make(name, b):
    signals, _ = iv.training_data(20_000, b, sigma=1 / 50, seed=0)
    for seed in SEEDS:
        net = iv.IVIMNet(b, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # read from history.warnings below
            history = iv.train(net, signals, seed=seed, progress=False)
        if not history.warnings:
            path = iv.save_model(net, OUT / _model_file(name), history={**history.as_dict(), "seed": seed})
            print(f"{name}: seed {seed}, {history.epochs} epochs, {history.seconds:.1f} s -> {path}")
            return
        print(f"{name}: seed {seed} rejected: {' '.join(history.warnings)}")
    raise SystemExit(f"{name}: no seed in {list(SEEDS)} trained a network that learned; nothing written.")


if __name__ == "__main__":
    names = sys.argv[1:] or list(B_VALUE_SETS)
    unknown = [n for n in names if n not in B_VALUE_SETS]
    if unknown:
        raise SystemExit(f"unknown b-value set(s) {unknown}; choose from {list(B_VALUE_SETS)}.")
    for name in names:
        make(name, B_VALUE_SETS[name])
