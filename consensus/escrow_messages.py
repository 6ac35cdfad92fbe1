"""Escrow peer messages: a member's ask for rights and the answer (pure: bytes in, values out).

`POST /v1/peer/escrow/ask` (a signed peer request, consensus/messages.py) carries one JSON map

    {"scope": str, "scope_id": str, "metric": str, "window": str, "start": int, "amount": int}

(exactly these six keys): the strict key (ledger.escrow.Key) and how many rights the asker would
like. The answer is `{"given": int, "id": str | null}`: what the asked node gave, and the id of the
`escrow.transfer` record it logged (the asker merges it from the giver's log to spend it).

Both sides are untrusted input: an ask comes from a peer, an answer from a peer we asked. Each is
bounded in bytes before it is parsed, and every field is checked before anything acts on it.
Decoding raises a LedgerError with one of `ERROR_CODES`; the node renders it (an ask) or counts
the answer as nothing given (an answer). Encoding is canonical: `encode_ask(decode_ask(b))`
gives back the bytes a node sends (tests/vectors/escrow.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ledger.constants import COUNTER_MAX, TIME_MS_MAX
from ledger.errors import Invalid, Malformed, TooLarge
from ledger.escrow import Key
from ledger.windows import WINDOWS, window_bounds

ASK_PATH = "/v1/peer/escrow/ask"
ASK_BODY_BYTES_MAX = 1024  # one ask, before JSON decoding
ANSWER_BYTES_MAX = 1024  # one answer, before JSON decoding
NAME_CHARS_MAX = 64  # scope, scope_id and metric
ID_HEX_CHARS = 64  # an event id in an answer
ASK_FIELDS = ("scope", "scope_id", "metric", "window", "start", "amount")
ANSWER_FIELDS = ("given", "id")
# every code decode_ask / decode_answer raise (ledger/errors.py documents them)
ERROR_CODES = ("body_too_large", "malformed_json", "invalid_body")


@dataclass(frozen=True)
class Ask:
    """A member asks for `amount` rights of one strict key."""

    key: Key
    amount: int


@dataclass(frozen=True)
class Answer:
    """What an asked member gave (0: nothing), and the id of its transfer record (hex)."""

    given: int
    id: str | None = None


def _json(body: bytes, bytes_max: int, what: str) -> Any:
    if len(body) > bytes_max:
        raise TooLarge("body_too_large", f"{what} is at most {bytes_max} bytes")
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Malformed("malformed_json", f"JSON body is not UTF-8: {e.reason} at byte {e.start}") from None
    except RecursionError:
        raise Malformed("malformed_json", "JSON body nests too deeply") from None
    except ValueError as e:
        raise Malformed("malformed_json", f"body is not valid JSON: {e}") from None


def _is_name(v: object) -> bool:
    return isinstance(v, str) and 0 < len(v) <= NAME_CHARS_MAX


def check_ask(doc: object) -> Ask:
    """An ask from its decoded JSON document (raises Invalid `invalid_body`)."""
    if not isinstance(doc, dict) or set(doc) != set(ASK_FIELDS):
        raise Invalid("invalid_body", f"an ask is a map of exactly {', '.join(ASK_FIELDS)}")
    scope, scope_id, metric, window, start, amount = (doc[f] for f in ASK_FIELDS)
    if not (_is_name(scope) and _is_name(scope_id) and _is_name(metric)) or window not in WINDOWS:
        raise Invalid("invalid_body", "scope, scope_id and metric are names; window one of " + ", ".join(WINDOWS))
    if type(start) is not int or not 0 <= start <= TIME_MS_MAX or window_bounds(window, start)[0] != start:
        raise Invalid("invalid_body", "start is the first ms of a window")
    if type(amount) is not int or not 1 <= amount <= COUNTER_MAX:
        raise Invalid("invalid_body", f"amount is a positive integer of at most {COUNTER_MAX}")
    return Ask((scope, scope_id, metric, window, start), amount)


def decode_ask(body: bytes) -> Ask:
    """Untrusted bytes of an ask -> Ask (raises body_too_large, malformed_json or invalid_body)."""
    return check_ask(_json(body, ASK_BODY_BYTES_MAX, "an ask"))


def encode_ask(ask: Ask) -> bytes:
    """The bytes a node sends (the field order of ASK_FIELDS)."""
    body = json.dumps(dict(zip(ASK_FIELDS, (*ask.key, ask.amount)))).encode()
    if len(body) > ASK_BODY_BYTES_MAX:
        raise TooLarge("body_too_large", f"an ask is at most {ASK_BODY_BYTES_MAX} bytes")
    return body


def decode_answer(body: bytes) -> Answer:
    """Untrusted bytes of a peer's answer -> Answer (raises like decode_ask)."""
    doc = _json(body, ANSWER_BYTES_MAX, "an answer")
    if not isinstance(doc, dict) or set(doc) != set(ANSWER_FIELDS):
        raise Invalid("invalid_body", f"an answer is a map of exactly {', '.join(ANSWER_FIELDS)}")
    given, id_ = doc["given"], doc["id"]
    if type(given) is not int or not 0 <= given <= COUNTER_MAX:
        raise Invalid("invalid_body", f"given is an integer from 0 to {COUNTER_MAX}")
    if given == 0 and id_ is None:
        return Answer(0)
    if given == 0 or not isinstance(id_, str) or len(id_) != ID_HEX_CHARS or id_.strip("0123456789abcdef"):
        raise Invalid("invalid_body", "a positive given names its transfer's id (64 hex), nothing given no id")
    return Answer(given, id_)


def encode_answer(answer: Answer) -> bytes:
    return json.dumps({"given": answer.given, "id": answer.id}).encode()


def answer_doc(answer: Answer) -> dict[str, Any]:
    """The answer as the JSON map the node returns."""
    return {"given": answer.given, "id": answer.id}
