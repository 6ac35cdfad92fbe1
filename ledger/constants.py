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

# Limits on untrusted input (P6): units last.
EVENT_BYTES_MAX = 4096  # one event's CBOR bytes
ENVELOPE_BYTES_MAX = EVENT_BYTES_MAX + SIGNATURE_SIZE + 32  # map header, keys
OP_CHARS_MAX = 64
NODE_NAME_CHARS_MAX = 64
SKEW_MS_DEFAULT = 300_000
UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1

# Bounds on amounts and sums (PROTOCOL.md §2: no sum a node keeps may overflow a signed
# 64-bit integer; docs/protocol.md "Amount bounds"). An event past them is refused with
# 422 amount_out_of_range before anything is stored, on every path that parses it.
AMOUNT_MAX = 2**40 - 1  # any one amount of one event: cost, units, bytes, ms, slices, MB, |trust|, ...
TIME_MS_MAX = 2**47 - 1  # any instant in ms since the epoch (ts, until, activate_at, ...): year 6429
COUNTER_MAX = 2**62 - 1  # one usage counter (scope, metric, window); admission refuses past it
# Lifetime totals (GET /v1/agents/{agent}/usage) sum each amount's high and low 20 bits
# apart, so each partial sum stays below 2^63 for up to 2^43 events of one agent.
SUM_SPLIT_BITS = 20
SUM_EVENTS_MAX = 2**43 - 1

assert len(EVENT_SIGNING_PREFIX) == 13, "PROTOCOL.md §3 fixes a 13-byte prefix"
assert ENVELOPE_BYTES_MAX > EVENT_BYTES_MAX + SIGNATURE_SIZE
assert ORIGIN_PREFIX.endswith("/")
# two events' amounts (read + written) fit a counter many times over; two counters add in int64
assert 2 * AMOUNT_MAX < COUNTER_MAX and 2 * COUNTER_MAX <= INT64_MAX
# the split sums: |amount >> 20| and amount & (2^20 - 1) are each below 2^20, times 2^43 events
assert AMOUNT_MAX < 2 ** (2 * SUM_SPLIT_BITS) and SUM_EVENTS_MAX * 2**SUM_SPLIT_BITS <= INT64_MAX
# a week-long window past the last instant still fits int64 (window ends, SQL bounds)
assert TIME_MS_MAX + 8 * 86_400_000 < INT64_MAX
