"""The gateway's login guard and dead-letter rate limit as pure state (a fake clock)."""

from __future__ import annotations

from citywatch.registry import Registry
from citywatch.schema import kinds
from ingest.hj212.guard import (GuardPolicy, Lockout, LoginGuard, SourceRateLimiter, lockout_device, lockout_outcome,
                                source_address)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def guard(**kw: object) -> tuple[LoginGuard, Clock]:
    clock = Clock()
    return LoginGuard(GuardPolicy(**kw), clock=clock), clock  # type: ignore[arg-type]


def test_failures_are_answered_then_delayed_then_locked() -> None:
    g, _ = guard(max_failures=6, backoff_after=2, backoff_base_s=0.5, backoff_max_s=1.5)
    verdicts = [g.failure("10.0.0.1", "MN1") for _ in range(6)]
    assert [(v.delay_s, v.close, v.answer) for v in verdicts] == [
        (0.0, False, True), (0.0, False, True), (0.5, True, True), (1.0, True, True), (1.5, True, True),
        (0.0, True, False)]
    assert {lk.scope for lk in verdicts[-1].lockouts} == {"address", "mn"}
    assert g.locked("10.0.0.1", None) is not None  # the address, whatever the MN
    assert g.locked("10.0.0.9", "MN1") is not None  # the MN, from any address
    assert g.locked("10.0.0.9", "MN2") is None


def test_a_lockout_is_reported_once_and_ends_after_lockout_s() -> None:
    g, clock = guard(max_failures=3, lockout_s=60)
    lockouts = [lk for _ in range(10) for lk in g.failure("10.0.0.1", None).lockouts]
    assert lockouts == [Lockout("address", "10.0.0.1", 3, 60)]
    clock.t += 61
    assert g.locked("10.0.0.1", None) is None
    assert g.failure("10.0.0.1", None).failures == 1  # a served lockout starts afresh


def test_failures_outside_the_window_are_forgotten() -> None:
    g, clock = guard(max_failures=3, failure_window_s=100)
    g.failure("a", None)
    g.failure("a", None)
    clock.t += 101
    assert g.failure("a", None).failures == 1


def test_unknown_and_registered_mns_are_tracked_alike() -> None:
    # The guard never sees the registry: an MN is a string, registered or not.
    g, _ = guard(max_failures=2)
    a = [g.failure("10.0.0.1", "REGISTERED") for _ in range(2)]
    b = [g.failure("10.0.0.2", "UNKNOWN") for _ in range(2)]
    assert [(v.failures, v.delay_s, v.answer) for v in a] == [(v.failures, v.delay_s, v.answer) for v in b]


def test_an_address_that_logged_in_as_the_mn_may_still_use_it_while_it_is_locked() -> None:
    g, clock = guard(max_failures=2, trusted_ttl_s=3600, lockout_s=7200)
    g.success("10.0.0.5", "MN1")  # the monitor itself, earlier
    for _ in range(2):
        g.failure("10.0.0.66", "MN1")  # someone guessing its password
    assert g.locked("10.0.0.66", "MN1") is not None
    assert g.locked("10.0.0.7", "MN1") is not None
    assert g.locked("10.0.0.5", "MN1") is None
    clock.t += 3601
    assert g.locked("10.0.0.5", "MN1") is not None  # trust expires


def test_success_forgets_the_mns_failures_not_the_addresss() -> None:
    g, _ = guard(max_failures=5)
    for _ in range(3):
        g.failure("a", "MN1")
    g.success("a", "MN1")
    assert g.failure("b", "MN1").failures == 1
    assert g.failure("a", "MN9").failures == 4  # the address keeps counting


def test_tables_are_bounded() -> None:
    g, _ = guard(max_tracked=100, max_failures=1000)
    for i in range(1000):
        g.failure(f"10.0.{i // 256}.{i % 256}", f"MN{i}")
    assert all(len(t) <= 100 for t in g._tables.values())


def test_rate_limiter_is_a_token_bucket_per_source() -> None:
    clock = Clock()
    rl = SourceRateLimiter(2.0, 5, clock=clock)
    assert [rl.allow("a") for _ in range(7)] == [True] * 5 + [False] * 2
    assert rl.allow("b")  # another source has its own bucket
    clock.t += 1.0
    assert [rl.allow("a") for _ in range(3)] == [True, True, False]
    assert rl.dropped == 3
    assert rl.take_summary() == {"a": 3}
    assert rl.take_summary() == {}


def test_source_address() -> None:
    assert source_address("127.0.0.1") == "127.0.0.1"
    assert source_address("::ffff:10.1.2.3") == "10.1.2.3"
    assert source_address("2001:db8:1:2:aaaa::1") == source_address("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert source_address(None) == "unknown"


def test_lockout_event_is_a_valid_event_of_the_gateway_kind() -> None:
    out = lockout_outcome(Lockout("address", "2001:db8::/64", 10, 900.0), now_ms=1_800_000_000_000)
    [event] = out.events
    assert event.device == "ip-2001-db8---64" == lockout_device(Lockout("address", "2001:db8::/64", 1, 1))
    assert Registry.empty().check(event.kind, event.site, event.device) is None
    spec = kinds()[event.kind].events[event.type]
    assert set(event.attributes) <= set(spec) and event.attributes["failures"] == 10.0
    assert out.lines == (f"events,device=ip-2001-db8---64,kind=hj212_gateway,site=hj212,type=login_lockout "
                         f'scope="address",failures=10.0,lockout_s=900.0 1800000000000',)
