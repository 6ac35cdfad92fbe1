"""Ed25519 private keys in the formats other tools write: parsing only, no I/O.

Three formats are read, told apart by their first bytes:

- ATS JSON (what `ats keygen` writes): {"type": "ed25519", "seed": "<64 hex>", "public_key": "<64 hex>"};
- PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----` (RFC 8410 §7; `openssl genpkey -algorithm ed25519`):
  an Ed25519 PKCS#8 v1 key is a fixed 16-byte DER prefix followed by the 32-byte seed; v2
  (OneAsymmetricKey, RFC 5958) adds the public key after it;
- OpenSSH, `-----BEGIN OPENSSH PRIVATE KEY-----` (`ssh-keygen -t ed25519`; the format of
  OpenSSH's PROTOCOL.key), unencrypted only.

Besides a whole key file, `parse_key_text` accepts a bare seed of 64 hex digits (an
environment variable such as ATS_NODE_KEY). Encrypted keys are refused with a message saying
how to decrypt them: a daemon has nobody to type a passphrase.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct

from ledger.signing import SEED_SIZE, public_key_from_seed

# RFC 8410 §7: SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }
PKCS8_V1_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
# RFC 5958 v2 with the public key: [1] IMPLICIT BIT STRING (0 unused bits, 32 bytes) after the seed.
PKCS8_V2_PREFIX = bytes.fromhex("3051020101300506032b657004220420")
PKCS8_V2_PUBLIC_TAG = bytes.fromhex("812100")
OPENSSH_MAGIC = b"openssh-key-v1\x00"
KEY_TEXT_BYTES_MAX = 16_384  # a key file is small; anything larger is not one (P6)

PEM_PKCS8 = "PRIVATE KEY"
PEM_ENCRYPTED = "ENCRYPTED PRIVATE KEY"
PEM_OPENSSH = "OPENSSH PRIVATE KEY"


class KeyFormatError(ValueError):
    """The text is not an Ed25519 private key in a format we read; the message says why."""


def parse_key_text(text: str) -> bytes:
    """The 32-byte Ed25519 seed in text (ATS JSON, PKCS#8 PEM, OpenSSH, or 64 hex); raises KeyFormatError."""
    if len(text) > KEY_TEXT_BYTES_MAX:
        raise KeyFormatError(f"larger than {KEY_TEXT_BYTES_MAX} bytes: not a key")
    stripped = text.strip()
    if stripped.startswith("{"):
        return _parse_json(stripped)
    if stripped.startswith("-----BEGIN "):
        label, der = _pem(stripped)
        if label == PEM_PKCS8:
            return parse_pkcs8(der)
        if label == PEM_OPENSSH:
            return parse_openssh(der)
        if label == PEM_ENCRYPTED:
            raise KeyFormatError(
                "the PKCS#8 key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN.pem) "
                "and keep the plain file readable only by the node's user"
            )
        raise KeyFormatError(f"PEM block '{label}' is not an Ed25519 private key (expected PRIVATE KEY or OPENSSH PRIVATE KEY)")
    if len(stripped) == 2 * SEED_SIZE:
        try:
            return bytes.fromhex(stripped)
        except ValueError:
            pass
    raise KeyFormatError(
        "not a key: expected an ATS key file (JSON), a PKCS#8 PEM or OpenSSH private key, or a 64-hex-digit seed"
    )


def _parse_json(text: str) -> bytes:
    try:
        doc = json.loads(text)
        seed = bytes.fromhex(doc["seed"])
    except (ValueError, KeyError, TypeError) as e:
        raise KeyFormatError(f"not a valid ATS key file: {e}") from None
    if len(seed) != SEED_SIZE:
        raise KeyFormatError(f"seed must be {SEED_SIZE} bytes")
    if "public_key" in doc and doc["public_key"] != public_key_from_seed(seed).hex():
        raise KeyFormatError("public_key does not match the seed")
    return seed


def _pem(text: str) -> tuple[str, bytes]:
    """(label, DER bytes) of the first PEM block (RFC 7468)."""
    lines = text.splitlines()
    label = lines[0][len("-----BEGIN "):].rstrip("-").strip()
    end = f"-----END {label}-----"
    try:
        stop = next(i for i, line in enumerate(lines) if line.strip() == end)
    except StopIteration:
        raise KeyFormatError(f"PEM block '{label}' has no END line") from None
    body = [line.strip() for line in lines[1:stop]]
    if any(":" in line for line in body):
        raise KeyFormatError("the PEM key is encrypted (it has Proc-Type/DEK-Info headers); decrypt it first")
    try:
        return label, base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"PEM block '{label}' is not valid base64") from None


