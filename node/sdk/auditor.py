"""The auditor SDK: check a node's checkpoints and proofs offline, trusting only its key.

Theory of operation. The node is an untrusted source of bytes (STYLE P6). The
auditor holds one trusted thing, the node's verifier key (PROTOCOL.md §4,
"<name>+<8 hex key hash>+<base64(0x01 ‖ public key)>"), and checks everything
else with the pure code in `ledger/`:
- a checkpoint is a C2SP signed note; `ledger.checkpoint.open_checkpoint`
  verifies its signature and parses its body;
- an inclusion proof is checked with `ledger.merkle.verify_inclusion` against
  the root of a checkpoint we verified, and the leaf hash is recomputed from the
  envelope bytes (`leaf_hash`, RFC 9162 §2.1.1), whose event id is recomputed as
  SHA-256 of the event bytes: the node's `leaf_hash` field is never used;
- a consistency proof is checked with `ledger.merkle.verify_consistency`
  between two verified checkpoints (RFC 9162 §2.1.4.2).

Without a verifier key, the auditor asks /v1/node for it and says so
(`trust_on_first_use` is True, and a warning is logged): that only proves the
node is self-consistent, not that it is the node you meant. Save the key (or a
checkpoint) and pin it next time.

A consistency proof from size 0 is not asked for: a proof from the empty tree is
meaningless (the transparency-dev rule, ledger/merkle.py), every log extends the
empty one, so there is nothing to prove and `prove_consistency` says so.

Every failure raises AuditFailed(reason), including a node that refuses to give
a proof (its error code is in the reason); AtsUnreachable is raised as is, since
"no answer" is not evidence of misbehaviour.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from typing import Any

from ledger.checkpoint import Checkpoint, open_checkpoint, origin_line, parse_verifier_key
from ledger.constants import ORIGIN_PREFIX
from ledger.errors import LedgerError
from ledger.events import parse_envelope
from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from ledger.signing import verify
from node.sdk.agent import HttpTransport
from node.sdk.errors import AtsError, AtsUnreachable, AuditFailed

logger = logging.getLogger("ats.sdk.auditor")
# A library does not print by itself: the application decides where warnings go.
logging.getLogger("ats.sdk").addHandler(logging.NullHandler())

_HEX32_RE = re.compile(r"[0-9a-f]{64}")
PROOF_HASHES_MAX = 64  # an RFC 9162 proof in a tree of < 2^63 leaves has fewer hashes (P6)


def _hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX32_RE.fullmatch(value):
        raise AuditFailed(f"{what} is not 64 lowercase hex digits")
    return bytes.fromhex(value)


def _proof_hashes(doc: dict[str, Any]) -> list[bytes]:
    proof = doc.get("proof")
    if not isinstance(proof, list) or len(proof) > PROOF_HASHES_MAX:
        raise AuditFailed("proof is not a list of at most 64 hashes")
    return [_hex32(h, "a proof hash") for h in proof]


def _int_field(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if type(value) is not int or value < 0:
        raise AuditFailed(f"proof field {name!r} is not a non-negative integer")
    return value


def origin_key(cp: Checkpoint) -> bytes:
    """The origin's public key, named by its origin line (PROTOCOL.md §4)."""
    if not cp.origin.startswith(ORIGIN_PREFIX):
        raise AuditFailed(f"checkpoint origin {cp.origin!r} is not an ats-ledger origin line")
    return _hex32(cp.origin[len(ORIGIN_PREFIX) :], "checkpoint origin key")


