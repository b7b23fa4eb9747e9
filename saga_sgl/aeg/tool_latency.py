"""ToolLatencyModel: per tool type, a spliced log-normal over a log-latency EMA, with a heavy tail.

Model [P]/[R]/[I]. Latencies are modelled in log space. Writing z = Phi^-1(q):

    ln Q(q) = mu + sigma_body * z                              for z <= z_s  (z_s = Phi^-1(0.95))
    ln Q(q) = mu + sigma_body * z_s + sigma_tail * (z - z_s)   for z >  z_s

capped at ``max_latency_s``. Below the splice quantile it is the paper's log-normal (Algorithm 1
fits a log-normal; the reference repo tracks mu and sigma of log-latency with an EMA, alpha 0.1,
over a 256-sample window [R]). Above it the slope ``sigma_tail`` may be steeper: Table 1's P99s are
far above a log-normal fit through P50 and P95 (code: 28 s observed vs 7.0 s fitted), so a single
log-normal cannot match both P95 (which sets the TTL) and P99 (which drives premature evictions).
The splice matches all three Table 1 quantiles exactly at cold start and keeps P95, the TTL input,
equal to the plain log-normal's.

* Cold start: mu = ln P50, sigma_body = ln(P95/P50) / z_95 [R], sigma_tail = ln(P99/P95) / (z_99 - z_95).
* Online: mu and sigma_body follow an EMA of log-latency and of its squared deviation (alpha 0.1).
  sigma_tail comes from the window's empirical P95..P99 slope once the window holds at least
  ``min_tail_samples`` samples; before that, the prior's tail/body ratio is kept. sigma_tail is never
  below sigma_body: we only ever *add* tail weight to the log-normal. [I]

This is a model (observe/predict); it does no I/O and reads no clock. Each call is O(1), except
that the first quantile after new samples re-sorts the window (O(w log w), w = 256).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from types import MappingProxyType

from saga_sgl.policy.settings import require, require_frac, require_positive
from saga_sgl.policy.views import ToolType

_STD_NORMAL = NormalDist()
_Z95 = _STD_NORMAL.inv_cdf(0.95)
_Z99 = _STD_NORMAL.inv_cdf(0.99)

TABLE1_PRIORS_S: Mapping[str, tuple[float, float, float]] = MappingProxyType(
    {
        # tool type: (P50, P95, P99) seconds, paper Table 1 [P].
        "code": (0.180, 2.400, 28.0),
        "file": (0.045, 0.320, 1.2),
        "web": (0.850, 4.500, 45.0),
        "db": (0.120, 0.890, 3.5),
    }
)
"""Paper Table 1 ("production traces"): tool latency P50/P95/P99 per tool type, in seconds."""

TOOL_NAME_TO_TYPE: Mapping[str, str] = MappingProxyType(
    {
        # Reference repo's name -> type map [R], plus the Figure 3 tool names.
        "shell": "code",
        "python": "code",
        "run_test": "code",
        "exec": "code",
        "edit_code": "code",
        "read_file": "file",
        "write_file": "file",
        "ls": "file",
        "fetch_url": "web",
        "browser": "web",
        "http_get": "web",
        "sql": "db",
        "query": "db",
    }
)
"""Known tool names and their Table 1 type. Unknown names are their own type."""


def tool_type_of(tool_name: str) -> ToolType:
    """Tool type for a tool name: the Table 1 class if known, else the name itself."""
    return ToolType(TOOL_NAME_TO_TYPE.get(tool_name, tool_name))


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolLatencySettings:
    """Settings of ``ToolLatencyModel``."""

    ema_alpha: float = 0.1
    """EMA weight of a new log-latency sample for mu and sigma_body (reference repo [R])."""
    window_size: int = 256
    """Samples of log-latency kept per tool for the empirical tail (reference repo [R])."""
    min_tail_samples: int = 64
    """Window samples needed before the empirical P95..P99 slope replaces the prior's tail [I]."""
    splice_quantile: float = 0.95
    """Quantile where the log-normal body meets the heavier tail (P95, Algorithm 1's TTL input)."""
    tail_quantile: float = 0.99
    """Upper quantile that fixes the tail slope (Table 1's P99)."""
    max_latency_s: float = 3600.0
    """Upper cap of the modelled latency (a slow tool that never returns is a failure, not a tail);
    also bounds the mean, which an uncapped steep tail makes enormous [I]."""
    min_latency_s: float = 1e-4
    """Floor applied to observed latencies before taking the log (a 0 ms tool cannot be logged)."""
    priors_s: Mapping[str, tuple[float, float, float]] = field(default_factory=lambda: dict(TABLE1_PRIORS_S))
    """Cold-start (P50, P95, P99) in seconds per tool type; default paper Table 1."""
    default_prior_s: tuple[float, float, float] = (1.2, 4.5, 45.0)
    """Cold-start (P50, P95, P99) of a tool type with no prior: the paper's "median 1.2 s, P99 45 s",
    with web's P95 [P]/[I]."""
    prior_scale: float = 1.0
    """Multiplies every prior quantile: a deployment whose tools run faster or slower than Table 1's
    (the live benchmark compresses tool time by its --time-scale). Observations are never scaled."""

    def __post_init__(self) -> None:
        owner = "ToolLatencySettings"
        require(0.0 < self.ema_alpha <= 1.0, owner, "ema_alpha", "in (0, 1]", self.ema_alpha)
        require(self.window_size >= 2, owner, "window_size", ">= 2", self.window_size)
        require(
            2 <= self.min_tail_samples <= self.window_size,
            owner,
            "min_tail_samples",
            "in [2, window_size]",
            self.min_tail_samples,
        )
        require_frac(owner, "splice_quantile", self.splice_quantile)
        require(
            0.5 <= self.splice_quantile < self.tail_quantile < 1.0,
            owner,
            "tail_quantile",
            "in (splice_quantile, 1) with splice_quantile >= 0.5",
            (self.splice_quantile, self.tail_quantile),
        )
        require_positive(owner, "max_latency_s", self.max_latency_s)
        require_positive(owner, "min_latency_s", self.min_latency_s)
        require_positive(owner, "prior_scale", self.prior_scale)
        priors = {str(k): _as_triple(owner, f"priors_s[{k!r}]", v) for k, v in dict(self.priors_s).items()}
        object.__setattr__(self, "priors_s", MappingProxyType(priors))
        object.__setattr__(
            self, "default_prior_s", _as_triple(owner, "default_prior_s", self.default_prior_s)
        )


