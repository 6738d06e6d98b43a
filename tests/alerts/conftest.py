"""Fixtures for alert tests: an engine harness factory on a temp SQLite file."""

from __future__ import annotations

import pytest

from alerts_helpers import Harness


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(**kw) -> Harness:
        h = Harness(tmp_path / f"alerts{len(made)}.sqlite3", **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        try:
            h.engine.close()
        except Exception:
            pass
