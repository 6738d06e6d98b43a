"""Dead letters: read them (operator+, HJ 212 passwords redacted) and replay them (admin).

Operators may read: triaging a rejected payload (wrong unit, unregistered device) is
operations work and the passwords are redacted. Replaying changes stored data: admin only.

A token limited to districts sees only the letters it can attribute to one of its sites
(`letter_site`); letters without a site (bytes that were no frame, a malformed topic) are
for unlimited tokens only. Replay re-runs every district's letters, so a district-limited
admin gets 403 for it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool

from api import replay as replay_mod
from api.deps import AdminDep, CtxDep, OperatorDep, ScopeDep
from api.models import DeadLetterPage, DeadLetterView, Problem, ReplayRequest, ReplayResult
from citywatch.topics import is_identifier
from ingest.hj212 import redact_pw

router = APIRouter(prefix="/v1/deadletters", tags=["deadletters"])

MAX_PAYLOAD = 4096
_LINE_SITE = re.compile(rb"^[A-Za-z0-9_-]+(?:,[^ ]*)?,site=([A-Za-z0-9_-]{1,64})(?:[, ]|$)")


def letter_site(letter: Any, registry: Any) -> str | None:
    """The site a dead letter belongs to, or None when nothing in it can be trusted to say.
    MQTT: the topic's `{kind}/{site}/{device}`; HJ 212: the registered site of its MN (or of
    the locked-out device); InfluxDB refusals: the line's `site=` tag."""
    parts = letter.topic.split("/")
    if letter.source == "hj212":
        dev = None
        if len(parts) == 2 and registry is not None:
            dev = registry.by_mn.get(parts[1])
        elif len(parts) == 3 and parts[1] == "lockout" and registry is not None:
            dev = registry.get(parts[2])
        return dev.site if dev is not None else None
    if letter.source == "influx":
        m = _LINE_SITE.match(letter.payload[:4096])
        return m.group(1).decode() if m else None
    if len(parts) == 4 and is_identifier(parts[2]):
        return parts[2]
    return None


def _scoped_page(store: Any, registry: Any, allowed: frozenset[str], *, limit: int, offset: int,
                 include_replayed: bool) -> tuple[int, list[Any]]:
    """(total, page) of the letters whose site is in `allowed`. The store has no site
    column, so this reads the letters in id order, 500 at a time; dead letters are few."""
    page: list[Any] = []  # the store's DeadLetters, as `store.list` gives them
    total, last = 0, 0
    while True:
        batch = store.list(limit=500, after_id=last, include_replayed=include_replayed)
        if not batch:
            return total, page
        for d in batch:
            if letter_site(d, registry) in allowed:
                if offset <= total < offset + limit:
                    page.append(d)
                total += 1
        last = batch[-1].id


@router.get("", response_model=DeadLetterPage, summary="Rejected messages, oldest first (operator or admin)",
            responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}})
def list_deadletters(
    ctx: CtxDep, _: OperatorDep, scope: ScopeDep,
    limit: Annotated[int, Query(ge=1, le=500, description="page size (max 500)")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    include_replayed: Annotated[bool, Query(description="also those already replayed")] = False,
) -> DeadLetterPage:
    store = ctx.ingest.deadletters
    if scope.allowed_sites is None:
        letters = store.list(limit=limit, offset=offset, include_replayed=include_replayed)
        total = store.count(include_replayed=include_replayed)
    else:
        total, letters = _scoped_page(store, getattr(ctx.ingest, "registry", None), scope.allowed_sites,
                                      limit=limit, offset=offset, include_replayed=include_replayed)
    items = []
    for d in letters:
        payload = redact_pw(d.payload[:MAX_PAYLOAD]).decode("utf-8", errors="backslashreplace")
        items.append(DeadLetterView(id=d.id, received_at=ctx.local_iso(d.received_ms) or "", received_ms=d.received_ms,
                                    source=d.source, topic=d.topic, payload=payload, payload_bytes=len(d.payload),
                                    reasons=list(d.reasons), replayed_ms=d.replayed_ms))
    return DeadLetterPage(total=total, limit=limit, offset=offset, items=items)


@router.post("/replay", response_model=ReplayResult, summary="Re-run pending dead letters (admin)",
             description="Runs every pending dead letter through the current decoders (after fixing the device "
                         "registry or a kind's ranges). Those that now pass are stored like live input and "
                         "marked replayed; the others keep their new reasons. `dry_run` changes nothing.",
             responses={401: {"model": Problem}, 403: {"model": Problem}, 409: {"model": Problem},
                        503: {"model": Problem}})
async def replay(ctx: CtxDep, _: AdminDep, scope: ScopeDep,
                 body: Annotated[ReplayRequest | None, Body()] = None) -> ReplayResult:
    scope.require_unlimited("a replay")  # it re-runs every pending letter, of every district
    dry = bool(body and body.dry_run)
    try:
        r = await run_in_threadpool(replay_mod.replay, ctx.ingest, tz=str(ctx.tz), dry_run=dry)
    except replay_mod.ReplayBusy:
        raise HTTPException(status.HTTP_409_CONFLICT, "a replay is already running") from None
    except replay_mod.ReplayNotDurable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return ReplayResult(accepted=r.accepted, still_rejected=r.still_rejected, dry_run=dry)



