"""Loaded by every interpreter started with this directory on PYTHONPATH (CPU SGLang workers only).

Activates saga_sgl's import-only CPU stubs (see saga_sgl/_cpu_shims/__init__.py for why). Spawned
SGLang scheduler/detokenizer processes inherit PYTHONPATH, so the stubs reach them too.
"""

import os
import sys

try:
    from transformers.utils.import_utils import is_torchvision_available
except ImportError:  # an interpreter without transformers (e.g. pip itself): nothing to shim
    pass
else:
    is_torchvision_available()  # cache False before the torchvision stub becomes visible
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "stubs"))
