"""Errors of the ledger, sorted by cause, each with a stable code.

    LedgerError(code, message, status_hint, details)
    ├── Malformed        400  bytes that do not parse (malformed_cbor, not_canonical, ...)
    ├── BadSignature     401  bad_signature
    ├── NotFound         404  event_not_found, origin_not_found
    ├── TimedOut         408  body_timeout
    ├── Conflict         409  stale_timestamp, replayed
    ├── TooLarge         413  body_too_large, batch_too_large
    ├── Invalid          422  invalid_body, unknown_kind, bad_range, ...
    ├── Forbidden        403  not_authority (a policy record from a key that may not sign it)
    ├── OverBudget       429  budget_exceeded, throttled, suspended (details["retry_after_ms"])
    └── NotReady         503  not_ready, read_only
    InvariantViolation   500  our own bug: the node goes read-only

Codes are part of the API: never rename or reuse one. `CODES` lists them all,
and tests check that the docs list every one.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """An error with a stable snake_case `code` and the HTTP status it maps to."""

    status_hint = 500

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None):
        if code not in CODES:
            raise ValueError(f"unregistered error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class Malformed(LedgerError):
    status_hint = 400


class BadSignature(LedgerError):
    status_hint = 401


class NotFound(LedgerError):
    status_hint = 404


class Conflict(LedgerError):
    status_hint = 409


class TooLarge(LedgerError):
    status_hint = 413


class Invalid(LedgerError):
    status_hint = 422


class TimedOut(LedgerError):
    """The client was too slow: a request body that did not arrive in time."""

    status_hint = 408


class OverBudget(LedgerError):
    status_hint = 429


class NotReady(LedgerError):
    status_hint = 503


class InvariantViolation(LedgerError):
    """Our own bug: a broken invariant. The node stops accepting writes."""

    status_hint = 500

    def __init__(self, what: str):
        super().__init__("internal", f"invariant violated: {what}")


class Forbidden(LedgerError):
    """A signer that may not do this: say, a vote by a key that is not a governance authority."""

    status_hint = 403


class UpstreamError(LedgerError):
    """An LLM upstream that cannot be reached, hangs or answers garbage (the gateway's 502 and 504)."""

    status_hint = 502


def check(cond: object, what: str) -> None:
    """Raise InvariantViolation unless cond holds (unlike assert, survives python -O)."""
    if not cond:
        raise InvariantViolation(what)


# Every code, with the class that raises it. Append only.
CODES: dict[str, str] = {
    # 400
    "malformed_cbor": "Malformed",
    "malformed_json": "Malformed",
    "malformed_envelope": "Malformed",
    "not_canonical": "Malformed",
    "cbor_tag": "Malformed",  # any CBOR tag, shared references (28/29) included (PROTOCOL.md §2)
    "cbor_too_deep": "Malformed",  # arrays and maps nested deeper than the contract needs
    "cbor_too_many_items": "Malformed",
    "unknown_field": "Malformed",
    "bad_request": "Malformed",
    "bad_content_type": "Malformed",
    "bad_content_encoding": "Malformed",  # a body that does not decode under its Content-Encoding
    # 401
    "bad_signature": "BadSignature",
    # 404
    "event_not_found": "NotFound",
    "origin_not_found": "NotFound",
    "not_found": "NotFound",
    "method_not_allowed": "Malformed",  # rendered with status 405
    "expectation_failed": "Malformed",  # rendered with status 417: an Expect: header other than 100-continue
    # 409
    "stale_timestamp": "Conflict",
    "future_timestamp": "Conflict",
    "replayed": "Conflict",
    # 413
    "body_too_large": "TooLarge",
    "batch_too_large": "TooLarge",
    "event_too_large": "TooLarge",
    # 422
    "invalid_event": "Invalid",
    "invalid_body": "Invalid",
    "unknown_kind": "Invalid",
    "unsupported_version": "Invalid",
    "unknown_agent": "Invalid",
    "bad_range": "Invalid",
    "bad_parameter": "Invalid",
    "amount_out_of_range": "Invalid",  # an amount or time past the node's documented bound
    # 429
    "budget_exceeded": "OverBudget",
    "throttled": "OverBudget",
    # 503
    "not_ready": "NotReady",
    "read_only": "NotReady",
    "storage_error": "NotReady",  # SQLite failed on this batch (disk full, I/O): rolled back, retry
    # 500
    "internal": "InvariantViolation",
    # checkpoints and signed notes (ledger/checkpoint.py)
    "malformed_note": "Malformed",
    "malformed_checkpoint": "Malformed",
    "unknown_key": "BadSignature",
    # plans, multipliers and reputation (ledger/plans.py, ledger/multipliers.py)
    "unknown_plan": "Invalid",
    "invalid_policy": "Invalid",
    # governance (ledger/governance.py)
    "not_authority": "Forbidden",
    "proposal_not_found": "NotFound",
    "proposal_expired": "Conflict",
    # budgets and runs (node/budgets.py)
    "suspended": "OverBudget",
    "too_many_runs": "OverBudget",
    "unknown_run": "Invalid",
    "run_exists": "Conflict",
    "tool_not_allowed": "Invalid",
    "run_limit_exceeded": "Invalid",
    # replication (node/api/peer.py)
    "not_anchored": "NotFound",
    "peer_request_replayed": "Conflict",  # a signed peer request presented twice (consensus.ReplayGuard)
    # usage reports (node/api/reports.py)
    "unknown_scope": "NotFound",
    "scope_not_found": "NotFound",
    "bad_period": "Invalid",
    # the owner's dashboard (node/api/dashboard.py)
    "token_required": "BadSignature",  # no dashboard token, or a wrong one
    "dashboard_token_unset": "Forbidden",
    # strict mode: budget rights in escrow (ledger/escrow.py, node/escrow.py)
    "no_rights": "OverBudget",
    "not_member": "Forbidden",
    "insufficient_rights": "Conflict",
    "not_strict": "Invalid",
    # gateway credentials (ledger/credentials.py, PROTOCOL.md §6.1): all 401; no token at all is token_required
    "invalid_token": "BadSignature",
    "token_signature": "BadSignature",
    "token_audience": "BadSignature",
    "token_expired": "BadSignature",
    "token_not_yet_valid": "BadSignature",
    "token_lifetime": "BadSignature",
    # metering in the path (PROTOCOL.md §6; node/budgets.py, node/gateway/)
    "not_meter": "Forbidden",
    "cost_mismatch": "Invalid",
    "unknown_model": "NotFound",
    "prompt_too_large": "TooLarge",
    "invalid_request": "Malformed",  # a gateway body that is not a JSON object, or whose fields have the wrong types
    "upstream_unreachable": "UpstreamError",
    "upstream_timeout": "UpstreamError",
    "upstream_bad_response": "UpstreamError",
    "task_not_found": "NotFound",
    # hostile clients and an unwell node (node/httpserver.py, node/api/info.py)
    "malformed_http": "Malformed",  # the HTTP parser refused the request (request line, headers, chunking)
    "header_too_large": "Malformed",  # a request line or header over http_header_bytes_max, or too many headers
    "body_timeout": "TimedOut",  # the body did not arrive within http_body_timeout_ms
    "too_many_connections": "NotReady",  # over connections_max
    "too_many_client_connections": "OverBudget",  # over connections_per_client_max from one address (429)
    "disk_full": "NotReady",  # /healthz: data_dir has less than disk_free_bytes_min free, or a commit found it full
    "write_failing": "NotReady",  # /healthz: the last commit failed (storage error) and none succeeded since
    # owner budgets per scope (ledger/scoped.py)
    "invalid_scope": "Invalid",
    "unknown_metric": "Invalid",
    "unknown_window": "Invalid",
    "invalid_limit": "Invalid",
    "effective_in_past": "Invalid",
    "budget_exists": "Conflict",
    "budget_not_found": "Invalid",
    # readable names of agents and users (agent.register name, user_name)
    "name_taken": "Conflict",
    "unknown_name": "NotFound",
    # who may read what (node/readauth.py, ledger/readgrants.py)
    "read_token_required": "BadSignature",
    "bad_token": "BadSignature",
    "token_revoked": "BadSignature",
    "token_scope": "Forbidden",
}
