"""Agent Execution Graphs: the graph model, its builders and its predictors.

* ``graph``: AEG = (V, E, P, phi) with per-step token estimates; structural validation.
* ``build``: AEGs from explicit hints or a submitted graph; the paper's Figure 3 example.
* ``inference``: pattern inference per agent type (theta_conf) and the cold-start rule.
* ``tool_latency``: per-tool latency model (log-normal over a log-latency EMA, heavy tail).
* ``observations``: per-tool EMA of observation lengths (n_obs of Eq. 5).
* ``predict``: P_reuse (Eq. 4-5), time to next use, remaining work (Eq. 9).

Pure and deterministic: no I/O, no clock reads, no module-level randomness.
"""

from saga_sgl.aeg.build import HintBuildSettings, from_submitted, from_tool_hints, paper_figure3
from saga_sgl.aeg.graph import AEG, Edge, EdgeKind, Step
from saga_sgl.aeg.inference import InferenceSettings, ObservabilityTier, ObservedStep, PatternInference
from saga_sgl.aeg.observations import ObservationLengthModel, ObservationSettings
from saga_sgl.aeg.predict import (
    NextUsePredictor,
    NextUseSettings,
    WorkMode,
    WorkSettings,
    expected_completion_s,
    expected_queue_delay_s,
    remaining_work_s,
    reuse_probability,
)
from saga_sgl.aeg.tool_latency import (
    TABLE1_PRIORS_S,
    ToolLatencyModel,
    ToolLatencySettings,
    tool_type_of,
)

__all__ = [
    "AEG",
    "TABLE1_PRIORS_S",
    "Edge",
    "EdgeKind",
    "HintBuildSettings",
    "InferenceSettings",
    "NextUsePredictor",
    "NextUseSettings",
    "ObservabilityTier",
    "ObservationLengthModel",
    "ObservationSettings",
    "ObservedStep",
    "PatternInference",
    "Step",
    "ToolLatencyModel",
    "ToolLatencySettings",
    "WorkMode",
    "WorkSettings",
    "expected_completion_s",
    "expected_queue_delay_s",
    "from_submitted",
    "from_tool_hints",
    "paper_figure3",
    "remaining_work_s",
    "reuse_probability",
    "tool_type_of",
]
