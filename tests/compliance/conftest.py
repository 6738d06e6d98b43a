"""Fixtures for the six-100 compliance tests: a real InfluxDB (the session `influx` fixture
of tests/conftest.py), one database per test (`six100_data.Db`)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from six100_data import Db


@pytest.fixture
def db(influx, tmp_path: Path) -> Db:
    name = f"c_{uuid.uuid4().hex[:12]}"
    httpx.post(f"{influx.url}/query", data={"q": f'CREATE DATABASE "{name}"'}).raise_for_status()
    return Db(influx.url, name, tmp_path)
