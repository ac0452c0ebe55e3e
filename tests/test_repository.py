"""Repository files stay consistent: environment.yml vs pyproject.toml, README tables vs result files."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(spec):
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(data["dependencies"])
    for extra in data["optional-dependencies"].values():
        specs += extra
    return {_name(s): s.replace(" ", "") for s in specs}


def _environment():
    """The pip requirements of environment.yml (everything under ``- pip:``), minus the project itself."""
    specs, in_pip = {}, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\s+- pip:\s*$", line):
            in_pip = True
            continue
        m = re.match(r"^\s+- (\S.*?)\s*$", line)
        if in_pip and m and m.group(1) != "-e .":
            specs[_name(m.group(1))] = m.group(1).replace(" ", "")
    return specs


def test_environment_lists_the_same_packages_and_ranges():
    py, env = _pyproject(), _environment()
    assert set(env) == set(py), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    for name, spec in py.items():
        assert env[name] == spec, f"{name}: pyproject {spec!r} vs environment.yml {env[name]!r}"


def test_torch_is_pinned_to_the_cpu_wheel():
    assert _pyproject()["torch"] == "torch==2.13.0"
    text = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in text


def test_readme_tables_match_the_result_files():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "update_readme.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_gallery_shows_every_figure():
    readme = (ROOT / "README.md").read_text()
    shown = set(re.findall(r"\(figures/([\w.-]+\.png)\)", readme))
    on_disk = {p.name for p in (ROOT / "figures").glob("*.png")}
    assert shown <= on_disk, f"README shows missing figures: {shown - on_disk}"
    assert on_disk <= shown, f"figures not in the README gallery: {on_disk - shown}"


def test_makefile_has_the_documented_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo:", "class:", "test:", "lab:"):
        assert re.search(rf"^{target}", makefile, re.M), target
    assert "jupyter lab --notebook-dir=notebooks" in makefile
    assert "bash" in (ROOT / ".ci" / "run").read_text() and "make test" in (ROOT / ".ci" / "run").read_text()
