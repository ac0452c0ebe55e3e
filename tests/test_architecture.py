"""The package's import graph, read from the code (every import, also those inside functions): modules only
import from their own layer or those below, no import cycle, and no private name taken from another module."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ivim_demo"

#: Layers from the bottom: a module may import from its own layer and those below, never above.
LAYERS = {
    "core": ["signal_model", "checks", "metrics", "threads"],
    "simulation": ["simulate", "anatomy"],
    "classical": ["likelihood", "posterior", "fit"],
    "networks": ["networks", "training", "ensemble", "infer", "checkpoint", "recipes"],
    "imaging": ["nifti", "mask", "quality", "plots", "methods", "image_fit", "outputs", "cohort"],
    "cli": ["cli", "__main__"],
    "teaching": ["compare", "calibration", "explorer", "exercises", "handoff", "examples"],
}
LEVEL = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules}


def _modules():
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def _imports(path):
    """(imported module, names taken from it, line) for every import of a package module in ``path``, and the
    aliases under which whole modules are bound (``from . import posterior as pm``)."""
    tree = ast.parse(path.read_text())
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .x import a, b
                found.append((node.module.split(".")[0], [a.name for a in node.names], node.lineno))
            elif node.level == 1:  # from . import x, y (modules, or names of the package's __init__)
                for a in node.names:
                    found.append((a.name, [], node.lineno))
                    aliases[a.asname or a.name] = a.name
            elif node.module and node.module.startswith("ivim_demo."):
                found.append((node.module.split(".")[1], [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ivim_demo."):
                    found.append((a.name.split(".")[1], [], node.lineno))
                    if a.asname:
                        aliases[a.asname] = a.name.split(".")[1]
    return tree, found, aliases


def _graph():
    modules = _modules()
    return {name: {m for m, _, _ in _imports(path)[1] if m in modules and m != name} for name, path in modules.items()}


def test_every_module_has_a_layer():
    assert set(_modules()) == set(LEVEL), "add the module to LAYERS (and README's Layout)"


@pytest.mark.parametrize("name", sorted(LEVEL))
def test_imports_go_down_the_layers(name):
    _, found, _ = _imports(_modules()[name])
    upward = [(m, line) for m, _, line in found if m in LEVEL and LEVEL[m] > LEVEL[name]]
    assert not upward, f"{name} ({list(LAYERS)[LEVEL[name]]}) imports from a higher layer: {upward}"


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

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


@pytest.mark.parametrize("name", sorted(LEVEL))
def test_no_private_name_crosses_a_module(name):
    tree, found, aliases = _imports(_modules()[name])
    taken = [(m, n, line) for m, names, line in found for n in names if n.startswith("_") and not n.startswith("__")]
    taken += [(aliases[node.value.id], node.attr, node.lineno) for node in ast.walk(tree)
              if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
              and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not taken, f"{name} uses private names of other modules: {taken}"


def test_the_checks_can_fail(tmp_path):
    """The reader finds an upward import inside a function, a private name and an aliased private attribute."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from .cli import main\n    from . import fit as ft\n    from .fit import _x\n"
                    "    return ft._y\n")
    _, found, aliases = _imports(path)
    assert ("cli", ["main"], 2) in found and ("fit", ["_x"], 4) in found and aliases == {"ft": "fit"}
