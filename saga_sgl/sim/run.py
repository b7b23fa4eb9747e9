"""One call to simulate a configuration row on a workload: ``simulate(workload, row, settings, seed)``."""

from __future__ import annotations

from saga_sgl.sim.cluster import Cluster, ClusterSettings
from saga_sgl.sim.metrics import SimResult
from saga_sgl.sim.policies import RowSpec, build_row
from saga_sgl.sim.workloads.model import Workload


def simulate(workload: Workload, row: RowSpec, settings: ClusterSettings, seed: int = 0) -> SimResult:
    """Run ``row`` on ``workload``. Deterministic in its arguments (fresh policy objects per call)."""
    return Cluster(workload, build_row(row, seed), settings).run()
