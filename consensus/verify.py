"""Verify what a peer serves about an origin's log before anything is stored (pure).

Everything a peer sends is untrusted until checked here:

- `open_origin_checkpoint(note, origin)`: the checkpoint is signed by the
  origin's own key (its origin line names it) — a peer cannot forge it.
- `check_consistent(held, new, proof)`: the new checkpoint extends the one we
  hold (RFC 9162 §2.1.4.2); equal sizes with different roots are a fork, a bad
  proof a lie, raised as `PeerProtocolError`.
- `fork_evidence` / `check_fork_evidence`: evidence that an origin signed two
  histories, which any node can check on its own before it believes it (so fork
  flags can be relayed from node to node without trusting the relay).
- `verify_range(frontier, start, untrusted_envelopes, cp)`: every envelope
  parses canonically and carries a valid agent signature, and appending the
  leaves to the frontier we hold gives exactly the signed root at cp.size —
  so a range is accepted only whole, and only if it is the origin's log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ledger.checkpoint import Checkpoint, NoteSignature, open_checkpoint
from ledger.constants import ORIGIN_PREFIX
from ledger.errors import LedgerError
from ledger.events import Envelope, parse_envelope
from ledger.merkle import Frontier, leaf_hash, verify_consistency
from ledger.signing import verify


class PeerProtocolError(Exception):
    """A peer served something that does not verify. Never shown to agents: it penalises the peer.

    `code` is stable; `evidence` holds what proves it (notes, proofs) for a fork.
    """

    def __init__(self, code: str, message: str, evidence: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.evidence = evidence or {}


@dataclass(frozen=True)
class VerifiedRange:
    """A range of an origin log that verified against a signed checkpoint."""

    origin: bytes
    start: int
    envelopes: tuple[Envelope, ...]
    frontier: Frontier  # after appending the range: its root is checkpoint.root
    checkpoint: Checkpoint
    note: str
    cosignatures: tuple[NoteSignature, ...] = field(default=())


def origin_key(origin_line: str) -> bytes:
    """The origin's public key from its origin line `ats-ledger/<hex>`; raises PeerProtocolError."""
    if not origin_line.startswith(ORIGIN_PREFIX):
        raise PeerProtocolError("bad_checkpoint", f"origin line {origin_line[:80]!r} is not an ATS ledger origin")
    hex_key = origin_line[len(ORIGIN_PREFIX):]
    try:
        key = bytes.fromhex(hex_key)
    except ValueError:
        raise PeerProtocolError("bad_checkpoint", "origin line does not end in a hex key") from None
    if len(key) != 32 or key.hex() != hex_key:
        raise PeerProtocolError("bad_checkpoint", "origin line does not end in a 64-digit lowercase hex key")
    return key


def open_origin_checkpoint(untrusted_note: str, origin: bytes) -> tuple[Checkpoint, list[NoteSignature]]:
    """The checkpoint in a note signed by origin; the other signature lines (cosignatures) unverified."""
    try:
        return open_checkpoint(untrusted_note, origin)
    except LedgerError as e:
        raise PeerProtocolError("bad_checkpoint", f"checkpoint of {origin.hex()[:16]} does not verify: {e.message}") from None


def check_consistent(held: Checkpoint | None, held_note: str | None, new: Checkpoint, new_note: str,
                     untrusted_proof: Sequence[bytes]) -> None:
    """new must extend held (both already signature-checked by the origin's key).

    Two different roots at one size are a fork: PeerProtocolError("fork") with
    self-verifying evidence (`fork_evidence`). A proof that fails proves the
    peer wrong, not the origin (any peer could send a bad proof): "bad_proof".
    """
    if held is None or held.size == 0:
        return  # nothing to be consistent with: trust on first sight (transparency-dev rule)
    if new.size < held.size:
        raise PeerProtocolError("stale_checkpoint", f"checkpoint at {new.size} is older than the {held.size} held")
    if new.size == held.size:
        if new.root != held.root:
            raise PeerProtocolError("fork", f"two different roots signed at size {new.size}",
                                    fork_evidence(origin_key(held.origin), held_note or "", new_note))
        return
    if not verify_consistency(held.size, new.size, held.root, new.root, list(untrusted_proof)):
        raise PeerProtocolError("bad_proof", f"consistency proof from {held.size} to {new.size} does not verify")


