"""How far can a fit of the shipped (conventional) series be from the authors' D at all?
Writes benchmarks/results/reference_spread.json. Needs the original .mat files (../shared).

Usage: .venv/bin/python benchmarks/reference_spread.py

The authors' reference maps (D, f) come from their flow-compensated IVIM model fitted to all
300 images of a scan (bipolar and flow-compensated gradients, diffusion times 40, 70 and 100 ms),
and their prefit gives a second tissue diffusivity, Dhighb, from the high b-values. The project
ships one conventional series: the bipolar images at T = 100 ms (tools/convert_wetscherek.py).
This script converts each volunteer's bipolar series at every diffusion time with the same
converter and fits it with least squares and the Bayesian posterior mean (deterministic methods,
no training), then records the liver and spleen medians beside the authors' D, Dhighb and f, and
whether ``ivim_demo.check_agreement`` (the in-vivo acceptance) passes. It answers: is a miss
against the authors' D in a given ROI a failure of a method, or a property of the series?
"""
from __future__ import annotations

import datetime
import json
import platform
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import ivim_demo as iv  # noqa: E402
from convert_wetscherek import SOURCE, convert_scan  # noqa: E402
from ivim_demo.teaching.examples import REFERENCE_MAPS  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "reference_spread.json"
VOLUNTEERS = ("volunteer1", "volunteer2", "volunteer3")
DIFFUSION_TIMES = (40, 70, 100)
METHODS = ("lsq", "bayes")
ROIS = {2: "liver", 4: "spleen"}


def series_rows(name, diffusion_time, folder):
    convert_scan(name, SOURCE, folder, diffusion_time=diffusion_time)
    dwi, b, _ = iv.load_dwi(folder / f"{name}_dwi.nii.gz", folder / f"{name}_dwi.bval")
    read = lambda suffix: np.asarray(nib.load(folder / f"{name}_{suffix}.nii.gz").dataobj)  # noqa: E731
    ref_maps = read("reference").astype(np.float32)
    reference = {key: ref_maps[..., k] for k, key in enumerate(REFERENCE_MAPS)}
    keep = iv.make_mask(dwi, mask=read("mask") > 0, warn=False)
    rois = read("rois").astype(int)
    rows = []
    for method in METHODS:
        fit = iv.fit_volume(dwi, b, keep, method=method, progress=False)
        medians = iv.roi_medians(fit.maps, rois, ROIS, mask=keep, reference=reference)
        for row in medians:
            inside = (rois == [k for k, v in ROIS.items() if v == row["roi"]][0]) & keep
            row["ref_Dhighb"] = float(np.median(reference["Dhighb"][inside]))
        checks = iv.check_agreement(medians)
        rows.append({"dataset": name, "diffusion_time_ms": diffusion_time, "method": method, "rois": medians,
                     "checks": checks, "passed": all(c["ok"] for c in checks)})
    return rows


def main():
    if not (SOURCE / "volunteer1.mat").exists():
        sys.exit(f"needs the original data in {SOURCE} (not part of a clone); nothing written.")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in VOLUNTEERS:
            for t in DIFFUSION_TIMES:
                folder = Path(tmp) / f"{name}_T{t}"
                folder.mkdir()
                rows += series_rows(name, t, folder)
    for r in rows:
        liver, spleen = ({x["roi"]: x for x in r["rois"]}[k] for k in ("liver", "spleen"))
        print(f"{r['dataset']} T={r['diffusion_time_ms']:3d} {r['method']:5s} "
              f"liver Dt {liver['Dt'] * 1e3:.2f} (D {liver['ref_D'] * 1e3:.2f}, Dhighb {liver['ref_Dhighb'] * 1e3:.2f}) "
              f"spleen Dt {spleen['Dt'] * 1e3:.2f} (D {spleen['ref_D'] * 1e3:.2f}, Dhighb {spleen['ref_Dhighb'] * 1e3:.2f}) "
              f"{'passes' if r['passed'] else 'misses ' + ', '.join(c['check'] for c in r['checks'] if not c['ok'])}")
    result = {"date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()}, numpy {np.__version__}", "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = OUT.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=1, default=float))
    tmp_out.replace(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
