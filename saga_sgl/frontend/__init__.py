"""SGLang DSL integration: run agent programs on SAGA with workflow structure attached.

    import sglang as sgl
    from saga_sgl import frontend as saga

    backend = saga.SagaEndpoint("http://127.0.0.1:30000")   # a worker, sglang-router or saga router
    sgl.set_default_backend(backend)

    @saga.function
    def agent(s, task):
        s += "Task: " + task + "\\n"
        s += sgl.gen("action", max_tokens=32)
        with saga.tool("search"):
            result = run_search(s["action"])
        s += result + sgl.gen("answer", max_tokens=32)

    with saga.workflow("task-42", agent_type="react", tenant_id="acme"):
        agent.run(task="...")

Modules: ``endpoint`` (the backend), ``context`` (workflow / function / tool), ``forks`` (the fork
hook), ``recorder`` (the program graph and its bounded store), ``events`` (``POST /saga/events``).
"""

from saga_sgl.frontend.context import WorkflowScope, function, tool, workflow
from saga_sgl.frontend.endpoint import ROUTING_KEY_HEADER, ExecState, SagaEndpoint, TokenUsage
from saga_sgl.frontend.events import EventSink, SinkStats
from saga_sgl.frontend.recorder import NodeRecord, Recorder, WorkflowRecord

__all__ = [
    "ROUTING_KEY_HEADER",
    "EventSink",
    "ExecState",
    "NodeRecord",
    "Recorder",
    "SagaEndpoint",
    "SinkStats",
    "TokenUsage",
    "WorkflowRecord",
    "WorkflowScope",
    "function",
    "tool",
    "workflow",
]
