"""Checkpoints and witness cosignatures (PROTOCOL.md §4), in signed notes (ledger/note.py).

Contract:
- A checkpoint body is C2SP tlog-checkpoint text: origin line, decimal tree size
  with no leading zeroes, standard-base64 root hash, optional non-empty extension
  lines, each line ending in "\\n". `Checkpoint.parse` accepts exactly what
  `Checkpoint.body` produces.
- A checkpoint is a signed note (ledger/note.py: key IDs, verifier keys and the
  rules of `open_note`, after sumdb/note), signed by the node's key.
- A cosignature is C2SP tlog-cosignature cosignature/v1: a note signature whose
  bytes are an 8-byte big-endian timestamp (seconds) ‖ an Ed25519 signature over
  "cosignature/v1\\ntime <seconds>\\n" ‖ checkpoint body.

Errors: Malformed("malformed_note" | "malformed_checkpoint") for text that does
not parse or arguments that cannot be encoded; BadSignature("bad_signature")
when a known key's signature fails; BadSignature("unknown_key") when no known
key signed, or a cosignature names another key. A broken post-condition of our
own output raises InvariantViolation (check()).

The signed-note names (NoteSignature, Verifier, open_note, verifier_key, ...) are
re-exported here, where callers have always imported them from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.constants import HASH_SIZE, ORIGIN_PREFIX, SIGNATURE_SIZE
from ledger.errors import BadSignature, Malformed, check
from ledger.note import (  # noqa: F401  (re-exported)
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    KEY_HASH_SIZE,
    NOTE_BYTES_MAX,
    NOTE_SIGNATURES_MAX,
    SEED_SIZE,
    SIG_PREFIX,
    NoteSignature,
    OpenedNote,
    Verifier,
    _b64decode,
    _b64encode,
    _ed25519_verify,
    _is_text_line,
    _require_name,
    _require_public_key,
    _signing_key,
    _split_note,
    add_signatures,
    key_hash,
    open_note,
    parse_verifier_key,
    sign_note,
    verifier_key,
)

TIMESTAMP_BYTES = 8  # tlog-cosignature: "u64 timestamp", big-endian
TIMESTAMP_S_MAX = 2**63 - 1  # tlog-cosignature: "It MUST NOT exceed 2^63 - 1"
TREE_SIZE_MAX = 2**63 - 1  # sumdb/tlog parses the size as int64
COSIGNATURE_HEADER = "cosignature/v1\n"  # tlog-cosignature "Ed25519 signed message"
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")  # ASCII decimal, no leading zeroes


def origin_line(public_key: bytes) -> str:
    """PROTOCOL.md §4: "ats-ledger/" + the node's public key in lowercase hex."""
    return ORIGIN_PREFIX + _require_public_key(public_key, "malformed_checkpoint").hex()



