"""Inhibition: a firing source alert mutes matching target alerts (Alertmanager's
inhibit_rules). Applied when a group is flushed, against the alerts firing then."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from alerts.routing.config import InhibitRuleConfig
from alerts.routing.tree import Matcher, matchers


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def from_config(cls, c: InhibitRuleConfig) -> "InhibitRule":
        return cls(matchers(c.source_match, c.source_match_re), matchers(c.target_match, c.target_match_re),
                   tuple(c.equal))


@dataclass(frozen=True, slots=True)
class FiringAlert:
    id: str
    labels: Mapping[str, str]


class Inhibitor:
    """`inhibited(alert_id, labels)` against a snapshot of the firing alerts."""

    def __init__(self, rules: Sequence[InhibitRule], firing: Iterable[FiringAlert]):
        self._rules = rules
        # Per rule, the `equal` label values of its firing sources (and their ids, so an
        # alert that matches both sides does not inhibit itself).
        self._sources: list[dict[tuple[str, ...], set[str]]] = []
        firing = list(firing) if rules else []
        for rule in rules:
            keys: dict[tuple[str, ...], set[str]] = {}
            for a in firing:
                if all(m(a.labels) for m in rule.source):
                    keys.setdefault(tuple(a.labels.get(k, "") for k in rule.equal), set()).add(a.id)
            self._sources.append(keys)

    def inhibited(self, alert_id: str, labels: Mapping[str, str]) -> bool:
        for rule, keys in zip(self._rules, self._sources):
            if not keys or not all(m(labels) for m in rule.target):
                continue
            ids = keys.get(tuple(labels.get(k, "") for k in rule.equal))
            if ids and ids != {alert_id}:
                return True
        return False
