"""The MQTT topic scheme (docs/contract.md §3) and the identifier rule shared with InfluxDB."""

from __future__ import annotations

import re
from dataclasses import dataclass

IDENTIFIER = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHANNELS = ("telemetry", "events")


def is_identifier(text: str) -> bool:
    """True when `text` may be a kind, site, device, rule or field name."""
    return IDENTIFIER.fullmatch(text) is not None


class TopicError(ValueError):
    """The topic does not follow `telemetry|events/{kind}/{site}/{device}`."""


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    channel: str  # telemetry | events
    kind: str
    site: str
    device: str

    @classmethod
    def parse(cls, topic: str) -> "DeviceTopic":
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] not in _CHANNELS:
            raise TopicError(
                f"topic {topic[:200]!r} is not telemetry/{{kind}}/{{site}}/{{device}} "
                "or events/{kind}/{site}/{device}"
            )
        for name, value in zip(("kind", "site", "device"), parts[1:]):
            if IDENTIFIER.fullmatch(value) is None:
                raise TopicError(f"topic {name} {value[:100]!r} does not match [A-Za-z0-9_-]{{1,64}}")
        return cls(parts[0], parts[1], parts[2], parts[3])

    def __str__(self) -> str:
        return f"{self.channel}/{self.kind}/{self.site}/{self.device}"


def telemetry_topic(kind: str, site: str, device: str) -> str:
    return f"telemetry/{kind}/{site}/{device}"


def event_topic(kind: str, site: str, device: str) -> str:
    return f"events/{kind}/{site}/{device}"


def alert_topic(site: str, device: str, rule: str) -> str:
    return f"alerts/{site}/{device}/{rule}"
