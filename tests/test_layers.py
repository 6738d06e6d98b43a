"""The layers (issue #13): each package imports only the ones below it, no module import
cycle, no source file over 500 lines, and the README's folder table is the layer list.

The import contract itself is import-linter's, configured in pyproject.toml
(`[tool.importlinter]`); these tests run it, and prove on a copy of the tree that it
fails when someone adds an upward import or a cycle (hidden in a function or not).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 500


def contract() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["importlinter"]


def layers() -> list[list[str]]:
    """The layers top to bottom, each a list of sibling packages."""
    (spec,) = [c for c in contract()["contracts"] if c["type"] == "layers"]
    return [[p.strip() for p in layer.split("|")] for layer in spec["layers"]]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)})


def test_the_import_contract_holds():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "pyproject.toml", tree)
    for package in contract()["root_packages"]:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    return tree


def test_the_contract_catches_an_upward_import_hidden_in_a_function(tmp_path):
    tree = _copy_tree(tmp_path)
    with (tree / "citywatch" / "model.py").open("a") as f:
        f.write("\n\ndef _sneaky():\n    from ingest.spool import Spool\n    return Spool\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "citywatch is not allowed to import ingest" in result.stdout
    assert "citywatch.model -> ingest.spool" in result.stdout


def test_the_contract_catches_a_module_cycle(tmp_path):
    tree = _copy_tree(tmp_path)
    # spool is imported by writer; spool importing writer back closes a loop
    with (tree / "ingest" / "spool.py").open("a") as f:
        f.write("\n\ndef _loop():\n    import ingest.writer\n    return ingest.writer\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "No cycles are allowed in ingest" in result.stdout


def test_every_package_is_a_layer_and_the_readme_lists_them_in_order():
    packages = [p for layer in layers() for p in layer]
    assert sorted(packages) == sorted(contract()["root_packages"])
    readme = (ROOT / "README.md").read_text("utf-8")
    table = readme[readme.index("| folder |"):]
    table = table[:table.index("\n\n")]
    listed = re.findall(r"^\| `([\w-]+)/`", table, re.M)
    # the layers top to bottom, in the README's order
    assert [p for p in listed if p in packages] == packages
    for package in packages:
        assert (ROOT / package / "__init__.py").is_file(), package


def test_no_source_file_over_500_lines():
    over = {}
    for package in [*contract()["root_packages"], "scripts"]:
        for path in (ROOT / package).rglob("*.py") if (ROOT / package).is_dir() else ():
            n = len(path.read_text("utf-8").splitlines())
            if n > MAX_LINES:
                over[str(path.relative_to(ROOT))] = n
    assert not over, f"split these along their seams: {over}"


def test_the_readme_names_the_files_one_reading_passes_through():
    readme = (ROOT / "README.md").read_text("utf-8")
    line = readme[readme.index("One reading from socket to database:"):]
    line = line[:line.index("\n\n")]
    files = re.findall(r"`([\w/]+\.py)`", line.split(";")[0])
    assert 2 <= len(files) <= 5, files
    for f in files:
        assert (ROOT / f).is_file(), f
