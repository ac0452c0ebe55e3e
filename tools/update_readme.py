"""Render the README's result tables from the JSON the notebooks and benchmarks wrote.

Usage: .venv/bin/python tools/update_readme.py [--check]

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``
markers. ``--check`` changes nothing and exits 1 when the README is stale
(the test suite runs it), so README numbers always come from the committed
result files.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivim_demo.core.metrics import PARAMS, markdown_table, pivot  # noqa: E402


def _comparison(rows):
    net = [r for r in rows if r["method"] == "IVIM-NET"]
    runs = net[0].get("trainings", 1) if net else 1
    out = [f"IVIM-NET: mean ± SD over {runs} trainings (seeds 0-{runs - 1}) at each SNR.\n"] if runs > 1 else []
    for name in PARAMS:
        out.append(f"**NRMSE of {name}** (rows: SNR; lower is better)\n")
        out.append(markdown_table(pivot(rows, value="nrmse", where={"param": name}, spread=True), digits=3) + "\n")
    out.append("**Parameter coupling**: Spearman ρ between estimated Dp and Fp (truth: independent)\n")
    out.append(markdown_table(pivot(rows, value="rho_Dp_Fp", where={"param": "Dp"}, spread=True), digits=2) + "\n")
    out.append("**IVIM-NET consistency**: coefficient of variation of the estimates over repeated trainings\n")
    out.append(markdown_table(pivot(net, value="cv", column="param"), digits=2))
    return "\n".join(out)


def _ablation(rows):
    table = pivot(rows, value="nrmse", index="method", column="param", spread=True)
    for row in table:
        mine = next(r for r in rows if r["method"] == row["method"])
        row["rho_Dp_Fp"] = (mine["rho_Dp_Fp"], mine["rho_Dp_Fp_sd"]) if "rho_Dp_Fp_sd" in mine else mine["rho_Dp_Fp"]
        row["epochs"] = mine["epochs"]
        if "capped" in mine:
            row["stopped by the cap"] = f'{mine["capped"]}/{mine.get("trainings", 1)}'
    runs = rows[0].get("trainings", 1)
    head = (f"NRMSE per parameter at SNR {rows[0]['snr']} after each change, and the Dp-Fp coupling"
            + (f": mean ± SD over {runs} trainings (seeds 0-{runs - 1}); *epochs*: their mean" if runs > 1 else ""))
    return head + "\n\n" + markdown_table(table, digits=3)


def _beyond(rows):
    nets = [r for r in rows if r.get("trainings", 1) > 1]
    out = [f"Networks: mean ± SD over {nets[0]['trainings']} trainings (seeds 0-{nets[0]['trainings'] - 1}) at "
           "each SNR.\n"] if nets else []
    for name in PARAMS:
        out.append(f"**NRMSE of {name}** (rows: SNR)\n")
        out.append(markdown_table(pivot(rows, value="nrmse", where={"param": name}, spread=True), digits=3) + "\n")
    if nets:
        out.append("**Consistency** over repeated trainings: coefficient of variation of the estimates (Dp / Dt / Fp)\n")
        table = []
        for snr in dict.fromkeys(r["snr"] for r in nets):
            row = {"snr": snr}
            for method in dict.fromkeys(r["method"] for r in nets):
                cv = {r["param"]: r["cv"] for r in nets if r["snr"] == snr and r["method"] == method}
                row[method] = " / ".join(f"{cv[p]:.2g}" for p in PARAMS)
            table.append(row)
        out.append(markdown_table(table))
    return "\n".join(out)


def _targets(t):
    rows = [{"target": x["target"].replace("|", "\\|"), "network": x["network"], "measured": x["value"], "limit": x["limit"],
             "met": {True: "yes", False: "**no**", None: "(seed, for reference)"}[x["met"]]}
            for x in t["targets"]]
    m = t["machine"]
    head = f"Measured {t['date']} on {m['cpus']} CPU cores ({m['processor']}, torch {m['torch']}).\n\n"
    return head + markdown_table(rows, digits=3)


def _speed(s):
    fits = s["fits"]
    rows = [
        {"what": "IVIM-NET training, 100k voxels (seed settings)",
         "result": f"{s['training']['seconds']:.1f} s, {s['training']['epochs']} epochs"},
        {"what": f"IVIM-NET inference, {s['inference']['voxels']:,} voxels",
         "result": f"{s['inference']['voxels_per_second']:,.0f} voxels/s"},
    ]
    for name, label in [("lsq", "batched LSQ (fit_lsq)"), ("segmented", "segmented (fit_segmented)"),
                        ("bayes_40^3_grid", "Bayes posterior mean, 40³ grid (fit_bayes: exact, S0 unknown)"),
                        ("bayes_ratio_40^3_grid", "Bayes, ratio approximation (fit_bayes(s0=\"ratio\"))"),
                        ("scipy_curve_fit_per_voxel", "scipy curve_fit, one voxel at a time")]:
        if name not in fits:
            continue
        rows.append({"what": label, "result": " / ".join(
            f"{fits[name][k]['voxels_per_second']:,.0f} voxels/s at SNR {k[3:]}" for k in ("snr20", "snr100"))})
    rows.append({"what": "batched LSQ speed-up over scipy", "result": " / ".join(
        f"{fits['lsq'][k]['speedup_vs_scipy']:.0f}x at SNR {k[3:]}" for k in ("snr20", "snr100"))})
    bp = s["bayes_phantom_seconds"]
    rows.append({"what": f"Bayes on the phantom ({bp['voxels']:,} voxels, exact)", "result": f"{bp['seconds']:.1f} s"})
    m = s["machine"]
    head = f"Measured {s['date']} on {m['cpus']} CPU cores ({m['processor']}, torch {m['torch']}, device {m['device']}).\n\n"
    return head + markdown_table(rows)


def _span(values, scale=1.0, digits=2):
    """One value, or the min-max over training seeds."""
    v = sorted(x * scale for x in values)
    return f"{v[0]:.{digits}f}" if v[0] == v[-1] or len(v) == 1 else f"{v[0]:.{digits}f}-{v[-1]:.{digits}f}"


def _in_vivo(result):
    rows, out = result["rows"], []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        runs = [r for r in rows if r["dataset"] == dataset]
        ref = {x["roi"]: x for x in runs[0]["rois"]}
        out.append({"scan": dataset, "method": "reference" if dataset != "phantom" else "truth",
                    "liver Dt": _span([ref["liver"]["ref_D"]], 1e3), "spleen Dt": _span([ref["spleen"]["ref_D"]], 1e3),
                    "liver Fp": _span([ref["liver"]["ref_f"]]), "spleen Fp": _span([ref["spleen"]["ref_f"]]),
                    "passed": "", "near reference": "", "warned": ""})
        for method in dict.fromkeys(r["method"] for r in runs):
            mine = [r for r in runs if r["method"] == method]
            roi = [{x["roi"]: x for x in r["rois"]} for r in mine]
            out.append({"scan": dataset, "method": method,
                        "liver Dt": _span([x["liver"]["Dt"] for x in roi], 1e3),
                        "spleen Dt": _span([x["spleen"]["Dt"] for x in roi], 1e3),
                        "liver Fp": _span([x["liver"]["Fp"] for x in roi]),
                        "spleen Fp": _span([x["spleen"]["Fp"] for x in roi]),
                        "passed": f"{sum(r['passed'] for r in mine)}/{len(mine)}",
                        "near reference": f"{sum(r['reference_passed'] for r in mine)}/{len(mine)}",
                        "warned": f"{sum(bool(r['warnings']) for r in mine)}/{len(mine)}"})
    head = (f"Measured {result['date']} on {result['machine']}. Dt in 10⁻³ mm²/s (ROI medians; networks: "
            "min-max over training seeds 0, 1, 2). *passed*: runs meeting the three checks of `iv.check_scan` "
            "(liver and spleen Dt within 25 % and 35 % of least squares on the same series, liver Fp at least "
            "0.08 above spleen Fp); *near reference* (context): runs within the four limits of "
            "`iv.check_agreement` around the authors' D and f (the phantom: its truth); *warned*: runs whose "
            "fit raised a quality warning.\n\n")
    text = head + markdown_table(out)

    def count(m, key):
        return f"{sum(bool(r[key]) for r in rows if r['method'] == m)}/{sum(r['method'] == m for r in rows)}"

    totals = [{"method": m, "runs passing `check_scan`": count(m, "passed"),
               "near the reference (context)": count(m, "reference_passed"), "runs with a warning": count(m, "warnings")}
              for m in dict.fromkeys(r["method"] for r in rows)]
    text += "\n\n**All scans together** (3 volunteers and the phantom)\n\n" + markdown_table(totals)
    voxel = [r for r in rows if r.get("voxel_nrmse")]
    if voxel:
        table = [{"method": m, **{p: _span([r["voxel_nrmse"][p] for r in voxel if r["method"] == m], digits=3)
                                  for p in PARAMS}}
                 for m in dict.fromkeys(r["method"] for r in voxel)]
        text += ("\n\n**Voxel by voxel on the phantom** (NRMSE against the truth over the body; networks: min-max "
                 "over seeds)\n\n" + markdown_table(table))
    return text


def _reference_spread(result):
    out = []
    for r in result["rows"]:
        roi = {x["roi"]: x for x in r["rois"]}
        out.append({"scan": r["dataset"], "series": f"bipolar, T = {r['diffusion_time_ms']} ms", "method": r["method"],
                    "liver Dt": f"{roi['liver']['Dt'] * 1e3:.2f}",
                    "authors' liver D / Dhighb": f"{roi['liver']['ref_D'] * 1e3:.2f} / {roi['liver']['ref_Dhighb'] * 1e3:.2f}",
                    "spleen Dt": f"{roi['spleen']['Dt'] * 1e3:.2f}",
                    "authors' spleen D / Dhighb": f"{roi['spleen']['ref_D'] * 1e3:.2f} / {roi['spleen']['ref_Dhighb'] * 1e3:.2f}",
                    "all four checks": "pass" if r["passed"] else "miss"})
    return (f"Measured {result['date']}. Dt, D and Dhighb in 10⁻³ mm²/s (ROI medians). The shipped series is "
            "T = 100 ms.\n\n" + markdown_table(out))


def _normalisation(result):
    rows = result["rows"]
    out = []
    for entry in result["summary"]:
        mine = [r for r in rows if r["variant"] == entry["variant"]]
        others = [r for r in rows if r["variant"] != entry["variant"]]
        cells = {}
        for p in PARAMS:
            lower = sum(a[p] < b[p] for a, b in zip(mine, others))
            cells[f"NRMSE {p}"] = f"{entry[p]['mean']:.3f} ± {entry[p]['sd']:.3f} (lower in {lower}/{len(mine)} seeds)"
        out.append({"training signals": entry["variant"], **cells,
                    "epochs": "-".join(str(f(r["epochs"] for r in mine)) for f in (min, max))})
    return (f"Measured {result['date']}, sigma {result['sigma']}, {result['seeds']} training seeds; "
            "'lower in' counts the seeds where this variant beat the other.\n\n" + markdown_table(out))


def _prior_shape(result):
    rows, out = result["rows"], []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for prior in dict.fromkeys(r["prior"] for r in rows):
            mine = [r for r in rows if r["dataset"] == dataset and r["prior"] == prior]
            roi = [{x["roi"]: x for x in r["rois"]} for r in mine]
            out.append({"scan": dataset, "supervised prior": prior,
                        "liver Dt": _span([x["liver"]["Dt"] for x in roi], 1e3),
                        "reference liver D": _span([roi[0]["liver"]["ref_D"]], 1e3),
                        "spleen Dt": _span([x["spleen"]["Dt"] for x in roi], 1e3),
                        "reference spleen D": _span([roi[0]["spleen"]["ref_D"]], 1e3),
                        "passed": f"{sum(r['passed'] for r in mine)}/{len(mine)}"})
    return (f"Measured {result['date']}. Dt and D in 10⁻³ mm²/s (ROI medians, min-max over training seeds 0, 1, 2); "
            "*passed*: all four checks of `iv.check_agreement`.\n\n" + markdown_table(out))


def _uncertainty(result):
    def _span(values, digits=3):  # min-max over training seeds, one number when they agree at this precision
        lo, hi = (f"{f(values):.{digits}f}" for f in (min, max))
        return lo if lo == hi else f"{lo}-{hi}"

    seeds = list(result["seeds"].values())
    st = result["settings"]
    names = ", ".join(result["seeds"])
    nrmse = []
    for snr in st["nrmse_snrs"]:
        row = {"SNR": snr}
        for p in PARAMS:
            row[f"{p} network"] = _span([s["nrmse"][str(snr)]["network"][p] for s in seeds], digits=3)
            row[f"{p} posterior"] = f"{result['posterior'][str(snr)]['nrmse'][p]:.3f}"
        row["largest ratio"] = _span([max(s["nrmse"][str(snr)]["ratio"].values()) for s in seeds], digits=3)
        nrmse.append(row)
    cover = []
    for snr in st["coverage_snrs"]:
        row = {"SNR": snr, **{p: _span([s["coverage"][str(snr)][p] for s in seeds], digits=3) for p in PARAMS}}
        post = result["posterior"].get(str(snr))
        row["exact posterior"] = " / ".join(f"{post['coverage'][p]:.3f}" for p in PARAMS) if post else ""
        cover.append(row)
    training = [s["training"] for s in seeds]
    speed = seeds[0]["speed"]
    fastest = min(speed["runs"], key=lambda r: r["seconds"])
    head = (f"Measured {result['date']} by `benchmarks/uncertainty.py` on {result['machine']['cpus']} CPU cores: "
            f"`train_for_snr({tuple(st['snr_range'])}, method=\"supervised\")` ({st['training']['n']:,} training "
            f"voxels), network values min-max over training seeds {names}; held-out voxels from the prior "
            f"(S0 = 1), the network given sigma = 1/SNR; the exact posterior `fit_bayes(..., s0=\"marginal\")` "
            f"({st['posterior']['grid'][0]}³ grid) on the same first {st['posterior']['voxels']:,} voxels.\n\n")
    text = head + "**NRMSE**, network mean against the exact posterior mean (*largest ratio*: network / " \
                  "posterior, worst parameter)\n\n" + markdown_table(nrmse)
    text += (f"\n\n**Coverage of the 90 % intervals** ({st['coverage_voxels']:,} held-out voxels per SNR, binomial "
             f"SD {0.3 / st['coverage_voxels'] ** 0.5:.3f}; *exact posterior*: Dp / Dt / Fp on its "
             f"{st['posterior']['voxels']:,} voxels)\n\n" + markdown_table(cover))
    sd = [v for s in seeds for x in s["sd"].values() for v in x["median_sd_ratio"].values()]
    width = [v for s in seeds for x in s["sd"].values() for v in x["median_width_ratio"].values()]
    text += (f"\n\nPer voxel, network / exact posterior (median over the voxels; range over SNR, parameter and "
             f"seed): SD {_span(sd, digits=2)}, interval width {_span(width, digits=2)}.")
    text += (f"\n\nTraining: {_span([x['seconds'] / 60 for x in training], digits=1)} min, "
             f"{_span([x['epochs'] for x in training], digits=0)} epochs on one thread. `predict(net, signals, "
             f"sigma=..., interval=0.9)`: {speed['voxels_per_second']:,.0f} voxels/s on {speed['voxels']:,} "
             f"voxels (best of 3; load average {fastest['load_average_1min_before_after'][0]:.1f} on the 2 cores; "
             f"{speed['voxels_per_cpu_second_times_threads']:,.0f} voxels per CPU-second times the threads).")
    return text


def _stacking(result):
    speed = ROOT / "benchmarks" / "results" / "speed.json"
    plain = json.loads(speed.read_text())["training"]["seconds_per_epoch"] if speed.is_file() else None
    rows = [{"network": r["network"], "networks stacked": r["networks_stacked"],
             "seconds per epoch": f"{r['seconds_per_epoch']:.2f}", "per network": f"{r['per_network']:.3f}",
             "× a one-network stack's epoch": f"{r['times_one_network']:.2f}",
             "× plain `iv.train`'s epoch": (f"{r['seconds_per_epoch'] / plain:.2f}" if plain and r["network"] == "orig"
                                           else "")} for r in result["rows"]]
    m = result["machine"]
    head = (f"Measured {result['date']} on {m['cpus']} CPU cores ({m['processor']}, torch {m['torch']}), "
            f"{result['voxels_per_network']:,} voxels per network. A stack of one network costs more per epoch "
            "than plain `iv.train` (which uses fused Adam and no vmap): the last column compares with plain "
            f"`iv.train` on the seed's network ({plain:.2f} s per epoch, `benchmarks/results/speed.json`; not "
            "measured for optim).\n\n")
    return head + markdown_table(rows)


def _notebook_times(result):
    rows = [{"notebook": r["notebook"].removesuffix(".ipynb"), "minutes": f"{r['seconds'] / 60:.1f}",
             "load before": f"{r['load_before']:.1f}"} for r in result["rows"]]
    rows.append({"notebook": "**all**", "minutes": f"**{result['total_seconds'] / 60:.1f}**", "load before": ""})
    m = result["machine"]
    head = (f"Measured {result['date']} by `benchmarks/notebook_times.py{' --class' if result['size'] == 'class' else ''}` "
            f"on {m['cpus']} CPU cores ({m['processor']}, torch {m['torch']}); *load before*: the 1-minute load "
            "average when the notebook started.\n\n")
    return head + markdown_table(rows)


def _limits(rows):
    out = ["NRMSE on held-out voxels (seed 0; the network: one training, given the true sigma)\n"]
    for name in PARAMS:
        out.append(f"**NRMSE of {name}** (rows: SNR)\n")
        out.append(markdown_table(pivot(rows, value="nrmse", where={"param": name}), digits=3) + "\n")
    with_sd = [r for r in rows if "coverage" in r]
    out.append("**Coverage of the 90 % intervals** (Dp / Dt / Fp) and **posterior SD over the prior's SD** "
               "(Dp / Dt / Fp; near 1: the prior decides)\n")
    table = []
    for snr in dict.fromkeys(r["snr"] for r in with_sd):
        row = {"snr": snr}
        for method in dict.fromkeys(r["method"] for r in with_sd):
            mine = {r["param"]: r for r in with_sd if r["snr"] == snr and r["method"] == method}
            row[f"{method} coverage"] = " / ".join(f"{mine[p]['coverage']:.3f}" for p in PARAMS)
            row[f"{method} SD / prior SD"] = " / ".join(f"{mine[p]['sd_vs_prior']:.2f}" for p in PARAMS)
        table.append(row)
    out.append(markdown_table(table))
    return "\n".join(out)


def _machine_spread(result):
    labels = {"05_method_comparison": "05 comparison", "06_ablation": "06 ablation", "06_beyond": "06 over SNR"}
    rows = []
    for name, label in labels.items():
        if name not in result["tables"]:
            continue
        s = result["tables"][name]["summary"]
        d = s["nrmse_difference_in_sd"]
        rows.append({"table": label, "network NRMSE rows": s["network_rows_over_trainings"],
                     "difference, median (SDs)": f"{d['median']:.2f}", "largest (SDs)": f"{d['max']:.2f}",
                     "rows > 2 SDs": d["above_2_sd"],
                     "largest relative difference": f"{100 * s['nrmse_max_relative_difference']:.0f} %",
                     "largest rho(Dp, Fp) difference": f"{s['rho_max_abs_difference']:.2f}",
                     "classical rows, largest relative difference": "—" if s["classical_max_relative_difference"]
                     is None else f"{s['classical_max_relative_difference']:.0e}"})
    head = ("Differences between two full `make demo` runs on different numeric paths (`figures/` against "
            f"`{result['other']}/`), in SDs over trainings (the two runs' SDs pooled).\n\n")
    return head + markdown_table(rows)


def _pretrained(result):
    st, rows = result["settings"], []
    for name, cells in result["cells"].items():
        for snr, c in cells.items():
            rows.append({"protocol": name, "SNR": snr,
                         **{f"{p} ratio": f"{c['ratio'][p]:.3f}" for p in PARAMS},
                         "coverage Dp / Dt / Fp": " / ".join(f"{c['coverage'][p]:.3f}" for p in PARAMS),
                         "posterior NRMSE Dp / Dt / Fp": " / ".join(f"{c['posterior'][p]:.3f}" for p in PARAMS)})
    acc, speed, net = result["acceptance"], result["speed"], result["network"]
    head = (f"Measured {result['date']} by `benchmarks/pretrained.py` on {result['machine']['cpus']} CPU cores, "
            f"{st['voxels_per_cell']:,} voxels per cell drawn from `net.prior` (S0 = 1, Rician noise, sigma = 1/SNR "
            f"given to both), the exact posterior `fit_bayes(..., prior=net.prior)` on a "
            f"{'x'.join(map(str, st['posterior_grid']))} grid on the same voxels. *ratio*: the network's NRMSE over "
            f"the exact posterior's (1 is the limit); *coverage*: share of truths inside the network's 90 % "
            f"intervals (binomial SD {0.3 / st['voxels_per_cell'] ** 0.5:.3f}). Protocols (s/mm²): "
            + "; ".join(f"{k} {', '.join(f'{b:g}' for b in v)}" for k, v in result["protocols"].items()) + ".\n\n")
    text = head + markdown_table(rows)
    text += (f"\n\nLargest ratio {acc['nrmse_ratio_max']:.3f}; coverage {acc['coverage_min']:.3f}-"
             f"{acc['coverage_max']:.3f}. `predict(net, signals, b_values=b, sigma=..., interval=0.9)`: "
             f"{speed['voxels_per_second']:,.0f} voxels/s on {speed['voxels']:,} voxels (best of 3, "
             f"{speed['torch_threads']} threads; the first call on a new protocol adds "
             f"{speed['first_call_10_voxels_seconds'] * 1e3:.0f} ms). Training: "
             f"{net['training_seconds'] / 60:.0f} min of wall time on {net['training_threads']} threads "
             f"(cores shared with other jobs; see below).")
    out = []
    for name, cells in result["outside"].items():
        for snr in st["snrs"]:
            c = cells[str(snr)]
            out.append({"protocol": name, "b-values": ", ".join(f"{b:g}" for b in cells["b_values"]), "SNR": snr,
                        **{f"{p} ratio": f"{c['ratio'][p]:.3f}" for p in PARAMS},
                        "coverage Dp / Dt / Fp": " / ".join(f"{c['coverage'][p]:.3f}" for p in PARAMS)})
    text += ("\n\n**Outside the range** (run through `net.specialise`; `predict` refuses these protocols)\n\n"
             + markdown_table(out))
    return text


def _osipi(result):
    rows = [{"method": name, "accurate (OSIPI's rule)": f"{m['accurate']}/{m['cases']}",
             "under 0.5 s per call": f"{m['in_time']}/{m['cases']}", "median s per call": f"{m['median_seconds']:.4f}",
             "largest s per call": f"{m['max_seconds']:.4f}"} for name, m in result["methods"].items()]
    head = (f"Measured {result['date']} by `benchmarks/osipi.py` on {result['machine']['cpus']} CPU cores, one voxel "
            f"per call of `ivim_fit`, OSIPI's bounds (S0 0.7-1.3, f 0-1, Dp 0.005-0.2 (0.01-0.2 where the true f is "
            f"0), D 0-0.005), accurate when "
            f"|estimate - truth| <= atol + rtol |truth| (rtol 0.1; atol f {result['rule']['atol']['f']:g}, "
            f"D {result['rule']['atol']['D']:g}, Dp {result['rule']['atol']['Dp']:g}; D only where f < 0.8, Dp "
            f"only where f > 0.03).\n\n")
    text = head + markdown_table(rows)
    nets = []
    for name, n in result.get("networks", {}).items():
        runs = n["runs"]
        nets.append({"network": name, "seeds": ", ".join(map(str, n["seeds"])) if n["seeds"] else "-",
                     "passed": ", ".join(f"{r['passed']}/{r['cases']}" for r in runs),
                     "worst error / tolerance": ", ".join(f"{r['worst_over_tolerance']:.2f}" for r in runs),
                     "s (training included)": ", ".join(f"{r['seconds_with_training']:.2f}" for r in runs)})
    if nets:
        text += ("\n\n**OSIPI's network test** (`generic_DL.json`, 14 tissues in one call, OSIPI's network "
                 "tolerances: rtol f 0.2, D 0.3, Dp 0.4; atol f 0.2, D 8e-4, Dp 0.08)\n\n" + markdown_table(nets))
    if "single_voxel_seconds" in result:
        text += ("\n\n**One voxel per call** (median of 20 calls, the seed's b-values, SNR 50): "
                 + "; ".join(f"{k} {v:.4f} s" for k, v in result["single_voxel_seconds"].items()) + ".")
    return text


def _kaandorp(result):
    from ivim_demo.nets.published import kaandorp_rows

    main = {k: result["measured"][k] for k in result["published"] if k in result["measured"]}
    rows = kaandorp_rows(main, result["published"])
    for r in rows:
        r["measured"] = (f"{r['measured'][0]:.3f} ± {r['measured'][1]:.3f}" if isinstance(r["measured"], (list, tuple))
                         else f"{r['measured']:.3f}")
        r["ratio"] = f"{r['ratio']:.2f}"
    repeats = ", ".join(f"{k} {v.get('repeats', result['settings'].get('repeats', '?'))}" for k, v in main.items())
    text = (f"Measured {result['date']} on {result['machine']}; retrainings: {repeats} (seeds 0, 1, ...). "
            "*measured*: mean ± SD over retrainings, scored as IVIMNET's code scores (the first 10,000 training "
            "signals); *ratio*: measured / published.\n\n" + markdown_table(rows, digits=3))
    project = sorted(v for v in result["measured"] if v.startswith("project"))
    if project:
        table = []
        for v in project:
            m = result["measured"][v]
            table.append({"variant": v, **{f"NRMSE {k}": f"{m['NRMSE'][k]:.3f} ± {m['NRMSE_sd'][k]:.3f}"
                                          for k in ("D", "f", "Dstar")},
                          "rho(D*, f)": f"{m['rho_Dstar_f']:.2f} ± {m['rho_Dstar_f_sd']:.2f}",
                          "slope of D* on the truth": f"{m['Dstar_slope']:.2f}",
                          "retrainings": m.get("repeats", len(result["trainings"][v]))})
        table.insert(0, {"variant": "optim (IVIMNET's recipe)", **{f"NRMSE {k}": f"{result['measured']['optim']['NRMSE'][k]:.3f}"
                                                               for k in ("D", "f", "Dstar")},
                         "rho(D*, f)": f"{result['measured']['optim']['rho_Dstar_f']:.2f}",
                         "slope of D* on the truth": f"{result['measured']['optim']['Dstar_slope']:.2f}",
                         "retrainings": result["measured"]["optim"]["repeats"]})
        text += ("\n\n**The project's optim recipe on the same signals, and with one of IVIMNET's settings at a "
                 "time** (`project+...`; mean ± SD over retrainings; *slope*: of the estimated D* against the true "
                 "D*, 1 for estimates that follow the data, lower for estimates shrunk towards the middle)\n\n"
                 + markdown_table(table))
    return text


def _barbieri(rows):
    out = []
    for p in PARAMS:
        unit = "× 10⁻³ mm²/s" if p != "Fp" else ""
        scale = 1e3 if p != "Fp" else 1.0
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = sorted((r for r in rows if r["method"] == method and r["param"] == p), key=lambda r: r["sd"])
            cell = {}
            for r in mine:
                sd = r.get("rmse_sd")
                cell[f"SD {r['sd']:g}"] = (f"{r['rmse'] * scale:.3g} ± {sd * scale:.2g}" if sd else f"{r['rmse'] * scale:.3g}")
            out.append({"parameter": f"{p} {unit}".strip(), "method": method, **cell})
    return ("Absolute RMSE (Dp and Dt in 10⁻³ mm²/s, Fp a fraction) at each test noise SD (S0 = 1500: SNR "
            "100 at SD 15, 10 at SD 150); IVIM-NET: mean ± SD over its training seeds. From "
            "`figures/05_barbieri2020.json` (notebook 05, `make demo`).\n\n" + markdown_table(out))


def _repeatability(result):
    out = []
    for s in result["summary"]:
        if s["roi"] not in ("liver", "spleen", "kidney", "pancreas"):
            continue

        def cell(key):
            v, sd = s[key], s.get(f"{key}_sd")
            return f"{v:.2f}" if sd is None else f"{v:.2f} ± {sd:.2f}"

        out.append({"organ": s["roi"], "method": s["method"],
                    **{f"wCV {p} (voxel)": cell(f"{p}_wcv_voxel") for p in ("Dt", "Fp", "Dp")},
                    **{f"wCV {p} (median)": cell(f"{p}_wcv_median") for p in ("Dt", "Fp")},
                    "between-subject CV Dt": f"{s['Dt_cv_between']:.2f}" if s["Dt_cv_between"] is not None else "",
                    "volunteers": len(s["volunteers"])})
    out.sort(key=lambda r: (["liver", "spleen", "kidney", "pancreas"].index(r["organ"])))
    rows = result["rows"]
    per = []
    for v in dict.fromkeys(r["volunteer"] for r in rows):
        for organ in ("liver", "spleen"):
            for m in ("lsq", "bayes", "supervised", "pretrained", "optim", "ivimnet"):
                mine = [r for r in rows if r["volunteer"] == v and r["roi"] == organ and r["method"] == m]
                if mine:
                    per.append({"volunteer": v, "organ": organ, "voxels": mine[0]["voxels"], "method": m,
                                **{f"wCV {p}": f"{np.mean([r[f'{p}_wcv_voxel'] for r in mine]):.2f}"
                                   for p in ("Dp", "Dt", "Fp")}})
    return (f"Measured {result['date']} on {result['machine']}. Within-subject CV between the two halves of each "
            "volunteer's series (`iv.repeatability`), averaged over the volunteers whose ROI has at least 10 voxels; "
            "networks: mean ± SD over training seeds 0, 1, 2. Between-subject CV: of the ROI medians across "
            "volunteers.\n\n" + markdown_table(out)
            + "\n\n**Per volunteer, liver and spleen** (wCV per voxel; networks: mean over seeds 0, 1, 2)\n\n"
            + markdown_table(per))


def render(root=ROOT):
    """Table name -> Markdown, for every result file present."""
    tables = {}
    comparison = root / "figures" / "05_method_comparison.json"
    if comparison.is_file():
        tables["comparison"] = _comparison(json.loads(comparison.read_text()))
    results = root / "benchmarks" / "results"
    for name, render_fn, path in (("ablation", _ablation, root / "figures" / "06_ablation.json"),
                                  ("kaandorp2021", _kaandorp, results / "kaandorp2021.json"),
                                  ("barbieri2020", _barbieri, root / "figures" / "05_barbieri2020.json"),
                                  ("repeatability", _repeatability, results / "repeatability.json"),
                                  ("beyond", _beyond, root / "figures" / "06_beyond.json"),
                                  ("targets", _targets, results / "targets.json"),
                                  ("in_vivo", _in_vivo, results / "in_vivo.json"),
                                  ("prior_shape", _prior_shape, results / "prior_shape.json"),
                                  ("normalisation", _normalisation, results / "normalisation.json"),
                                  ("reference_spread", _reference_spread, results / "reference_spread.json"),
                                  ("uncertainty", _uncertainty, results / "uncertainty.json"),
                                  ("pretrained", _pretrained, results / "pretrained.json"),
                                  ("osipi", _osipi, results / "osipi.json"),
                                  ("limits", _limits, root / "figures" / "09_limits.json"),
                                  ("demo_time", _notebook_times, results / "demo_time.json"),
                                  ("stacking", _stacking, results / "stacking.json"),
                                  ("class_time", _notebook_times, results / "class_time.json"),
                                  ("speed", _speed, results / "speed.json"),
                                  ("machine_spread", _machine_spread, results / "machine_spread.json")):
        if path.is_file():
            tables[name] = render_fn(json.loads(path.read_text()))
    return tables


def update(text, tables):
    for name, body in tables.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README has no <!-- table:{name} --> ... <!-- /table:{name} --> block")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README tables are stale")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = update(old, render())
    if args.check:
        if new != old:
            print("README tables are stale: run .venv/bin/python tools/update_readme.py")
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
