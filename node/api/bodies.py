"""Request bodies of submissions: CBOR or JSON, one envelope or a batch (PROTOCOL.md §5).

A batch is parsed element by element so one bad envelope gets its own error
in the results and does not sink the others. Sizes are checked before any
decoding (P6): the body by aiohttp's client_max_size, the batch count from the
CBOR array header or the JSON list before any element is parsed.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from ledger import encoding
from ledger.errors import LedgerError, Malformed, TooLarge
from ledger.events import Envelope, envelope_from_parts, parse_envelope

Item = Envelope | LedgerError


def _content_type(request: web.Request) -> str:
    ct = request.content_type
    if ct in ("application/cbor", "application/json"):
        return ct
    raise Malformed("bad_content_type", "send application/cbor (envelope bytes) or application/json")


async def _body(request: web.Request) -> bytes:
    body = await request.read()
    if not body:
        raise Malformed("bad_request", "request body is empty")
    return body


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise Malformed("malformed_envelope", f"{name} must be a standard base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("malformed_envelope", f"{name} is not valid standard base64 (RFC 4648 §4, with padding)") from None


def _json_envelope(obj: Any) -> Envelope:
    if not isinstance(obj, dict):
        raise Malformed("malformed_envelope", 'an envelope is {"event": base64, "sig": base64}')
    for key in obj:
        if key not in ("event", "sig"):
            raise Malformed("unknown_field", f"unknown envelope key {key!r}")
    if "event" not in obj or "sig" not in obj:
        raise Malformed("malformed_envelope", "an envelope needs event and sig")
    return envelope_from_parts(_b64(obj["event"], "event"), _b64(obj["sig"], "sig"))


_UTF8 = ("utf-8", "utf8")


def json_doc(body: bytes, charset: str | None = None) -> Any:
    """Parse a JSON request body: UTF-8 only (RFC 8259 §8.1); raises Malformed, never anything else.

    `charset` is the Content-Type's parameter, if any: another one is refused
    (`bad_content_type`) rather than guessed at. Nesting past the parser's
    recursion limit is `malformed_json` like any other bad JSON.
    """
    if charset is not None and charset.lower() not in _UTF8:
        raise Malformed("bad_content_type", f"JSON bodies are UTF-8 (RFC 8259 §8.1), not {charset[:40]!r}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Malformed("malformed_json", f"JSON body is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise Malformed("malformed_json", "JSON body nests too deeply") from None
    except ValueError as e:
        raise Malformed("malformed_json", f"body is not valid JSON: {e}") from None


def _json(request: web.Request, body: bytes) -> Any:
    return json_doc(body, request.charset)


def _guard(fn: Any, *args: Any) -> Item:
    try:
        return fn(*args)
    except LedgerError as e:
        return e


async def single(request: web.Request) -> Envelope:
    """The one envelope of a POST /v1/events; raises LedgerError."""
    ct = _content_type(request)
    body = await _body(request)
    if ct == "application/cbor":
        return parse_envelope(body)
    return _json_envelope(_json(request, body))




async def single_checked(request: web.Request, workers: Any = None, busy: bool = False) -> tuple[Envelope, bool]:
    """The one envelope of a POST /v1/events and whether its signature was checked too: a CBOR
    envelope goes to the worker processes (node/workers.py) when they run and the node is busy
    with single events (more than `singles_inline_max` at once, docs/api.md): on 2 cores the
    loop's ~60 µs of parse and verify beat a worker's round trip, and a wait behind another
    client's batch part in the worker, at every load measured. Raises LedgerError."""
    ct = _content_type(request)
    body = await _body(request)
    if ct == "application/cbor":
        if busy and workers is not None and workers.ready:
            return await workers.check_one(body), True
        return parse_envelope(body), False
    return _json_envelope(_json(request, body)), False


def _cbor_array_items(body: bytes, batch_max: int) -> list[bytes]:
    """Split a definite-length CBOR array into its elements' exact bytes (heads only: nothing is decoded)."""
    head = body[0]
    if head >> 5 != 4:
        raise Malformed("malformed_cbor", "a batch is a CBOR array of envelopes")
    info = head & 0x1F
    if info < 24:
        count, offset = info, 1
    elif info in (24, 25, 26, 27):
        width = 1 << (info - 24)
        if len(body) < 1 + width:
            raise Malformed("malformed_cbor", "truncated array header")
        count, offset = int.from_bytes(body[1 : 1 + width], "big"), 1 + width
        if count < (24 if width == 1 else 1 << (8 * width // 2)):
            raise Malformed("not_canonical", "array length is not in its shortest form")
    else:
        raise Malformed("not_canonical", "a batch must be a definite-length array")
    if count > batch_max:
        raise TooLarge("batch_too_large", f"batch holds {count} envelopes, at most {batch_max}")
    items = []
    for _ in range(count):
        # each element is bounded like a whole envelope (ledger.encoding.scan): one level less deep
        end = encoding.scan(body, offset, depth_max=encoding.DEPTH_MAX - 1)
        items.append(body[offset:end])
        offset = end
    if offset != len(body):
        raise Malformed("not_canonical", "trailing bytes after the batch array")
    return items


async def batch(request: web.Request, batch_max: int, workers: Any = None) -> tuple[list[Item], bool]:
    """The envelopes of a POST /v1/events/batch, each parsed or its error, and whether their
    signatures were checked too (a CBOR batch sent to the worker processes, node/workers.py)."""
    ct = _content_type(request)
    body = await _body(request)
    if ct == "application/cbor":
        raws = _cbor_array_items(body, batch_max)
        if workers is not None and workers.worth(len(raws)):
            return await workers.check_batch(raws), True
        return [_guard(parse_envelope, raw) for raw in raws], False
    doc = _json(request, body)
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise Malformed("malformed_json", 'a JSON batch is {"events": [envelope, ...]}')
    for key in doc:
        if key != "events":
            raise Malformed("unknown_field", f"unknown batch key {key!r}")
    if len(doc["events"]) > batch_max:
        raise TooLarge("batch_too_large", f"batch holds {len(doc['events'])} envelopes, at most {batch_max}")
    return [_guard(_json_envelope, obj) for obj in doc["events"]], False
