"""``--scheduler-config {"cost_model": {...}}``: the router's scheduler prices calls with the given
coefficients (a CPU cluster's calibration) instead of the GPU default; a bad value is refused."""

from __future__ import annotations

import pytest
from saga_router.hosts import make_host
from saga_router.router_config import RouterConfig
from saga_router.service import RouterService

from saga_sgl.errors import InvalidSettings


def test_the_scheduler_prices_with_the_configured_cost_model() -> None:
    default = make_host(RouterService(RouterConfig())).scheduler.cost
    cpu = make_host(RouterService(RouterConfig(scheduler_config={
        "cost_model": {"prefill_per_token_s": 4.35e-4, "decode_step_s": 4.7e-3}}))).scheduler.cost
    assert cpu.prefill_time_s(2000, 0) > 10 * default.prefill_time_s(2000, 0)
    assert cpu.prefill_time_s(2000, 0) == pytest.approx(2000 * 4.35e-4, rel=0.1)


@pytest.mark.parametrize("bad", [{"bogus": 1.0}, 3.0, {"prefill_per_token_s": -1.0}])
def test_a_bad_cost_model_is_refused_with_a_clear_error(bad: object) -> None:
    with pytest.raises(InvalidSettings, match=r"cost_model|LinearCostSettings"):
        make_host(RouterService(RouterConfig(scheduler_config={"cost_model": bad})))
