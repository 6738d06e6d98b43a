"""Simulated time onto wall-clock time, with a fake clock (nothing actually sleeps)."""

from __future__ import annotations

import pytest

from simulators.pacing import Pacer, parse_speed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def run(pacer: Pacer, sim_times_ms: list[int]) -> None:
    for t in sim_times_ms:
        pacer.wait(t)


def test_speed_zero_never_sleeps():
    clock = FakeClock()
    run(Pacer(speed=0, clock=clock, sleep=clock.sleep), list(range(0, 3_600_000, 10_000)))
    assert clock.slept == 0


def test_speed_compresses_simulated_time():
    clock = FakeClock()
    # One simulated hour at speed 60 takes one minute.
    run(Pacer(speed=60, clock=clock, sleep=clock.sleep), list(range(0, 3_600_001, 10_000)))
    assert clock.slept == pytest.approx(60.0, abs=0.01)


def test_rate_caps_messages_per_second():
    clock = FakeClock()
    run(Pacer(rate=100, clock=clock, sleep=clock.sleep), [0] * 1001)
    assert clock.slept == pytest.approx(10.0, abs=0.01)


def test_parse_speed():
    assert parse_speed("max") == 0 and parse_speed("0") == 0 and parse_speed("3600") == 3600
    with pytest.raises(ValueError):
        parse_speed("-1")
