"""ledger/checkpoint.py: C2SP signed-note, tlog-checkpoint and tlog-cosignature.

Golden vectors come from golang.org/x/mod/sumdb/note (note_test.go),
golang.org/x/mod/sumdb/tlog (note_test.go) and the C2SP spec examples. A minimal
signed-note verifier written here stands in for a "standard verifier" (P10).
"""

from __future__ import annotations

import base64
import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from ledger import checkpoint as cpmod
from ledger.checkpoint import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    NoteSignature,
    Verifier,
    add_signatures,
    cosign,
    key_hash,
    open_checkpoint,
    open_note,
    origin_line,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
    verifier_key,
    verify_cosignature,
)
from ledger.errors import BadSignature, InvariantViolation, LedgerError, Malformed

GOLDEN_PATH = Path(__file__).resolve().parents[1] / "vectors" / "checkpoint-golden.txt"

# --- vectors from golang.org/x/mod/sumdb/note/note_test.go ------------------------

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
PETER_SIG = f"\u2014 PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"\u2014 EnochRoot {ENOCH_B64}\n"

# --- example from c2sp.org/tlog-cosignature -----------------------------------------

C2SP_COSIGNED_EXAMPLE = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
    "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJ"
    "sX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)

# --- our own fixed keys -------------------------------------------------------------

NODE_SEED = bytes(range(32))
NODE_PUB = bytes(SigningKey(NODE_SEED).verify_key)
WITNESS_SEED = bytes(range(64, 96))
WITNESS_PUB = bytes(SigningKey(WITNESS_SEED).verify_key)
WITNESS_NAME = "witness.example/w1"
OTHER_SEED = bytes(range(100, 132))
OTHER_PUB = bytes(SigningKey(OTHER_SEED).verify_key)


@contextmanager
def rejects(cls: type[LedgerError], code: str) -> Iterator[None]:
    """Expect a LedgerError of class cls with the stable code."""
    with pytest.raises(cls) as info:
        yield
    assert info.value.code == code, info.value


def peter() -> Verifier:
    return Verifier.from_vkey(PETER_VKEY)


def enoch() -> Verifier:
    return Verifier.from_vkey(ENOCH_VKEY)


def peter_seed() -> bytes:
    # sumdb/note signer key: "PRIVATE+KEY+<name>+<hash>+base64(0x01 ‖ seed)".
    key = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert key[0] == ALG_ED25519 and len(key) == 33
    return key[1:]


def insert_abcd(sig_line: str) -> str:
    """Go's test mangling sig[:60] + "ABCD" + sig[60:], at byte offset 60."""
    raw = sig_line.encode("utf-8")
    return (raw[:60] + b"ABCD" + raw[60:]).decode("utf-8")


def sample_checkpoint(size: int = 7) -> Checkpoint:
    return Checkpoint(origin_line(NODE_PUB), size, bytes(range(32, 64)))


# --- an independent, minimal signed-note verifier (the "standard verifier") ------


def oracle_open(note: bytes, vkey: str) -> bytes:
    """Verify note with vkey the way any C2SP signed-note verifier would; return the text."""
    name, hash_hex, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64, validate=True)
    assert key[0] == 0x01 and len(key) == 33
    assert hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() == hash_hex
    note.decode("utf-8")  # must be UTF-8
    assert all(b >= 0x20 or b == 0x0A for b in note)
    head, sep, block = note.rpartition(b"\n\n")
    assert sep and block.endswith(b"\n")
    text = head + b"\n"
    for line in block[:-1].split(b"\n"):
        dash, line_name, b64 = line.split(b" ")
        assert dash == "\u2014".encode("utf-8")
        raw = base64.b64decode(b64, validate=True)
        if line_name.decode() == name and raw[:4].hex() == hash_hex:
            VerifyKey(key[1:]).verify(text, raw[4:])  # raises if bad
            return text
    raise AssertionError("no signature by " + name)


def oracle_cosignature(body: bytes, line: str, name: str, public_key: bytes) -> int:
    """Check a cosignature/v1 line by hand from the tlog-cosignature spec text."""
    dash, line_name, b64 = line.rstrip("\n").split(" ")
    assert dash == "\u2014" and line_name == name
    raw = base64.b64decode(b64, validate=True)
    assert raw[:4] == hashlib.sha256(name.encode() + b"\n\x04" + public_key).digest()[:4]
    assert len(raw) == 4 + 8 + 64
    timestamp = int.from_bytes(raw[4:12], "big")
    message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + body
    VerifyKey(public_key).verify(message, raw[12:])
    return timestamp


