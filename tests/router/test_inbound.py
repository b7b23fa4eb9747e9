"""Request parsing, workflow identity, CLI policy errors and the metrics exposition (no workers)."""

from __future__ import annotations

from typing import Any

import pytest
from saga_router.cli import config_from_args, parser
from saga_router.hosts import scheduler_settings
from saga_router.identity import identify
from saga_router.inbound import (
    BadRequest,
    decode_body,
    max_output_tokens,
    prompt_of_chat,
    prompt_of_generate,
    vocab_size_of,
)
from saga_router.telemetry import RouterMetrics

from saga_sgl.errors import InvalidSettings
from saga_sgl.local_workers import TINY_MODEL_DIR, TINY_VOCAB_SIZE
from saga_sgl.protocol import CallTag, encode_call_tag


def test_vocabulary_size_comes_from_the_model_config() -> None:
    assert vocab_size_of(TINY_MODEL_DIR) == TINY_VOCAB_SIZE


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input_ids": [1, 512]}, "outside the model's vocabulary of 512"),
        ({"input_ids": [[1], [2, 600]]}, "input_ids[1]"),
        ({"input_ids": []}, "non-empty list"),
        ({"input_ids": [1.5]}, "not an integer"),
        ({"input_ids": [True]}, "not an integer"),
        ({"sampling_params": {}}, "missing prompt"),
        ({"text": ""}, "missing prompt"),
    ],
)
def test_bad_generate_bodies_are_refused_with_a_reason(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        prompt_of_generate(body, TINY_VOCAB_SIZE)


def test_body_decoding_and_chat_prompts() -> None:
    for raw in (b"", b"{", b"[1]", b'"x"'):
        with pytest.raises(BadRequest):
            decode_body(raw)
    assert prompt_of_generate({"text": "hi"}, None) == (None, "hi")
    assert (
        prompt_of_chat({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})
        == "ab"
    )
    with pytest.raises(BadRequest, match="role"):
        prompt_of_chat({"messages": ["x"]})


def test_identity_sources_in_order_and_session_params_are_removed() -> None:
    body: dict[str, Any] = {"saga": {"workflow_id": "w", "step": 2, "tenant_id": "t"}, "routing_key": "other"}
    ident = identify(body, {})
    assert (ident.workflow_id, ident.step, ident.tenant_id, ident.source) == ("w", 2, "t", "saga")
    assert "saga" not in body
    tag = CallTag(workflow_id="wf", node_id="r0/1", step=3, agent_type="coder")
    ident = identify({"kv_hints": encode_call_tag(tag, message_id="wf:3")}, {})
    assert (ident.workflow_id, ident.step, ident.agent_type, ident.source) == ("wf", 3, "coder", "kv_hints")
    assert identify({"routing_key": "rk"}, {"X-SMG-Routing-Key": "h"}).workflow_id == "rk"
    assert identify({}, {"X-SMG-Routing-Key": "h"}).source == "header"
    body = {"session_params": {"id": "s1"}, "rid": "x:4"}
    ident = identify(body, {})
    assert (ident.workflow_id, ident.source, ident.step) == ("s1", "session", 4)
    assert "session_params" not in body  # a worker answers 400 for a session it never opened
    assert identify({}, {"X-Session-ID": "s2"}).workflow_id == "s2"
    assert (identify({"rid": "agent-7:12"}, {}).workflow_id, identify({"rid": "agent-7:12"}, {}).step) == (
        "agent-7",
        12,
    )
    own = identify({"rid": "no-step"}, {})
    assert own.is_own
    with pytest.raises(BadRequest):
        identify({"saga": {"workflow_id": "x" * 300}}, {})


def test_policies_we_lack_get_a_clear_error() -> None:
    for policy in ("random", "power_of_two", "manual", "nonsense"):
        with pytest.raises(SystemExit, match=f"--policy {policy}"):
            config_from_args(parser().parse_args(["--policy", policy]))
    with pytest.raises(InvalidSettings):
        scheduler_settings("saga", {"no_such_setting": 1})
    base = scheduler_settings("cache_aware", {})
    assert (base.placement, base.fairness, base.stealing, base.predictions) == (
        "cache_aware",
        None,
        None,
        False,
    )
    saga = scheduler_settings("saga", {"admission": {"enabled": True}})
    assert saga.placement == "saga" and saga.admission.enabled


def test_every_flag_is_explained_in_help() -> None:
    for action in parser()._actions:
        assert action.help, action.option_strings


def test_metrics_exposition_parses_and_every_family_has_help() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics = RouterMetrics()
    metrics.requests.labels("/generate", "200").inc()
    metrics.task_seconds.labels("t").observe(3.0)
    metrics.call_tokens(100, 60)
    text = metrics.exposition().decode()
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= {"saga_router_requests", "saga_router_task_completion_seconds"}
    assert all(f.documentation for f in families)
    assert "saga_router_cached_token_ratio 0.6" in text
    assert "_created" not in text


def test_grafana_dashboard_reads_only_metrics_the_router_exports() -> None:
    import json
    import re
    from pathlib import Path

    import saga_router

    dashboard = json.loads((Path(saga_router.__file__).parent / "grafana_dashboard.json").read_text())
    exported = {f.name for f in RouterMetrics().registry.collect()}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"saga_router_[a-z_]+", target["expr"]))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    bases = {next((u[: -len(s)] for s in suffixes if u.endswith(s)), u) for u in used}
    assert bases <= exported, bases - exported
    assert len(dashboard["panels"]) >= 10


@pytest.mark.parametrize(
    ("body", "cap"),
    [
        ({"text": "a", "sampling_params": {"max_new_tokens": 8}}, 8),
        ({"messages": [], "max_tokens": 32}, 32),
        ({"messages": [], "max_completion_tokens": 5}, 5),
        ({"text": "a", "sampling_params": {"max_new_tokens": 0}}, None),  # a pre-fill: no cap to price
        ({"text": "a", "sampling_params": {"max_new_tokens": True}}, None),
        ({"text": "a", "sampling_params": "bad"}, None),
        ({"text": "a"}, None),
    ],
)
def test_the_request_cap_on_generated_tokens_is_read(body: dict[str, Any], cap: int | None) -> None:
    assert max_output_tokens(body) == cap