def fork_evidence(origin: bytes, note_a: str, note_b: str, a_root_in_b: bytes | None = None,
                  proof: Sequence[bytes] = ()) -> dict[str, Any]:
    """Evidence that origin signed two histories, checkable by anyone with `check_fork_evidence`.

    note_a is the checkpoint at the smaller (or equal) size m, note_b at n. For m < n
    the evidence also carries the root of b's tree at size m and the consistency proof
    from m to n in b's tree: that root differs from a's, so the origin signed two
    different trees of size m.
    """
    doc: dict[str, Any] = {"origin": origin.hex(), "a": note_a, "b": note_b}
    if a_root_in_b is not None:
        doc["a_root_in_b"] = a_root_in_b.hex()
        doc["proof"] = [h.hex() for h in proof]
    return doc


FORK_EVIDENCE_BYTES_MAX = 16 * 1024


def check_fork_evidence(untrusted: Any) -> tuple[bytes, Checkpoint, Checkpoint]:
    """(origin, a, b) if the evidence proves the origin signed two inconsistent checkpoints.

    Raises PeerProtocolError("bad_evidence"): relayed evidence that does not prove
    a fork is a lie by the peer that sent it.
    """
    try:
        origin = bytes.fromhex(untrusted["origin"])
        note_a, note_b = untrusted["a"], untrusted["b"]
        if len(origin) != 32 or not isinstance(note_a, str) or not isinstance(note_b, str):
            raise ValueError("shape")
        if len(note_a) + len(note_b) > FORK_EVIDENCE_BYTES_MAX:
            raise ValueError("too large")
        a, _ = open_origin_checkpoint(note_a, origin)
        b, _ = open_origin_checkpoint(note_b, origin)
        if a.size > b.size:
            raise ValueError("a is larger than b")
        if a.size == b.size:
            if a.root == b.root:
                raise ValueError("the two checkpoints agree")
            return origin, a, b
        a_root_in_b = bytes.fromhex(untrusted["a_root_in_b"])
        proof = [bytes.fromhex(h) for h in untrusted["proof"]][:64]
    except PeerProtocolError as e:
        raise PeerProtocolError("bad_evidence", f"fork evidence: {e.message}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PeerProtocolError("bad_evidence", f"fork evidence does not parse: {e}") from None
    if a_root_in_b == a.root or not verify_consistency(a.size, b.size, a_root_in_b, b.root, proof):
        raise PeerProtocolError("bad_evidence", "fork evidence does not prove two roots at one size")
    return origin, a, b


def verify_range(origin: bytes, frontier: Frontier, start: int, untrusted_envelopes: Sequence[bytes],
                 cp: Checkpoint, note: str) -> VerifiedRange:
    """Check a fetched range [start, start+len) of origin's log against its signed checkpoint cp.

    The range must start at our frontier and end exactly at cp.size. Raises
    PeerProtocolError (bad_entry, bad_signature, bad_root, bad_range).
    """
    if start != frontier.size:
        raise PeerProtocolError("bad_range", f"range starts at {start}, we hold {frontier.size}")
    if start + len(untrusted_envelopes) != cp.size:
        raise PeerProtocolError("bad_range", f"range ends at {start + len(untrusted_envelopes)}, checkpoint is {cp.size}")
    work = frontier.copy()
    envelopes = []
    for offset, raw in enumerate(untrusted_envelopes):
        try:
            env = parse_envelope(raw, unknown_kinds=True)  # a newer node's kind: stored, counted nowhere
            verify(env.event.raw, env.sig, env.event.signer)
        except LedgerError as e:
            code = "bad_signature" if e.code == "bad_signature" else "bad_entry"
            raise PeerProtocolError(code, f"entry {start + offset}: {e.code}: {e.message}") from None
        envelopes.append(env)
        work.append(leaf_hash(raw))
    if work.root() != cp.root:
        raise PeerProtocolError("bad_root", f"entries {start}..{cp.size} do not hash to the signed root")
    return VerifiedRange(origin, start, tuple(envelopes), work, cp, note)


def prefix_checkpoint(frontier: Frontier, start: int, untrusted_envelopes: Sequence[bytes], cp: Checkpoint,
                      untrusted_proof: Sequence[bytes]) -> Checkpoint:
    """The checkpoint a page [start, end) that ends before cp.size is verified against: the root of
    the frontier extended by the page, once the proof shows that tree is a prefix of cp's."""
    end = start + len(untrusted_envelopes)
    work = frontier.copy()
    for raw in untrusted_envelopes:
        work.append(leaf_hash(raw))
    if not verify_consistency(end, cp.size, work.root(), cp.root, list(untrusted_proof)):
        raise PeerProtocolError("bad_root", f"entries {start}..{end} are not a prefix of the signed log")
    return Checkpoint(cp.origin, end, work.root())
