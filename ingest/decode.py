"""Decode and validate: `RawMessage` → `Accepted` (readings + line protocol) or `Rejected`.

Pure: no I/O; the clock is injected. Every reason in a rejection starts with a stable code
(`payload_too_large:`, `bad_topic:`, `invalid_json:`, `invalid_utf8:`, `invalid_field:`,
`unknown_field:`, `missing_field:`, `bad_timestamp:`, `future_timestamp:`,
`unknown_kind:`, `unknown_device:`, `registry_mismatch:`, `empty_values:`, `unknown_event:`)
followed by a human-readable detail, so operators can group dead letters by cause.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from pydantic import TypeAdapter, ValidationError

from citywatch.lineproto import LineFormatter, event_line
from citywatch.model import Event, RawMessage, Reading
from citywatch.registry import Registry
from citywatch.schema import KindSpec, KindValidators, validators
from citywatch.topics import DeviceTopic, TopicError
from ingest.types import Accepted, Outcome, Rejected

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: anything earlier is a broken clock
MAX_ITEMS = 10_000  # a batch payload larger than this is rejected, not split
# A topic judged once: (topic, its kind, registry reasons), or (None, None, why it is refused).
_TopicVerdict = tuple[DeviceTopic | None, KindSpec | None, tuple[str, ...]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Decoder:
    def __init__(
        self,
        *,
        registry: Registry | None = None,
        kinds: dict[str, KindValidators] | None = None,
        max_payload_bytes: int = 256 * 1024,
        max_future_s: float = 300.0,
        clock: Callable[[], int] = _wall_ms,
    ) -> None:
        self._registry = registry or Registry.empty()
        self._kinds = kinds if kinds is not None else validators()
        self._max_payload = max_payload_bytes
        self._max_future_ms = int(max_future_s * 1000)
        self._clock = clock
        self._lines = LineFormatter()
        self._topics: dict[str, _TopicVerdict] = {}
        self._event_tags = frozenset(t for v in self._kinds.values() for t in v.spec.events)
        # Per kind, the bound `validate_json` of one validator for a single object and one
        # for a batch array: choosing by the first byte keeps error messages free of "not a
        # valid array" noise from a union. They validate to plain dicts (see schema.py).
        self._telemetry: dict[str, tuple[_ValidateJson, _ValidateJson]] = {}
        self._events: dict[str, tuple[_ValidateJson, _ValidateJson] | None] = {}
        for name, v in self._kinds.items():
            self._telemetry[name] = _validate_json_pair(v.telemetry_dict)
            self._events[name] = _validate_json_pair(v.event_dict) if v.event_dict is not None else None
        # RFC 3339 `ts` text → epoch ms: a fleet's devices send the same few timestamps
        # (one per reporting tick), and parsing one costs more than the rest of a reading.
        self._ts_text_ms: dict[str, int] = {}

    def _judge_topic(self, text: str) -> _TopicVerdict:
        """Parse a topic and check it against kinds and registry, once per distinct topic
        (`decode` looks in `_topics` first): a fleet repeats the same few thousand topics
        millions of times."""
        hit: _TopicVerdict
        try:
            topic = DeviceTopic.parse(text)
        except TopicError as exc:
            hit = (None, None, (f"bad_topic: {exc}",))
        else:
            validators_ = self._kinds.get(topic.kind)
            if validators_ is None:
                hit = (None, None, (f"unknown_kind: {topic.kind!r} is not one of {sorted(self._kinds)}",))
            else:
                why = self._registry.check(topic.kind, topic.site, topic.device)
                hit = (topic, validators_.spec, (why,) if why else ())
        if len(self._topics) >= 100_000:
            self._topics.clear()  # bounded: garbage topics must not grow memory
        self._topics[text] = hit
        return hit

    def decode(self, raw: RawMessage) -> Outcome:
        if len(raw.payload) > self._max_payload:
            return Rejected(raw, (f"payload_too_large: {len(raw.payload)} bytes > limit {self._max_payload}",))
        topic, spec, registry_reasons = self._topics.get(raw.topic) or self._judge_topic(raw.topic)
        if topic is None:
            return Rejected(raw, registry_reasons)
        reasons = list(registry_reasons)
        if topic.channel == "telemetry":
            return self._telemetry_outcome(raw, topic, spec, reasons)
        return self._event_outcome(raw, topic, reasons)

    # -- telemetry -----------------------------------------------------------------
    def _telemetry_outcome(self, raw: RawMessage, topic: DeviceTopic, spec: KindSpec | None,
                           reasons: list[str]) -> Outcome:
        is_batch, parsed = self._parse(self._telemetry[topic.kind], raw.payload, spec, reasons)
        if parsed is None:
            return Rejected(raw, tuple(reasons))
        now = self._clock()
        if not is_batch:
            # The common case, without the batch's loop and "[i]." locations. `values` holds
            # only the fields that were sent, in the kind's field order (deterministic lines).
            ts_ms = self._timestamp(parsed["ts"], now, "", reasons)
            values = parsed["values"]
            if not values:
                reasons.append("empty_values: values has no fields")
            if reasons or ts_ms is None:  # a None ts_ms always came with its reason
                return Rejected(raw, tuple(reasons))
            seq = parsed.get("seq")
            reading = Reading(topic.kind, topic.site, topic.device, ts_ms, values, seq)
            return Accepted(raw, readings=(reading,), lines=(self._lines.reading(reading),))
        if not parsed:
            reasons.append("empty_values: the batch array is empty")
        if len(parsed) > MAX_ITEMS:
            reasons.append(f"payload_too_large: {len(parsed)} readings in one message > {MAX_ITEMS}")
        readings: list[Reading] = []
        for i, item in enumerate(parsed):
            where = f"[{i}]."
            ts_ms = self._timestamp(item["ts"], now, where, reasons)
            values = item["values"]
            if not values:
                reasons.append(f"empty_values: {where}values has no fields")
            if ts_ms is not None and values:
                readings.append(Reading(topic.kind, topic.site, topic.device, ts_ms, values, item.get("seq")))
        if reasons:
            return Rejected(raw, tuple(reasons))
        return Accepted(raw, readings=tuple(readings), lines=tuple(map(self._lines.reading, readings)))

    # -- events --------------------------------------------------------------------
    def _event_outcome(self, raw: RawMessage, topic: DeviceTopic, reasons: list[str]) -> Outcome:
        validators_ = self._events[topic.kind]
        if validators_ is None:
            return Rejected(raw, (f"unknown_event: kind {topic.kind!r} has no event types", *reasons))
        is_batch, parsed = self._parse(validators_, raw.payload, None, reasons)
        if parsed is None:
            return Rejected(raw, tuple(reasons))
        items = parsed if is_batch else [parsed]
        now = self._clock()
        events: list[Event] = []
        for i, item in enumerate(items):
            where = f"[{i}]." if is_batch else ""
            ts_ms = self._timestamp(item["ts"], now, where, reasons)
            # Optional attributes that were not sent are absent; ts and type are not attributes.
            attrs = {k: v for k, v in item.items() if k != "ts" and k != "type"}
            if ts_ms is not None:
                events.append(Event(topic.kind, topic.site, topic.device, ts_ms, item["type"], attrs))
        if not items:
            reasons.append("empty_values: the batch array is empty")
        if reasons:
            return Rejected(raw, tuple(reasons))
        return Accepted(raw, events=tuple(events), lines=tuple(event_line(e) for e in events))

    # -- shared --------------------------------------------------------------------
    def _parse(self, validators: tuple[_ValidateJson, _ValidateJson], payload: bytes, spec: KindSpec | None,
               reasons: list[str]) -> tuple[bool, Any]:
        """Validate one object or a batch array; (is_batch, parsed), or (is_batch, None)
        with the reasons appended."""
        validate_one, validate_batch = validators
        is_batch = payload.lstrip()[:1] == b"["
        try:
            return is_batch, (validate_batch(payload) if is_batch else validate_one(payload))
        except ValidationError as exc:
            reasons.extend(_explain(exc, spec, self._event_tags))
            return is_batch, None

    def _timestamp(self, ts: int | str, now_ms: int, where: str, reasons: list[str]) -> int | None:
        ts_ms: int | None
        if isinstance(ts, str):  # StrictInt | StrictStr: otherwise an int, never a bool
            ts_ms = self._ts_text_ms.get(ts)
            if ts_ms is None:
                ts_ms = self._parse_ts_text(ts, where, reasons)
                if ts_ms is None:
                    return None
        else:
            ts_ms = ts
        if ts_ms < MIN_TS_MS:
            hint = " (epoch seconds? ts must be epoch milliseconds)" if ts_ms > 900_000_000 else ""
            reasons.append(f"bad_timestamp: {where}ts {_brief(ts_ms)} is before 2000-01-01{hint}")
            return None
        if ts_ms > now_ms + self._max_future_ms:
            # Exact (int / 1000 overflows a float for a ts of 300+ digits); rounds like :.0f.
            reasons.append(
                f"future_timestamp: {where}ts is {_brief(round(Fraction(ts_ms - now_ms, 1000)))} s ahead of the server clock "
                f"(limit {self._max_future_ms // 1000} s)"
            )
            return None
        return ts_ms

    def _parse_ts_text(self, ts: str, where: str, reasons: list[str]) -> int | None:
        """Epoch ms of an RFC 3339 `ts` (remembered), or None with the reason."""
        try:
            dt = datetime.fromisoformat(ts)
        except ValueError:
            reasons.append(f"bad_timestamp: {where}ts {ts[:64]!r} is not RFC 3339")
            return None
        if dt.tzinfo is None:
            reasons.append(f"bad_timestamp: {where}ts {ts[:64]!r} has no UTC offset")
            return None
        ts_ms = (dt - _EPOCH) // _MS  # exact: timestamp() * 1000 is a float, a ms early for some
        if len(self._ts_text_ms) >= 10_000:
            self._ts_text_ms.clear()  # bounded: a day of 10 s ticks needs ~9,000
        self._ts_text_ms[ts] = ts_ms
        return ts_ms


def _brief(n: int) -> str:
    """An integer for a reason: JSON allows thousands of digits, a dead letter needs 20."""
    text = str(n)
    return text if len(text) <= 20 else f"{text[:12]}… ({len(text.lstrip('-'))} digits)"


# Any: pydantic-core returns the plain dicts and lists of JSON (checked by the schema, typed by nobody).
_ValidateJson = Callable[[bytes], Any]


def _validate_json_pair(annotation: Any) -> tuple[_ValidateJson, _ValidateJson]:
    """Bound `validate_json` of pydantic-core validators for one `annotation` and for a list
    of them (skipping TypeAdapter's Python wrapper, which is per call)."""
    return (TypeAdapter(annotation).validator.validate_json,
            TypeAdapter(list[annotation]).validator.validate_json)


def _explain(exc: ValidationError, spec: KindSpec | None, tags: frozenset[str] = frozenset()) -> list[str]:
    """Turn pydantic's errors into our reason codes, one line per problem."""
    out: list[str] = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        loc = list(err["loc"])
        # A discriminated union of event types puts the tag first; it says nothing to a user.
        if len(loc) > 1 and loc[0] in tags:
            loc = loc[1:]
        path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        if kind == "json_invalid":
            out.append(f"invalid_json: {err['msg']}")
            continue
        if kind == "extra_forbidden":
            out.append(f"unknown_field: {path} is not a field of this kind")
            continue
        if kind == "missing":
            out.append(f"missing_field: {path} is required")
            continue
        detail = err["msg"]
        if spec is not None and len(loc) >= 2 and loc[-2] == "values" and loc[-1] in spec.fields:
            f = spec.fields[str(loc[-1])]
            if f.unit or f.min is not None:
                detail += f" (allowed {f.min}..{f.max} {f.unit})".rstrip()
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) else f"; got {str(got)[:64]!r}"
        out.append(f"invalid_field: {path}: {detail}{shown}")
    if not out:
        out.append(f"invalid_field: {exc.error_count()} validation errors")
    # Deduplicate while keeping order (union branches repeat the same message).
    return list(dict.fromkeys(out))
