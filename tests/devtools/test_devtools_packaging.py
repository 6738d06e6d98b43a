"""devtools/ belongs to the source checkout, not to the installed service: the package
build and the image leave it out, the service's code does not import it, and `citywatch
bench` says so in one line where it is missing (an installed service, no checkout)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def _find() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]


def test_the_package_build_leaves_devtools_out():
    find = _find()
    packages = find_packages(where=str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert "citywatch" in packages and "ingest" in packages
    assert not [p for p in packages if p.split(".")[0] in ("devtools", "tests")], packages


def test_the_image_does_not_copy_devtools():
    copies = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    sources = {src for words in copies for src in words[1:-1]}
    assert "." not in sources, "COPY . would ship devtools/ and tests/"
    assert not [s for s in sources if s.startswith("devtools")], sources


def test_the_service_code_does_not_import_devtools():
    """Only the CLI's bench handler reaches for it, lazily, and copes with its absence."""
    offenders = []
    installed = [p.rstrip("*") for p in _find()["include"]]  # what the build ships, whatever it becomes
    assert "citywatch" in installed
    for package in installed:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] == "devtools" for n in names) and path.name != "cli.py":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_bench_without_the_checkout_exits_2_with_one_clear_line(tmp_path):
    # None in sys.modules makes `import devtools` fail as it does where it is not installed.
    code = ("import sys; sys.modules['devtools'] = None\n"
            "from app.cli import main\n"
            "sys.exit(main(['bench', '--quick', '--json', sys.argv[1]]))")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "developer tool of the source checkout" in lines[0] and "make bench" in lines[0], lines
    assert not out.exists()