def test_oracle_accepts_the_go_peter_neumann_note() -> None:
    # The oracle itself is checked against the Go vector before we trust it.
    note = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    assert oracle_open(note, PETER_VKEY) == GO_TEXT.encode()
    assert oracle_open(note, ENOCH_VKEY) == GO_TEXT.encode()


# --- verifier keys ----------------------------------------------------------------


def test_go_verifier_key_parses_to_peter_neumanns_key() -> None:
    name, kh, pub = parse_verifier_key(PETER_VKEY)
    assert name == "PeterNeumann"
    assert kh == bytes.fromhex("c74f20a3")
    assert kh == key_hash(name, ALG_ED25519, pub)
    assert verifier_key(name, pub) == PETER_VKEY
    assert peter().vkey() == PETER_VKEY


def test_go_signer_key_derives_the_same_public_key_and_hash() -> None:
    pub = bytes(SigningKey(peter_seed()).verify_key)
    assert pub == parse_verifier_key(PETER_VKEY)[2]
    assert key_hash("PeterNeumann", ALG_ED25519, pub).hex() == PETER_SKEY.split("+", 4)[3]


def test_go_verifier_key_substrings_and_byte_increments_are_rejected() -> None:
    # TestNewVerifier: every proper substring and every single-byte change fails.
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if i != 0 or j != len(b):
                with rejects(Malformed, "malformed_note"):
                    parse_verifier_key(b[i:j])
    for i in range(len(b)):
        with rejects(Malformed, "malformed_note"):
            parse_verifier_key(b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :])


@pytest.mark.parametrize(
    "vkey",
    [
        # Go: wrong length key, with adjusted key hash.
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        # Go: unknown algorithm, with adjusted key hash.
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+0xc74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_verifier_keys_are_rejected(vkey: str) -> None:
    with rejects(Malformed, "malformed_note"):
        parse_verifier_key(vkey)


def test_go_verifier_key_hash_accepts_uppercase_hex_like_strconv() -> None:
    upper = PETER_VKEY.replace("c74f20a3", "C74F20A3")
    assert parse_verifier_key(upper) == parse_verifier_key(PETER_VKEY)


def test_verifier_key_of_our_node_is_the_origin_with_hash_and_key() -> None:
    origin = origin_line(NODE_PUB)
    assert origin == "ats-ledger/" + NODE_PUB.hex()
    vkey = verifier_key(origin, NODE_PUB)
    name, kh, pub = parse_verifier_key(vkey)
    assert (name, pub) == (origin, NODE_PUB)
    assert kh == hashlib.sha256(origin.encode() + b"\n\x01" + NODE_PUB).digest()[:4]


# --- signing and opening notes: Go vectors ------------------------------------------


def test_go_sign_produces_the_peter_neumann_note_byte_for_byte() -> None:
    want = GO_TEXT + "\n" + PETER_SIG
    assert sign_note(GO_TEXT, "PeterNeumann", peter_seed()) == want


def test_go_open_verifies_peter_and_keeps_unknown_enoch_unverified() -> None:
    text, verified, unverified = open_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter()])
    assert text == GO_TEXT
    assert verified == [NoteSignature.parse_line(PETER_SIG[:-1])]
    assert unverified == [NoteSignature.parse_line(ENOCH_SIG[:-1])]
    assert verified[0].key_hash.hex() == "c74f20a3"
    assert unverified[0].key_hash.hex() == "af0cfe78"


def test_go_open_verifies_both_known_keys() -> None:
    opened = open_note((GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter(), enoch()])
    assert [s.name for s in opened.verified] == ["PeterNeumann", "EnochRoot"]
    assert opened.unverified == []


def test_go_open_with_no_known_key_is_unknown_key() -> None:
    with rejects(BadSignature, "unknown_key"):
        open_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])


def test_go_open_with_an_unused_duplicated_verifier_succeeds() -> None:
    opened = open_note(GO_TEXT + "\n" + PETER_SIG, [enoch(), peter(), enoch()])
    assert [s.name for s in opened.verified] == ["PeterNeumann"]


