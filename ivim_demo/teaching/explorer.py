"""The IVIM explorer behind notebook 00: one signal, its compartments, noise and fits."""
from __future__ import annotations

import os
from importlib import resources

import matplotlib.pyplot as plt
import numpy as np

from ..nets.checkpoint import load_model
from ..classical.fit import fit_lsq
from ..nets.infer import predict
from ..core.signal_model import SEED_B_VALUES, ivim
from ..simulation.simulate import add_rician_noise
from ..imaging.plots import method_style

__all__ = ["B_VALUE_SETS", "explore", "plot_explore", "explorer_network", "explorer_widget"]

#: b-value sets (s/mm^2) the explorer offers; a trained network ships for each.
B_VALUE_SETS = {
    "seed (8 b-values)": SEED_B_VALUES,
    "sparse (4 b-values)": np.array([0, 50, 200, 800], dtype=float),
    "dense (12 b-values)": np.array([0, 5, 10, 20, 30, 50, 75, 100, 200, 400, 700, 1000], dtype=float),
}


def _model_file(set_name: str) -> str:
    slug = set_name.split(" ")[0]
    return f"explorer_{slug}.pt"


def explorer_network(set_name: str):
    """The small IVIM-NET shipped for one of ``B_VALUE_SETS`` (trained by
    ``tools/make_explorer_models.py``: seed network, 20k voxels from the box, SNR 50; training seed 0,
    except the sparse set's: seed 0 learned nothing there, seed 1 not Fp, so it is seed 2)."""
    if set_name not in B_VALUE_SETS:
        raise ValueError(f"unknown b-value set {set_name!r}; choose from {list(B_VALUE_SETS)}.")
    path = resources.files("ivim_demo") / "data" / _model_file(set_name)
    return load_model(os.fspath(path))


def explore(Dp=0.05, Dt=0.001, Fp=0.2, snr=30.0, b_set="seed (8 b-values)", *, n_repeats=200, net=None, seed=0):
    """Everything the explorer shows for one set of slider values.

    Parameters
    ----------
    Dp, Dt : float
        Pseudo-diffusion and tissue diffusion, mm^2/s.
    Fp : float
        Perfusion fraction.
    snr : float
        SNR at b = 0 (noise sigma = 1/SNR, S0 = 1).
    b_set : str
        Key of ``B_VALUE_SETS``.
    n_repeats : int
        Noisy repetitions of the measurement; estimates are given for the
        first and as mean and SD over all (how precise each method is).
    net : IVIMNet, optional
        Network to use; default the one shipped for ``b_set``.
    seed : int

    Returns
    -------
    dict
        ``b`` (acquired b-values), ``fine_b``, ``curve`` (noise-free signal on
        ``fine_b``), ``perfusion`` and ``tissue`` (the two compartments),
        ``noisy`` (first noisy measurement at ``b``), ``truth``, ``snr``,
        ``b_set``, and ``estimates``: method -> {"first": (Dp, Dt, Fp),
        "mean": ..., "sd": ..., "median": ..., "p5": ..., "p95": ...} (5th
        and 95th percentiles over the repeats).
    """
    if not (0 < Fp < 1) or Dp <= 0 or Dt <= 0 or snr <= 0:
        raise ValueError("need Dp, Dt > 0 (mm^2/s), 0 < Fp < 1 and SNR > 0.")
    b = B_VALUE_SETS[b_set] if b_set in B_VALUE_SETS else None
    if b is None:
        raise ValueError(f"unknown b-value set {b_set!r}; choose from {list(B_VALUE_SETS)}.")
    fine = np.linspace(0, b.max(), 300)
    clean = ivim(b, Dp, Dt, Fp)
    noisy = add_rician_noise(np.broadcast_to(clean, (n_repeats, len(b))), 1.0 / snr, np.random.default_rng(seed))
    net = explorer_network(b_set) if net is None else net
    estimates = {}
    for name, est in (("LSQ", fit_lsq(noisy, b)), ("IVIM-NET", predict(net, noisy, b_values=b))):
        values = np.stack([est.Dp, est.Dt, est.Fp], axis=1)
        estimates[name] = {"first": tuple(values[0]), "mean": tuple(values.mean(axis=0)),
                           "sd": tuple(values.std(axis=0)), "median": tuple(np.median(values, axis=0)),
                           "p5": tuple(np.percentile(values, 5, axis=0)),
                           "p95": tuple(np.percentile(values, 95, axis=0))}
    return {"b": b, "fine_b": fine, "curve": ivim(fine, Dp, Dt, Fp), "perfusion": Fp * np.exp(-fine * Dp),
            "tissue": (1 - Fp) * np.exp(-fine * Dt), "noisy": noisy[0], "truth": (Dp, Dt, Fp),
            "snr": float(snr), "b_set": b_set, "estimates": estimates}


