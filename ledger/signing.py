"""Ed25519 signing of events (RFC 8032, PROTOCOL.md §3).

The signature covers `b"ats-event/v1\\n"` followed by the event's CBOR bytes:
the prefix separates event signatures from every other structure a key signs
(checkpoints are signed notes, with their own framing).
"""

from __future__ import annotations

import hashlib

import nacl.bindings
import nacl.exceptions

from ledger.constants import EVENT_SIGNING_PREFIX, PUBLIC_KEY_SIZE, SIGNATURE_SIZE
from ledger.errors import BadSignature, Malformed

SEED_SIZE = 32


def signable(event_bytes: bytes) -> bytes:
    """The exact bytes an event signature covers."""
    return EVENT_SIGNING_PREFIX + event_bytes


def public_key_from_seed(seed: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte seed."""
    if len(seed) != SEED_SIZE:
        raise Malformed("bad_request", "an Ed25519 seed is 32 bytes")
    pk, _sk = nacl.bindings.crypto_sign_seed_keypair(seed)
    return pk


def sign(event_bytes: bytes, seed: bytes) -> bytes:
    """The 64-byte signature of event_bytes by the key with this seed."""
    return sign_raw(signable(event_bytes), seed)


def sign_raw(message: bytes, seed: bytes) -> bytes:
    """A detached Ed25519 signature over message (no prefix added)."""
    _pk, sk = nacl.bindings.crypto_sign_seed_keypair(seed)
    return nacl.bindings.crypto_sign(message, sk)[:SIGNATURE_SIZE]


def verify(event_bytes: bytes, sig: bytes, public_key: bytes) -> None:
    """Check sig over event_bytes; raises BadSignature."""
    if not verify_raw(signable(event_bytes), sig, public_key):
        raise BadSignature("bad_signature", "signature does not verify with the signer's key")


def verify_raw(message: bytes, sig: bytes, public_key: bytes) -> bool:
    """True iff sig is a valid Ed25519 signature of message by public_key."""
    if len(sig) != SIGNATURE_SIZE or len(public_key) != PUBLIC_KEY_SIZE:
        return False
    try:
        nacl.bindings.crypto_sign_open(sig + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def event_id(event_bytes: bytes) -> bytes:
    """PROTOCOL.md §3: the id is SHA-256 of the event's CBOR bytes (not the envelope)."""
    return hashlib.sha256(event_bytes).digest()