def _as_triple(owner: str, name: str, value: object) -> tuple[float, float, float]:
    ok = isinstance(value, (tuple, list)) and len(value) == 3
    require(ok, owner, name, "a (P50, P95, P99) triple of seconds", value)
    assert isinstance(value, (tuple, list))
    p50, p95, p99 = (float(x) for x in value)
    require(0 < p50 < p95 <= p99, owner, name, "0 < P50 < P95 <= P99", value)
    return (p50, p95, p99)


@dataclass(frozen=True, slots=True)
class LatencyFit:
    """The spliced log-normal of one tool type at one moment (read-only snapshot)."""

    mu: float
    """Mean of log-latency (ln seconds); ln of the median."""
    sigma_body: float
    """Standard deviation of log-latency up to the splice quantile."""
    sigma_tail: float
    """Slope of ln latency per standard-normal unit above the splice quantile (>= sigma_body)."""
    num_samples: int
    """Latencies observed so far (0 = cold-start prior)."""


class _ToolState:
    __slots__ = ("dirty", "mu", "num_samples", "sigma_tail", "tail_ratio", "var", "window")

    def __init__(self, mu: float, sigma_body: float, sigma_tail: float, window_size: int) -> None:
        self.mu = mu
        self.var = sigma_body * sigma_body
        self.tail_ratio = sigma_tail / sigma_body if sigma_body > 0 else 1.0
        self.sigma_tail = sigma_tail
        self.window: deque[float] = deque(maxlen=window_size)
        self.num_samples = 0
        self.dirty = False


