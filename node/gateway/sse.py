"""Server-sent events as an OpenAI-compatible upstream streams them: whole events, bytes unchanged.

The gateway forwards a stream event by event, exactly as the upstream sent each one, so it can
read the usage chunk it asked for (`stream_options.include_usage`) and drop that chunk when the
client did not ask for it. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")  # an event ends at a blank line (WHATWG HTML §9.2.6)
TOKENS_MAX = 2**40  # a usage count beyond this is garbage, not a call


@dataclass(frozen=True)
class Usage:
    """Tokens an upstream reports for one call."""

    tokens_in: int
    tokens_out: int
    model: str | None = None


class SseSplitter:
    """Feed bytes, get whole events back (each with its terminator); `rest()` is what never ended."""

    def __init__(self, event_bytes_max: int):
        self._buf = bytearray()
        self._max = event_bytes_max

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        events = []
        start = 0
        for m in _END.finditer(self._buf):
            events.append(bytes(self._buf[start : m.end()]))
            start = m.end()
        del self._buf[:start]
        if len(self._buf) > self._max:  # an event that never ends: pass it on unparsed
            events.append(bytes(self._buf))
            self._buf.clear()
        return events

    def rest(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


def event_data(event: bytes) -> bytes | None:
    """The joined `data:` lines of one event (None if it has none)."""
    lines = [line for line in re.split(rb"\r\n|\n|\r", event) if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line.startswith(b"data: ") else line[5:] for line in lines)


def usage_from(doc: Any) -> Usage | None:
    """The usage an OpenAI response (or stream chunk, or embeddings response) reports, if well formed."""
    if type(doc) is not dict or type(doc.get("usage")) is not dict:
        return None
    u = doc["usage"]
    tokens_in = u.get("prompt_tokens")
    tokens_out = u.get("completion_tokens", 0)
    if type(tokens_in) is not int or type(tokens_out) is not int:
        return None
    if not (0 <= tokens_in <= TOKENS_MAX and 0 <= tokens_out <= TOKENS_MAX):
        return None
    model = doc.get("model")
    return Usage(tokens_in, tokens_out, model if type(model) is str and model else None)


def stream_usage(event: bytes) -> tuple[Usage | None, bool]:
    """(usage in this stream event, whether the event is the usage-only chunk: no choices)."""
    if b'"usage"' not in event:
        return None, False
    data = event_data(event)
    if data is None or data.strip() == b"[DONE]":
        return None, False
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, False
    usage = usage_from(doc)
    return usage, usage is not None and doc.get("choices") == []
