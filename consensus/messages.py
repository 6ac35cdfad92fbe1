"""Peer request authentication: what a node signs to prove a request is its own (pure).

A peer request carries four headers, and optionally a fifth:

    X-ATS-Node       the requester's public key, 64 hex digits
    X-ATS-Time       the request time, ms since the Unix epoch, decimal
    X-ATS-Nonce      32 lowercase hex digits (16 random bytes), new for every request
    X-ATS-Signature  standard base64 Ed25519 signature
    X-ATS-Advertise  optional: the URL at which the requester listens

The signature covers `b"ats-peer/v2\\n"` (its own domain prefix, so it can never
be mistaken for an event or a note signature), the method, the path with its
query, the time, the nonce, the advertised URL (empty when absent) and the
SHA-256 of the body. So every header a receiving node acts on is signed: a
captured request cannot be sent to another path, with another body or with
another advertised URL. The time bounds how long a request can be presented
and the nonce, remembered by the receiver for that long (`ReplayGuard`), makes
each request count once.

Rolling upgrades from 0.1 (`ats-peer/v1`: method, path, time and body hash signed; no nonce, the
advertised URL unsigned). For one release a node may speak both (`peer_protocol_v1`, on by
default; docs/operations.md#upgrades):

- it signs each request both ways: `X-ATS-Signature` holds the v1 signature (what a 0.1 node
  checks) and `X-ATS-Signature-V2` the v2 one (what this release checks first);
- it accepts a v1 request (no `X-ATS-Nonce`), but acts on nothing its signature does not cover:
  the advertised URL of a v1 request is ignored. Its replay key is the hash of its signature, so
  an identical v1 request counts once; a v2 request records the hash of the v1 signature it also
  carries, so stripping its v2 headers does not make it count twice.

With `peer_protocol_v1` off a node signs and accepts v2 only: `X-ATS-Signature` is the v2 one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import re
from dataclasses import dataclass
from typing import Mapping

from ledger.errors import BadSignature, Conflict
from ledger.signing import sign_raw, verify_raw

PEER_SIGNING_PREFIX = b"ats-peer/v2\n"
PEER_SIGNING_PREFIX_V1 = b"ats-peer/v1\n"
FRONTIER_ORIGINS_MAX = 4096  # origins in one frontier answer
FRONTIER_BYTES_MAX = 8 * 1024 * 1024  # one frontier answer, before JSON decoding
PEERS_EXCHANGED_MAX = 64  # peer URLs in one frontier answer
FORKS_EXCHANGED_MAX = 16  # fork evidence records in one frontier answer
NONCE_BYTES = 16
ADVERTISE_CHARS_MAX = 1024  # an advertised URL, longer is refused
PEER_HEADERS = ("X-ATS-Node", "X-ATS-Time", "X-ATS-Nonce", "X-ATS-Signature")
_NONCE_RE = re.compile(r"[0-9a-f]{%d}" % (2 * NONCE_BYTES))
_PRINTABLE_RE = re.compile(r"[\x21-\x7e]*")


@dataclass(frozen=True)
class SignedRequest:
    """What a verified peer request says: who, when, which nonce, and where it listens."""

    node: bytes
    time_ms: int
    nonce: str  # v1: the first 16 bytes of SHA-256(signature), hex
    advertise: str | None  # v1: always None (not signed, so not acted on)
    version: int = 2
    aliases: tuple[str, ...] = ()  # more replay keys: a v2 request's v1 signature hash


def _sig_key(sig: bytes) -> str:
    return hashlib.sha256(sig).digest()[:NONCE_BYTES].hex()


def request_message_v1(method: str, path_qs: str, time_ms: int, body: bytes) -> bytes:
    """The bytes an `ats-peer/v1` signature covers (release 0.1)."""
    return PEER_SIGNING_PREFIX_V1 + f"{method.upper()} {path_qs}\n{time_ms}\n".encode() + hashlib.sha256(body).digest()


def request_message(method: str, path_qs: str, time_ms: int, nonce: str, advertise: str | None, body: bytes) -> bytes:
    """The bytes a peer request's signature covers (docs/protocol.md §11)."""
    return (
        PEER_SIGNING_PREFIX
        + f"{method.upper()} {path_qs}\n{time_ms}\n{nonce}\n{advertise or ''}\n".encode()
        + hashlib.sha256(body).digest()
    )


_TIME_RE = re.compile(r"(0|[1-9][0-9]{0,15})")


