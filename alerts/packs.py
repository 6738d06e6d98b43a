"""The citation table of a rule pack (rule, standard, clause, value, verified), as each
pack's README lists it: `python -m alerts.packs [PACK]` prints it in Markdown."""

from __future__ import annotations

import sys

from alerts.rules import DEFAULT_RULES_DIR, Rule, _collect, pack_dir, rule_packs


def _value(rule: Rule) -> str:
    conds = getattr(rule, "when", None) or getattr(rule, "numerator", None) or ()
    parts = []
    for c in conds:
        if c.op == "is":
            parts.append(f"{c.field} is {str(c.want).lower()}")
            continue
        ts = [c.threshold] if c.threshold is not None else [c.low, c.high]
        shown = []
        for t in ts:
            if t is None:
                continue
            v = t.value if t.value is not None else t.default
            if v is None:
                shown.append(f"{t.baseline.factor:g} x {t.baseline.agg} {t.baseline.window / 3600:g} h"
                             if t.baseline else "?")
                continue
            shown.append(f"{v:g}" + (f" + {t.offset:g}" if t.offset else "") + (f" ({t.param}" if t.param else "")
                         + (f" <= {t.cap:g}" if t.param and t.cap is not None else "") + (")" if t.param else ""))
        agg = f"{c.agg} {c.window / 60:g} min " if c.window else ""
        parts.append(f"{agg}{c.field} {c.op} {' – '.join(shown)}")
    for_ = getattr(rule, "for_", 0) or 0
    if for_:
        parts.append(f"for {for_ / 60:g} min")
    if getattr(rule, "type", "") == "deadman":
        parts.append(f"silent > {rule.factor:g} x interval")
    return "; ".join(parts) or "—"


def pack_rules(pack: str) -> list[Rule]:
    """The rules a pack itself ships (the overlay's files; for `default`, the shipped packs)."""
    errors: list[str] = []
    where = pack_dir(pack) or DEFAULT_RULES_DIR
    rules = [r for r, _ in _collect([where], errors).values()]
    if errors:
        raise SystemExit("\n".join(errors))
    return sorted(rules, key=lambda r: r.id)


def citation_table(pack: str) -> str:
    rows = ["| rule | standard | clause | value | verified |", "|---|---|---|---|---|"]
    for r in pack_rules(pack):
        c = r.citation
        std, clause = (c.standard, c.clause) if c else (r.source, "—")
        verified = "yes" if c and c.verified else ("no" if c else "no (no citation block)")
        rows.append(f"| `{r.id}` | {std} | {clause} | {_value(r)} | {verified} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover
    for name in sys.argv[1:] or rule_packs():
        print(f"## {name}\n\n{citation_table(name)}")
