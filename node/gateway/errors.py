"""Errors on the gateway's paths, in the OpenAI error shape (PROTOCOL.md §6.2).

`{"error": {"message", "type", "param", "code"}}` with the node's stable code in `code`, so an
OpenAI client library raises its usual exception classes (AuthenticationError, RateLimitError,
NotFoundError, ...). A budget refusal is 429 with Retry-After, and `x-should-retry: false` when
waiting will not help soon (see `should_retry`), so clients do not hammer a spent budget.
"""

from __future__ import annotations

import json
import math

from aiohttp import web

from ledger.errors import LedgerError

RETRY_SOON_MS = 60_000  # a refusal that lifts within a minute is worth retrying; a longer one is not

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
          413: "invalid_request_error", 429: "insufficient_quota", 502: "api_error", 503: "api_error",
          504: "api_error"}


def should_retry(code: str, retry_after_ms: int) -> bool:
    """Throttling and short windows (events per minute) lift soon; a spent day, a suspension do not."""
    return code in ("throttled", "no_rights") or retry_after_ms <= RETRY_SOON_MS


def openai_error(status: int, code: str, message: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error response in the OpenAI shape."""
    kind = "rate_limit_error" if status == 429 and code == "throttled" else _TYPES.get(status, "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def from_ledger_error(e: LedgerError) -> web.Response:
    """A LedgerError as an OpenAI error; a 429 carries Retry-After and x-should-retry."""
    status = 405 if e.code == "method_not_allowed" else e.status_hint
    if e.code in ("upstream_timeout",):
        status = 504
    headers: dict[str, str] = {}
    if status == 429:
        retry_ms = int((e.details or {}).get("retry_after_ms", 1000))
        headers["Retry-After"] = str(max(1, math.ceil(retry_ms / 1000)))
        headers["x-should-retry"] = "true" if should_retry(e.code, retry_ms) else "false"
    elif status in (502, 504):
        headers["x-should-retry"] = "false"  # the node already decided; the client's retry would be a new call
    return openai_error(status, e.code, e.message, headers=headers)
