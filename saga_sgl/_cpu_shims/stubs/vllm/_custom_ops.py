"""Import-only stand-in: sglang's generic CPU rotary path imports this name but never calls it."""


def rotary_embedding(*args: object, **kwargs: object) -> None:
    raise RuntimeError("saga_sgl CPU stub: vllm._custom_ops.rotary_embedding must never be called")
