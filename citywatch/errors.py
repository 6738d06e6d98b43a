"""One error family: every failure that crosses a boundary is a CitywatchError."""


class CitywatchError(Exception):
    """Base of all citywatch errors."""


class ConfigError(CitywatchError):
    """Settings, registry or rule files are wrong; the message says what to fix."""


class InfluxError(CitywatchError):
    """InfluxDB answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class SpoolError(CitywatchError):
    """The local spool cannot accept or return data (disk full, corruption)."""
