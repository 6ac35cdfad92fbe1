"""Protocol constants fixed by the wire contract (PROTOCOL.md), and limits.

Relationships between them are checked at import, so a bad edit fails loudly.
"""

PROTOCOL_VERSION = 1

# PROTOCOL.md §3: Ed25519 over "ats-event/v1\n" followed by the event's CBOR bytes.
EVENT_SIGNING_PREFIX = b"ats-event/v1\n"

HASH_SIZE = 32  # SHA-256
PUBLIC_KEY_SIZE = 32  # Ed25519, RFC 8032
SIGNATURE_SIZE = 64
NONCE_SIZE = 16

# PROTOCOL.md §4: origin line = "ats-ledger/" + node public key in hex.
ORIGIN_PREFIX = "ats-ledger/"

METERING_KINDS = ("act", "dat", "cpt", "trt")

# Limits on untrusted input (P6): units last.
EVENT_BYTES_MAX = 4096  # one event's CBOR bytes
ENVELOPE_BYTES_MAX = EVENT_BYTES_MAX + SIGNATURE_SIZE + 32  # map header, keys
OP_CHARS_MAX = 64
NODE_NAME_CHARS_MAX = 64
SKEW_MS_DEFAULT = 300_000
UINT64_MAX = 2**64 - 1

assert len(EVENT_SIGNING_PREFIX) == 13, "PROTOCOL.md §3 fixes a 13-byte prefix"
assert ENVELOPE_BYTES_MAX > EVENT_BYTES_MAX + SIGNATURE_SIZE
assert ORIGIN_PREFIX.endswith("/")
