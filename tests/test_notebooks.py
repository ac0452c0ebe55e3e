"""Every notebook runs end to end (papermill, small parameters, temporary folders),
produces its artefacts, and its seeded checked cells reproduce exactly (nbval)."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import papermill as pm
import pytest

import ivim_demo as iv

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))

#: Small values for every parameter a notebook may declare; only those it declares are passed.
SMALL = {
    "N_SAMPLES": 3000,
    "MAX_EPOCHS": 3,
    "N_TRAIN": 3000,
    "N_TEST": 200,
    "N_REPEATS": 2,
    "SNRS": [10, 50],
    "BAYES_GRID": [12, 12, 12],
    "SHAPE": [32, 32, 2],
    "N_SEEDS": 2,
    "WIDGETS": False,
    "WORKERS": 1,
    "POOL_VOXELS": 2000,
    "PHANTOM_STEP": 4,
    "SCAN_STEP": 3,
    "PROTOCOL_VOXELS": 150,
    "BARBIERI_N_TRAIN": 3000,
    "BARBIERI_N_TEST": 200,
    "BARBIERI_SDS": [30, 150],
    "BARBIERI_SEEDS": 2,
    "KAANDORP_N": 4000,
    "KAANDORP_REPEATS": 2,
    "HALF_METHODS": ["lsq"],
}

#: What each notebook must leave behind: files in OUTPUT_DIR and figures in FIGURE_DIR.
EXPECTED = {
    "00_ivim_explained.ipynb": ([], ["00_ivim_explorer"]),
    "01_training_data.ipynb": (["training_data.npz"], ["01_signal_examples", "01_parameter_distributions"]),
    "02_network_training.ipynb": (["ivimnet.pt"], ["02_training_loss"]),
    "03_phantom_simulation.ipynb": (["phantom.npz"], ["03_phantom_dwi", "03_phantom_truth"]),
    "04_inference_and_plots.ipynb": ([], ["04_maps_vs_truth", "04_estimate_vs_truth"]),
    "05_method_comparison.ipynb": ([], ["05_nrmse_vs_snr", "05_bias_vs_snr", "05_scatter", "05_phantom_all_methods",
                                         "05_barbieri2020"]),
    "06_beyond_ivimnet.ipynb": ([], ["06_ablation", "06_nrmse_vs_snr", "06_prior_mismatch"]),
    "07_your_own_data.ipynb": (["supervised/Fp.nii.gz"], ["07_mask", "07_maps", "07_residual", "07_phantom_maps"]),
    "08_cohort.ipynb": (["cohort/cohort.csv", "cohort/sub-01/dwi/sub-01/Fp.nii.gz"], ["08_cohort_rois"]),
    "09_uncertainty.ipynb": ([], ["09_calibration", "09_phantom_sd", "09_scan_sd", "09_protocols"]),
}


def run_notebook(name, out_dir, **extra):
    declared = pm.inspect_notebook(str(NOTEBOOK_DIR / name))
    params = {k: v for k, v in SMALL.items() if k in declared}
    params.update(OUTPUT_DIR=str(out_dir / "data"), FIGURE_DIR=str(out_dir / "figures"), **extra)
    executed = out_dir / name
    pm.execute_notebook(str(NOTEBOOK_DIR / name), str(executed), parameters=params,
                        cwd=str(NOTEBOOK_DIR), kernel_name="python3", progress_bar=False,
                        execution_timeout=900)  # a hung cell fails the test instead of blocking CI
    return executed


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("notebooks")
    for name in NOTEBOOKS:  # in order: each reads what the previous wrote
        run_notebook(name, out)
    return out


def test_every_notebook_is_covered():
    assert set(EXPECTED) <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_produces_its_artefacts(run_dir, name):
    files, figures = EXPECTED.get(name, ([], []))
    assert (run_dir / name).is_file()
    for f in files:
        assert (run_dir / "data" / f).stat().st_size > 0, f
    for fig in figures:
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 10_000, fig


def test_comparison_table_is_written(run_dir):
    import ivim_demo as iv

    rows = iv.load_table(run_dir / "figures" / "05_method_comparison.json")
    assert (run_dir / "figures" / "05_method_comparison.csv").is_file()
    assert {r["snr"] for r in rows} == set(SMALL["SNRS"])
    assert {r["method"] for r in rows} == {"IVIM-NET", "LSQ", "segmented", "Bayes"}
    assert len(rows) == 2 * 4 * 3
    assert all(r["nrmse"] >= 0 for r in rows)
    assert all(r["cv"] >= 0 for r in rows if r["method"] == "IVIM-NET")


def test_printed_counts_and_ratios_are_saved(run_dir):
    """Numbers the notebooks' text rests on are in their JSON, not only printed."""
    import ivim_demo as iv

    counts = {r["mask"]: r["voxels"] for r in iv.load_table(run_dir / "figures" / "07_mask_counts.json")}
    assert counts["automatic"] > 1000 and counts["authors' body mask"] > 1000
    assert 0 <= counts["authors' body mask, excluded (S(b=0) = 0)"] < 0.05 * counts["authors' body mask"]
    ratios = {r["param"]: r["median_sd_vs_prior"] for r in iv.load_table(run_dir / "figures" / "09_scan_sd.json")}
    assert set(ratios) == set(iv.PARAMS) and all(0 < v < 1.2 for v in ratios.values())
    assert ratios["Dt"] < ratios["Dp"]  # the data pin Dt down far better than Dp
    rois = iv.load_table(run_dir / "figures" / "08_cohort_rois.json")
    assert {r["roi"] for r in rois} == {"pancreas", "liver", "kidney", "spleen"} and len(rois) % 4 == 0
    assert all(r["voxels"] >= 0 for r in rois) and any(r["voxels"] > 50 for r in rois if r["roi"] == "liver")


