"""Errors the SDK raises, sorted by whose fault they are (STYLE P5).

    AtsError(code, message, status, retry_after_s)   the node (or a local pre-check) refused
    └── AtsUnreachable                               no answer after every retry
    AuditFailed(reason)                              a proof or signature did not check out

`code` is the node's stable error code (PROTOCOL.md §5, ledger/errors.py
CODES). `status` is the HTTP status, or None when the error was found locally
before sending (the same schema check the node would run) or no answer came.
An AuditFailed is not an AtsError: it means the node's word was checked and
found wrong (or missing), which callers must not treat as a transient refusal.
"""

from __future__ import annotations

from typing import Any


class AtsError(Exception):
    """The node refused a request, with its stable `code` and HTTP `status`."""

    def __init__(self, code: str, message: str, status: int | None = None, retry_after_s: float | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s

    @classmethod
    def from_response(cls, status: int, body: Any, retry_after: str | None) -> AtsError:
        """Build from an error response's status, decoded JSON body and Retry-After header."""
        code, message = f"http_{status}", "the node answered with an error but no error body"
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            code = str(err.get("code") or code)
            message = str(err.get("message") or message)
        return cls(code, message, status, parse_retry_after(retry_after))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, status={self.status!r})"


class AtsUnreachable(AtsError):
    """No answer from the node (connection refused or reset, timeout) after all retries."""

    def __init__(self, message: str):
        super().__init__("unreachable", message, None, None)


class AuditFailed(Exception):
    """Verification failed: a bad signature, a proof that does not check, or a node that cannot prove."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header in its delay-seconds form (RFC 9110 §10.2.3); else None."""
    if value is None or not value.strip().isdigit():
        return None
    return float(int(value.strip()))
