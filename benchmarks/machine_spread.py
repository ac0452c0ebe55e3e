"""How much the notebooks' network results move between machines, against their spread over trainings.

Usage:
    .venv/bin/python benchmarks/machine_spread.py [--other benchmarks/results/other_machine]

Compares the committed tables in ``figures/`` (05_method_comparison, 06_ablation, 06_beyond) with the same tables from a full ``make demo`` run on another numeric path (another CPU
or MKL code path: ``--other``, see its README.md). Classical fits should agree to rounding; a network's
training takes another path when its float32 rounding differs, so its rows move. For each network row
and score (NRMSE, rho(Dp, Fp)), the difference between the runs is reported in units of the spread over
trainings (the pooled SD of one training's result over each run's five trainings). Two means of five
trainings on one machine differ by sqrt(2/5) = 0.63 of that SD in standard deviation, so differences of
up to about 1.3 SD are within two standard errors of what a second set of seeds would give.

Writes benchmarks/results/machine_spread.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: 09's tables are left out: since 09 draws its voxels afresh at each SNR (commit acd9425), its tables in
#: other_machine/ (an earlier run) hold other voxels, so even its classical rows would differ.
TABLES = ("05_method_comparison", "06_ablation", "06_beyond")
KEY = ("snr", "method", "param", "level")
SCORES = ("nrmse", "rho_Dp_Fp", "coverage")


def _key(row):
    return tuple(row.get(k) for k in KEY)


def compare(reference, other):
    """Per row and score present in both: the two values, their difference and, for rows over several
    trainings, the difference over the pooled SD."""
    theirs = {_key(r): r for r in other}
    out = []
    for row in reference:
        match = theirs.get(_key(row))
        if match is None:
            continue
        for score in SCORES:
            if score not in row or (score == "rho_Dp_Fp" and row.get("param") != "Dp"):
                continue  # rho(Dp, Fp) is stored on every parameter's row: count it once
            a, b = float(row[score]), float(match[score])
            item = {**{k: row[k] for k in KEY if k in row}, "score": score, "reference": a, "other": b,
                    "difference": b - a, "trainings": row.get("trainings", 1)}
            sd = [r.get(f"{score}_sd") for r in (row, match)]
            if row.get("trainings", 1) > 1 and None not in sd:
                pooled = float(np.sqrt((sd[0] ** 2 + sd[1] ** 2) / 2))
                item["pooled_sd"] = pooled
                item["in_sd"] = abs(b - a) / pooled if pooled > 0 else float("inf")
            out.append(item)
    return out


def summarise(items):
    """Classical rows: largest relative difference; network rows over trainings: how many SDs apart;
    single-training network rows: largest relative difference."""
    classical = [i for i in items if i["trainings"] == 1 and "network" not in str(i["method"]).lower()
                 and "IVIM" not in str(i["method"]) and i["method"] not in ("supervised",)]
    spread = [i for i in items if "in_sd" in i]
    single = [i for i in items if i not in classical and "in_sd" not in i]

    def rel(group):
        return max((abs(i["difference"]) / max(abs(i["reference"]), 1e-12) for i in group if i["score"] == "nrmse"),
                   default=None)

    nrmse = [i for i in spread if i["score"] == "nrmse"]
    return {
        "classical_max_relative_difference": rel(classical),
        "network_rows_over_trainings": len(nrmse),
        "nrmse_difference_in_sd": {
            "median": float(np.median([i["in_sd"] for i in nrmse])) if nrmse else None,
            "max": float(max(i["in_sd"] for i in nrmse)) if nrmse else None,
            "above_2_sd": sum(i["in_sd"] > 2 for i in nrmse),
            "above_3_sd": sum(i["in_sd"] > 3 for i in nrmse),
        },
        "nrmse_max_relative_difference": rel(nrmse),
        "rho_max_abs_difference": max((abs(i["difference"]) for i in spread if i["score"] == "rho_Dp_Fp"),
                                      default=None),
        "single_training_max_relative_difference": rel(single),
        "single_training_max_coverage_difference": max(
            (abs(i["difference"]) for i in single if i["score"] == "coverage"), default=None),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, default=ROOT / "benchmarks" / "results" / "other_machine")
    args = parser.parse_args(argv)
    result = {"reference": "figures/", "other": str(args.other.resolve().relative_to(ROOT)), "tables": {}}
    for name in TABLES:
        ref, oth = ROOT / "figures" / f"{name}.json", args.other / f"{name}.json"
        if not (ref.is_file() and oth.is_file()):
            continue
        items = compare(json.loads(ref.read_text()), json.loads(oth.read_text()))
        result["tables"][name] = {"summary": summarise(items), "rows": items}
    path = ROOT / "benchmarks" / "results" / "machine_spread.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    for name, t in result["tables"].items():
        print(name, json.dumps(t["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
