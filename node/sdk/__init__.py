"""The ATS client SDK: agents sign and submit events, auditors verify what nodes claim.

    AgentClient   sign events, submit them (safe retries), read balance and usage; gateway_token()
    TaskMeter, run_metered   reserve, run, measure and record a command (ats exec, docs/gateway.md)
    Auditor       verify checkpoints, inclusion and consistency proofs offline
    AtsError      the node refused (stable `code`, HTTP `status`, `retry_after_s`)
    AtsUnreachable  no answer after every retry (an AtsError)
    AuditFailed   a signature or proof did not check out (`reason`)
"""

from node.sdk.agent import AgentClient
from node.sdk.auditor import Auditor
from node.sdk.errors import AtsError, AtsUnreachable, AuditFailed
from node.sdk.task import TaskMeter, TaskUsage, run_metered

__all__ = ["AgentClient", "Auditor", "AtsError", "AtsUnreachable", "AuditFailed", "TaskMeter", "TaskUsage", "run_metered"]
