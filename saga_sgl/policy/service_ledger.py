"""ServiceLedger: the GPU service each workflow and tenant has received (a model for AFS).

Observe/predict, separate from the ``AgentFairShare`` policy (which reads its outputs through
``WorkflowView.remaining_work_s``):

* ``admit`` a workflow with its expected GPU work (Eq. 9 at admission), ``observe_service`` the GPU
  seconds each call consumed, ``observe_expected`` when the AEG prediction changes;
* ``remaining_work_s`` = max(0, expected - consumed) (reference repo's pending work [R]);
* ``deviation_s``: Theorem 2's e_i(t) = S_i(t) - mu_i t for a share mu_i of capacity C, the quantity
  whose convergence the paper's Lyapunov argument is about; benchmarks plot it.

No I/O, no clock: every time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from saga_sgl.policy.views import TenantId, WorkflowId


@dataclass(slots=True)
class _Account:
    tenant_id: TenantId
    expected_work_s: float
    consumed_s: float = 0.0
    finished: bool = False


class ServiceLedger:
    """GPU seconds received, per workflow and per tenant."""

    def __init__(self) -> None:
        self._accounts: dict[WorkflowId, _Account] = {}
        self._tenant_service: dict[TenantId, float] = {}

    def admit(self, workflow_id: WorkflowId, tenant_id: TenantId, expected_work_s: float) -> None:
        """Open an account for a newly admitted workflow."""
        if workflow_id in self._accounts:
            raise ValueError(f"workflow {workflow_id!r} already admitted")
        self._accounts[workflow_id] = _Account(tenant_id, max(0.0, expected_work_s))
        self._tenant_service.setdefault(tenant_id, 0.0)

    def observe_service(self, workflow_id: WorkflowId, gpu_s: float) -> None:
        """A call of ``workflow_id`` consumed ``gpu_s`` GPU seconds."""
        if gpu_s < 0:
            raise ValueError(f"gpu_s must be >= 0, got {gpu_s}")
        acct = self._accounts[workflow_id]
        acct.consumed_s += gpu_s
        self._tenant_service[acct.tenant_id] += gpu_s

    def observe_expected(self, workflow_id: WorkflowId, expected_work_s: float) -> None:
        """Replace the expected total work (e.g. after the AEG prediction changed)."""
        self._accounts[workflow_id].expected_work_s = max(0.0, expected_work_s)

    def finish(self, workflow_id: WorkflowId) -> None:
        """The workflow completed; its remaining work is 0 from now on."""
        self._accounts[workflow_id].finished = True

    def remaining_work_s(self, workflow_id: WorkflowId) -> float:
        """max(0, expected - consumed); 0 once finished."""
        acct = self._accounts[workflow_id]
        return 0.0 if acct.finished else max(0.0, acct.expected_work_s - acct.consumed_s)

    def consumed_s(self, workflow_id: WorkflowId) -> float:
        """GPU seconds consumed by ``workflow_id`` so far."""
        return self._accounts[workflow_id].consumed_s

    def tenant_service_s(self, tenant_id: TenantId) -> float:
        """S_i(t): GPU seconds tenant ``tenant_id`` has received."""
        return self._tenant_service.get(tenant_id, 0.0)

    def deviation_s(self, tenant_id: TenantId, share: float, capacity: float, elapsed_s: float) -> float:
        """e_i = S_i - share x capacity x elapsed (Theorem 2); capacity in GPU-seconds per second."""
        return self.tenant_service_s(tenant_id) - share * capacity * elapsed_s

    def snapshot(self) -> dict[str, float]:
        """Bounded debug view: service per tenant."""
        return {str(t): v for t, v in sorted(self._tenant_service.items())}
