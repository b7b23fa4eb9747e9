"""ObservationLengthModel: per tool type, an EMA of the tokens a tool returns (n_obs of Eq. 5).

A model (observe/predict) fed by the host; the paper tracks per-tool observation lengths with
exponential moving averages [P]. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from saga_sgl.aeg.graph import Step
from saga_sgl.policy.settings import require
from saga_sgl.policy.views import ToolType


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservationSettings:
    """Settings of ``ObservationLengthModel``."""

    ema_alpha: float = 0.1
    """EMA weight of a new observation length per tool type [P: "tracked with EMAs"; value [I]]."""

    def __post_init__(self) -> None:
        require(0 < self.ema_alpha <= 1, "ObservationSettings", "ema_alpha", "in (0, 1]", self.ema_alpha)


class ObservationLengthModel:
    """Per tool type, an EMA of the tokens the tool returns."""

    def __init__(self, settings: ObservationSettings | None = None) -> None:
        self.settings = settings or ObservationSettings()
        self._ema: dict[ToolType, float] = {}

    def observe(self, tool: ToolType, observation_tokens: int) -> None:
        """Record that a call of ``tool`` returned ``observation_tokens`` tokens."""
        if observation_tokens < 0:
            raise ValueError(f"observation_tokens must be >= 0, got {observation_tokens}")
        old = self._ema.get(tool)
        self._ema[tool] = (
            float(observation_tokens)
            if old is None
            else old + self.settings.ema_alpha * (observation_tokens - old)
        )

    def predict(self, tool: ToolType, default: float) -> float:
        """EMA of observation tokens of ``tool``; ``default`` before the first observation."""
        return self._ema.get(tool, default)

    def for_step(self, step: Step) -> float:
        """Predicted observation tokens after ``step`` (its own estimate until the tool is seen)."""
        if step.tool is None:
            return 0.0
        return self.predict(step.tool, float(step.observation_tokens_est))


ObservationEstimate = Callable[[Step], float]
"""Observation tokens expected after a step (default: the step's own estimate)."""


def step_estimate(step: Step) -> float:
    """The step's own observation estimate (0 if it calls no tool)."""
    return 0.0 if step.tool is None else float(step.observation_tokens_est)
