"""The gateway's defences on a hostile network: failed-login backoff and lockout per MN and
per source address, and the per-source rate limit on dead letters from sources that have
not authenticated. Pure state with an injected clock; the gateway does the I/O.

Uniform by design: an MN is tracked whether or not it is registered, so neither the
answers nor the lockouts tell a registered MN from an unknown one.

Memory is bounded: at most `max_tracked` subjects per table, least recently used out
first (an attacker would need thousands of addresses to push a lockout out).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from citywatch.lineproto import event_line
from citywatch.model import Event, RawMessage
from ingest.types import Accepted

Scope = Literal["address", "mn"]

# The alert path: a lockout becomes an event of this kind (citywatch/kinds.yaml), which the
# rule `hj212_login_lockout` (alerts/rules/security.yaml) turns into an alert.
LOCKOUT_KIND = "hj212_gateway"
LOCKOUT_SITE = "hj212"
LOCKOUT_EVENT = "login_lockout"


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """`CW_HJ212_*` settings (citywatch/settings.py) map one to one onto these."""

    max_failures: int = 10  # failed logins of one subject within failure_window_s → lockout
    backoff_after: int = 3  # failures answered at once; later ones are delayed and the connection closed
    backoff_base_s: float = 0.5  # first delay; doubles per further failure
    backoff_max_s: float = 8.0
    lockout_s: float = 900.0
    failure_window_s: float = 900.0  # failures older than this are forgotten
    trusted_ttl_s: float = 86400.0  # an address that logged in as an MN may still try it while the MN is locked
    deadletter_rate: float = 1.0  # dead letters per second per unauthenticated source
    deadletter_burst: int = 20
    max_tracked: int = 65536


@dataclass(frozen=True, slots=True)
class Lockout:
    scope: Scope
    subject: str  # the address (IPv6: its /64) or the MN
    failures: int
    lockout_s: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a failed login: delay the answer, close after it, or (locked) neither answer nor wait."""

    failures: int
    delay_s: float = 0.0
    close: bool = False
    answer: bool = True
    lockouts: tuple[Lockout, ...] = ()


def source_address(peer: str | None) -> str:
    """The unit of per-address limits: the IP (an IPv4-mapped IPv6 as IPv4), an IPv6 address
    as its /64 (one host usually owns a whole /64)."""
    if not peer:
        return "unknown"
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Subject:
    __slots__ = ("failures", "first_at", "locked_until")

    def __init__(self) -> None:
        self.failures = 0
        self.first_at = 0.0
        self.locked_until = 0.0


