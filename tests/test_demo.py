"""`make demo` starts on fresh servers and state and keeps the previous run's data."""

from __future__ import annotations

from pathlib import Path

from devtools.demo import fresh_var


def test_the_previous_run_is_kept_and_the_new_one_starts_empty(tmp_path: Path) -> None:
    var = tmp_path / "var"
    assert fresh_var(var) is None and var.is_dir()  # first run: nothing to keep
    (var / "citywatch").mkdir()
    (var / "citywatch" / "alerts.sqlite").write_bytes(b"first run")
    prev = fresh_var(var)
    assert prev == tmp_path / "var.prev"
    assert (prev / "citywatch" / "alerts.sqlite").read_bytes() == b"first run"
    assert var.is_dir() and list(var.iterdir()) == []
    (var / "service.log").write_text("second run")
    assert fresh_var(var) == prev  # a third run keeps the second, not the first
    assert (prev / "service.log").read_text() == "second run" and not (prev / "citywatch").exists()
