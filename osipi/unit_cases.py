"""OSIPI TF2.4's IVIM unit-test cases and acceptance rule, as ``tests/test_osipi.py`` and ``benchmarks/osipi.py``
run them (the data: ``tests/data/osipi/``, see its NOTICE)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "osipi"
#: The files of OSIPI's fitting test (``generic_DL.json`` is its network test).
FILES = ("generic.json", "generic_brain.json", "generic_one.json", "generic_two.json", "generic_three.json",
         "generic_four.json")
#: OSIPI's tolerances: |estimate - truth| <= atol + rtol * |truth| (f always; D only where f < 0.8, as there
#: must be some tissue signal to measure it; Dp only where f > 0.03).
RTOL = {"f": 0.1, "D": 0.1, "Dp": 0.1}
ATOL = {"f": 0.2, "D": 5e-4, "Dp": 0.1}
#: OSIPI's time limit per call, seconds.
SECONDS = 0.5
#: OSIPI's default tolerances for networks (its ``deep_learning_algorithms`` fixture), on ``generic_DL.json``.
DL_RTOL = {"f": 0.2, "D": 0.3, "Dp": 0.4}
DL_ATOL = {"f": 0.2, "D": 8e-4, "Dp": 8e-2}


def cases(files=FILES):
    """(file, tissue, b-values, signal, truth {"D", "f", "Dp"}, noise SD) for every case of ``files``."""
    out = []
    for name in files:
        data = json.loads((DATA / name).read_text())
        b = np.asarray(data["config"]["bvalues"], dtype=float)
        for tissue, case in data.items():
            if tissue == "config":
                continue
            out.append((name, tissue, b, np.asarray(case["data"], dtype=float),
                        {k: float(case[k]) for k in ("D", "f", "Dp")}, float(case["noise"])))
    return out


def bounds(truth):
    """OSIPI's bounds for a case (S0 relative to S(b=0)): Dp from 0.01 where the truth has f = 0, else 0.005."""
    return {"S0": (0.7, 1.3), "f": (0.0, 1.0), "Dp": (0.01 if truth["f"] == 0 else 0.005, 0.2), "D": (0.0, 0.005)}


def passes(estimate, truth, *, rtol=RTOL, atol=ATOL):
    """OSIPI's rule for one case: f within its tolerance, D where f < 0.8 and Dp where f > 0.03."""
    return worst(estimate, truth, rtol=rtol, atol=atol) <= 1


def worst(estimate, truth, *, rtol=RTOL, atol=ATOL):
    """The largest error over its tolerance among the parameters OSIPI's rule checks (pass: <= 1)."""
    checked = ["f"] + (["D"] if truth["f"] < 0.8 else []) + (["Dp"] if truth["f"] > 0.03 else [])
    return max(abs(estimate[k] - truth[k]) / (atol[k] + rtol[k] * abs(truth[k])) for k in checked)


def run(make, files=FILES):
    """Per case, ``make(b, bounds)`` builds the fit (as OSIPI does, with the case's bounds) and one call of
    ``ivim_fit(signal / signal[0])`` is timed: a row per case with the estimate, pass and seconds."""
    rows = []
    for name, tissue, b, signal, truth, noise in cases(files):
        fit = make(b, bounds(truth))
        start = time.perf_counter()
        try:
            estimate, error = fit.ivim_fit(signal / signal[0], b), None
        except ValueError as err:
            estimate, error = None, str(err)
        seconds = time.perf_counter() - start
        rows.append({"file": name, "tissue": tissue, "truth": truth, "noise": noise, "estimate": estimate,
                     "error": error, "accurate": estimate is not None and passes(estimate, truth),
                     "seconds": seconds, "in_time": seconds < SECONDS})
    return rows


def run_networks(make, file="generic_DL.json"):
    """OSIPI's network test: ``make(b)`` builds (and trains) the network once for the file's b-values, which
    fits every tissue in one call (OSIPI's ``osipi_fit_full_volume``), checked with ``DL_RTOL``/``DL_ATOL``."""
    rows = cases((file,))
    b = rows[0][2]
    fit = make(b)
    signals = np.array([signal / signal[0] for _, _, _, signal, _, _ in rows])
    est = fit.ivim_fit(signals, b)
    out = []
    for i, (name, tissue, _, _, truth, noise) in enumerate(rows):
        estimate = {k: float(est[k][i]) for k in ("D", "f", "Dp")}
        ratio = worst(estimate, truth, rtol=DL_RTOL, atol=DL_ATOL)
        out.append({"file": name, "tissue": tissue, "truth": truth, "noise": noise, "estimate": estimate,
                    "worst_over_tolerance": ratio, "accurate": ratio <= 1})
    return out