def test_ambiguous_verifiers_for_one_name_and_hash_are_refused() -> None:
    # A 32-bit key-hash collision: two different keys claim PeterNeumann+c74f20a3.
    impostor = Verifier("PeterNeumann", OTHER_PUB)
    object.__setattr__(impostor, "key_hash", peter().key_hash)
    with rejects(BadSignature, "unknown_key"):
        open_note(GO_TEXT + "\n" + PETER_SIG, [peter(), impostor])


@pytest.mark.parametrize("verifiers", [[], [Verifier.from_vkey(PETER_VKEY)]])
def test_go_open_with_101_signatures_is_malformed(verifiers: list[Verifier]) -> None:
    with rejects(Malformed, "malformed_note"):
        open_note(GO_TEXT + "\n" + PETER_SIG * 101, verifiers)


def test_open_with_exactly_100_repeated_signatures_counts_one() -> None:
    opened = open_note(GO_TEXT + "\n" + PETER_SIG * 100, [peter()])
    assert len(opened.verified) == 1


def test_go_open_invalid_signature_is_bad_signature() -> None:
    with rejects(BadSignature, "bad_signature"):
        open_note(GO_TEXT + "\n" + insert_abcd(PETER_SIG), [peter()])


def test_go_open_drops_repeated_identical_signature_lines() -> None:
    note = GO_TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + insert_abcd(ENOCH_SIG)
    _, verified, unverified = open_note(note, [peter()])
    enoch_abcd = NoteSignature.parse_line(insert_abcd(ENOCH_SIG)[:-1])
    assert verified == [NoteSignature.parse_line(PETER_SIG[:-1])]
    assert unverified == [NoteSignature.parse_line(ENOCH_SIG[:-1]), enoch_abcd]


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,  # no blank line, no signatures
        GO_TEXT + "\n",  # blank line, no signatures
        GO_TEXT + "\n" + PETER_SIG[:-1],  # last line not newline-terminated
        "\x01" + GO_TEXT + "\n" + PETER_SIG,  # control character
        "\u2014 Bad Name " + PETER_B64,
        GO_TEXT + "\n" + f"\u2014 Bad Name {PETER_B64}\n",  # name ends at first space
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ],
)
def test_go_open_bad_syntax_is_malformed(note: str) -> None:
    with rejects(Malformed, "malformed_note"):
        open_note(note, [peter()])


def test_go_open_non_utf8_is_malformed() -> None:
    # Go's "\xff" + text case: not valid UTF-8.
    with rejects(Malformed, "malformed_note"):
        open_note(b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), [peter()])
    with rejects(Malformed, "malformed_note"):  # an encoded surrogate is not UTF-8 either
        open_note(b"\xed\xa0\x80\n" + (GO_TEXT + "\n" + PETER_SIG).encode(), [peter()])
    with rejects(Malformed, "malformed_note"):  # nor is a lone surrogate in a str
        open_note("\ud800\n" + GO_TEXT + "\n" + PETER_SIG, [peter()])


# --- signing and opening notes: our own rejections -------------------------------


def node_note(text: str = "hello\n") -> str:
    return sign_note(text, origin_line(NODE_PUB), NODE_SEED)


def node_verifier() -> Verifier:
    return Verifier(origin_line(NODE_PUB), NODE_PUB)


def test_sign_then_open_round_trips_text_with_blank_lines() -> None:
    text = "first\n\nthird, after an empty line\n"
    opened = open_note(node_note(text), [node_verifier()])
    assert opened.text == text and len(opened.verified) == 1 and opened.unverified == []


def test_tampered_body_is_bad_signature() -> None:
    note = node_note("pay 10\n").replace("pay 10", "pay 99")
    with rejects(BadSignature, "bad_signature"):
        open_note(note, [node_verifier()])


def test_tampered_signature_is_bad_signature() -> None:
    text, verified, _ = open_note(node_note(), [node_verifier()])
    good = verified[0]
    flipped = bytes([good.signature[0] ^ 1]) + good.signature[1:]
    bad = NoteSignature(good.name, good.key_hash, flipped)
    with rejects(BadSignature, "bad_signature"):
        open_note(text + "\n" + bad.line(), [node_verifier()])


