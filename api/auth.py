"""Bearer tokens from `CW_API_TOKENS` (CONTRACT §2) and the role order.

`CW_API_TOKENS="tok1=admin,tok2=operator:王工,tok3=viewer"`: comma-separated `token=role`
pairs; a role may carry a display name after a colon (`operator:王工`), which is what the
API records as the acknowledging user. Without a name the principal is `role#n` (the
pair's position, 1-based), so audit trails never contain a token.

Lookup compares the SHA-256 of the presented token with every configured token's digest
using `hmac.compare_digest`, always over all tokens: the time taken does not depend on
which token matched, how many characters matched, or the token's length.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import IntEnum

from citywatch.errors import ConfigError


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
    def parse(cls, text: str) -> TokenStore:
        """Parse `token=role[:name],...`. Error messages name the pair's position, never its token."""
        entries: list[_Entry] = []
        seen: set[bytes] = set()
        for n, pair in enumerate((p.strip() for p in text.split(",")), start=1):
            if not pair:
                continue
            token, sep, role_part = pair.rpartition("=")
            token = token.strip()
            role_name, _, name = role_part.strip().partition(":")
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
            entries.append(_Entry(d, Principal(name.strip()[:64] or f"{role.name}#{n}", role, n)))
        return cls(entries)

    def lookup(self, token: str) -> Principal | None:
        d = _digest(token)
        found: Principal | None = None
        for e in self._entries:  # no early exit: constant work whichever token matches
            if hmac.compare_digest(d, e.digest):
                found = e.principal
        return found
