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


def series_key(kind: str, site: str, device: str) -> str:
    """Measurement and tags (sorted by key, as InfluxDB prefers) of a reading's series."""
    return f"{escape_measurement(kind)},device={escape_tag(device)},site={escape_tag(site)}"


def reading_line(r: Reading) -> str:
    fields = ",".join(f"{escape_tag(k)}={format_value(v)}" for k, v in r.values.items())
    return f"{series_key(r.kind, r.site, r.device)} {fields} {r.ts_ms}"


class LineFormatter:
    """`reading_line` with the escaped series key and field keys cached: the hot path of
    ingest formats tens of thousands of lines a second from a bounded set of devices."""

    def __init__(self, max_series: int = 500_000) -> None:
        self._series: dict[tuple[str, str, str], str] = {}
        self._keys: dict[str, str] = {}
        self._max = max_series

    def reading(self, r: Reading) -> str:
        key = (r.kind, r.site, r.device)
        prefix = self._series.get(key)
        if prefix is None:
            if len(self._series) >= self._max:
                self._series.clear()
            prefix = self._series[key] = series_key(*key)
        keys = self._keys
        parts = []
        for k, v in r.values.items():
            ek = keys.get(k)
            if ek is None:
                ek = keys[k] = escape_tag(k)
            if v is True:
                parts.append(f"{ek}=true")
            elif v is False:
                parts.append(f"{ek}=false")
            else:
                parts.append(f"{ek}={float(v)!r}")
        return f"{prefix} {','.join(parts)} {r.ts_ms}"


def event_line(e: Event) -> str:
    attrs = dict(e.attributes) or {"count": 1.0}
    fields = ",".join(f"{escape_tag(k)}={format_value(v)}" for k, v in attrs.items())
    return (f"events,device={escape_tag(e.device)},kind={escape_tag(e.kind)},site={escape_tag(e.site)},"
            f"type={escape_tag(e.type)} {fields} {e.ts_ms}")
