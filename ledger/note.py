"""Signed notes and verifier keys (C2SP signed-note, golang.org/x/mod/sumdb/note): the
envelope our checkpoints and witness cosignatures travel in (ledger/checkpoint.py, PROTOCOL.md §4).

Contract:
- A signed note is C2SP signed-note text: the text (ending in "\\n"), a blank
  line, then lines "— <key name> base64(4-byte key ID ‖ signature)\\n".
  Key ID = SHA-256(key name ‖ 0x0A ‖ signature type ‖ public key)[:4], with
  type 0x01 for Ed25519 note signatures and 0x04 for cosignature/v1.
- A verifier key is "<name>+<8 hex key ID>+<base64(0x01 ‖ public key)>", as in
  golang.org/x/mod/sumdb/note, so any standard signed-note verifier can check
  our checkpoints with the node's public key.
- `open_note` follows sumdb/note Open: valid UTF-8, no control character but
  newline, text split at the last blank line, at most 100 signature lines,
  repeated identical lines dropped, signatures from unknown keys returned
  unverified, a failing signature from a known key rejects the whole note, and
  no verified signature rejects it too. It is stricter in three ways: base64 must
  be canonical (one encoding per signature, so duplicates are recognised), every
  line from a known key is verified (C2SP signed-note: "verifiers MUST verify"),
  and notes longer than NOTE_BYTES_MAX are refused before parsing (P6).

Errors: Malformed("malformed_note") for text that does not parse or arguments that
cannot be encoded; BadSignature("bad_signature") when a known key's signature fails;
BadSignature("unknown_key") when no known key signed. A broken post-condition of our
own output raises InvariantViolation (check()).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ledger.constants import PUBLIC_KEY_SIZE, SIGNATURE_SIZE
from ledger.errors import BadSignature, Malformed, check

# C2SP signed-note "Signature types": 0x01 Ed25519, 0x04 timestamped Ed25519
# witness cosignatures (c2sp.org/tlog-cosignature).
ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04

KEY_HASH_SIZE = 4  # C2SP signed-note: "the uint32 key ID stored in big-endian order"
SEED_SIZE = 32  # RFC 8032 Ed25519 private key (seed)
NOTE_SIGNATURES_MAX = 100  # sumdb/note Open: "numSig > 100" is a malformed note
NOTE_BYTES_MAX = 65_536  # ours (P6): 100 cosignature lines and a body fit easily

SIG_PREFIX = "\u2014 "  # em dash U+2014, space U+0020 (C2SP signed-note "Format")

# Go's unicode.IsSpace, which sumdb/note uses to validate key names: ASCII
# whitespace, U+0085, U+00A0 and the Unicode White_Space property.
_UNICODE_SPACES = frozenset(
    "\t\n\v\f\r \u0085\u00a0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)


# --- small strict codecs -------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Decode canonical standard base64 (RFC 4648 §4); None if not canonical."""
    if not text or not text.isascii():
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        return None
    # Re-encoding rejects non-zero padding bits: one signature, one spelling.
    return data if _b64encode(data) == text else None


def _has_control(text: str) -> bool:
    # C2SP signed-note: no "ASCII control characters (those below U+0020) other
    # than newline".
    return any(c < " " and c != "\n" for c in text)


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return None


def _is_text_line(line: object) -> bool:
    """A non-empty line of note text: UTF-8, no newline, no control character."""
    return (
        isinstance(line, str)
        and line != ""
        and "\n" not in line
        and not _has_control(line)
        and _utf8(line) is not None
    )


def _is_valid_name(name: object) -> bool:
    """C2SP signed-note: key names are non-empty, with no Unicode space nor '+'."""
    return (
        isinstance(name, str)
        and _is_text_line(name)
        and "+" not in name
        and not any(c in _UNICODE_SPACES for c in name)
    )


def _require_name(name: object) -> str:
    if not isinstance(name, str) or not _is_valid_name(name):
        raise Malformed("malformed_note", f"invalid key name {name!r}")
    return name


def _require_public_key(public_key: object, code: str = "malformed_note") -> bytes:
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        raise Malformed(code, "an Ed25519 public key is 32 bytes")
    return public_key


def _signing_key(seed: bytes) -> SigningKey:
    # Keys are ours, loaded by node/keys.py: a wrong size is our own bug.
    check(isinstance(seed, bytes) and len(seed) == SEED_SIZE, "Ed25519 seed is 32 bytes")
    return SigningKey(seed)


