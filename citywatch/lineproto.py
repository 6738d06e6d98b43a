"""InfluxDB line protocol, written once here (docs/contract.md §5).

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


def flag_fields(flags: dict[str, str]) -> str:
    """HJ 212 data flags as string fields `<field>_flag="N"` (an absent one means valid)."""
    return ",".join(f"{escape_tag(k)}_flag={quote_string(v)}" for k, v in flags.items())


def reading_line(r: Reading) -> str:
    fields = ",".join(f"{escape_tag(k)}={format_value(v)}" for k, v in r.values.items())
    if r.quality:
        fields = f"{fields},{flag_fields(r.quality)}" if fields else flag_fields(r.quality)
    return f"{series_key(r.kind, r.site, r.device)} {fields} {r.ts_ms}"


class LineFormatter:
    """`reading_line`, with what repeats cached: the hot path of ingest formats tens of
    thousands of lines a second from a bounded set of devices, kinds and sensor values.

    Cached: each series key (measurement and tags), a `%`-template of the field keys per
    set of fields, and the text of each float. `repr` (the shortest text that reads back
    as the same float) is most of the cost of a line, and a sensor sends few distinct
    values (a fixed number of decimals in a physical range): a two-hour run of 200 sites
    has 4,500 distinct values in 1.3 million."""

    def __init__(self, max_series: int = 500_000, max_floats: int = 100_000) -> None:
        self._series: dict[tuple[str, str, str], str] = {}
        self._field_templates: dict[tuple[str, ...], str] = {}
        self._float_texts: dict[float, str] = {}
        self._max = max_series
        self._max_floats = max_floats

    def reading(self, r: Reading) -> str:
        key = (r.kind, r.site, r.device)
        prefix = self._series.get(key)
        if prefix is None:
            if len(self._series) >= self._max:
                self._series.clear()
            prefix = self._series[key] = series_key(*key)
        values = r.values
        names = tuple(values)
        template = self._field_templates.get(names)
        if template is None:
            template = self._field_template(names)
        float_texts = self._float_texts
        texts = tuple([
            "true" if v is True else "false" if v is False else float_texts.get(v) or self._float_text(v)
            for v in values.values()
        ])
        if r.quality:  # HJ 212 flags; MQTT readings carry none
            return reading_line(r)
        return f"{prefix} {template % texts} {r.ts_ms}"

    def _field_template(self, names: tuple[str, ...]) -> str:
        """`k1=%s,k2=%s,...` for these field keys, escaped."""
        if len(self._field_templates) >= 10_000:
            self._field_templates.clear()
        template = ",".join(escape_tag(k).replace("%", "%%") + "=%s" for k in names)
        self._field_templates[names] = template
        return template

    def _float_text(self, value: float) -> str:
        """`format_value` of a number, remembered for exact floats. The lookup finds an int
        or a float subclass equal to a remembered float too, which gives the same text, since
        every number is written as `repr(float(value))`. Zeros are not remembered: 0.0 and
        -0.0 are equal keys but print differently."""
        text = repr(float(value))
        if value.__class__ is float and value:
            if len(self._float_texts) >= self._max_floats:
                self._float_texts.clear()
            self._float_texts[value] = text
        return text


def event_line(e: Event) -> str:
    attrs = dict(e.attributes) or {"count": 1.0}
    fields = ",".join(f"{escape_tag(k)}={format_value(v)}" for k, v in attrs.items())
    return (f"events,device={escape_tag(e.device)},kind={escape_tag(e.kind)},site={escape_tag(e.site)},"
            f"type={escape_tag(e.type)} {fields} {e.ts_ms}")
