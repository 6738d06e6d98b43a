"""InfluxDB line protocol, written once here (CONTRACT §5).

Measurement = kind, tags site/device, numbers always float, booleans bool, time in ms.
Identifiers are validated before they get here; escaping is still applied so that a
future caller cannot break a line.
"""

from __future__ import annotations

from citywatch.model import Event, Reading

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_TAG = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\=", "\n": r"\n"})


def escape_measurement(text: str) -> str:
    return text.translate(_MEASUREMENT)


def escape_tag(text: str) -> str:
    """Tag keys, tag values and field keys share the same escaping rules."""
    return text.translate(_TAG)


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def format_value(value: float | bool | str) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return quote_string(value)
    return repr(float(value))


def reading_line(r: Reading) -> str:
    fields = ",".join(f"{escape_tag(k)}={format_value(v)}" for k, v in r.values.items())
    return f"{escape_measurement(r.kind)},device={escape_tag(r.device)},site={escape_tag(r.site)} {fields} {r.ts_ms}"


def event_line(e: Event) -> str:
    attrs = dict(e.attributes) or {"count": 1.0}
    fields = ",".join(f"{escape_tag(k)}={format_value(v)}" for k, v in attrs.items())
    return (f"events,device={escape_tag(e.device)},kind={escape_tag(e.kind)},site={escape_tag(e.site)},"
            f"type={escape_tag(e.type)} {fields} {e.ts_ms}")