def parse_pkcs8(der: bytes) -> bytes:
    """The seed of an Ed25519 PKCS#8 v1 or v2 DER key (RFC 8410 §7, RFC 5958)."""
    if der.startswith(PKCS8_V1_PREFIX) and len(der) == len(PKCS8_V1_PREFIX) + SEED_SIZE:
        return der[len(PKCS8_V1_PREFIX):]
    if der.startswith(PKCS8_V2_PREFIX) and len(der) == len(PKCS8_V2_PREFIX) + SEED_SIZE + 3 + 32:
        seed = der[len(PKCS8_V2_PREFIX):len(PKCS8_V2_PREFIX) + SEED_SIZE]
        rest = der[len(PKCS8_V2_PREFIX) + SEED_SIZE:]
        if rest[:3] != PKCS8_V2_PUBLIC_TAG or rest[3:] != public_key_from_seed(seed):
            raise KeyFormatError("PKCS#8 key: the public key does not match the private key")
        return seed
    raise KeyFormatError("PKCS#8 key is not an Ed25519 key (OID 1.3.101.112); only Ed25519 keys are used")


class _Reader:
    """SSH wire format (RFC 4251 §5): uint32 and length-prefixed strings, bounds-checked."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def uint32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise KeyFormatError("OpenSSH key is truncated")
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return value

    def string(self) -> bytes:
        n = self.uint32()
        if self.pos + n > len(self.data):
            raise KeyFormatError("OpenSSH key is truncated")
        value = self.data[self.pos:self.pos + n]
        self.pos += n
        return value


def parse_openssh(blob: bytes) -> bytes:
    """The seed of an unencrypted OpenSSH ed25519 private key (OpenSSH PROTOCOL.key)."""
    if not blob.startswith(OPENSSH_MAGIC):
        raise KeyFormatError("not an OpenSSH private key (no openssh-key-v1 magic)")
    r = _Reader(blob[len(OPENSSH_MAGIC):])
    cipher, kdf, _kdf_options = r.string(), r.string(), r.string()
    if cipher != b"none" or kdf != b"none":
        raise KeyFormatError(
            "the OpenSSH key is encrypted with a passphrase; remove it first "
            "(ssh-keygen -p -N '' -f KEY on a copy) and keep the file readable only by the node's user"
        )
    if r.uint32() != 1:
        raise KeyFormatError("OpenSSH key file must hold exactly one key")
    r.string()  # the public key blob, repeated inside the private section
    p = _Reader(r.string())
    if p.uint32() != p.uint32():
        raise KeyFormatError("OpenSSH key: check integers differ (corrupt or wrongly decrypted)")
    key_type = p.string()
    if key_type != b"ssh-ed25519":
        raise KeyFormatError(f"OpenSSH key is {key_type.decode('ascii', 'replace')}, not ssh-ed25519")
    public, private = p.string(), p.string()
    if len(public) != 32 or len(private) != 64:
        raise KeyFormatError("OpenSSH ed25519 key has the wrong lengths")
    seed = private[:SEED_SIZE]
    if private[SEED_SIZE:] != public or public_key_from_seed(seed) != public:
        raise KeyFormatError("OpenSSH key: the public key does not match the private key")
    return seed


def pkcs8_pem(seed: bytes) -> str:
    """The seed as an unencrypted PKCS#8 v1 PEM (what `openssl genpkey -algorithm ed25519` writes)."""
    b64 = base64.b64encode(PKCS8_V1_PREFIX + seed).decode("ascii")
    return f"-----BEGIN {PEM_PKCS8}-----\n{b64}\n-----END {PEM_PKCS8}-----\n"
