"""`citywatch routes check [FILE]`: validate a route file without starting anything."""

from __future__ import annotations

from pathlib import Path

from alerts.routing.config import load_routes
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


def routes_check(path: Path | str | None) -> int:
    """0 and a summary when the file is valid; 2 and `file:line: where: reason` lines if not.
    Prints receiver names and types only: URLs and secrets are credentials."""
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
    return 0
