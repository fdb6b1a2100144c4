"""A faithful fake of the CPH API, for the demo, the tests and the benchmarks."""

from collector.fake.core import LogEntry, ServerConfig
from collector.fake.dataset import Dataset
from collector.fake.fast import FastFakeCph
from collector.fake.faults import FaultPlan, Outcome
from collector.fake.server import FakeCph

__all__ = ["Dataset", "FakeCph", "FastFakeCph", "FaultPlan", "LogEntry", "Outcome",
           "ServerConfig"]