def _ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != SIGNATURE_SIZE:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except BadSignatureError:
        return False
    return True


# --- keys ------------------------------------------------------------------------


def key_hash(name: str, alg: int, public_key: bytes) -> bytes:
    """C2SP signed-note key ID: SHA-256(name ‖ 0x0A ‖ alg ‖ public key)[:4]."""
    encoded = _utf8(name) if isinstance(name, str) else None
    if encoded is None or not 0 <= alg <= 0xFF or not isinstance(public_key, bytes):
        raise Malformed("malformed_note", "cannot compute a key hash")
    return hashlib.sha256(encoded + b"\n" + bytes([alg]) + public_key).digest()[:KEY_HASH_SIZE]


def verifier_key(name: str, public_key: bytes) -> str:
    """The sumdb/note verifier key "<name>+<8 hex key hash>+<base64(0x01 ‖ key)>"."""
    _require_name(name)
    _require_public_key(public_key)
    kh = key_hash(name, ALG_ED25519, public_key)
    return f"{name}+{kh.hex()}+{_b64encode(bytes([ALG_ED25519]) + public_key)}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes, bytes]:
    """Parse an Ed25519 verifier key into (name, key hash, public key); raises Malformed."""
    # sumdb/note NewVerifier: chop at the first two '+', then check each part.
    name, _, rest = vkey.partition("+") if isinstance(vkey, str) else ("", "", "")
    hash16, _, key64 = rest.partition("+")
    key = _b64decode(key64)
    if (
        len(hash16) != 2 * KEY_HASH_SIZE
        or not all(c in "0123456789abcdefABCDEF" for c in hash16)
        or key is None
        or not _is_valid_name(name)
    ):
        raise Malformed("malformed_note", "malformed verifier key")
    kh = bytes.fromhex(hash16)
    if kh != key_hash(name, key[0], key[1:]):
        raise Malformed("malformed_note", "verifier key hash does not match its key")
    if key[0] != ALG_ED25519 or len(key) != 1 + PUBLIC_KEY_SIZE:
        raise Malformed("malformed_note", "verifier key is not an Ed25519 key")
    return name, kh, key[1:]


@dataclass(frozen=True)
class Verifier:
    """A known Ed25519 note key; `key_hash` is derived from name and key."""

    name: str
    public_key: bytes
    key_hash: bytes = field(init=False)

    def __post_init__(self) -> None:
        _require_name(self.name)
        _require_public_key(self.public_key)
        object.__setattr__(self, "key_hash", key_hash(self.name, ALG_ED25519, self.public_key))

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """The verifier for a sumdb/note verifier key string; raises Malformed."""
        name, _, public_key = parse_verifier_key(vkey)
        return cls(name, public_key)

    def vkey(self) -> str:
        return verifier_key(self.name, self.public_key)


# --- signed notes ------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key hash, and the signature bytes after it."""

    name: str
    key_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _require_name(self.name)
        if not isinstance(self.key_hash, bytes) or len(self.key_hash) != KEY_HASH_SIZE:
            raise Malformed("malformed_note", "a key hash is 4 bytes")
        # sumdb/note Open requires 4+n bytes with n >= 1.
        if not isinstance(self.signature, bytes) or not self.signature:
            raise Malformed("malformed_note", "empty signature")

    def line(self) -> str:
        """The signature line, "— <name> base64(key hash ‖ signature)\\n"."""
        return f"{SIG_PREFIX}{self.name} {_b64encode(self.key_hash + self.signature)}\n"

    @classmethod
    def parse_line(cls, line: str) -> NoteSignature:
        """Parse one signature line (without its newline); raises Malformed."""
        if not line.startswith(SIG_PREFIX):
            raise Malformed("malformed_note", "signature line must start with an em dash")
        # sumdb/note: the name ends at the first space; the rest is base64.
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        raw = _b64decode(b64)
        if raw is None or len(raw) <= KEY_HASH_SIZE or not _is_valid_name(name):
            raise Malformed("malformed_note", "malformed signature line")
        return cls(name, raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:])


class OpenedNote(NamedTuple):
    """The verified text of a note, its verified and its unverified signatures."""

    text: str
    verified: list[NoteSignature]
    unverified: list[NoteSignature]


