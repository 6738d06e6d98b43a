"""Bearer tokens from `CW_API_TOKENS` (docs/contract.md §2) and the role order.

`CW_API_TOKENS="tok1=admin,tok2=operator:王工,tok3=viewer"`: comma-separated `token=role`
pairs; a role may carry a display name after a colon (`operator:王工`), which is what the
API records as the acknowledging user. Without a name the principal is `role#n` (the
pair's position, 1-based), so audit trails never contain a token.

A token may be limited to districts of the device registry (docs/contract.md §2):

    tok=viewer:xiaodian|yingze        districts only (the contract's form)
    tok=operator:王工:xiaodian         name, then districts (the third part is always districts)
    tok=operator:ops:                  an ASCII name and explicitly no district limit

In the two-part form `role:X`, X is a district list when it contains `|` or is a district
of the registry, else a name. When the registry has districts, an X that looks like a
district (`[A-Za-z0-9_-]`) but is none of them is an error, not a name: a mistyped
district must stop start-up, never silently give a token every site. Districts without a
registry that defines them are an error too.

Lookup compares the SHA-256 of the presented token with every configured token's digest
using `hmac.compare_digest`, always over all tokens: the time taken does not depend on
which token matched, how many characters matched, or the token's length.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from enum import IntEnum

from citywatch.errors import ConfigError
from citywatch.registry import is_district_name
from citywatch.topics import is_identifier

log = logging.getLogger("citywatch.api")


class Role(IntEnum):
    viewer = 1
    operator = 2
    admin = 3


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request. Never holds the token itself."""

    name: str
    role: Role
    slot: int = field(default=0, compare=False)  # the token's pair position: per-token limits key on it
    districts: frozenset[str] | None = None  # None: every site; else only these districts' sites


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenStore:
    def __init__(self, entries: list[_Entry]) -> None:
        if not entries:
            raise ConfigError("CW_API_TOKENS has no token=role pair")
        self._entries = tuple(entries)

    @classmethod
    def parse(cls, text: str, districts: frozenset[str] | None = None) -> TokenStore:
        """Parse `token=role[:name][:districts],...`. `districts` are the registry's district
        names (None: no registry loaded). Error messages name the pair's position, never its token."""
        entries: list[_Entry] = []
        seen: set[bytes] = set()
        for n, pair in enumerate((p.strip() for p in text.split(",")), start=1):
            if not pair:
                continue
            token, sep, role_part = pair.rpartition("=")
            token = token.strip()
            role_name, _, rest = role_part.strip().partition(":")
            name, limited = _name_and_districts(rest, n, districts)
            if not sep or not token:
                raise ConfigError(f"CW_API_TOKENS pair #{n} is not token=role")
            if len(token) < 8:
                raise ConfigError(f"CW_API_TOKENS pair #{n}: the token is shorter than 8 characters")
            try:
                role = Role[role_name.strip()]
            except KeyError:
                raise ConfigError(f"CW_API_TOKENS pair #{n}: role must be viewer, operator or admin") from None
            d = _digest(token)
            if d in seen:
                raise ConfigError(f"CW_API_TOKENS pair #{n}: duplicate token")
            seen.add(d)
            entries.append(_Entry(d, Principal(name.strip()[:64] or f"{role.name}#{n}", role, n, limited)))
        return cls(entries)

    @property
    def principals(self) -> tuple[Principal, ...]:
        return tuple(e.principal for e in self._entries)

    def lookup(self, token: str) -> Principal | None:
        d = _digest(token)
        found: Principal | None = None
        for e in self._entries:  # no early exit: constant work whichever token matches
            if hmac.compare_digest(d, e.digest):
                found = e.principal
        return found


def _name_and_districts(rest: str, n: int, known: frozenset[str] | None) -> tuple[str, frozenset[str] | None]:
    """The part after `role:` → (display name, districts or None). See the module docstring."""
    if not rest:
        return "", None
    first, sep, third = rest.partition(":")
    if sep:
        return first, (_districts(third, n, known) if third.strip() else None)
    x = first.strip()
    if "|" in x or (known and x in known):
        return "", _districts(x, n, known)
    if known and is_identifier(x):
        raise ConfigError(f"CW_API_TOKENS pair #{n}: {x!r} is not a district of the device registry "
                          f"(known: {', '.join(sorted(known))}); for a display name without districts write role:{x}:")
    if known and x:
        # A name like 王工 keeps its old meaning (every site), but district names may be
        # Chinese too: say so, so that a mistyped district is seen at start-up.
        log.warning("CW_API_TOKENS pair #%d: %r is read as a display name, not a district, so this token sees "
                    "every district; write role:%s: to say so explicitly", n, x, x)
    return x, None


def _districts(text: str, n: int, known: frozenset[str] | None) -> frozenset[str]:
    names = [p.strip() for p in text.split("|")]
    if not known:
        raise ConfigError(f"CW_API_TOKENS pair #{n} is limited to districts, but no device registry "
                          "(CW_DEVICES_FILE) gives its devices a district")
    for p in names:
        if p not in known:
            shown = repr(p) if is_district_name(p) else "an empty or malformed name"
            raise ConfigError(f"CW_API_TOKENS pair #{n}: district {shown} is not in the device registry "
                              f"(known: {', '.join(sorted(known))})")
    return frozenset(names)