class Auditor:
    """Verify a node's checkpoints, inclusion and consistency proofs against its verifier key."""

    def __init__(self, url: str, vkey: str | None = None, *, timeout_s: float = 10, retries: int = 2,
                 backoff_ms: int = 100, tls_ca: str = "", tls_pins: tuple[str, ...] = ()):
        self.http = HttpTransport(url, timeout_s=timeout_s, retries=retries, backoff_ms=backoff_ms,
                                  tls_ca=tls_ca, tls_pins=tls_pins)
        self.vkey = vkey
        self.trust_on_first_use = False
        self._public_key: bytes | None = None
        if vkey is not None:
            self._public_key = self._parse_vkey(vkey)

    async def __aenter__(self) -> Auditor:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.close()

    @staticmethod
    def _parse_vkey(vkey: str) -> bytes:
        try:
            name, _kh, public_key = parse_verifier_key(vkey)
        except LedgerError as e:
            raise AuditFailed(f"verifier key: {e.message}") from None
        if name != origin_line(public_key):
            raise AuditFailed(f"verifier key name {name!r} is not the origin line of its key")
        return public_key

    async def node_info(self) -> dict[str, Any]:
        """GET /v1/node (unverified: identity, vkey, origin line, version, peers)."""
        doc = await self.http.json("GET", "/v1/node")
        if not isinstance(doc, dict):
            raise AtsError("bad_response", "/v1/node is not a JSON object", 200)
        return doc

    async def trusted_key(self) -> bytes:
        """The node's public key: from the pinned vkey, else fetched from /v1/node (trust on first use)."""
        if self._public_key is None:
            vkey = (await self.node_info()).get("vkey")
            if not isinstance(vkey, str):
                raise AuditFailed("the node's /v1/node has no verifier key")
            self._public_key = self._parse_vkey(vkey)
            self.vkey = vkey
            self.trust_on_first_use = True
            logger.warning("no verifier key given: trusting the key the node reports (trust on first use): %s", vkey)
        return self._public_key

    async def _key_for(self, origin: str | None) -> bytes:
        # Another origin's checkpoint is signed by that origin, whose origin line
        # *is* its public key: it needs no vkey (PROTOCOL.md §4).
        if origin is None:
            return await self.trusted_key()
        return _hex32(origin, "origin")

    async def verify_note(self, note: str, origin: str | None = None) -> Checkpoint:
        """Open a checkpoint note (e.g. one saved earlier) with the trusted key; raises AuditFailed."""
        key = await self._key_for(origin)
        try:
            cp, _cosignatures = open_checkpoint(note, key)
        except LedgerError as e:
            raise AuditFailed(f"checkpoint does not verify: {e.code}: {e.message}") from None
        return cp

    async def checkpoint(self, origin: str | None = None) -> tuple[Checkpoint, str]:
        """Fetch the latest checkpoint (of `origin`, default the node's own) and verify its signature."""
        params = {"origin": origin} if origin else None
        try:
            note = await self.http.text("/v1/log/checkpoint", params=params)
        except AtsUnreachable:
            raise
        except AtsError as e:
            raise AuditFailed(f"node gave no checkpoint: {e.code}: {e.message}") from None
        return await self.verify_note(note, origin), note

    async def _fetch_json(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            doc = await self.http.json("GET", path, params=params)
        except AtsUnreachable:
            raise
        except AtsError as e:
            raise AuditFailed(f"node cannot prove it: {e.code}: {e.message}") from None
        if not isinstance(doc, dict):
            raise AuditFailed(f"{path} did not answer a JSON object")
        return doc

    async def _fetch_envelope(self, event_id_hex: str) -> bytes:
        doc = await self._fetch_json(f"/v1/events/{event_id_hex}")
        try:
            return base64.b64decode(doc.get("envelope", ""), validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise AuditFailed("the node's envelope is not standard base64") from None

    async def prove_inclusion(self, event_id_hex: str, cp: Checkpoint) -> dict[str, Any]:
        """Prove event id is leaf `index` of the verified checkpoint cp; returns the checked facts."""
        event_id = _hex32(event_id_hex, "event id")
        origin_hex = origin_key(cp).hex()
        doc = await self._fetch_json(
            "/v1/log/proof/inclusion", {"id": event_id_hex, "size": str(cp.size), "origin": origin_hex}
        )
        index = _int_field(doc, "index")
        if doc.get("origin") != origin_hex or doc.get("size") != cp.size:
            raise AuditFailed(f"proof is for origin {doc.get('origin')!r} size {doc.get('size')!r}, not the checkpoint's")
        proof = _proof_hashes(doc)
        envelope = await self._fetch_envelope(event_id_hex)
        try:
            parsed = parse_envelope(envelope)
            verify(parsed.event.raw, parsed.sig, parsed.event.signer)
        except LedgerError as e:
            raise AuditFailed(f"the node's envelope is not a valid signed event: {e.code}: {e.message}") from None
        # PROTOCOL.md §3: the id is SHA-256 of the event bytes; recomputed, not taken from the node.
        if hashlib.sha256(parsed.event.raw).digest() != event_id:
            raise AuditFailed("the node's envelope does not hash to this event id")
        leaf = leaf_hash(envelope)  # RFC 9162 §2.1.1, over the envelope bytes (PROTOCOL.md §4)
        if doc.get("leaf_hash") != leaf.hex():
            raise AuditFailed("the node's leaf_hash is not the hash of the envelope it serves")
        if not verify_inclusion(index, cp.size, leaf, proof, cp.root):
            raise AuditFailed(f"inclusion proof of index {index} does not lead to the checkpoint root")
        return {"id": event_id_hex, "origin": origin_hex, "index": index, "size": cp.size,
                "leaf_hash": leaf.hex(), "root": cp.root.hex(), "kind": parsed.event.kind,
                "signer": parsed.event.signer.hex()}

    async def prove_consistency(self, old: Checkpoint, new: Checkpoint) -> dict[str, Any]:
        """Prove the log at `old` is a prefix of the log at `new` (both verified); returns the checked proof."""
        if old.origin != new.origin:
            raise AuditFailed(f"checkpoints are of different origins: {old.origin} and {new.origin}")
        if old.size > new.size:
            raise AuditFailed(f"the log shrank from {old.size} to {new.size} entries (rollback)")
        if old.size == 0:
            # transparency-dev rule: nothing to prove from the empty tree (module docstring).
            return {"from": 0, "to": new.size, "proof": [], "trivial": True}
        if old.size == new.size:
            if old.root != new.root:
                raise AuditFailed(f"two different roots for size {old.size}: the log forked")
            return {"from": old.size, "to": new.size, "proof": [], "trivial": True}
        origin_hex = origin_key(new).hex()
        doc = await self._fetch_json(
            "/v1/log/proof/consistency", {"from": str(old.size), "to": str(new.size), "origin": origin_hex}
        )
        if doc.get("from") != old.size or doc.get("to") != new.size or doc.get("origin") != origin_hex:
            raise AuditFailed("consistency proof is not for the two checkpoints asked for")
        proof = _proof_hashes(doc)
        if not verify_consistency(old.size, new.size, old.root, new.root, proof):
            raise AuditFailed(f"the log at size {old.size} is not a prefix of the log at size {new.size}")
        return {"from": old.size, "to": new.size, "proof": [h.hex() for h in proof], "trivial": False}
