"""The alert engine's errors (the API maps them: not found → 404, others → 422)."""

from __future__ import annotations

from citywatch.errors import CitywatchError


class AlertError(CitywatchError):
    """An alert operation failed (unknown alert, bad silence, invalid rule)."""


class AlertNotFound(AlertError):
    pass
