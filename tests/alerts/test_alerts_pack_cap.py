"""Hebei's DB13/2934 limit is the county background + 80 µg/m³, with the background counted
at most 150 (`cap: 150`): a site whose registered background is 200 is judged against 230,
not 280 — run through the engine with the hebei pack's own rule."""

from __future__ import annotations

from alerts.rules import load_rules
from alerts_helpers import T0, registry, series
from citywatch.registry import Device


def test_hebei_background_is_capped_at_150(harness):
    rules = load_rules(pack="hebei")
    reg = registry(Device("D1", "S1", "dust", params={"pm10_background": 200}),   # limit min(200,150)+80 = 230
                   Device("D2", "S2", "dust", params={"pm10_background": 200}),
                   Device("D3", "S3", "dust", params={"pm10_background": 40}))    # limit 120
    h = harness(registry=reg, rules=rules)
    h.feed(series("D1", T0, 70, {"pm10": 250.0, "spray_on": True})                # 250 > 230: fires
           + series("D2", T0, 70, {"pm10": 220.0, "spray_on": True}, site="S2")   # 220 <= 230: quiet
           + series("D3", T0, 70, {"pm10": 130.0, "spray_on": True}, site="S3"))  # 130 > 120: fires
    got = {a["device"]: a["threshold"] for a in h.engine.list_alerts(rule="dust_pm10_background_hourly")}
    assert got == {"D1": 230, "D3": 120}