def test_note_signed_by_another_key_is_unknown_key() -> None:
    note = sign_note("hello\n", origin_line(NODE_PUB), OTHER_SEED)  # same name, other key
    with rejects(BadSignature, "unknown_key"):
        open_note(note, [node_verifier()])


def test_signature_line_with_wrong_key_hash_is_ignored_as_unknown() -> None:
    good = open_note(node_note(), [node_verifier()]).verified[0]
    wrong = NoteSignature(good.name, bytes(4), good.signature)
    with rejects(BadSignature, "unknown_key"):
        open_note("hello\n\n" + wrong.line(), [node_verifier()])
    opened = open_note("hello\n\n" + good.line() + wrong.line(), [node_verifier()])
    assert opened.verified == [good] and opened.unverified == [wrong]


def test_missing_blank_line_is_malformed() -> None:
    with rejects(Malformed, "malformed_note"):
        open_note(node_note().replace("\n\n", "\n"), [node_verifier()])


def test_duplicate_key_with_a_different_failing_signature_is_bad_signature() -> None:
    # Stricter than sumdb/note (which skips it): C2SP signed-note says verifiers
    # MUST verify every signature whose name and key ID match a known key.
    good = open_note(node_note(), [node_verifier()]).verified[0]
    bad = NoteSignature(good.name, good.key_hash, bytes(64))
    with rejects(BadSignature, "bad_signature"):
        open_note("hello\n\n" + good.line() + bad.line(), [node_verifier()])


@pytest.mark.parametrize(
    "b64",
    [
        "not base64!",
        "",
        "QUJD",  # 3 bytes: shorter than a key hash plus one byte
        PETER_B64.rstrip("="),  # missing padding
        PETER_B64[:-2] + "N=",  # non-zero padding bits: not canonical
        PETER_B64.replace("/", "_"),  # URL-safe alphabet
    ],
)
def test_bad_base64_in_signature_line_is_malformed(b64: str) -> None:
    with rejects(Malformed, "malformed_note"):
        open_note(GO_TEXT + "\n" + f"\u2014 PeterNeumann {b64}\n", [peter()])


@pytest.mark.parametrize("name", ["", "a+b", "bad name", "tab\tname", "nbsp\u00a0name", "em\u2003space"])
def test_invalid_key_names_are_refused_when_signing(name: str) -> None:
    with rejects(Malformed, "malformed_note"):
        sign_note("hello\n", name, NODE_SEED)


@pytest.mark.parametrize("text", ["", "no final newline", "bell\x07\n", "cr\r\n"])
def test_texts_that_cannot_be_note_text_are_refused_when_signing(text: str) -> None:
    with rejects(Malformed, "malformed_note"):
        sign_note(text, "name", NODE_SEED)


def test_signing_with_a_wrong_size_seed_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation):
        sign_note("hello\n", "name", bytes(31))


def test_oversized_note_is_malformed_before_parsing() -> None:
    with rejects(Malformed, "malformed_note"):
        open_note("x" * (cpmod.NOTE_BYTES_MAX + 1) + "\n\n" + PETER_SIG, [peter()])


def test_add_signatures_appends_and_replaces_same_key_lines() -> None:
    note = node_note()
    first = NoteSignature("w", b"\x00\x00\x00\x01", b"one")
    second = NoteSignature("w", b"\x00\x00\x00\x01", b"two")
    other = NoteSignature("v", b"\x00\x00\x00\x02", b"three")
    once = add_signatures(note, [first, other])
    twice = add_signatures(once, [second])
    _, verified, unverified = open_note(twice, [node_verifier()])
    assert len(verified) == 1 and unverified == [other, second]
    with rejects(Malformed, "malformed_note"):
        add_signatures(note, [first, second])  # two new lines for one key
    with rejects(Malformed, "malformed_note"):
        add_signatures(note, [NoteSignature(f"w{i}", bytes(4), b"x") for i in range(100)])


# --- checkpoints ----------------------------------------------------------------


def test_go_tlog_tree_body_parses_and_formats_identically() -> None:
    # sumdb/tlog TestFormatTree: RecordHash("hello world") = SHA-256(0x00 ‖ data).
    body = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"
    cp = Checkpoint.parse(body)
    assert cp == Checkpoint(
        "go.sum database tree", 123456789012, hashlib.sha256(b"\x00hello world").digest()
    )
    assert cp.body() == body


