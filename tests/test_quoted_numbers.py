"""Numbers quoted in the README's prose, recomputed from the result files they come from.

Each claim below reads a result file (``benchmarks/results/*.json`` or ``figures/*.json``), formats the
numbers as the README quotes them, and the test asserts that exact text is in the README. When a rerun
changes a result, the sentence quoting it fails here until it is rewritten (the tables themselves are
checked by ``test_repository.py::test_readme_tables_match_the_result_files``).
"""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = " ".join((ROOT / "README.md").read_text().split())  # line breaks and indents do not matter


def _load(name):
    return json.loads((ROOT / name).read_text())


def _f(x, digits=3):
    return f"{x:.{digits}f}"


def _kaandorp():
    d = _load("benchmarks/results/kaandorp2021.json")
    m, h, pub = d["measured"], d["held_out"], d["published"]
    ratios = [m[n]["NRMSE"][p] / pub[n]["NRMSE"][p] for n in ("optim", "orig") for p in ("D", "f", "Dstar")]
    cv = {n: [m[n]["CV_NET"][p] for p in ("D", "f", "Dstar")] for n in ("optim", "orig")}
    held = {n: " / ".join(_f(h[n]["NRMSE"][p]) for p in ("D", "f", "Dstar")) for n in ("optim", "orig")}
    gap = max(abs(h[n]["NRMSE"][p] - m[n]["NRMSE"][p]) for n in ("optim", "orig") for p in ("D", "f", "Dstar"))
    return [
        f"(ratios {min(ratios):.2f}-{max(ratios):.2f})",
        f"optim {m['optim']['rho_Dstar_f']:.2f} ± {m['optim']['rho_Dstar_f_sd']:.2f} against "
        f"{pub['optim']['rho_Dstar_f']:.2f}, orig {m['orig']['rho_Dstar_f']:.2f} against {pub['orig']['rho_Dstar_f']:.2f}",
        f"(CV_NET {cv['optim'][0]:.3f}, {cv['optim'][1]:.3f} and {cv['optim'][2]:.3f} against {cv['orig'][0]:.3f}, "
        f"{cv['orig'][1]:.3f} and {cv['orig'][2]:.3f})",
        f"(optim {held['optim']}, orig {held['orig']})" if gap <= 0.005 else "NOT WITHIN 0.005",
        f"over 20 the mean is {m['orig']['NRMSE']['D']:.3f} ± {m['orig']['NRMSE_sd']['D']:.3f}"
        if len(m["orig"]["NRMSE_each"]["D"]) == 20 else "NOT 20 RETRAININGS",
    ]


def _barbieri():
    rows = _load("figures/05_barbieri2020.json")
    r = {(x["method"], x["param"], x["sd"]): x["rmse"] for x in rows}
    methods = {x["method"] for x in rows}
    bp = next(m for m in methods if m.startswith("BP"))
    exact = next(m for m in methods if m.startswith("exact"))
    others = [r[(m, "Dp", 150.0)] * 1e3 for m in methods if m != exact]
    lowest = all(r[(exact, p, sd)] <= min(r[(m, p, sd)] for m in methods)
                 for (_, p, sd) in r)
    return [
        f"(Dt at SNR 10: {r[('IVIM-NET', 'Dt', 150.0)] * 1e3:.2f} against {r[('LSQ', 'Dt', 150.0)] * 1e3:.2f} × 10⁻³ "
        f"mm²/s; Fp {r[('IVIM-NET', 'Fp', 150.0)]:.3f} against {r[('LSQ', 'Fp', 150.0)]:.3f})",
        f"(Dt {r[('LSQ', 'Dt', 15.0)] * 1e3:.3f} against {r[('IVIM-NET', 'Dt', 15.0)] * 1e3:.3f})",
        f"(Fp at SNR 10: {r[(bp, 'Fp', 150.0)]:.3f} against {r[('IVIM-NET', 'Fp', 150.0)]:.3f}",
        f"(Dp at SNR 10: {r[(exact, 'Dp', 150.0)] * 1e3:.0f} against {min(others):.0f}-{max(others):.0f} × 10⁻³ mm²/s)"
        if lowest else "NOT LOWEST EVERYWHERE",
    ]


CLAIMS = {"kaandorp2021": _kaandorp, "barbieri2020": _barbieri}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_quoted_numbers_match_their_result_file(name):
    missing = [text for text in CLAIMS[name]() if " ".join(text.split()) not in README]
    assert not missing, f"README prose quoting {name} no longer matches it; expected text: {missing}"