def plot_explore(result):
    """Draw what ``explore`` returned: signal and compartments, then estimates vs truth."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1.6, 1]})
    ax.plot(result["fine_b"], result["curve"], "k-", lw=2, label="IVIM signal")
    ax.plot(result["fine_b"], result["perfusion"], "r--", label="perfusion: Fp·exp(-b·Dp)")
    ax.plot(result["fine_b"], result["tissue"], "b--", label="tissue: (1-Fp)·exp(-b·Dt)")
    ax.plot(result["b"], result["noisy"], "ko", mfc="none", ms=7, label="one noisy measurement")
    for name, colour in ((name, method_style(name)[0]) for name in ("LSQ", "IVIM-NET")):
        ax.plot(result["fine_b"], ivim(result["fine_b"], *result["estimates"][name]["first"]), color=colour,
                lw=1, label=f"{name} fit of that measurement")
    ax.set(xlabel="b (s/mm²)", ylabel="S(b) / S0", ylim=(0, 1.1), title="Signal, compartments and fits")
    ax.legend(fontsize=8)
    names, truth = ("Dp", "Dt", "Fp"), np.array(result["truth"])
    x = np.arange(3)
    for k, (name, colour) in enumerate((name, method_style(name)[0]) for name in ("LSQ", "IVIM-NET")):
        est = result["estimates"][name]
        mid = np.array(est["median"]) / truth  # percentiles: never below 0 as the mean +- SD can be
        low, high = np.array(est["p5"]) / truth, np.array(est["p95"]) / truth
        ax2.errorbar(x + (k - 0.5) * 0.2, mid, yerr=[mid - low, high - mid], fmt="o",
                     color=colour, capsize=4, label=f"{name}: median, 5th-95th percentile")
    ax2.axhline(1, color="k", lw=1)
    ax2.set(xticks=x, xticklabels=names, ylabel="estimate / truth", title="Accuracy and precision over repeats")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=8)
    Dp, Dt, Fp = truth
    fig.suptitle(f"Truth Dp = {Dp:.3f} mm²/s, Dt = {Dt * 1e3:.2f}×10⁻³ mm²/s, Fp = {Fp:.2f}; "
                 f"SNR {result.get('snr', float('nan')):.0f}; b-values {result.get('b_set', '')}", fontsize=10)
    fig.tight_layout()
    return fig


def explorer_widget(Dp=0.05, Dt=0.001, Fp=0.2, snr=30.0, b_set="seed (8 b-values)", *, n_repeats=200, seed=0):
    """The explorer's sliders (Dp, Dt, Fp, SNR, b-value set), wired to ``explore`` + ``plot_explore``.

    Returns an ``ipywidgets.interactive``; display it in JupyterLab. Its
    ``result`` is the latest ``explore`` dict, so the wiring can be tested
    without a browser.
    """
    import ipywidgets as widgets

    def show(Dp, Dt, Fp, snr, b_set):
        result = explore(Dp, Dt, Fp, snr, b_set, n_repeats=n_repeats, seed=seed)
        plot_explore(result)
        plt.show()
        return result

    return widgets.interactive(
        show,
        Dp=widgets.FloatSlider(value=Dp, min=0.005, max=0.1, step=0.005, readout_format=".3f",
                               description="Dp (mm²/s)"),
        Dt=widgets.FloatSlider(value=Dt, min=0.0002, max=0.003, step=0.0001, readout_format=".4f",
                               description="Dt (mm²/s)"),
        Fp=widgets.FloatSlider(value=Fp, min=0.01, max=0.6, step=0.01, description="Fp"),
        snr=widgets.FloatLogSlider(value=snr, base=10, min=0.7, max=2.5, description="SNR"),
        b_set=widgets.Dropdown(options=list(B_VALUE_SETS), value=b_set, description="b-values"),
    )