def test_c2sp_cosigned_example_has_the_spec_layout() -> None:
    text, sigs = cpmod._split_note(C2SP_COSIGNED_EXAMPLE)
    cp = Checkpoint.parse(text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    log_sig, witness_sig = sigs
    assert len(log_sig.signature) == 64
    assert witness_sig.key_hash.hex() == "8d66cf3f"
    assert len(witness_sig.signature) == 8 + 64
    # The spec's signed-message example reads "time 1679315147".
    assert int.from_bytes(witness_sig.signature[:8], "big") == 1679315147


def test_checkpoint_with_extension_lines_round_trips() -> None:
    cp = Checkpoint("example.com/log", 0, bytes(32), ("ext one", "— looks like a signature"))
    assert cp.body().count("\n") == 5
    assert Checkpoint.parse(cp.body()) == cp


ROOT_B64 = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"o\n007\n{ROOT_B64}\n",  # leading zeroes
        f"o\n00\n{ROOT_B64}\n",
        f"o\n-1\n{ROOT_B64}\n",  # negative
        f"o\n+7\n{ROOT_B64}\n",
        f"o\n 7\n{ROOT_B64}\n",
        f"o\n7 \n{ROOT_B64}\n",
        f"o\n0x7\n{ROOT_B64}\n",
        f"o\n1_000\n{ROOT_B64}\n",
        f"o\n\u0667\n{ROOT_B64}\n",  # ARABIC-INDIC DIGIT SEVEN: int() would accept it
        f"o\n{2**63}\n{ROOT_B64}\n",  # above int64
        f"o\n\n{ROOT_B64}\n",  # empty size
        f"o\n7\n{base64.b64encode(bytes(31)).decode()}\n",  # root of 31 bytes
        f"o\n7\n{base64.b64encode(bytes(33)).decode()}\n",  # root of 33 bytes
        f"o\n7\n{ROOT_B64.rstrip('=')}\n",  # missing padding
        f"o\n7\n{ROOT_B64[:-2]}9=\n",  # non-zero padding bits
        f"o\n7\n{ROOT_B64.replace('/', '_').replace('+', '-')}x\n",
        f"\n7\n{ROOT_B64}\n",  # empty origin
        f"o\n7\n{ROOT_B64}\n\n",  # empty extension line
        f"o\n7\n{ROOT_B64}\nok\n\nafter\n",
        f"o\n7\n{ROOT_B64}",  # no final newline
        "o\n7\n",  # only two lines
        f"o\n7\n{ROOT_B64}\nbell\x07\n",  # control character
        f"o\r\n7\n{ROOT_B64}\n",  # CRLF
    ],
)
def test_checkpoint_parse_rejects_non_canonical_bodies(body: str) -> None:
    with rejects(Malformed, "malformed_checkpoint"):
        Checkpoint.parse(body)


def test_checkpoint_parse_accepts_the_size_bounds() -> None:
    assert Checkpoint.parse(f"o\n0\n{ROOT_B64}\n").size == 0
    assert Checkpoint.parse(f"o\n{2**63 - 1}\n{ROOT_B64}\n").size == 2**63 - 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": -1},
        {"size": True},
        {"size": 2**63},
        {"root": bytes(31)},
        {"root": "not bytes"},
        {"origin": ""},
        {"origin": "two\nlines"},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
    ],
)
def test_checkpoint_constructor_rejects_unencodable_values(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"origin": "o", "size": 1, "root": bytes(32)} | kwargs
    with rejects(Malformed, "malformed_checkpoint"):
        Checkpoint(**fields)  # type: ignore[arg-type]


def test_sign_checkpoint_then_open_returns_the_checkpoint() -> None:
    cp = sample_checkpoint()
    note = sign_checkpoint(cp, NODE_SEED)
    assert open_checkpoint(note, NODE_PUB) == (cp, [])
    assert oracle_open(note.encode(), verifier_key(cp.origin, NODE_PUB)) == cp.body().encode()


def test_open_checkpoint_with_the_wrong_key_is_unknown_key() -> None:
    with rejects(BadSignature, "unknown_key"):
        open_checkpoint(sign_checkpoint(sample_checkpoint(), NODE_SEED), OTHER_PUB)


