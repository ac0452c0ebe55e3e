"""The package's layout and import graph, read from the code (every import, also those inside functions):
subpackages by layer, modules importing only from their own layer and those below, no import cycle, no
private name taken from another module."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ivim_demo"

#: Layers from the bottom: a module may import from its own layer and those below, never above. Each is a
#: subpackage, except the command line (``cli.py``, ``__main__.py`` at the top of the package).
LAYERS = ("core", "simulation", "classical", "nets", "imaging", "cli", "teaching")


def _modules(package=PACKAGE):
    """Dotted name inside the package (``core.checks``, ``cli``) -> path, for every module."""
    return {".".join(p.relative_to(package).with_suffix("").parts): p
            for p in sorted(package.rglob("*.py")) if p.name != "__init__.py"}


def _layer(module):
    return module.split(".")[0] if "." in module else "cli"


def _resolve(module, level, target):
    """The package-relative dotted name that ``from <level dots><target>`` in ``module`` refers to."""
    base = module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *([target] if target else [])])


def _imports(path, module):
    """(imported module, names taken from it, line) for every import of a package module in ``path``, and the
    aliases under which whole modules are bound (``from ..classical import posterior as pm``)."""
    tree = ast.parse(path.read_text())
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                source = _resolve(module, node.level, node.module)
            elif node.module and node.module.startswith("ivim_demo"):
                source = node.module.removeprefix("ivim_demo").lstrip(".")
            else:
                continue
            found.append((source, [a.name for a in node.names], node.lineno))
            for a in node.names:  # from .x import module (names that are not modules are not aliases here)
                sub = f"{source}.{a.name}" if source else a.name
                if sub in _modules():
                    aliases[a.asname or a.name] = sub
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ivim_demo."):
                    found.append((a.name.removeprefix("ivim_demo."), [], node.lineno))
                    aliases[a.asname or a.name] = a.name.removeprefix("ivim_demo.")
    return tree, found, aliases


def _targets(found, modules):
    """Package modules an import list reaches: the module named, or the modules taken from a subpackage."""
    out = []
    for source, names, line in found:
        if source in modules:
            out.append((source, line))
        out += [(f"{source}.{n}" if source else n, line) for n in names
                if (f"{source}.{n}" if source else n) in modules]
    return out


def test_layout_is_subpackages_by_layer():
    modules = _modules()
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS) - {"cli"}
    assert {m for m in modules if "." not in m} == {"cli", "__main__"}, "new modules go into a layer's subpackage"
    for p in PACKAGE.rglob("*.py"):
        assert len(p.read_text().splitlines()) <= 700, f"{p.relative_to(PACKAGE)}: split it (700 lines at most)"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_imports_go_down_the_layers(name):
    modules = _modules()
    _, found, _ = _imports(modules[name], name)
    upward = [(m, line) for m, line in _targets(found, modules)
              if LAYERS.index(_layer(m)) > LAYERS.index(_layer(name))]
    assert not upward, f"{name} ({_layer(name)}) imports from a higher layer: {upward}"


def test_no_import_cycle():
    modules = _modules()
    graph = {name: {m for m, _ in _targets(_imports(path, name)[1], modules) if m != name}
             for name, path in modules.items()}
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_private_name_crosses_a_module(name):
    tree, found, aliases = _imports(_modules()[name], name)
    taken = [(m, n, line) for m, names, line in found for n in names if n.startswith("_") and not n.startswith("__")]
    taken += [(aliases[node.value.id], node.attr, node.lineno) for node in ast.walk(tree)
              if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
              and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not taken, f"{name} uses private names of other modules: {taken}"


def test_the_checks_can_fail(tmp_path):
    """The reader finds an upward import inside a function, a private name and an aliased private attribute."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from ..imaging.cohort import fit_cohort\n    from ..classical import fit as ft\n"
                    "    from ..classical.fit import _x\n    return ft._y\n")
    _, found, aliases = _imports(path, "core.m")
    assert ("imaging.cohort", 2) in _targets(found, _modules()) and ("classical.fit", ["_x"], 4) in found
    assert aliases["ft"] == "classical.fit"


def test_installed_package_fits_a_shipped_example(tmp_path):
    """Installed as a user would (not editable): every subpackage and the shipped data are in the install, and
    the command line fits a shipped scan from it."""
    import json
    import os
    import subprocess
    import sys

    import shutil

    # built from a copy: setuptools leaves build/lib in the tree it builds, whose stale modules a later
    # build of the checkout would install too
    source, site = tmp_path / "source", tmp_path / "site"
    shutil.copytree(PACKAGE, source / "ivim_demo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE.parent / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(source)], check=True,
                   capture_output=True)
    data = site / "ivim_demo" / "data" / "wetscherek"
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", "import ivim_demo, ivim_demo.imaging.cohort; print(ivim_demo.__file__)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert run.stdout.startswith(str(site))
    out = tmp_path / "maps"
    run = subprocess.run([sys.executable, "-m", "ivim_demo", "fit", str(data / "phantom_static_dwi.nii.gz"),
                          "--bvals", str(data / "phantom_static_dwi.bval"), "--mask",
                          str(data / "phantom_static_mask.nii.gz"), "--method", "lsq", "--out", str(out),
                          "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "lsq" and summary["voxels"] > 100 and (out / "Dt.nii.gz").is_file()


def test_one_public_name_one_object():
    """Two submodules exporting the same name would leave ``iv.<name>`` to whichever is listed last."""
    import ivim_demo as iv

    listed = [name for names in iv._SOURCES.values() for name in names]
    assert len(listed) == len(set(listed)), sorted({n for n in listed if listed.count(n) > 1})


def test_every_public_function_and_class_is_documented():
    import inspect

    import ivim_demo as iv

    missing = [name for name in iv.__all__ if (inspect.isfunction(obj := getattr(iv, name)) or inspect.isclass(obj))
               and not (inspect.getdoc(obj) or "").strip()]
    assert not missing, f"public names without a docstring: {missing}"