def _nrmse(rows, method, snr, param):
    return next(r["nrmse"] for r in rows if r["method"] == method and r["snr"] == snr and r["param"] == param)


@pytest.mark.parametrize("table", ["05_method_comparison", "06_beyond"])
def test_key_results_hold_in_the_small_run(run_dir, table):
    """What the notebooks' text rests on, from the JSON they write, even at test size (200 test voxels, a
    12^3 Bayes grid; the networks train 3 epochs there, so only the classical fits are judged)."""
    rows = iv.load_table(run_dir / "figures" / f"{table}.json")
    low, high = sorted(SMALL["SNRS"])
    for param in ("Dp", "Dt", "Fp"):
        # the posterior mean, which knows prior and noise, beats least squares at low SNR (full run: by 2x)
        assert _nrmse(rows, "Bayes", low, param) < _nrmse(rows, "LSQ", low, param), param
        for method in ("LSQ", "Bayes"):  # more signal, smaller error
            assert _nrmse(rows, method, high, param) < _nrmse(rows, method, low, param), (method, param)
    # Dt is the best-determined parameter: least squares gets it within 20 % at SNR 50 (full run: 0.095)
    assert _nrmse(rows, "LSQ", high, "Dt") < 0.2
    assert _nrmse(rows, "LSQ", high, "Dt") < min(_nrmse(rows, "LSQ", high, p) for p in ("Dp", "Fp"))


def test_uncertainty_notebook_limits_and_calibration_in_the_small_run(run_dir):
    """09's tables: the exact posterior's 90 % intervals hold about 90 % of truths, and not knowing S0 costs
    accuracy in Fp (200 voxels per SNR, a 12^3 grid: loose bounds that a wrong posterior still fails)."""
    rows = iv.load_table(run_dir / "figures" / "09_limits.json")
    calibration = iv.load_table(run_dir / "figures" / "09_calibration.json")
    assert {r["method"] for r in rows} == {"Bayes, S0 known", "Bayes, S0 unknown", "network"}
    exact = [r for r in calibration if r["method"] == "Bayes, S0 unknown"]
    for r in exact:
        assert abs(r["coverage"] - r["level"]) < 0.1, r
    assert sum(_nrmse(rows, "Bayes, S0 unknown", snr, "Fp") for snr in SMALL["SNRS"]) > \
        sum(_nrmse(rows, "Bayes, S0 known", snr, "Fp") for snr in SMALL["SNRS"])


def test_uncertainty_notebook_scores_the_shipped_network_on_every_protocol(run_dir):
    """09's any-protocol section: every protocol at every SNR, the network near the exact posterior under
    its prior (150 voxels, a 12^3 grid: loose bounds that an untrained network still fails) and outside
    the range measured, not refused."""
    rows = iv.load_table(run_dir / "figures" / "09_protocols.json")
    assert {r["method"] for r in rows} == {"seed", "volunteers", "IVIMNET repository", "drawn at random"}
    assert len(rows) == 4 * len(SMALL["SNRS"]) * 3
    for r in rows:
        assert 0.6 < r["ratio"] < 1.5 and 0.75 <= r["coverage"] <= 1.0, r
    outside = iv.load_table(run_dir / "figures" / "09_protocols_outside.json")
    assert len(outside) == 3 * len(SMALL["SNRS"]) * 3 and all(np.isfinite(r["ratio"]) for r in outside)