def test_open_checkpoint_rejects_a_body_naming_another_origin() -> None:
    # Signed by our key under our key name, but the body claims another origin.
    foreign = Checkpoint(origin_line(OTHER_PUB), 1, bytes(32))
    note = sign_note(foreign.body(), origin_line(NODE_PUB), NODE_SEED)
    with rejects(Malformed, "malformed_checkpoint"):
        open_checkpoint(note, NODE_PUB)


def test_open_checkpoint_rejects_a_signed_text_that_is_not_a_checkpoint() -> None:
    note = sign_note("just text\n", origin_line(NODE_PUB), NODE_SEED)
    with rejects(Malformed, "malformed_checkpoint"):
        open_checkpoint(note, NODE_PUB)


def test_sign_checkpoint_refuses_an_origin_that_is_not_the_signing_key() -> None:
    with rejects(Malformed, "malformed_checkpoint"):
        sign_checkpoint(Checkpoint(origin_line(OTHER_PUB), 1, bytes(32)), NODE_SEED)


_line_chars = st.characters(min_codepoint=0x20, blacklist_categories=("Cs",))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    size=st.integers(min_value=0, max_value=2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(st.text(_line_chars, min_size=1, max_size=20), max_size=3),
)
def test_any_checkpoint_signs_opens_and_passes_the_oracle(
    seed: bytes, size: int, root: bytes, extensions: list[str]
) -> None:
    pub = bytes(SigningKey(seed).verify_key)
    cp = Checkpoint(origin_line(pub), size, root, tuple(extensions))
    assert Checkpoint.parse(cp.body()) == cp
    note = sign_checkpoint(cp, seed)
    assert open_checkpoint(note.encode("utf-8"), pub) == (cp, [])
    assert oracle_open(note.encode("utf-8"), verifier_key(cp.origin, pub)) == cp.body().encode()


