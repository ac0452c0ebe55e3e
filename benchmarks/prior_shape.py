"""Is the supervised network's low liver Dt on volunteer1 its prior's shape?
Writes benchmarks/results/prior_shape.json.

Usage: .venv/bin/python benchmarks/prior_shape.py

``--method supervised`` trains on simulations whose Dp and Dt are drawn log-uniformly from
``iv.IN_VIVO_BOX`` (``iv.IN_VIVO_LOG``): half the Dt prior lies below 1.2e-3 mm^2/s. This script
refits the three shipped volunteers with the supervised network trained both ways, Dt log-uniform
(the default) and Dt uniform (Dp stays log-uniform), training seeds 0, 1, 2, exactly as
``benchmarks/in_vivo.py`` fits them otherwise, and records the liver and spleen medians and the
in-vivo checks (``iv.check_agreement``).
"""
from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

import numpy as np
import torch

import ivim_demo as iv
import ivim_demo.nets.scan_training as scan_training

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "prior_shape.json"
PRIORS = {"Dt log-uniform (default)": ("Dp", "Dt"), "Dt uniform": ("Dp",)}
VOLUNTEERS = ("volunteer1", "volunteer2", "volunteer3")
SEEDS = (0, 1, 2)


def main():
    default = scan_training.IN_VIVO_LOG
    rows = []
    try:
        for name in VOLUNTEERS:
            ex = iv.load_example(name)
            keep = iv.make_mask(ex.dwi, mask=ex.mask, warn=False)
            for prior, log in PRIORS.items():
                scan_training.IN_VIVO_LOG = log
                for seed in SEEDS:
                    fit = iv.fit_volume(ex.dwi, ex.b_values, keep, method="supervised", seed=seed, progress=False)
                    rois = iv.roi_medians(fit.maps, ex.rois, ex.roi_names, mask=keep, reference=ex.reference)
                    checks = iv.check_agreement(rois)
                    rows.append({"dataset": name, "prior": prior, "seed": seed, "rois": rois, "checks": checks,
                                 "passed": all(c["ok"] for c in checks), "warnings": fit.info["warnings"]})
                    liver = {x["roi"]: x for x in rois}["liver"]
                    print(name, prior, seed, f"liver Dt {liver['Dt'] * 1e3:.2f} (ref {liver['ref_D'] * 1e3:.2f})",
                          "pass" if rows[-1]["passed"] else "miss", flush=True)
    finally:
        scan_training.IN_VIVO_LOG = default
    result = {"date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()}, torch {torch.__version__}, numpy {np.__version__}", "rows": rows}
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(OUT)


if __name__ == "__main__":
    main()
