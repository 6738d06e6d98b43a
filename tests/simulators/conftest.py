"""Shared, cached scenario runs: generating a day of messages once per test session."""

from __future__ import annotations

from functools import cache

import pytest

from simulators import generate, plan_run


@cache
def _messages(scenario: str, sites: int, seed: int) -> tuple:
    return tuple(generate(scenario, sites=sites, seed=seed))


@pytest.fixture(scope="session")
def run_of():
    """`run_of(scenario, sites, seed=1)` → (Run, messages), cached for the session."""

    def get(scenario: str, sites: int, seed: int = 1):
        return plan_run(scenario, sites=sites, seed=seed), _messages(scenario, sites, seed)

    return get


@pytest.fixture
def persistent_mosquitto(tmp_path):
    """The `mosquitto` fixture's broker, but able to save its persistence file when the
    tests run as root: mosquitto then drops to the `mosquitto` user, cannot write the
    root-owned temp dir ("Error saving in-memory database") and forgets every persistent
    session on restart. Remove once devtools/servers.py sets `user` itself."""
    import os

    from devtools.servers import Mosquitto

    probe = Mosquitto(tmp_path / "probe")
    probe.root.mkdir(parents=True)
    probe._command()  # writes the config it would run with
    configured = "\nuser " in "\n" + (probe.root / "mosquitto.conf").read_text()
    extra = "user root\n" if os.geteuid() == 0 and not configured else ""
    with Mosquitto(tmp_path / "mosquitto", extra_config=extra) as server:
        yield server
