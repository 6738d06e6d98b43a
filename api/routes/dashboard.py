"""`GET /`: the safety office's dashboard (static files in api/static/, no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["dashboard"])


@router.get("/", response_class=FileResponse, summary="Dashboard (HTML; the page asks for a token)",
            responses={200: {"content": {"text/html": {}}, "description": "the single-page dashboard"}})
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})