def test_cohort_notebook_fits_every_volunteer_with_one_network(run_dir):
    import csv

    with open(run_dir / "data" / "cohort" / "cohort.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["scan"] for r in rows] == ["sub-01", "sub-02", "sub-03"]
    assert {r["status"] for r in rows} <= {"fitted", "skipped"} and len({r["model_sha256"] for r in rows}) == 1
    for row in rows:  # per-ROI medians are there, in mm^2/s and fractions
        assert 0.0002 < float(row["label2_Dt"]) < 0.005 and 0 <= float(row["label2_Fp"]) <= 0.7


def test_checked_cells_reproduce_under_nbval(run_dir):
    """Re-execute the executed copies: cells marked NBVAL_CHECK_OUTPUT must match exactly."""
    executed = [str(run_dir / name) for name in NOTEBOOKS]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
         "-q", "-o", "addopts=", *executed],
        cwd=run_dir, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
    checked = sum(
        "NBVAL_CHECK_OUTPUT" in "".join(c["source"])
        for name in NOTEBOOKS for c in json.loads((run_dir / name).read_text())["cells"]
    )
    assert checked >= len(EXPECTED)


def test_notebook_runs_on_its_own(tmp_path):
    """04 with nothing before it: it makes the phantom and trains a network itself, and says so."""
    text = _printed(run_notebook("04_inference_and_plots.ipynb", tmp_path))
    assert "not found" in text and "training a network now" in text
    assert (tmp_path / "figures" / "04_maps_vs_truth.png").is_file()


