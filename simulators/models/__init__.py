"""Signal models, one per device kind: a plain registry, no import-time side effects."""

from __future__ import annotations

from simulators.models._shapes import ActiveEpisode
from simulators.models.dust import DustSignals
from simulators.models.heating import HeatingSignals
from simulators.models.water import WaterSignals

MODELS = {"dust": DustSignals, "heating": HeatingSignals, "water": WaterSignals}
# Episodes that act on the message stream rather than on a kind's signals.
STREAM_EPISODES = frozenset({"silence", "override"})

__all__ = ["MODELS", "STREAM_EPISODES", "ActiveEpisode"]
