"""The APIs the gateway speaks: OpenAI's (chat completions, embeddings) and Anthropic's Messages.

A dialect says what differs between them for metering: where the credential is, the output
bound a request asks for, how the upstream reports usage (whole and streamed), which stream
events the node added and must drop, what headers the upstream wants and the error shape.
Everything else (reservation, charge, drains, failures) is the gateway's, the same for both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from aiohttp import web

from ledger.errors import LedgerError, Malformed
from node.gateway.errors import from_ledger_error
from node.gateway.sse import TOKENS_MAX, Usage, event_data, stream_usage, usage_from

ANTHROPIC_VERSION_DEFAULT = "2023-06-01"


class StreamTracker:
    """Follows one stream's events: the usage so far, and which events to keep from the client."""

    usage: Usage | None = None
    complete: bool = False  # the final usage was seen: a drained stream may stop here

    def see(self, event: bytes) -> bool:
        """Take one whole event; True when it goes to the client."""
        raise NotImplementedError


class _OpenAIStream(StreamTracker):
    def __init__(self, client_wants_usage: bool):
        self._keep_usage = client_wants_usage

    def see(self, event: bytes) -> bool:
        found, usage_only = stream_usage(event)
        if found is not None:
            self.usage, self.complete = found, True
        return not (usage_only and not self._keep_usage)


class _AnthropicStream(StreamTracker):
    """message_start carries the input tokens, message_delta the output tokens so far (cumulative)."""

    def __init__(self) -> None:
        self._in: int | None = None
        self._out = 0

    def see(self, event: bytes) -> bool:
        if b"usage" not in event:
            return True
        data = event_data(event)
        try:
            doc = json.loads(data) if data else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            return True
        if type(doc) is not dict:
            return True
        if doc.get("type") == "message_start" and type(doc.get("message")) is dict:
            tokens_in = _anthropic_in(doc["message"].get("usage"))
            if tokens_in is not None:
                self._in = tokens_in
                self._out = _count(doc["message"]["usage"].get("output_tokens")) or 0
        elif doc.get("type") == "message_delta" and type(doc.get("usage")) is dict:
            out = _count(doc["usage"].get("output_tokens"))
            if out is not None and self._in is not None:
                self._out = out
                self.complete = True
        if self._in is not None:
            self.usage = Usage(self._in, self._out)
        return True


def _count(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value <= TOKENS_MAX else None


def _anthropic_in(usage: Any) -> int | None:
    """Input tokens of an Anthropic usage object: fresh, cache writes and cache reads all count."""
    if type(usage) is not dict:
        return None
    base = _count(usage.get("input_tokens"))
    if base is None:
        return None
    extra = [_count(usage.get(k)) for k in ("cache_creation_input_tokens", "cache_read_input_tokens")]
    return base + sum(x or 0 for x in extra)


@dataclass(frozen=True)
class Dialect:
    """One API the gateway serves."""

    name: str  # "openai" or "anthropic"

    def token(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """The headers to find the bearer token in (Anthropic clients send it as x-api-key)."""
        if self.name == "anthropic" and "Authorization" not in headers and headers.get("x-api-key"):
            return {"Authorization": f"Bearer {headers['x-api-key']}"}
        return headers

    def out_bound(self, path: str, doc: dict[str, Any], output_max: int, default: int) -> int:
        """Output tokens a request may use, at most (per choice × choices)."""
        if path == "embeddings":
            return 0
        if self.name == "anthropic":
            asked = doc.get("max_tokens")
            if type(asked) is not int or asked < 1:
                raise Malformed("invalid_request", "max_tokens must be a positive integer")
            return min(asked, output_max)
        asked = doc.get("max_completion_tokens", doc.get("max_tokens"))
        if asked is None:
            asked = default
        if type(asked) is not int or asked < 0:
            raise Malformed("invalid_request", "max_tokens must be a non-negative integer")
        n = doc.get("n", 1)
        if type(n) is not int or not 1 <= n <= 128:
            raise Malformed("invalid_request", "n must be an integer 1..128")
        return min(asked, output_max) * n

    def for_upstream(self, doc: dict[str, Any], raw: bytes, stream: bool) -> tuple[bytes, StreamTracker | None]:
        """The body to send, and the stream tracker (OpenAI streams are asked for their usage)."""
        if not stream:
            return raw, None
        if self.name == "anthropic":
            return raw, _AnthropicStream()
        options = doc.get("stream_options")
        wants = type(options) is dict and options.get("include_usage") is True
        if not wants:
            doc = {**doc, "stream_options": {**(options if type(options) is dict else {}), "include_usage": True}}
            raw = json.dumps(doc, separators=(",", ":")).encode()
        return raw, _OpenAIStream(wants)

    def usage(self, doc: Any) -> Usage | None:
        """The usage a whole (non-streamed) answer reports."""
        if self.name != "anthropic":
            return usage_from(doc)
        if type(doc) is not dict or type(doc.get("usage")) is not dict:
            return None
        tokens_in, tokens_out = _anthropic_in(doc["usage"]), _count(doc["usage"].get("output_tokens"))
        return None if tokens_in is None or tokens_out is None else Usage(tokens_in, tokens_out)

    def upstream_headers(self, key: str, request_headers: Mapping[str, str]) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if self.name == "anthropic":
            headers["anthropic-version"] = request_headers.get("anthropic-version", ANTHROPIC_VERSION_DEFAULT)
            if request_headers.get("anthropic-beta"):
                headers["anthropic-beta"] = request_headers["anthropic-beta"]
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def error(self, e: LedgerError) -> web.Response:
        """A LedgerError in this API's error shape (the node's code kept in `code`)."""
        if self.name != "anthropic":
            return from_ledger_error(e)
        response = from_ledger_error(e)  # status and the 429's Retry-After / x-should-retry headers
        status = response.status
        kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": e.message, "code": e.code}}
        headers = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "x-should-retry")}
        return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


OPENAI = Dialect("openai")
ANTHROPIC = Dialect("anthropic")

