"""Import-only compatibility shims that let SGLang 0.5.23's generic torch path run on a CPU-only box.

Why they exist (research/sglang-0.5.23.md §7b-7c):

* ``torchvision``: sglang's config modules import ``torchvision.transforms`` at import time
  (``configs/deepseek_ocr.py``, ``multimodal/internvl_utils.py``) although a text model never uses
  it, and PyPI has no CPU build of torchvision (the CUDA one fails with ``torchvision::nms``).
* ``vllm._custom_ops``: the generic rotary-embedding path imports ``rotary_embedding`` from it on
  devices that are not CUDA/HIP/XPU/...; the function is never called on the torch-native path.

They are used ONLY for CPU runs (tests and the CPU demo). :func:`activate` refuses to run where a
CUDA device is visible, and the worker launcher only puts :data:`SITE_DIR` on ``PYTHONPATH`` for
``--device cpu``. They must never be installed into a GPU environment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SHIM_ROOT = Path(__file__).resolve().parent
STUBS_DIR = SHIM_ROOT / "stubs"
SITE_DIR = SHIM_ROOT / "site"
"""Directory holding a ``sitecustomize.py`` that activates the stubs in spawned SGLang processes."""


def activate() -> None:
    """Make the stubs importable in *this* process (idempotent). Call before importing sglang."""
    if str(STUBS_DIR) in sys.path:
        return
    if os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1") or _cuda_available():
        raise RuntimeError(
            "saga_sgl CPU shims must not be activated on a machine with a CUDA device; "
            "use a real SGLang GPU install instead"
        )
    # transformers caches is_torchvision_available() on first call: ask it before the stub is
    # visible, or transformers would try to use the stub as a real torchvision.
    from transformers.utils.import_utils import is_torchvision_available

    is_torchvision_available()
    sys.path.append(str(STUBS_DIR))


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a spawned CPU SGLang worker: our ``sitecustomize`` first on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    parts = [str(SITE_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env