def _require_text(text: object) -> str:
    if not isinstance(text, str) or _utf8(text) is None:
        raise Malformed("malformed_note", "note text must be valid UTF-8")
    if not text.endswith("\n") or _has_control(text):
        raise Malformed("malformed_note", "note text must end in newline, without control characters")
    return text


def _split_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a note into its text and signature lines, checking syntax only."""
    raw = _utf8(note) if isinstance(note, str) else bytes(note)
    if raw is None or len(raw) > NOTE_BYTES_MAX:
        raise Malformed("malformed_note", f"note is not UTF-8 or exceeds {NOTE_BYTES_MAX} bytes")
    try:
        msg = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("malformed_note", "note is not valid UTF-8") from None
    if _has_control(msg):
        raise Malformed("malformed_note", "note contains a control character")
    # C2SP signed-note: "the text is separated from the signatures by the last
    # empty line"; the text keeps its final newline.
    split = msg.rfind("\n\n")
    if split < 0:
        raise Malformed("malformed_note", "note has no blank line before its signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block.endswith("\n"):
        raise Malformed("malformed_note", "note has no signature lines")
    lines = block[:-1].split("\n")
    if len(lines) > NOTE_SIGNATURES_MAX:
        raise Malformed("malformed_note", f"more than {NOTE_SIGNATURES_MAX} signatures")
    return text, [NoteSignature.parse_line(line) for line in lines]


def sign_note(text: str, name: str, signing_key: bytes) -> str:
    """Sign text with a 32-byte Ed25519 seed under key name; the full signed note."""
    _require_text(text)
    _require_name(name)
    sk = _signing_key(signing_key)
    kh = key_hash(name, ALG_ED25519, bytes(sk.verify_key))
    sig = NoteSignature(name, kh, sk.sign(text.encode("utf-8")).signature)
    note = text + "\n" + sig.line()
    check(_split_note(note) == (text, [sig]), "signed note re-parses to its text and signature")
    return note


def add_signatures(note: str, sigs: Iterable[NoteSignature]) -> str:
    """Append signature lines to a note, replacing lines with the same name and key hash.

    Verifies nothing: like sumdb/note Sign, existing lines come first, then the
    new ones. Raises Malformed if the note does not parse, two new signatures
    share a key, or the result would exceed NOTE_SIGNATURES_MAX lines.
    """
    text, existing = _split_note(note)
    new = list(sigs)
    new_keys = {(s.name, s.key_hash) for s in new}
    if len(new_keys) != len(new) or not all(isinstance(s, NoteSignature) for s in new):
        raise Malformed("malformed_note", "new signatures must be distinct NoteSignatures")
    lines = [s for s in existing if (s.name, s.key_hash) not in new_keys] + new
    if len(lines) > NOTE_SIGNATURES_MAX:
        raise Malformed("malformed_note", f"more than {NOTE_SIGNATURES_MAX} signatures")
    out = text + "\n" + "".join(s.line() for s in lines)
    check(_split_note(out) == (text, lines), "note with added signatures re-parses")
    return out


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Verify a signed note against known verifiers (sumdb/note Open).

    Returns the text, the verified signatures and the signatures of unknown keys
    (name and key hash matching no verifier). Raises Malformed("malformed_note")
    on bad syntax, BadSignature("bad_signature") if a known key's signature fails,
    and BadSignature("unknown_key") if no known key signed.
    """
    text, sigs = _split_note(note)
    known: dict[tuple[str, bytes], set[bytes]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_hash), set()).add(v.public_key)
    message = text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[NoteSignature] = set()
    for sig in sigs:
        if sig in seen:  # sumdb/note: repeated identical lines are dropped
            continue
        seen.add(sig)
        ident = f"{sig.name}+{sig.key_hash.hex()}"
        keys = known.get((sig.name, sig.key_hash))
        if keys is None:
            # C2SP signed-note: "Verifiers MUST ignore signatures from unknown keys".
            unverified.append(sig)
            continue
        if len(keys) > 1:
            raise BadSignature("unknown_key", f"ambiguous key {ident}")
        if not _ed25519_verify(next(iter(keys)), message, sig.signature):
            # C2SP signed-note: a known key's failed signature rejects the note.
            raise BadSignature("bad_signature", f"invalid signature for key {ident}")
        if all((s.name, s.key_hash) != (sig.name, sig.key_hash) for s in verified):
            verified.append(sig)
    if not verified:
        raise BadSignature("unknown_key", "note has no verifiable signatures")
    return OpenedNote(text, verified, unverified)

