"""`citywatch routes check [FILE]`: validate a route file without starting anything."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from alerts.routing.config import RouteConfig, RoutesFile, load_routes
from alerts.routing.tree import Route, build_tree
from citywatch.errors import ConfigError


def _describe(route: Route, depth: int = 0) -> list[str]:
    cond = ", ".join(f"{m.label}{'=~' if m.regex else '='}{m.value}" for m in route.matchers) or "every alert"
    extra = []
    if route.continue_:
        extra.append("continue")
    if route.active:
        extra.append("active " + ", ".join(f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}"
                                           for a, b in route.active))
    extra.append(f"group_by [{', '.join(route.group_by)}]")
    line = f"{'  ' * depth}- {cond} -> {route.receiver} ({'; '.join(extra)})"
    return [line, *(x for c in route.children for x in _describe(c, depth + 1))]


def _equalities(cfg: RoutesFile) -> Iterator[tuple[str, dict[str, Any]]]:
    def walk(r: RouteConfig, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        yield where, r.match
        for i, c in enumerate(r.routes):
            yield from walk(c, f"{where}.routes.{i}")

    yield from walk(cfg.route, "route")
    for i, rule in enumerate(cfg.inhibit_rules):
        yield f"inhibit_rules.{i}.source_match", rule.source_match
        yield f"inhibit_rules.{i}.target_match", rule.target_match


def unknown_names(cfg: RoutesFile, *, rules: Collection[str], kinds: Collection[str]) -> list[str]:
    """Warnings for `rule:` / `kind:` equality matches naming no loaded rule or kind: valid,
    but they match nothing (a rule id from another deployment, a typo)."""
    out = []
    for where, match in _equalities(cfg):
        if "rule" in match and match["rule"] not in rules:
            out.append(f"{where}: rule {match['rule']!r} is not a loaded rule id: it matches nothing")
        if "kind" in match and match["kind"] not in kinds:
            out.append(f"{where}: kind {match['kind']!r} is not a known kind: it matches nothing")
    return out


def routes_check(path: Path | str | None, *, rules: Collection[str] | None = None,
                 kinds: Collection[str] | None = None) -> int:
    """0 and a summary when the file is valid; 2 and `file:line: where: reason` lines if not.
    With `rules` / `kinds`, also warns about matches that name none of them. Prints
    receiver names and types only: URLs and secrets are credentials."""
    if path is None:
        print("citywatch: no route file: give one (citywatch routes check FILE) or set CW_ROUTES_FILE")
        return 2
    try:
        cfg = load_routes(path)
    except ConfigError as exc:
        print(f"citywatch: {exc}")
        return 2
    print(f"{path}: ok: {len(cfg.receivers)} receiver(s), {len(cfg.inhibit_rules)} inhibit rule(s)")
    for r in cfg.receivers:
        print(f"  receiver {r.name} ({r.type})")
    print("  routes:")
    for line in _describe(build_tree(cfg)):
        print("  " + line)
    for warning in unknown_names(cfg, rules=rules, kinds=kinds) if rules is not None and kinds is not None else ():
        print(f"  warning: {warning}")
    return 0
