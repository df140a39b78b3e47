"""A local Anthropic-compatible Messages API: the offline default for demo, tests and benchmarks.

Imports nothing of Chorus, so it can run anywhere the real API would be reached.
"""

from simulator.cli import main
from simulator.config import SimulatorConfig
from simulator.schema_fill import fill
from simulator.server import BackgroundSimulator, make_app

__all__ = ["BackgroundSimulator", "SimulatorConfig", "fill", "main", "make_app"]