def check_peer_request(headers: Mapping[str, str], method: str, path_qs: str, body: bytes, now_ms: int,
                       skew_ms: int, accept_v1: bool = False) -> SignedRequest:
    """The signed request if the headers sign this request within the skew.

    Raises BadSignature("bad_signature"). Replays (ReplayGuard) and admission
    (is this node one we replicate with?) are the caller's questions. accept_v1:
    a request without X-ATS-Nonce is checked as ats-peer/v1 (module docstring).
    """
    try:
        node = bytes.fromhex(headers["X-ATS-Node"])
        time_text = headers["X-ATS-Time"]
        v1_sig = base64.b64decode(headers["X-ATS-Signature"], validate=True)
        v2_text = headers.get("X-ATS-Signature-V2")
        sig = base64.b64decode(v2_text, validate=True) if v2_text is not None else v1_sig
    except (KeyError, ValueError, binascii.Error):
        raise BadSignature("bad_signature", "peer requests carry X-ATS-Node, X-ATS-Time, X-ATS-Nonce and X-ATS-Signature") from None
    if not _TIME_RE.fullmatch(time_text):  # one spelling per time: what is signed is what is read
        raise BadSignature("bad_signature", "X-ATS-Time must be a decimal number of ms without sign, spaces or leading zeros")
    time_ms = int(time_text)
    nonce = headers.get("X-ATS-Nonce")
    if nonce is None:
        if not accept_v1:
            raise BadSignature("bad_signature", "peer request has no X-ATS-Nonce: the requester speaks ats-peer/v1, "
                                                "this node ats-peer/v2 only (peer_protocol_v1 is off): upgrade it")
        if abs(now_ms - time_ms) > skew_ms:
            raise BadSignature("bad_signature", "peer request time is outside the allowed skew")
        if len(node) != 32 or not verify_raw(request_message_v1(method, path_qs, time_ms, body), v1_sig, node):
            raise BadSignature("bad_signature", "peer request signature (ats-peer/v1) does not verify")
        return SignedRequest(node, time_ms, _sig_key(v1_sig), None, version=1)
    if not _NONCE_RE.fullmatch(nonce):
        raise BadSignature("bad_signature", f"X-ATS-Nonce must be {2 * NONCE_BYTES} lowercase hex digits")
    advertise = headers.get("X-ATS-Advertise")
    if advertise is not None and (len(advertise) > ADVERTISE_CHARS_MAX or not _PRINTABLE_RE.fullmatch(advertise)):
        raise BadSignature("bad_signature", f"X-ATS-Advertise must be a URL of at most {ADVERTISE_CHARS_MAX} characters")
    if abs(now_ms - time_ms) > skew_ms:
        raise BadSignature("bad_signature", "peer request time is outside the allowed skew")
    message = request_message(method, path_qs, time_ms, nonce, advertise, body)
    if len(node) != 32 or not verify_raw(message, sig, node):
        raise BadSignature("bad_signature", "peer request signature does not verify")
    aliases = (_sig_key(v1_sig),) if v2_text is not None else ()
    return SignedRequest(node, time_ms, nonce, advertise or None, aliases=aliases)


def peer_headers(method: str, path_qs: str, body: bytes, now_ms: int, node: bytes, seed: bytes, nonce: bytes,
                 advertise: str | None = None, v1_compat: bool = False) -> dict[str, str]:
    """The headers that sign a peer request as node's (seed: its private key seed; nonce: 16 fresh random
    bytes; advertise: the URL to send as X-ATS-Advertise, signed with the rest). v1_compat: also sign it
    as ats-peer/v1 for nodes of release 0.1 (module docstring)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a peer request nonce is {NONCE_BYTES} bytes")
    sig = sign_raw(request_message(method, path_qs, now_ms, nonce.hex(), advertise, body), seed)
    headers = {"X-ATS-Node": node.hex(), "X-ATS-Time": str(now_ms), "X-ATS-Nonce": nonce.hex(),
               "X-ATS-Signature": base64.b64encode(sig).decode()}
    if v1_compat:
        headers["X-ATS-Signature-V2"] = headers["X-ATS-Signature"]
        headers["X-ATS-Signature"] = base64.b64encode(sign_raw(request_message_v1(method, path_qs, now_ms, body), seed)).decode()
    if advertise:
        headers["X-ATS-Advertise"] = advertise
    return headers


class ReplayGuard:
    """Remembers the (node, nonce) of every accepted peer request while its time is within the
    window, so that each signed request is acted on once; bounded in entries.

    A request older than the window is refused by the time check, so it can be forgotten. When the
    table is full, the entry with the oldest time is forgotten early and the guard refuses every
    request at or before that time from then on (`floor_ms`): it never forgets a request it would
    still accept. Honest requests are fresh (their time is now, within network delay and clock
    skew), so the floor only refuses them if the table turns over faster than that.

    The table lives in memory. A node starts its guard with `floor_ms` at its start time, so a
    request captured before a restart cannot be replayed after it.
    """

    def __init__(self, window_ms: int, entries_max: int, floor_ms: int = -1):
        if window_ms < 0 or entries_max < 1:
            raise ValueError("window_ms must not be negative and entries_max must be at least 1")
        self.window_ms, self.entries_max = window_ms, entries_max
        self.floor_ms = floor_ms
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[int, bytes]] = []  # heap: the oldest time first

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, request: SignedRequest, now_ms: int) -> None:
        """Remember this request; raises Conflict("peer_request_replayed") if it was seen before
        (or may have been: at or before floor_ms)."""
        self._expire(now_ms)
        keys = [request.node + bytes.fromhex(n) for n in (request.nonce, *request.aliases)]
        if any(k in self._seen for k in keys) or request.time_ms <= self.floor_ms:
            raise Conflict("peer_request_replayed", "this signed peer request was already received (same node and "
                                                    "X-ATS-Nonce); sign every request anew")
        for key in keys:
            while len(self._seen) >= self.entries_max:
                time_ms, old = heapq.heappop(self._by_time)
                self._seen.discard(old)
                self.floor_ms = max(self.floor_ms, time_ms)
            self._seen.add(key)
            heapq.heappush(self._by_time, (request.time_ms, key))

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.window_ms  # older requests fail the time check: no need to remember them
        while self._by_time and self._by_time[0][0] < horizon:
            self._seen.discard(heapq.heappop(self._by_time)[1])