# --- checkpoints -------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        # tlog-checkpoint: the origin and any extension lines are non-empty; as
        # note text they are single lines without control characters.
        for line in (self.origin, *self.extensions):
            if not _is_text_line(line):
                raise Malformed("malformed_checkpoint", f"bad checkpoint line {line!r}")
        if type(self.size) is not int or not 0 <= self.size <= TREE_SIZE_MAX:
            raise Malformed("malformed_checkpoint", f"bad tree size {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise Malformed("malformed_checkpoint", "root hash must be 32 bytes")

    def body(self) -> str:
        """The note text: origin, decimal size, base64 root, extensions, each + "\\n"."""
        lines = (self.origin, str(self.size), _b64encode(self.root), *self.extensions)
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint body strictly; raises Malformed("malformed_checkpoint")."""
        if not isinstance(body, str) or not body.endswith("\n"):
            raise Malformed("malformed_checkpoint", "checkpoint body must end in newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise Malformed("malformed_checkpoint", "checkpoint needs origin, size and root")
        origin, size, root_b64, *extensions = lines
        # tlog-checkpoint: "ASCII decimal ... with no leading zeroes".
        if not _SIZE_RE.fullmatch(size):
            raise Malformed("malformed_checkpoint", f"bad tree size {size!r}")
        root = _b64decode(root_b64)
        if root is None:
            raise Malformed("malformed_checkpoint", "root hash is not canonical base64")
        cp = cls(origin, int(size), root, tuple(extensions))
        check(cp.body() == body, "checkpoint parse is the inverse of body()")
        return cp


def sign_checkpoint(cp: Checkpoint, signing_key: bytes) -> str:
    """Sign cp's body as a note under key name = origin; cp.origin must be our origin line."""
    public_key = bytes(_signing_key(signing_key).verify_key)
    if cp.origin != origin_line(public_key):
        raise Malformed("malformed_checkpoint", "checkpoint origin does not name the signing key")
    note = sign_note(cp.body(), cp.origin, signing_key)
    check(open_checkpoint(note, public_key) == (cp, []), "signed checkpoint opens to itself")
    return note


class CheckpointSigner:
    """Signs checkpoints of one origin with a key derived once: the per-batch hot path.

    `sign_checkpoint` derives the key and re-opens its own output on every call
    (~200 µs); a node signs one checkpoint per committed batch, so it keeps one
    of these instead (~20 µs). The node re-verifies its latest checkpoint at
    every start-up, which is where a bad signature would show.
    """

    def __init__(self, signing_key: bytes):
        self._sk = _signing_key(signing_key)
        self.public_key = bytes(self._sk.verify_key)
        self.origin = origin_line(self.public_key)
        self._prefix = "\u2014 " + self.origin + " "
        self._key_hash = key_hash(self.origin, ALG_ED25519, self.public_key)

    def sign(self, size: int, root: bytes) -> str:
        """The signed note of this origin's checkpoint at size with root."""
        body = Checkpoint(self.origin, size, root).body()
        sig = self._sk.sign(body.encode("utf-8")).signature
        return body + "\n" + self._prefix + _b64encode(self._key_hash + sig) + "\n"


def open_checkpoint(note: str | bytes, public_key: bytes) -> tuple[Checkpoint, list[NoteSignature]]:
    """Verify a checkpoint note signed by the origin `public_key`.

    Returns the checkpoint and the other (unverified) signature lines, such as
    cosignatures. Raises as open_note, and Malformed("malformed_checkpoint") if
    the body does not parse or its origin is not origin_line(public_key).
    """
    origin = origin_line(public_key)
    text, _, others = open_note(note, [Verifier(origin, public_key)])
    cp = Checkpoint.parse(text)
    if cp.origin != origin:
        raise Malformed("malformed_checkpoint", "checkpoint origin does not match its key")
    return cp, others


# --- cosignatures (C2SP tlog-cosignature, cosignature/v1) --------------------------


def _require_timestamp(timestamp_s: object) -> int:
    if type(timestamp_s) is not int or not 0 <= timestamp_s <= TIMESTAMP_S_MAX:
        raise Malformed("malformed_note", f"bad cosignature timestamp {timestamp_s!r}")
    return timestamp_s


def cosignature_message(cp: Checkpoint, timestamp_s: int) -> bytes:
    """The cosignature/v1 signed message: header, time line, checkpoint body."""
    # tlog-cosignature: "two newline (U+000A) terminated lines (one header line
    # and one timestamp line) followed by the whole note body"; the time is
    # "an ASCII decimal with no leading zeroes".
    time_line = f"time {_require_timestamp(timestamp_s)}\n"
    return (COSIGNATURE_HEADER + time_line + cp.body()).encode("utf-8")


def cosign(cp: Checkpoint, witness_name: str, witness_key: bytes, timestamp_s: int) -> NoteSignature:
    """Cosign cp as witness_name at timestamp_s (POSIX seconds) with a 32-byte seed."""
    _require_name(witness_name)
    sk = _signing_key(witness_key)
    public_key = bytes(sk.verify_key)
    signature = sk.sign(cosignature_message(cp, timestamp_s)).signature
    # timestamped_signature: u64 timestamp (big-endian) then the signature.
    sig = NoteSignature(
        witness_name,
        key_hash(witness_name, ALG_COSIGNATURE_V1, public_key),
        timestamp_s.to_bytes(TIMESTAMP_BYTES, "big") + signature,
    )
    check(verify_cosignature(cp, sig, witness_name, public_key) == timestamp_s, "cosignature verifies")
    return sig


def verify_cosignature(
    cp: Checkpoint, sig: NoteSignature, witness_name: str, witness_public_key: bytes
) -> int:
    """Verify a cosignature/v1 on cp by the witness; returns its timestamp in seconds.

    Raises BadSignature("unknown_key") if the line is not from that witness key,
    Malformed("malformed_note") if it is not a timestamped_signature, and
    BadSignature("bad_signature") if the signature fails.
    """
    _require_public_key(witness_public_key)
    expected = key_hash(_require_name(witness_name), ALG_COSIGNATURE_V1, witness_public_key)
    if (sig.name, sig.key_hash) != (witness_name, expected):
        raise BadSignature("unknown_key", f"not a cosignature by {witness_name}")
    if len(sig.signature) != TIMESTAMP_BYTES + SIGNATURE_SIZE:
        raise Malformed("malformed_note", "a cosignature/v1 is 8 + 64 bytes")
    timestamp_s = int.from_bytes(sig.signature[:TIMESTAMP_BYTES], "big")
    message = cosignature_message(cp, _require_timestamp(timestamp_s))
    if not _ed25519_verify(witness_public_key, message, sig.signature[TIMESTAMP_BYTES:]):
        raise BadSignature("bad_signature", f"invalid cosignature by {witness_name}")
    return timestamp_s
