"""The pure core of ATS ledger: events, deterministic CBOR, signing, Merkle, checkpoints.

No I/O, no clock, no asyncio: everything here is a function of its arguments.
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
    KINDS,
    Body,
    Envelope,
    Event,
    make_envelope_bytes,
    make_event_bytes,
    parse_envelope,
    parse_event,
    register_kind,
)
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
from ledger import policy  # registers the policy, governance, run and node-record kinds
from ledger import escrow  # registers escrow.transfer (strict mode)
from ledger import scoped  # registers budget.set and budget.rm (owner budgets per scope)
from ledger import readgrants  # registers read.grant and read.revoke (who may read what)

__all__ = [name for name in dir() if not name.startswith("_")]
