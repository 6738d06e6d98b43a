"""Shared HJ 212 test data: the two verified packets of docs/domain.md §4 and a one-device registry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest

from citywatch.registry import Device, Registry
from ingest.hj212 import DecodeContext, Hj212Gateway
from ingest.types import Sink
from tests.hj212.samples import MN, PW


def make_registry(**overrides: object) -> Registry:
    dev = Device(id="D00001", site="S0001", kind="dust", hj212_mn=MN, hj212_pw=PW, **overrides)  # type: ignore[arg-type]
    return Registry({dev.id: dev}, {MN: dev})


@pytest.fixture
def registry() -> Registry:
    return make_registry()


@pytest.fixture
def ctx(registry: Registry) -> DecodeContext:
    return DecodeContext(registry=registry, tz=ZoneInfo("Asia/Shanghai"))


@contextlib.asynccontextmanager
async def running(registry: Registry, sink: Sink, **kwargs: object) -> AsyncIterator[Hj212Gateway]:
    """A gateway on an ephemeral port for the duration of the block, cancelled afterwards."""
    gw = Hj212Gateway(registry=registry, sink=sink, host="127.0.0.1", port=0, **kwargs)  # type: ignore[arg-type]
    task = asyncio.create_task(gw.serve())
    try:
        await asyncio.wait_for(gw.wait_ready(), 5)
        yield gw
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