def _printed(executed):
    nb = json.loads(executed.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


@pytest.mark.parametrize("name", ["02_network_training.ipynb", "04_inference_and_plots.ipynb",
                                  "05_method_comparison.ipynb"])
def test_notebooks_in_order_reuse_what_the_previous_made(run_dir, name):
    """Run in order with the same parameters, each reads the earlier notebook's files: nothing is remade."""
    text = _printed(run_dir / name)
    assert "was made with" not in text and "not found" not in text


def test_a_notebook_run_with_other_parameters_remakes_what_it_reads(run_dir, tmp_path):
    """02 with another sample count than 01 made its data with: it simulates its own, and says so."""
    import shutil

    shutil.copytree(run_dir / "data", tmp_path / "data")
    executed = run_notebook("02_network_training.ipynb", tmp_path, N_SAMPLES=2000)
    text = _printed(executed)
    assert "was made with" in text and "'n': 3000" in text and "'n': 2000" in text
    assert iv.dataset_settings(tmp_path / "data" / "training_data.npz")["n"] == 2000


EXERCISE_NOTEBOOKS = [name for name in NOTEBOOKS if "01" <= name[:2] <= "07"]  # 08 (cohort): none yet


def _tagged(cells, tag):
    return [c for c in cells if tag in c["metadata"].get("tags", [])]


def _check_calls(source):
    """(exercise id, answer variable name, quiet) of every ``iv.check_answer(...)`` call in a cell."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "check_answer"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "iv"):
            quiet = any(k.arg == "quiet" and isinstance(k.value, ast.Constant) and k.value.value is True
                        for k in node.keywords)
            answer = node.args[1].id if len(node.args) > 1 and isinstance(node.args[1], ast.Name) else None
            calls.append((ast.literal_eval(node.args[0]), answer, quiet))
    return calls


def _names(source, kind):
    """Names a cell binds (``ast.Store``, defs, imports) or reads (``ast.Load``)."""
    tree = ast.parse(source)
    if kind == "load":
        return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    bound |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
              for a in n.names}
    return bound


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_exercises_follow_the_pattern(name):
    """Task, empty answer cell, check cell, collapsed solution that checks quietly; ids iv.check_answer knows."""
    cells = json.loads((NOTEBOOK_DIR / name).read_text())["cells"]
    exercises, solutions = _tagged(cells, "exercise"), _tagged(cells, "solution")
    assert len(exercises) >= 2 and len(solutions) == len(exercises)
    tasks = [c for c in cells if c["cell_type"] == "markdown" and "**Exercise" in "".join(c["source"])]
    assert len(tasks) == len(exercises)
    for n, cell in enumerate(exercises, start=1):
        assert "".join(cell["source"]).startswith(f"answer_{n} = None")
        i = cells.index(cell)
        assert cells[i - 1] in tasks, "the task comes right before its answer cell"
        assert _check_calls("".join(cells[i + 1]["source"])) == [(f"{name[:2]}.{n}", f"answer_{n}", False)]
        assert cells[i + 2] is solutions[n - 1], "the solution follows the check cell"
    for n, cell in enumerate(solutions, start=1):
        source = "".join(cell["source"])
        assert cell["metadata"]["jupyter"]["source_hidden"] is True
        calls = _check_calls(source)
        assert [(eid, quiet) for eid, _, quiet in calls] == [(f"{name[:2]}.{n}", True)], "iv.check_answer(..., quiet=True)"
        assert source.rstrip().endswith(";") and "print(" not in source and "display(" not in source
        assert f"answer_{n}" not in _names(source, "store"), "a solution never overwrites the student's answer"
    assert {f"{name[:2]}.{n}" for n in range(1, len(exercises) + 1)} <= set(iv.EXERCISES)


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_solutions_do_not_depend_on_each_other(name):
    """A solution reads nothing that only another solution defines."""
    cells = [c for c in json.loads((NOTEBOOK_DIR / name).read_text())["cells"] if c["cell_type"] == "code"]
    solutions = _tagged(cells, "solution")
    elsewhere = set().union(*(_names("".join(c["source"]), "store") for c in cells if c not in solutions))
    bound = [_names("".join(c["source"]), "store") for c in solutions]
    for i, cell in enumerate(solutions):
        others = set().union(*(b for j, b in enumerate(bound) if j != i))
        borrowed = (_names("".join(cell["source"]), "load") & others) - bound[i] - elsewhere
        assert not borrowed, f"solution {i + 1} uses {sorted(borrowed)} from another solution"


def test_every_checked_exercise_is_in_a_notebook():
    code = [c for name in EXERCISE_NOTEBOOKS for c in json.loads((NOTEBOOK_DIR / name).read_text())["cells"]
            if c["cell_type"] == "code"]
    ids = {eid for c in code for eid, _, _ in _check_calls("".join(c["source"]))}
    assert ids == set(iv.EXERCISES)


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_solutions_ran_and_printed_nothing(run_dir, name):
    """CI executes every solution against its check (quiet: a wrong one raises) and none prints."""
    cells = json.loads((run_dir / name).read_text())["cells"]
    solutions = _tagged(cells, "solution")
    assert len(solutions) >= 2
    for c in solutions:
        assert c["metadata"]["jupyter"]["source_hidden"] is True
        assert c["execution_count"] is not None, "CI executes every solution"
        assert c["outputs"] == [], c["outputs"]  # no print, no figure, no error
    for c in cells:
        if c["cell_type"] == "code" and any(not quiet for _, _, quiet in _check_calls("".join(c["source"]))):
            assert "not answered yet" in "".join("".join(o.get("text", "")) for o in c["outputs"])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name):
    nb = json.loads((NOTEBOOK_DIR / name).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "clear outputs before committing"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one papermill parameters cell"
    tree = ast.parse("".join(params[0]["source"]))
    for stmt in tree.body:  # UPPER_CASE = literal, nothing derived
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
        assert stmt.targets[0].id.isupper()
        ast.literal_eval(stmt.value)
    names = {stmt.targets[0].id for stmt in tree.body}
    assert {"SEED", "OUTPUT_DIR", "FIGURE_DIR"} <= names
    assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("# ")
    for c in code:  # long cells belong in the package
        assert len("".join(c["source"]).splitlines()) <= 20, "".join(c["source"])[:200]


def test_class_sizes_name_every_notebook_and_only_its_parameters():
    """`make class` passes notebooks/class_sizes.json: a misspelt or removed parameter would be ignored
    by papermill (it only replaces literals it finds), so the class would silently run at full size."""
    sizes = {k: v for k, v in json.loads((NOTEBOOK_DIR / "class_sizes.json").read_text()).items()
             if not k.startswith("_")}
    assert set(sizes) == set(NOTEBOOKS)
    for name, params in sizes.items():
        declared = pm.inspect_notebook(str(NOTEBOOK_DIR / name))
        assert set(params) <= set(declared), (name, set(params) - set(declared))
        for key, value in params.items():  # smaller than the full run, never larger
            default = ast.literal_eval(declared[key]["default"])
            if isinstance(value, (int, float)) and key not in ("PHANTOM_STEP", "SCAN_STEP"):
                assert value <= default, (name, key)


def test_demo_and_class_runs_pass_the_right_parameters(tmp_path):
    """make demo runs every notebook at its defaults (only the explorer's live widget off); make class
    passes the class sizes and keeps every output out of figures/."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import notebook_times
    finally:
        sys.path.pop(0)
    full = notebook_times.parameters(class_size=False, out=None)
    assert list(full) == NOTEBOOKS
    assert full["00_ivim_explained.ipynb"] == {"WIDGETS": False}
    assert all(params == {} for name, params in full.items() if not name.startswith("00"))
    small = notebook_times.parameters(class_size=True, out=tmp_path)
    sizes = json.loads((NOTEBOOK_DIR / "class_sizes.json").read_text())
    for name, params in small.items():
        assert params["FIGURE_DIR"] == str(tmp_path / "figures") and params["OUTPUT_DIR"] == str(tmp_path / "data")
        assert {k: v for k, v in params.items() if k not in ("FIGURE_DIR", "OUTPUT_DIR", "WIDGETS")} == sizes[name]
