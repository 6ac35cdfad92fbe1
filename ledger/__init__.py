"""The pure core of ATS ledger: events, deterministic CBOR, signing, Merkle, checkpoints.

No I/O, no clock, no asyncio: everything here is a function of its arguments.
The event kinds are one static table, `ledger.kinds.REGISTRY`; importing a module
registers nothing.
"""

from ledger.admission import check_timestamp
from ledger.checkpoint import (
    Checkpoint,
    NoteSignature,
    cosign,
    open_checkpoint,
    origin_line,
    parse_verifier_key,
    sign_checkpoint,
    verifier_key,
    verify_cosignature,
)
from ledger.encoding import decode_canonical, encode
from ledger.errors import (
    CODES,
    BadSignature,
    Conflict,
    InvariantViolation,
    Invalid,
    LedgerError,
    Malformed,
    NotFound,
    NotReady,
    OverBudget,
    TooLarge,
    check,
)
from ledger.events import (
    Body,
    Envelope,
    Event,
    make_envelope_bytes,
    make_event_bytes,
    parse_envelope,
    parse_event,
)
from ledger.kinds import KINDS, REGISTRY, Kind, Registry
from ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from ledger.signing import event_id, public_key_from_seed, sign, verify

__all__ = [name for name in dir() if not name.startswith("_")]
