"""The policy core imports no host machinery: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("sglang", "aiohttp", "zmq", "msgspec", "prometheus_client", "torch")


def test_policy_and_aeg_import_no_host_libraries() -> None:
    code = (
        "import json, sys\n"
        "import saga_sgl.policy, saga_sgl.aeg, saga_sgl.clock, saga_sgl.errors\n"
        "import saga_sgl.policy.registry, saga_sgl.policy.victim_index, saga_sgl.policy.eviction.belady\n"
        "import saga_sgl.policy.stealing, saga_sgl.policy.fairness, saga_sgl.policy.service_ledger\n"
        "import saga_sgl.aeg.inference, saga_sgl.aeg.predict\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert bad == []
    assert "saga_sgl.protocol" not in loaded  # the core never imports the wire schema


def test_policy_sources_read_no_clock_and_no_module_random() -> None:
    import pathlib

    import saga_sgl.aeg
    import saga_sgl.policy

    roots = [pathlib.Path(saga_sgl.policy.__file__).parent, pathlib.Path(saga_sgl.aeg.__file__).parent]
    offenders = []
    for root in roots:
        for path in root.rglob("*.py"):
            text = path.read_text()
            for needle in (
                "time.time(",
                "time.monotonic(",
                "datetime.now(",
                "random.random(",
                "random.seed(",
                "import time",
                "print(",
            ):
                if needle in text:
                    offenders.append(f"{path.name}: {needle}")
    assert offenders == []
