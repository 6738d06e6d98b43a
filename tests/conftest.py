"""Fixtures that start real servers: `mosquitto` and `influxd` on ephemeral ports.

Each server lives in a temp dir and is stopped afterwards. They are function-scoped
where a test stops or restarts them, session-scoped otherwise (`broker`, `influx`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.servers import Influxd, Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path):
    """A fresh broker for one test (may be restarted by it)."""
    with Mosquitto(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def influxd(tmp_path: Path):
    """A fresh InfluxDB 1.x for one test (may be stopped and started by it)."""
    with Influxd(tmp_path / "influxd") as server:
        yield server


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A broker shared by tests that do not restart it."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as server:
        yield server


@pytest.fixture(scope="session")
def influx(tmp_path_factory):
    """An InfluxDB shared by tests that do not stop it; use a unique database per test."""
    with Influxd(tmp_path_factory.mktemp("influxd")) as server:
        yield server
