"""The plugin's field on SGLang's ``/v1/loads``: the cache's recent residence time.

SGLang builds one ``LoadSnapshot`` per DP rank in the scheduler process
(``SchedulerLoadInquirer.get_loads``), sends it msgpack-encoded (as a map) through shared memory or
ZMQ, and the HTTP process decodes it with ``load_snapshot.snapshot_decoder`` and answers
``/v1/loads`` from ``LoadSnapshot.to_dict``. The plugin adds one field, ``saga_residence_s``
(``protocol.LOADS_RESIDENCE_FIELD``), without forking SGLang:

* scheduler process: the ``get_loads`` hook (``hooks.py``) returns a ``SagaLoadSnapshot``, the same
  snapshot plus the field, while the process runs a saga cache that has evicted;
* every process: ``install_decoder`` (called by ``plugin.register``) makes the reader decode into
  ``SagaLoadSnapshot``, whose ``to_dict`` adds the field when it is set.

Either half alone is harmless: a stock reader drops the unknown map key, and a snapshot without the
field decodes with it unset, so the answer is SGLang's own. The field is absent (not null) when the
residence time is unknown: no eviction yet, a stock policy, or a worker without the plugin; the
router then takes it as infinite (``protocol.decode_loads_residence``).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from sglang.srt.managers import load_snapshot
from sglang.srt.managers.load_snapshot import LoadSnapshot

from saga_sgl.protocol import LOADS_RESIDENCE_FIELD, MAX_DURATION_S


class SagaLoadSnapshot(LoadSnapshot, omit_defaults=True):  # type: ignore[misc,call-arg]
    """SGLang's ``LoadSnapshot`` plus the cache's residence time (seconds; None: unknown)."""

    saga_residence_s: float | None = None

    def to_dict(self, include: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = super().to_dict(include)
        if self.saga_residence_s is not None:
            out[LOADS_RESIDENCE_FIELD] = self.saga_residence_s
        return out


def with_residence(snapshot: Any, residence_s: float) -> Any:
    """``snapshot`` carrying ``residence_s`` (unchanged when it is not a finite positive number).
    Capped at ``protocol.MAX_DURATION_S``: the rate is a decaying average, so an idle cache's
    residence time grows without bound, and any value past the horizon's maximum means the same."""
    if not (math.isfinite(residence_s) and residence_s > 0.0) or not isinstance(snapshot, LoadSnapshot):
        return snapshot
    fields = msgspec.structs.asdict(snapshot)
    fields["saga_residence_s"] = min(float(residence_s), MAX_DURATION_S)
    return SagaLoadSnapshot(**fields)


def install_decoder() -> None:
    """Decode load snapshots into ``SagaLoadSnapshot`` in this process (idempotent)."""
    decoder = load_snapshot.snapshot_decoder
    if getattr(decoder, "type", None) is not SagaLoadSnapshot:
        load_snapshot.snapshot_decoder = msgspec.msgpack.Decoder(SagaLoadSnapshot)
