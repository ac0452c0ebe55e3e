"""Peak memory of the classical fits on 2M voxels; writes benchmarks/results/fit_memory.json.

Usage: .venv/bin/python benchmarks/fit_memory.py [--voxels N] [--before REV] [--quick]

Each fit runs in a fresh subprocess on N voxels x 8 b-values (float64, SNR 20,
simulated from the seed's box in blocks so generating them costs no more than
the array itself). Two numbers per fit:

* ``traced_peak_mb``: the largest amount of memory the fit call allocated on
  top of its input (tracemalloc, which numpy reports its arrays to);
* ``rss_peak_mb`` and ``rss_before_mb``: the process's peak resident memory
  (``ru_maxrss``) at the end and just before the call (interpreter, numpy,
  scipy and the 128 MB input).

``--before REV`` also measures ``ivim_demo/fit.py`` as it was at git revision
REV (e.g. the commit before the chunked fits), loaded in place of the current one.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, tracemalloc, importlib.util
import numpy as np
import ivim_demo.simulation.simulate as sim
from ivim_demo.core.signal_model import SEED_B_VALUES as B

method, n, fit_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if fit_path:
    spec = importlib.util.spec_from_file_location("ivim_demo._fit_before", fit_path)
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
else:
    import ivim_demo.classical.fit as fit
signals = np.empty((n, len(B)))
for start in range(0, n, 100_000):
    stop = min(start + 100_000, n)
    signals[start:stop] = sim.training_data(stop - start, B, sigma=0.05, seed=start)[0]
fit.fit_lsq(signals[:1000], B)  # imports and first-call allocations outside the measurement
fit.estimate_sigma(signals[:1000], B)
kib = 1024 if sys.platform != "darwin" else 1
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib
tracemalloc.start()
t = time.perf_counter()
out = getattr(fit, method)(signals, B)
seconds = time.perf_counter() - t
_, traced = tracemalloc.get_traced_memory()
tracemalloc.stop()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib
print(json.dumps({"traced_peak_mb": traced / 2**20, "rss_before_mb": rss_before / 2**20,
                  "rss_peak_mb": rss / 2**20, "seconds_traced": seconds,
                  "torch_loaded": "torch" in sys.modules}))
"""


def measure(method, n, fit_path=""):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, method, str(n), fit_path], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxels", type=int, default=2_000_000)
    parser.add_argument("--before", help="git revision whose ivim_demo/fit.py to measure as well")
    parser.add_argument("--quick", action="store_true", help="200k voxels, to check the script runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fit_memory.json"))
    args = parser.parse_args(argv)
    n = 200_000 if args.quick else args.voxels
    methods = ("fit_lsq", "fit_segmented", "estimate_sigma")
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "voxels": n, "b_values": 8, "dtype": "float64", "input_mb": n * 8 * 8 / 2**20,
        "note": "traced_peak_mb: memory the call allocated above its input (tracemalloc); rss_*: process "
                "peak resident memory before and after the call; seconds_traced: wall time with tracemalloc on",
        "now": {m: measure(m, n) for m in methods},
    }
    if args.before:
        source = subprocess.run(["git", "show", f"{args.before}:ivim_demo/fit.py"], capture_output=True, text=True,
                                cwd=ROOT, check=True).stdout
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(source)
        try:
            result["before"] = {"revision": args.before, **{m: measure(m, n, f.name) for m in methods}}
        finally:
            os.unlink(f.name)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
