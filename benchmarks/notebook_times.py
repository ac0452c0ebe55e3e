"""Run every notebook in order with papermill and time it: the full reproduction or the class size.

Usage:
    .venv/bin/python benchmarks/notebook_times.py            # make demo: full size, figures/ and build/data
    .venv/bin/python benchmarks/notebook_times.py --class    # make class: notebooks/class_sizes.json, build/class

Each notebook reads what the earlier ones wrote. Writes benchmarks/results/demo_time.json (or
class_time.json): seconds per notebook, the parameters passed, the load average before each, the machine.
A notebook that fails stops the run (papermill's error) and no timings are written.
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
NOTEBOOKS = ROOT / "notebooks"
SIZES = NOTEBOOKS / "class_sizes.json"


def parameters(*, class_size: bool, out: Path | None) -> dict:
    """Notebook -> papermill parameters: none for the full run (its defaults), the class sizes otherwise;
    the explorer's live widget is off (no browser); ``out`` moves outputs and figures there."""
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    sizes = {k: v for k, v in json.loads(SIZES.read_text()).items() if not k.startswith("_")} if class_size else {}
    folders = {"OUTPUT_DIR": str(out / "data"), "FIGURE_DIR": str(out / "figures")} if out else {}
    return {name: {**sizes.get(name, {}), **folders, **({"WIDGETS": False} if name.startswith("00") else {})}
            for name in names}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--class", dest="class_size", action="store_true", help="class sizes, outputs in build/class")
    args = parser.parse_args(argv)
    out = ROOT / "build" / "class" if args.class_size else None
    executed = (out or ROOT / "build") / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    rows, start_all = [], time.perf_counter()
    for name, params in parameters(class_size=args.class_size, out=out).items():
        load = os.getloadavg()[0]
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        pm.execute_notebook(str(NOTEBOOKS / name), str(executed / name), parameters=params, cwd=str(NOTEBOOKS),
                            kernel_name="python3", progress_bar=False)
        seconds = time.perf_counter() - start
        print(f"   {seconds:.0f} s", flush=True)
        rows.append({"notebook": name, "seconds": round(seconds, 1), "load_before": round(load, 2),
                     "parameters": {k: v for k, v in params.items() if k not in ("OUTPUT_DIR", "FIGURE_DIR")}})
    result = {"date": datetime.date.today().isoformat(), "size": "class" if args.class_size else "full",
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__},
              "rows": rows, "total_seconds": round(time.perf_counter() - start_all, 1)}
    path = ROOT / "benchmarks" / "results" / f"{'class' if args.class_size else 'demo'}_time.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"all notebooks in {result['total_seconds'] / 60:.1f} min; timings in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