_name_chars = st.characters(
    min_codepoint=0x21,
    blacklist_categories=("Cs", "Zs", "Zl", "Zp"),
    blacklist_characters="+\x85",
)


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(_name_chars, min_size=1, max_size=30),
    lines=st.lists(st.text(_line_chars, max_size=30), min_size=1, max_size=4),
)
def test_any_note_signs_and_opens_with_us_and_the_oracle(name: str, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    note = sign_note(text, name, NODE_SEED)
    assert open_note(note, [Verifier(name, NODE_PUB)]).text == text
    assert oracle_open(note.encode("utf-8"), verifier_key(name, NODE_PUB)) == text.encode("utf-8")


# --- cosignatures ------------------------------------------------------------------


def test_cosign_then_verify_returns_the_timestamp() -> None:
    cp = sample_checkpoint()
    sig = cosign(cp, WITNESS_NAME, WITNESS_SEED, 1_700_000_000)
    assert verify_cosignature(cp, sig, WITNESS_NAME, WITNESS_PUB) == 1_700_000_000
    assert sig.key_hash == key_hash(WITNESS_NAME, ALG_COSIGNATURE_V1, WITNESS_PUB)
    assert sig.key_hash != key_hash(WITNESS_NAME, ALG_ED25519, WITNESS_PUB)


def test_cosignature_matches_the_spec_message_built_by_hand() -> None:
    cp = sample_checkpoint()
    sig = cosign(cp, WITNESS_NAME, WITNESS_SEED, 1_679_315_147)
    body = cp.body().encode()
    assert oracle_cosignature(body, sig.line(), WITNESS_NAME, WITNESS_PUB) == 1_679_315_147
    assert cpmod.cosignature_message(cp, 1_679_315_147) == b"cosignature/v1\ntime 1679315147\n" + body


def test_cosignature_over_a_different_checkpoint_is_bad_signature() -> None:
    sig = cosign(sample_checkpoint(7), WITNESS_NAME, WITNESS_SEED, 1_700_000_000)
    with rejects(BadSignature, "bad_signature"):
        verify_cosignature(sample_checkpoint(8), sig, WITNESS_NAME, WITNESS_PUB)
    forked = Checkpoint(sample_checkpoint().origin, 7, bytes(32))
    with rejects(BadSignature, "bad_signature"):
        verify_cosignature(forked, sig, WITNESS_NAME, WITNESS_PUB)


def test_cosignature_with_an_altered_timestamp_is_bad_signature() -> None:
    cp = sample_checkpoint()
    sig = cosign(cp, WITNESS_NAME, WITNESS_SEED, 1_700_000_000)
    later = NoteSignature(sig.name, sig.key_hash, (1_700_000_001).to_bytes(8, "big") + sig.signature[8:])
    with rejects(BadSignature, "bad_signature"):
        verify_cosignature(cp, later, WITNESS_NAME, WITNESS_PUB)


def test_cosignature_from_another_witness_key_or_name_is_unknown_key() -> None:
    cp = sample_checkpoint()
    sig = cosign(cp, WITNESS_NAME, WITNESS_SEED, 1_700_000_000)
    with rejects(BadSignature, "unknown_key"):
        verify_cosignature(cp, sig, WITNESS_NAME, OTHER_PUB)
    with rejects(BadSignature, "unknown_key"):
        verify_cosignature(cp, sig, "witness.example/w2", WITNESS_PUB)


def test_cosignature_of_the_wrong_length_or_time_is_malformed() -> None:
    cp = sample_checkpoint()
    sig = cosign(cp, WITNESS_NAME, WITNESS_SEED, 1_700_000_000)
    short = NoteSignature(sig.name, sig.key_hash, sig.signature[:-1])
    with rejects(Malformed, "malformed_note"):
        verify_cosignature(cp, short, WITNESS_NAME, WITNESS_PUB)
    too_late = NoteSignature(sig.name, sig.key_hash, (2**63).to_bytes(8, "big") + sig.signature[8:])
    with rejects(Malformed, "malformed_note"):
        verify_cosignature(cp, too_late, WITNESS_NAME, WITNESS_PUB)
    for bad_time in (-1, 2**63, True):
        with rejects(Malformed, "malformed_note"):
            cosign(cp, WITNESS_NAME, WITNESS_SEED, bad_time)


def test_served_checkpoint_carries_cosignatures_as_extra_lines() -> None:
    cp = sample_checkpoint()
    old = cosign(cp, WITNESS_NAME, WITNESS_SEED, 1_700_000_000)
    new = cosign(cp, WITNESS_NAME, WITNESS_SEED, 1_700_000_060)
    note = add_signatures(add_signatures(sign_checkpoint(cp, NODE_SEED), [old]), [new])
    opened, others = open_checkpoint(note, NODE_PUB)
    assert opened == cp and others == [new]  # the newer cosignature replaced the older
    assert verify_cosignature(cp, others[0], WITNESS_NAME, WITNESS_PUB) == 1_700_000_060


# --- the golden checkpoint -----------------------------------------------------------


def golden_note() -> str:
    cp = Checkpoint(origin_line(NODE_PUB), 7, bytes(range(32, 64)))
    witness = cosign(cp, WITNESS_NAME, WITNESS_SEED, 1_700_000_000)
    return add_signatures(sign_checkpoint(cp, NODE_SEED), [witness])


def test_golden_checkpoint_note_is_byte_identical() -> None:
    assert golden_note().encode("utf-8") == GOLDEN_PATH.read_bytes()


def test_golden_checkpoint_verifies_with_the_independent_verifier() -> None:
    golden = GOLDEN_PATH.read_bytes()
    # Pin the public key of seed 00..1f too, so a change in key derivation shows.
    assert NODE_PUB.hex() == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    vkey = verifier_key(origin_line(NODE_PUB), NODE_PUB)
    body = oracle_open(golden, vkey)
    witness_line = golden.decode("utf-8").splitlines()[-1]
    assert oracle_cosignature(body, witness_line, WITNESS_NAME, WITNESS_PUB) == 1_700_000_000
    cp, others = open_checkpoint(golden, NODE_PUB)
    assert cp.body().encode() == body and cp.size == 7
    assert verify_cosignature(cp, others[0], WITNESS_NAME, WITNESS_PUB) == 1_700_000_000


def test_checkpoint_signer_writes_exactly_what_sign_checkpoint_writes():
    from ledger.checkpoint import CheckpointSigner

    seed = bytes(range(32))
    signer = CheckpointSigner(seed)
    for size, root in ((0, hashlib.sha256(b"").digest()), (7, bytes(range(32, 64))), (2**40, b"\xff" * 32)):
        note = signer.sign(size, root)
        assert note == sign_checkpoint(Checkpoint(signer.origin, size, root), seed)
        assert open_checkpoint(note, signer.public_key)[0] == Checkpoint(signer.origin, size, root)
