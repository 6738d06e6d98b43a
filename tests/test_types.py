"""The type check is part of the suite (issue #13, step 5): mypy with pyproject.toml's
[tool.mypy] — strict on the domain core and ingest — must find nothing.

A test rather than a Makefile prerequisite, so that a plain `pytest` (CI, a developer's
run of the suite) checks the types too, the same way tests/test_repo_rules.py checks the
repository's other rules; `make typecheck` runs the same command alone. mypy is in the
`test` extra: a missing mypy fails here rather than skipping.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_type_errors() -> None:
    # The incremental cache under the repository (.mypy_cache, ignored by git) makes a
    # second run take about a second; a cold one takes tens of seconds on a loaded box.
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (
        f"mypy (config: pyproject.toml [tool.mypy]; alone: `make typecheck`) exited {proc.returncode}:\n"
        f"{proc.stdout}{proc.stderr}")
