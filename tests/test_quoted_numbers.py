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


def _pretrained():
    d = _load("benchmarks/results/pretrained.json")
    cells = [(name, int(snr), p, c["ratio"][p], c["coverage"][p], c["posterior_coverage"][p])
             for name, by_snr in d["cells"].items() for snr, c in by_snr.items() for p in c["ratio"]]
    ratios = {snr: [r for _, s, _, r, _, _ in cells if s == snr] for snr in (10, 20, 50, 100)}
    low = ratios[10] + ratios[20]
    worst = max(cells, key=lambda c: c[3])
    lowest = min(cells, key=lambda c: c[4])
    met = sum(r <= 1.10 for _, _, _, r, _, _ in cells)
    runs = [v for v in d["command_line"].values()]
    volunteers = [d["command_line"][k]["seconds_per_slice"] for k in ("volunteer1", "volunteer2", "volunteer3")]
    return [
        f"At SNR 10 and 20 the network's NRMSE is within {min(low):.3f}-{max(low):.3f} of the exact posterior's",
        f"At SNR 50 it is within {min(ratios[50]):.3f}-{max(ratios[50]):.3f}, at SNR 100 within "
        f"{min(ratios[100]):.3f}-{max(ratios[100]):.3f}",
        f"the largest gap is {worst[2]} at SNR {worst[1]} on the {worst[0]} protocol ({worst[3]:.3f})",
        f"is met in {met} of the {len(cells)} cells",
        f"90 % intervals hold the truth in {100 * min(c[4] for c in cells):.1f}-{100 * max(c[4] for c in cells):.1f} %",
        f"the lowest cell is {lowest[2]} at SNR {lowest[1]} on the {lowest[0]} protocol ({100 * lowest[4]:.1f} %)",
        f"The exact posterior's own intervals hold {100 * min(c[5] for c in cells):.1f}-"
        f"{100 * max(c[5] for c in cells):.1f} % on the same voxels",
        f"{d['speed']['voxels_per_second'] / 1e6:.2f} million voxels per second with intervals on 2 cores",
        f"a shipped volunteer slice took {min(volunteers):.1f}-{max(volunteers):.1f} s and the 4-slice phantom "
        f"{d['command_line']['phantom']['seconds_per_slice']:.1f} s per slice",
        "with no fit warnings" if all(r["exit"] == 0 and not r["warnings"] for r in runs) else "WARNINGS",
    ]


CLAIMS = {"kaandorp2021": _kaandorp, "barbieri2020": _barbieri, "pretrained": _pretrained}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_quoted_numbers_match_their_result_file(name):
    missing = [text for text in CLAIMS[name]() if " ".join(text.split()) not in README]
    assert not missing, f"README prose quoting {name} no longer matches it; expected text: {missing}"
