"""Small asyncio helpers."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` at most `timeout` seconds; True if it was set.

    Not `asyncio.wait_for`: on Python 3.11 it can turn a cancellation that arrives as the
    timeout fires into a plain TimeoutError, so a loop around it never ends — the service
    then did not stop on SIGTERM. `asyncio.timeout` tells its own expiry from a cancel.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False
