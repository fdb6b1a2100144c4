"""A faithful fake of the CPH API, for the demo, the tests and the benchmarks."""

from collector.fake.dataset import Dataset
from collector.fake.faults import FaultPlan, Outcome
from collector.fake.server import FakeCph, LogEntry, ServerConfig

__all__ = ["Dataset", "FakeCph", "FaultPlan", "LogEntry", "Outcome", "ServerConfig"]
