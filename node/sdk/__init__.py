"""The ATS client SDK: agents sign and submit events, auditors verify what nodes claim.

    AgentClient   sign events, submit them (safe retries), read balance and usage
    Auditor       verify checkpoints, inclusion and consistency proofs offline
    AtsError      the node refused (stable `code`, HTTP `status`, `retry_after_s`)
    AtsUnreachable  no answer after every retry (an AtsError)
    AuditFailed   a signature or proof did not check out (`reason`)
"""

from node.sdk.agent import AgentClient
from node.sdk.auditor import Auditor
from node.sdk.errors import AtsError, AtsUnreachable, AuditFailed

__all__ = ["AgentClient", "Auditor", "AtsError", "AtsUnreachable", "AuditFailed"]
