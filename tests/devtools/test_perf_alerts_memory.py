"""devtools.perf_alerts_memory: the per-device memory probe runs end to end on a small fleet."""

from __future__ import annotations

from devtools.perf_alerts_memory import measure


def test_memory_probe_counts_the_fleets_devices_and_what_they_hold():
    out = measure(sites=200)
    assert 100 <= out["devices"] <= 200  # normal-day: dust, heating or water per site, not all sites
    assert out["readings"] >= out["devices"]
    # every device costs something (series, guards), and the probe names where it goes
    assert out["bytes_per_device"] > 500
    assert any("alerts/" in t["site"] for t in out["top"])