class LoginGuard:
    """Counts failed logins per address and per MN; see `GuardPolicy`."""

    def __init__(self, policy: GuardPolicy | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or GuardPolicy()
        self._clock = clock
        self._tables: dict[Scope, OrderedDict[str, _Subject]] = {"address": OrderedDict(), "mn": OrderedDict()}
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()

    def locked(self, address: str, mn: str | None) -> Lockout | None:
        """The lockout that applies to a login attempt now, if any (checked before the PW is)."""
        now = self._clock()
        s = self._tables["address"].get(address)
        if s is not None and s.locked_until > now:
            return Lockout("address", address, s.failures, s.locked_until - now)
        if mn is not None:
            s = self._tables["mn"].get(mn)
            if s is not None and s.locked_until > now and not self._is_trusted(address, mn, now):
                return Lockout("mn", mn, s.failures, s.locked_until - now)
        return None

    def failure(self, address: str, mn: str | None) -> Verdict:
        p = self.policy
        now = self._clock()
        count = 0
        lockouts: list[Lockout] = []
        subjects: list[tuple[Scope, str]] = [("address", address)]
        if mn is not None:
            subjects.append(("mn", mn))
        for scope, key in subjects:
            s = self._subject(scope, key)
            if s.failures and (now - s.first_at > p.failure_window_s or 0 < s.locked_until <= now):
                s.failures, s.locked_until = 0, 0.0  # window over, or a lockout served: a fresh start
            if s.failures == 0:
                s.first_at = now
            s.failures += 1
            count = max(count, s.failures)
            if s.failures >= p.max_failures and s.locked_until <= now:
                s.locked_until = now + p.lockout_s
                lockouts.append(Lockout(scope, key, s.failures, p.lockout_s))
        if count >= p.max_failures:
            return Verdict(count, close=True, answer=False, lockouts=tuple(lockouts))
        if count > p.backoff_after:
            delay = min(p.backoff_base_s * 2 ** (count - p.backoff_after - 1), p.backoff_max_s)
            return Verdict(count, delay_s=delay, close=True)
        return Verdict(count)

    def success(self, address: str, mn: str | None) -> None:
        """A login worked: the MN's failures are forgotten and this address is trusted for it.
        The address's own count stays (a device behind it does not vouch for other guesses)."""
        if mn is None:
            return
        s = self._tables["mn"].get(mn)
        if s is not None and s.locked_until <= self._clock():
            del self._tables["mn"][mn]
        self._trusted[(address, mn)] = self._clock() + self.policy.trusted_ttl_s
        self._trusted.move_to_end((address, mn))
        while len(self._trusted) > self.policy.max_tracked:
            self._trusted.popitem(last=False)

    def locked_count(self) -> int:
        now = self._clock()
        return sum(1 for t in self._tables.values() for s in t.values() if s.locked_until > now)

    def _is_trusted(self, address: str, mn: str, now: float) -> bool:
        until = self._trusted.get((address, mn))
        return until is not None and until > now

    def _subject(self, scope: Scope, key: str) -> _Subject:
        table = self._tables[scope]
        s = table.get(key)
        if s is None:
            s = table[key] = _Subject()
            while len(table) > self.policy.max_tracked:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return s


class SourceRateLimiter:
    """A token bucket per source address for dead letters of unauthenticated connections.
    What it drops is counted (`dropped`, `take_summary`), never stored."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_tracked: int = 65536) -> None:
        self._rate, self._burst = rate, float(burst)
        self._clock = clock
        self._max = max_tracked
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._dropped: dict[str, int] = {}
        self.dropped = 0

    def allow(self, source: str) -> bool:
        now = self._clock()
        tokens, at = self._buckets.get(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        else:
            self.dropped += 1
            if len(self._dropped) < 1000 or source in self._dropped:
                self._dropped[source] = self._dropped.get(source, 0) + 1
        self._buckets[source] = (tokens, now)
        self._buckets.move_to_end(source)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return ok

    def take_summary(self) -> dict[str, int]:
        """Drops per source since the last call (at most 1,000 sources listed)."""
        out, self._dropped = self._dropped, {}
        return out


_NOT_IDENT = re.compile(r"[^A-Za-z0-9_-]")


def lockout_device(lockout: Lockout) -> str:
    """The alert's device id: `ip-127-0-0-1`, `mn-4A43...` (identifier characters only)."""
    prefix = "ip-" if lockout.scope == "address" else "mn-"
    return (prefix + _NOT_IDENT.sub("-", lockout.subject))[:64]


def lockout_outcome(lockout: Lockout, *, now_ms: int) -> Accepted:
    """The lockout as an event for the sink: stored in InfluxDB (`events`, kind
    hj212_gateway) and seen by the alert engine, which raises `hj212_login_lockout`."""
    event = Event(kind=LOCKOUT_KIND, site=LOCKOUT_SITE, device=lockout_device(lockout), ts_ms=now_ms,
                  type=LOCKOUT_EVENT, attributes={"scope": lockout.scope, "failures": float(lockout.failures),
                                                  "lockout_s": float(lockout.lockout_s)})
    raw = RawMessage(f"hj212/lockout/{event.device}", b"", now_ms, "hj212")
    return Accepted(raw, events=(event,), lines=(event_line(event),))
