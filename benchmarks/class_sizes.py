"""Time every notebook at its class size (notebooks/class_sizes.json), as `make class` runs them.

Usage: .venv/bin/python benchmarks/class_sizes.py [--out build/class]

Runs the notebooks in order with papermill (each reads what the earlier ones wrote, as in class),
outputs to OUT (figures to OUT/figures, never figures/), and writes benchmarks/results/class_sizes.json:
seconds per notebook, the parameters used, the machine and its load.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import papermill as pm
import torch

ROOT = Path(__file__).resolve().parents[1]
SIZES = ROOT / "notebooks" / "class_sizes.json"


def class_parameters(out: Path) -> dict:
    """Each notebook's class parameters, with the output folders under ``out``."""
    sizes = {k: v for k, v in json.loads(SIZES.read_text()).items() if not k.startswith("_")}
    folders = {"OUTPUT_DIR": str(out / "data"), "FIGURE_DIR": str(out / "figures")}
    return {name: {**params, **folders, **({"WIDGETS": False} if name.startswith("00") else {})}
            for name, params in sizes.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "class"))
    parser.add_argument("--no-json", action="store_true", help="run only (make class); write no timings")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, params in class_parameters(out).items():
        load = os.getloadavg()[0]
        start = time.perf_counter()
        pm.execute_notebook(str(ROOT / "notebooks" / name), str(out / "notebooks" / name), parameters=params,
                            cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
        seconds = time.perf_counter() - start
        print(f"{name}: {seconds:.0f} s", flush=True)
        rows.append({"notebook": name, "seconds": round(seconds, 1), "load_before": round(load, 2),
                     "parameters": {k: v for k, v in params.items() if k not in ("OUTPUT_DIR", "FIGURE_DIR")}})
    if args.no_json:
        return 0
    result = {"date": datetime.date.today().isoformat(),
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__},
              "rows": rows, "total_seconds": round(sum(r["seconds"] for r in rows), 1)}
    path = ROOT / "benchmarks" / "results" / "class_sizes.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
