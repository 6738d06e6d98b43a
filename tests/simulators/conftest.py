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
