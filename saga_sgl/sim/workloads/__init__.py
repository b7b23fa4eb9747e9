"""Seeded workload generators: coding agents, browser agents, the 10-tenant mix; JSONL I/O."""

from saga_sgl.sim.workloads.generate import WorkloadSpec, generate
from saga_sgl.sim.workloads.model import CallSpec, Segment, TaskSpec, Workload

__all__ = ["CallSpec", "Segment", "TaskSpec", "Workload", "WorkloadSpec", "generate"]