class ToolLatencyModel:
    """Per-tool latency distribution: ``observe`` latencies, read quantiles and means.

    Implements ``saga_sgl.policy.interfaces.ToolLatencyEstimate``.
    """

    def __init__(self, settings: ToolLatencySettings | None = None) -> None:
        self.settings = settings or ToolLatencySettings()
        s = self.settings
        self._z_splice = _STD_NORMAL.inv_cdf(s.splice_quantile)
        self._z_tail = _STD_NORMAL.inv_cdf(s.tail_quantile)
        self._tools: dict[ToolType, _ToolState] = {}

    # -- observe ---------------------------------------------------------------------------------

    def observe(self, tool: ToolType, latency_s: float) -> None:
        """Record one completed tool call of ``tool`` that took ``latency_s`` seconds."""
        if not math.isfinite(latency_s) or latency_s < 0:
            raise ValueError(f"latency_s must be finite and >= 0, got {latency_s!r}")
        st = self._state(tool)
        y = math.log(max(latency_s, self.settings.min_latency_s))
        a = self.settings.ema_alpha
        # Exponentially weighted mean and variance (West's incremental form).
        delta = y - st.mu
        st.mu += a * delta
        st.var = (1.0 - a) * (st.var + a * delta * delta)
        st.window.append(y)
        st.num_samples += 1
        st.dirty = True

    # -- predict ---------------------------------------------------------------------------------

    def fit(self, tool: ToolType) -> LatencyFit:
        """Current spliced log-normal parameters of ``tool``."""
        st = self._state(tool)
        sigma_body = math.sqrt(max(st.var, 0.0))
        return LatencyFit(st.mu, sigma_body, self._sigma_tail(st, sigma_body), st.num_samples)

    def quantile_s(self, tool: ToolType, q: float) -> float:
        """Latency quantile ``q`` (0 < q < 1) of ``tool`` in seconds."""
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {q!r}")
        f = self.fit(tool)
        z = _STD_NORMAL.inv_cdf(q)
        zs = self._z_splice
        log_q = f.mu + f.sigma_body * z if z <= zs else f.mu + f.sigma_body * zs + f.sigma_tail * (z - zs)
        return min(math.exp(log_q), self.settings.max_latency_s)

    def cdf(self, tool: ToolType, latency_s: float) -> float:
        """P(latency <= ``latency_s``) under the current model of ``tool``."""
        if latency_s <= 0.0:
            return 0.0
        if latency_s >= self.settings.max_latency_s:
            return 1.0
        f = self.fit(tool)
        y = math.log(latency_s)
        zs = self._z_splice
        y_splice = f.mu + f.sigma_body * zs
        if y <= y_splice:
            z = (y - f.mu) / f.sigma_body if f.sigma_body > 0 else (math.inf if y >= f.mu else -math.inf)
        else:
            z = zs + (y - y_splice) / f.sigma_tail if f.sigma_tail > 0 else math.inf
        if math.isinf(z):
            return 1.0 if z > 0 else 0.0
        return _STD_NORMAL.cdf(z)

    def conditional_quantile_s(self, tool: ToolType, q: float, elapsed_s: float) -> float:
        """Quantile ``q`` of the latency of a call of ``tool`` that has already run ``elapsed_s``.

        Q(F(e) + q (1 - F(e))): e.g. the median total latency given it is still running.
        """
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {q!r}")
        f_e = self.cdf(tool, max(elapsed_s, 0.0))
        target = f_e + q * (1.0 - f_e)
        if target >= 1.0:
            return max(self.settings.max_latency_s, elapsed_s)
        return max(self.quantile_s(tool, target), elapsed_s)

    def mean_s(self, tool: ToolType) -> float:
        """Mean latency of ``tool`` in seconds, in closed form over the capped spliced log-normal."""
        f = self.fit(tool)
        zs = self._z_splice
        cap = self.settings.max_latency_s
        phi = _STD_NORMAL.cdf
        sb, st = f.sigma_body, f.sigma_tail
        # Body: integral of exp(mu + sb z) phi(z) over z <= zs.
        body = math.exp(f.mu + sb * sb / 2.0) * phi(zs - sb)
        log_splice = f.mu + sb * zs
        if log_splice >= math.log(cap):
            # The cap binds inside the body; rare (a cap below P95). Mass above is at the cap.
            z_cap = (math.log(cap) - f.mu) / sb if sb > 0 else zs
            body = math.exp(f.mu + sb * sb / 2.0) * phi(z_cap - sb)
            return body + cap * (1.0 - phi(z_cap))
        # Tail: ln x = c + st z for z in (zs, z_cap], then a point mass at the cap.
        c = log_splice - st * zs
        z_cap = zs + (math.log(cap) - log_splice) / st if st > 0 else math.inf
        tail = math.exp(c + st * st / 2.0) * (phi(z_cap - st) - phi(zs - st))
        return body + tail + cap * (1.0 - phi(z_cap))

    def tools(self) -> list[ToolType]:
        """Tool types seen or primed so far, sorted."""
        return sorted(self._tools)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Bounded debug view: per tool, mu, sigmas, sample count, P50/P95/P99 (seconds)."""
        out: dict[str, dict[str, float]] = {}
        for tool in self.tools():
            f = self.fit(tool)
            out[tool] = {
                "mu": f.mu,
                "sigma_body": f.sigma_body,
                "sigma_tail": f.sigma_tail,
                "num_samples": float(f.num_samples),
                "p50_s": self.quantile_s(tool, 0.5),
                "p95_s": self.quantile_s(tool, 0.95),
                "p99_s": self.quantile_s(tool, 0.99),
            }
        return out

    # -- internals -------------------------------------------------------------------------------

    def _state(self, tool: ToolType) -> _ToolState:
        st = self._tools.get(tool)
        if st is None:
            k = self.settings.prior_scale
            p50, p95, p99 = (k * q for q in self.settings.priors_s.get(tool, self.settings.default_prior_s))
            # Priors are (P50, P95, P99) by definition: the body goes through P50 and P95 [R], the
            # tail slope through P95 and P99; a prior lighter than log-normal is lifted to it.
            sigma_body = math.log(p95 / p50) / _Z95
            sigma_tail = max(sigma_body, math.log(p99 / p95) / (_Z99 - _Z95))
            st = _ToolState(math.log(p50), sigma_body, sigma_tail, self.settings.window_size)
            self._tools[tool] = st
        return st

    def _sigma_tail(self, st: _ToolState, sigma_body: float) -> float:
        if st.dirty:
            st.dirty = False
            if len(st.window) >= self.settings.min_tail_samples:
                ordered = sorted(st.window)
                lo = _empirical_quantile(ordered, self.settings.splice_quantile)
                hi = _empirical_quantile(ordered, self.settings.tail_quantile)
                st.sigma_tail = (hi - lo) / (self._z_tail - self._z_splice)
            else:
                st.sigma_tail = st.tail_ratio * sigma_body
        return max(st.sigma_tail, sigma_body)


def _empirical_quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolated quantile of sorted samples (numpy's default 'linear' method)."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
