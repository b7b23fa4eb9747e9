"""A NAMED FAKE of an SGLang worker for router benchmarks and router-only tests: not a model.

``python -m saga_router.fake_backend --port P`` answers ``/generate`` (and the OpenAI routes)
at once with a fixed one-token answer shaped like SGLang 0.5.23's (``meta_info`` with prompt,
completion and cached token counts; SSE chunks then ``data: [DONE]`` when ``stream`` is set), plus
the probes routers make (``/health``, ``/server_info``, ``/model_info``, ``/v1/loads``). It exists
so that the router's own cost can be measured without a model's; every behaviour test of the router
against workers uses real SGLang workers instead.
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

from aiohttp import web

from saga_sgl.local_workers import TINY_MODEL_DIR

_ids = itertools.count()


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    ids = body.get("input_ids")
    prompt = len(ids) if isinstance(ids, list) else len(str(body.get("text", ""))) // 4 + 1
    rid = body.get("rid") or f"fake-{next(_ids)}"
    return {
        "text": "x",
        "output_ids": [7],
        "meta_info": {
            "id": rid,
            "prompt_tokens": prompt,
            "completion_tokens": 1,
            "cached_tokens": 0,
            "finish_reason": {"type": "length", "length": 1},
            "e2e_latency": 0.0,
        },
    }


async def generate(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    answer = _answer(body)
    if not body.get("stream"):
        return web.json_response(answer)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b"data: " + json.dumps(answer).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def completions(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(
        {
            "id": f"cmpl-{next(_ids)}",
            "object": "text_completion",
            "choices": [{"index": 0, "text": "x", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


async def chat(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(
        {
            "id": f"chat-{next(_ids)}",
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


def _static(payload: Any) -> Any:
    async def handle(_: web.Request) -> web.Response:
        return web.json_response(payload)

    return handle


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="")


LOADS = {
    "loads": [
        {
            "dp_rank": 0,
            "num_running_reqs": 0,
            "num_waiting_reqs": 0,
            "num_used_tokens": 0,
            "max_total_num_tokens": 4096,
            "max_running_requests": 256,
        }
    ]
}


def build_app() -> web.Application:
    app = web.Application()
    model = {"model_path": str(TINY_MODEL_DIR), "is_generation": True}
    r = app.router
    r.add_post("/generate", generate)
    r.add_post("/v1/completions", completions)
    r.add_post("/v1/chat/completions", chat)
    for path in ("/health", "/health_generate"):
        r.add_get(path, ok)
    r.add_get("/model_info", _static(model))
    r.add_get("/get_model_info", _static(model))
    r.add_get("/server_info", _static({"model_path": str(TINY_MODEL_DIR)}))
    r.add_get("/get_server_info", _static({"model_path": str(TINY_MODEL_DIR)}))
    r.add_get("/v1/loads", _static(LOADS))
    r.add_get("/get_load", _static([{"num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]))
    models = {"object": "list", "data": [{"id": str(TINY_MODEL_DIR), "object": "model"}]}
    r.add_get("/v1/models", _static(models))
    r.add_post("/flush_cache", ok)
    return app


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m saga_router.fake_backend", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, required=True, help="port to bind")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(build_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
