"""The routing tree: which routes (and so receivers) an alert goes to.

Alertmanager's matching, depth first: a route matches when all its matchers hold; its
children are tried in order, the first matching child wins unless it says `continue:
true`; a route none of whose children matched takes the alert itself.

One difference, on purpose: a route outside its `active_time` does not match at all (the
alert falls through to the next sibling, or the parent's receiver). Alertmanager's
`active_time_intervals` mutes instead; muting here would drop the 3 p.m. substation leak
on the floor because the on-call route only pages at night.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from alerts.routing.config import RouteConfig, RoutesFile

DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    value: str
    regex: re.Pattern[str] | None = None

    def __call__(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.label, "")
        # Regexes are anchored, as in Alertmanager: `site: "S00.."` matches S0012, not XS0012.
        return self.regex.fullmatch(got) is not None if self.regex is not None else got == self.value


def matchers(match: Mapping[str, str], match_re: Mapping[str, str]) -> tuple[Matcher, ...]:
    return (*(Matcher(k, v) for k, v in match.items()),
            *(Matcher(k, v, re.compile(v)) for k, v in match_re.items()))


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved node: inherited settings filled in. `path` ("0", "0.1", ...) names it in
    group keys, so groups survive a restart with the same file."""

    path: str
    receiver: str
    matchers: tuple[Matcher, ...]
    continue_: bool
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    active: tuple[tuple[int, int], ...]  # (start, end) minutes of the local day; empty = always
    children: tuple["Route", ...]

    def active_at(self, minute_of_day: int) -> bool:
        if not self.active:
            return True
        for start, end in self.active:
            if start <= end:
                if start <= minute_of_day < end:
                    return True
            elif minute_of_day >= start or minute_of_day < end:  # crosses midnight: 22:00-08:00
                return True
        return False

    def match(self, labels: Mapping[str, str], minute_of_day: int) -> list["Route"]:
        if not all(m(labels) for m in self.matchers) or not self.active_at(minute_of_day):
            return []
        found: list[Route] = []
        for child in self.children:
            got = child.match(labels, minute_of_day)
            found.extend(got)
            if got and not child.continue_:
                break
        return found or [self]


def build_tree(cfg: RoutesFile) -> Route:
    def build(r: RouteConfig, parent: Route | None, path: str) -> Route:
        node = Route(
            path=path,
            receiver=r.receiver or (parent.receiver if parent else ""),
            matchers=matchers(r.match, r.match_re),
            continue_=r.continue_,
            group_by=tuple(r.group_by) if r.group_by is not None else (parent.group_by if parent else ()),
            group_wait_s=_pick(r.group_wait, parent and parent.group_wait_s, DEFAULT_GROUP_WAIT_S),
            group_interval_s=_pick(r.group_interval, parent and parent.group_interval_s, DEFAULT_GROUP_INTERVAL_S),
            repeat_interval_s=_pick(r.repeat_interval, parent and parent.repeat_interval_s,
                                    DEFAULT_REPEAT_INTERVAL_S),
            active=tuple((_minutes(a.split("-")[0]), _minutes(a.split("-")[1])) for a in (r.active_time or ())),
            children=(),
        )
        kids = tuple(build(c, node, f"{path}.{i}") for i, c in enumerate(r.routes))
        return Route(**{**{f: getattr(node, f) for f in node.__dataclass_fields__}, "children": kids})

    return build(cfg.route, None, "0")


def _pick(own: float | None, inherited: float | None | bool, default: float) -> float:
    if own is not None:
        return own
    if isinstance(inherited, (int, float)) and not isinstance(inherited, bool):
        return float(inherited)
    return default
