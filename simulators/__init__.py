"""Device simulators: seeded, scenario-driven MQTT traffic for dust, heating and water.

`generate()` is the pure part (scenario → messages in simulated-time order);
`publish_all()` and `run_load()` put them on a broker with QoS 1 and wait for every ack.
"""

from simulators.errors import PublishError, ScenarioError, SimulatorError
from simulators.loadgen import LoadSpec, run_load
from simulators.message import SimMessage
from simulators.pacing import Pacer
from simulators.publisher import Publisher, PublishSummary, publish_all
from simulators.scenario import Scenario, list_scenarios, load_scenario
from simulators.stream import Run, generate, plan_run

__all__ = [
    "LoadSpec",
    "Pacer",
    "PublishError",
    "PublishSummary",
    "Publisher",
    "Run",
    "Scenario",
    "ScenarioError",
    "SimMessage",
    "SimulatorError",
    "generate",
    "list_scenarios",
    "load_scenario",
    "plan_run",
    "publish_all",
    "run_load",
]
