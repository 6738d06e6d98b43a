"""citywatch's shared domain package: readings, topics, kinds, settings, InfluxDB access.

Every other package (ingest, alerts, api, simulators) depends on this one, never the
other way round.
"""

from citywatch.errors import CitywatchError, ConfigError, InfluxError
from citywatch.model import Event, RawMessage, Reading
from citywatch.settings import Settings

__all__ = [
    "CitywatchError",
    "ConfigError",
    "Event",
    "InfluxError",
    "RawMessage",
    "Reading",
    "Settings",
]
