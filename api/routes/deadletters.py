"""Dead letters: read them (operator+, HJ 212 passwords redacted) and replay them (admin).

Operators may read: triaging a rejected payload (wrong unit, unregistered device) is
operations work and the passwords are redacted. Replaying changes stored data: admin only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool

from api import replay as replay_mod
from api.deps import AdminDep, CtxDep, OperatorDep
from api.models import DeadLetterPage, DeadLetterView, Problem, ReplayRequest, ReplayResult
from ingest.hj212 import redact_pw

router = APIRouter(prefix="/v1/deadletters", tags=["deadletters"])

MAX_PAYLOAD = 4096


@router.get("", response_model=DeadLetterPage, summary="Rejected messages, oldest first (operator or admin)",
            responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}})
def list_deadletters(
    ctx: CtxDep, _: OperatorDep,
    limit: Annotated[int, Query(ge=1, le=500, description="page size (max 500)")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    include_replayed: Annotated[bool, Query(description="also those already replayed")] = False,
) -> DeadLetterPage:
    store = ctx.ingest.deadletters
    items = []
    for d in store.list(limit=limit, offset=offset, include_replayed=include_replayed):
        payload = redact_pw(d.payload[:MAX_PAYLOAD]).decode("utf-8", errors="backslashreplace")
        items.append(DeadLetterView(id=d.id, received_at=ctx.local_iso(d.received_ms) or "", received_ms=d.received_ms,
                                    source=d.source, topic=d.topic, payload=payload, payload_bytes=len(d.payload),
                                    reasons=list(d.reasons), replayed_ms=d.replayed_ms))
    return DeadLetterPage(total=store.count(include_replayed=include_replayed), limit=limit, offset=offset,
                          items=items)


@router.post("/replay", response_model=ReplayResult, summary="Re-run pending dead letters (admin)",
             description="Runs every pending dead letter through the current decoders (after fixing the device "
                         "registry or a kind's ranges). Those that now pass are stored like live input and "
                         "marked replayed; the others keep their new reasons. `dry_run` changes nothing.",
             responses={401: {"model": Problem}, 403: {"model": Problem}, 409: {"model": Problem},
                        503: {"model": Problem}})
async def replay(ctx: CtxDep, _: AdminDep, body: Annotated[ReplayRequest | None, Body()] = None) -> ReplayResult:
    dry = bool(body and body.dry_run)
    try:
        r = await run_in_threadpool(replay_mod.replay, ctx.ingest, tz=str(ctx.tz), dry_run=dry)
    except replay_mod.ReplayBusy:
        raise HTTPException(status.HTTP_409_CONFLICT, "a replay is already running") from None
    except replay_mod.ReplayNotDurable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return ReplayResult(accepted=r.accepted, still_rejected=r.still_rejected, dry_run=dry)



