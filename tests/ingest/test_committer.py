"""ingest.committer: one group commit spools the accepted lines in order, stores every
rejection, then acknowledges (grouped per connection, in order), counts and publishes."""

from __future__ import annotations

from citywatch.model import Event, RawMessage, Reading
from ingest.committer import Committer
from ingest.deadletters import DeadLetterStore
from ingest.metrics import IngestMetrics
from ingest.spool import Spool
from ingest.types import Accepted, Rejected


def accepted(n: int, source: str = "mqtt", *, event: bool = False) -> Accepted:
    raw = RawMessage(f"telemetry/dust/S1/D{n}", b"{}", 1, source)
    if event:
        e = Event("dust", "S1", f"D{n}", 1_700_000_000_000 + n, "vehicle_exit", {"plate": "晋E1"})
        return Accepted(raw, events=(e,), lines=(f'events,device=D{n} plate="晋E1" {n}',))
    r = Reading("dust", "S1", f"D{n}", 1_700_000_000_000 + n, {"pm10": float(n)})
    return Accepted(raw, readings=(r,), lines=(f"dust,device=D{n},site=S1 pm10={float(n)!r} {n}",))


def rejected(n: int, source: str = "mqtt") -> Rejected:
    return Rejected(RawMessage(f"telemetry/dust/S1/D{n}", b"bad", 1, source), (f"invalid_json: #{n}",))


class Connection:
    """An input whose callbacks are acknowledged together (like the MQTT consumer's)."""

    def __init__(self, calls: list, name: str) -> None:
        self.calls, self.name = calls, name

    def ack_many(self, tokens: list, ok: bool = True) -> None:
        self.calls.append((self.name, [t.n for t in tokens], ok))


class Token:
    def __init__(self, connection: Connection, n: int) -> None:
        self.ack_group, self.n = connection, n

    def __call__(self, ok: bool) -> None:
        raise AssertionError("grouped tokens are acknowledged through their connection")


class FakeStream:
    has_subscribers = True

    def __init__(self) -> None:
        self.batches: list = []

    def publish(self, readings, events=()) -> None:
        self.batches.append((list(readings), list(events)))


def make(tmp_path, **kw):
    spool = Spool(tmp_path / "spool")
    dead = DeadLetterStore(tmp_path / "dead.sqlite3")
    metrics = IngestMetrics()
    return Committer(spool=spool, deadletters=dead, metrics=metrics, **kw), spool, dead, metrics


def spooled(spool: Spool) -> list[str]:
    batch = spool.read_batch(10_000)
    return [line.decode() for line in batch.lines] if batch else []


def test_a_group_commit_stores_acknowledges_counts_and_publishes_in_order(tmp_path):
    calls: list = []
    first, second = Connection(calls, "first"), Connection(calls, "second")
    stream, woken = FakeStream(), []
    committer, spool, dead, metrics = make(tmp_path, stream=stream, on_commit=woken.append)
    outcomes = [accepted(1), rejected(2), accepted(3, event=True), accepted(4, "hj212"), rejected(5, "replay"),
                accepted(6)]
    items = [
        (outcomes[0], Token(first, 1)),
        (outcomes[1], Token(second, 2)),
        (outcomes[2], lambda ok: calls.append(("plain", 3, ok))),
        (outcomes[3], None),
        (outcomes[4], Token(first, 5)),
        (outcomes[5], lambda ok: calls.append(("plain", 6, ok))),
    ]
    committer.commit(items)

    assert spooled(spool) == [line for o in outcomes if isinstance(o, Accepted) for line in o.lines]
    assert [(d.topic, d.reasons, d.source) for d in dead.list()] == [
        ("telemetry/dust/S1/D2", ("invalid_json: #2",), "mqtt"),
        ("telemetry/dust/S1/D5", ("invalid_json: #5",), "replay")]
    # Plain callbacks at once, in order; then each connection once, with its tokens in order.
    assert calls == [("plain", 3, True), ("plain", 6, True), ("first", [1, 5], True), ("second", [2], True)]
    snap = metrics.snapshot()
    assert snap["citywatch_received_total{source=mqtt}"] == 4
    assert snap["citywatch_received_total{source=hj212}"] == 1
    assert snap["citywatch_received_total{source=replay}"] == 1
    assert snap["citywatch_readings_accepted_total"] == 4 and snap["citywatch_rejected_total"] == 2
    assert snap["citywatch_spool_commits_total"] == 1 and snap["citywatch_spool_backlog"] == 4
    assert woken == [4]
    (readings, events), = stream.batches
    assert [r.device for r in readings] == ["D1", "D4", "D6"] and [e.device for e in events] == ["D3"]


def test_a_failing_callback_does_not_stop_the_others(tmp_path):
    calls: list = []

    def broken(ok: bool) -> None:
        raise RuntimeError("socket gone")

    committer, spool, _, _ = make(tmp_path)
    committer.commit([(accepted(1), broken), (accepted(2), lambda ok: calls.append(ok))])
    assert calls == [True] and len(spooled(spool)) == 2


def test_only_rejections_write_nothing_to_the_spool_and_wake_no_writer(tmp_path):
    woken: list = []
    committer, spool, dead, _ = make(tmp_path, on_commit=woken.append)
    committer.commit([(rejected(1), None), (rejected(2), None)])
    assert spool.backlog_lines == 0 and spool.backlog_bytes == 0 and dead.count() == 2 and woken == []


def test_without_subscribers_nothing_is_published(tmp_path):
    stream = FakeStream()
    stream.has_subscribers = False
    committer, _, _, _ = make(tmp_path, stream=stream)
    committer.commit([(accepted(1), None)])
    assert stream.batches == []


def test_commits_read_back_in_order_across_groups(tmp_path):
    committer, spool, _, _ = make(tmp_path)
    committer.commit([(accepted(i), None) for i in range(3)])
    committer.commit([(accepted(i, event=True), None) for i in range(3, 5)])
    assert [line.split(" ")[-1] for line in spooled(spool)] == ["0", "1", "2", "3", "4"]


def test_after_the_last_commit_submissions_are_refused_at_once_not_left_hanging(tmp_path):
    """An alert-history notification submitted while the service shuts down used to wait
    30 s for a commit that would never come (the service did not stop on SIGTERM)."""
    spool, dead = Spool(tmp_path / "spool"), DeadLetterStore(tmp_path / "dead.sqlite3")
    committer = Committer(spool=spool, deadletters=dead, interval_s=0.01)
    committer.start()
    results: list[tuple[int, bool]] = []
    committer.submit_many([(accepted(1), lambda ok: results.append((1, ok))),
                           (accepted(2), lambda ok: results.append((2, ok)))])
    committer.stop()
    assert results == [(1, True), (2, True)] and spool.backlog_lines == 2
    committer.submit(accepted(3), lambda ok: results.append((3, ok)))
    assert results[-1] == (3, False) and spool.backlog_lines == 2
