"""The simulators' errors: one subclass of the project's error family per failure kind."""

from __future__ import annotations

from citywatch.errors import CitywatchError


class SimulatorError(CitywatchError):
    """Base of every simulator failure."""


class ScenarioError(SimulatorError):
    """A scenario or device file is wrong; the message names the file and the field."""


class PublishError(SimulatorError):
    """The broker could not be reached, or acknowledgements stopped arriving."""
