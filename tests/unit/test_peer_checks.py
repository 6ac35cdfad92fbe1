"""consensus: peer request signatures and self-checking fork evidence (pure, no I/O)."""

from __future__ import annotations

import os

import pytest

from consensus.messages import ReplayGuard, SignedRequest, check_peer_request, peer_headers
from consensus.verify import PeerProtocolError, check_consistent, check_fork_evidence, fork_evidence
from ledger.checkpoint import Checkpoint, open_checkpoint, origin_line, sign_checkpoint
from ledger.errors import BadSignature, Conflict
from ledger.merkle import Frontier, leaf_hash
from ledger.signing import public_key_from_seed
from tests.unit.test_merkle import mth, proof

SEED = bytes(range(32))
NONCE = bytes(range(16))
KEY = public_key_from_seed(SEED)
NOW = 1_795_000_000_000


def note(size: int, root: bytes, seed: bytes = SEED) -> str:
    return sign_checkpoint(Checkpoint(origin_line(public_key_from_seed(seed)), size, root), seed)


def other_root(size: int) -> bytes:
    f = Frontier()
    for i in range(size):
        f.append(leaf_hash(b"other-%d" % i))
    return f.root()


# -- peer requests ----------------------------------------------------------------------------


def test_a_signed_peer_request_names_its_node():
    h = peer_headers("GET", "/v1/peer/frontier?digest=ab", b"", NOW, KEY, SEED, NONCE, "http://127.0.0.9:1")
    signed = check_peer_request(h, "GET", "/v1/peer/frontier?digest=ab", b"", NOW + 1000, 300_000)
    assert signed == SignedRequest(KEY, NOW, NONCE.hex(), "http://127.0.0.9:1")


@pytest.mark.parametrize("change", ["path", "method", "body", "stale", "future", "node", "sig", "missing", "nonce",
                                    "no_nonce", "advertise", "added_advertise", "dropped_advertise"])
def test_a_changed_or_stale_peer_request_is_refused(change):
    advertise = None if change == "added_advertise" else "http://127.0.0.9:1"
    h = peer_headers("POST", "/v1/peer/cosign", b'{"size":1}', NOW, KEY, SEED, NONCE, advertise)
    method, path, body, now = "POST", "/v1/peer/cosign", b'{"size":1}', NOW
    if change == "path":
        path = "/v1/peer/notify"
    elif change == "method":
        method = "GET"
    elif change == "body":
        body = b'{"size":2}'
    elif change == "stale":
        now = NOW + 300_001
    elif change == "future":
        now = NOW - 300_001
    elif change == "node":
        h["X-ATS-Node"] = os.urandom(32).hex()
    elif change == "sig":
        h["X-ATS-Signature"] = "!!notbase64"
    elif change == "nonce":
        h["X-ATS-Nonce"] = os.urandom(16).hex()
    elif change == "no_nonce":  # an ats-peer/v1 request
        del h["X-ATS-Nonce"]
    elif change in ("advertise", "added_advertise"):  # the forged X-ATS-Advertise of issue 10
        h["X-ATS-Advertise"] = "http://attacker.example:8470"
    elif change == "dropped_advertise":
        del h["X-ATS-Advertise"]
    else:
        del h["X-ATS-Time"]
    with pytest.raises(BadSignature):
        check_peer_request(h, method, path, body, now, 300_000)


def test_the_documented_peer_request_signature_is_reproduced():
    """docs/protocol.md §11's worked example: the ats-peer/v2 message and its signature."""
    seed = bytes(range(32, 64))
    h = peer_headers("GET", "/v1/peer/frontier", b"", 1767225600000, public_key_from_seed(seed), seed,
                     bytes(range(16)), "http://192.0.2.7:8470")
    assert h["X-ATS-Signature"] == "MPIZDHr/lq8tGgFOqX0vBf5n6wIfGsfNPn74mpbqozuZazqLLnXoZoZ2CFuxe9aSP3b/ywAt6Xej9s68e/SDBw=="
    assert h["X-ATS-Nonce"] == "000102030405060708090a0b0c0d0e0f"


def signed(nonce: int, time_ms: int = NOW, node: bytes = KEY) -> SignedRequest:
    return SignedRequest(node, time_ms, nonce.to_bytes(16, "big").hex(), None)


def test_a_peer_request_is_accepted_once_and_its_replay_refused():
    guard = ReplayGuard(300_000, 100)
    guard.check(signed(1), NOW)
    guard.check(signed(1, node=bytes(32)), NOW)  # the same nonce from another node is another request
    with pytest.raises(Conflict) as e:
        guard.check(signed(1), NOW + 299_000)
    assert e.value.code == "peer_request_replayed"


def test_the_replay_guard_forgets_requests_that_the_time_check_refuses_anyway():
    guard = ReplayGuard(1000, 100)
    for i in range(50):
        guard.check(signed(i, NOW + i), NOW + i)
    guard.check(signed(99, NOW + 2000), NOW + 2000)
    assert len(guard) == 1


def test_a_full_replay_guard_refuses_everything_as_old_as_what_it_forgot():
    guard = ReplayGuard(300_000, 10)
    for i in range(10):
        guard.check(signed(i, NOW + i), NOW + 10)
    guard.check(signed(10, NOW + 10), NOW + 10)  # forgets nonce 0 (time NOW)
    assert len(guard) == 10 and guard.floor_ms == NOW
    for nonce, time_ms in ((0, NOW), (11, NOW)):  # the forgotten request, or another as old: refused
        with pytest.raises(Conflict):
            guard.check(signed(nonce, time_ms), NOW + 10)
    for i in range(1, 11):
        with pytest.raises(Conflict):
            guard.check(signed(i, NOW + i), NOW + 10)


def test_a_replay_guard_refuses_requests_signed_before_it_started():
    guard = ReplayGuard(300_000, 10, floor_ms=NOW)
    with pytest.raises(Conflict):
        guard.check(signed(1, NOW - 5), NOW)
    guard.check(signed(2, NOW + 1), NOW + 1)


# -- fork evidence ------------------------------------------------------------------------------


def test_two_roots_at_one_size_are_evidence_anyone_can_check():
    a, b = note(5, mth(0, 5)), note(5, other_root(5))
    origin, cp_a, cp_b = check_fork_evidence(fork_evidence(KEY, a, b))
    assert origin == KEY and cp_a.size == cp_b.size == 5 and cp_a.root != cp_b.root


@pytest.mark.parametrize("m,n", [(1, 2), (2, 7), (3, 8), (4, 9), (6, 64), (8, 9)])
def test_a_root_that_a_larger_signed_tree_contradicts_is_evidence(m, n):
    a = note(m, other_root(m))  # the origin signed another history of size m
    b = note(n, mth(0, n))
    evidence = fork_evidence(KEY, a, b, mth(0, m), proof(m, n))
    assert check_fork_evidence(evidence)[0] == KEY


def test_check_consistent_raises_a_fork_with_evidence_at_one_size():
    a, b = note(5, mth(0, 5)), note(5, other_root(5))
    held, new = open_checkpoint(a, KEY)[0], open_checkpoint(b, KEY)[0]
    with pytest.raises(PeerProtocolError) as e:
        check_consistent(held, a, new, b, [])
    assert e.value.code == "fork"
    assert check_fork_evidence(e.value.evidence)[0] == KEY


def test_a_bad_proof_blames_the_peer_not_the_origin():
    a, b = note(3, mth(0, 3)), note(8, mth(0, 8))
    held, new = open_checkpoint(a, KEY)[0], open_checkpoint(b, KEY)[0]
    bad = proof(3, 8)
    bad[0] = bytes(32)
    with pytest.raises(PeerProtocolError) as e:
        check_consistent(held, a, new, b, bad)
    assert e.value.code == "bad_proof" and not e.value.evidence
    check_consistent(held, a, new, b, proof(3, 8))  # the right proof passes


def _bad_cases():
    m, n = 3, 8
    good = fork_evidence(KEY, note(m, other_root(m)), note(n, mth(0, n)), mth(0, m), proof(m, n))
    stranger = bytes(range(1, 33))
    yield "consistent", fork_evidence(KEY, note(m, mth(0, m)), note(n, mth(0, n)), mth(0, m), proof(m, n))
    yield "same root", fork_evidence(KEY, note(5, mth(0, 5)), note(5, mth(0, 5)))
    yield "a_root_in_b is a's root", {**good, "a_root_in_b": other_root(m).hex()}
    yield "tampered proof", {**good, "proof": [bytes(32).hex()] + good["proof"][1:]}
    yield "a larger than b", fork_evidence(KEY, note(n, mth(0, n)), note(m, other_root(m)))
    yield "signed by another key", fork_evidence(KEY, note(5, mth(0, 5), stranger), note(5, other_root(5)))
    yield "another origin named", {**fork_evidence(KEY, note(5, mth(0, 5)), note(5, other_root(5))),
                                   "origin": public_key_from_seed(stranger).hex()}
    yield "not a dict", ["a", "b"]
    yield "missing proof", {k: v for k, v in good.items() if k != "proof"}
    yield "origin not hex", {**good, "origin": "zz" * 32}
    yield "huge", {**good, "a": good["a"] + "x" * 20_000}


@pytest.mark.parametrize("name,evidence", list(_bad_cases()), ids=[c[0] for c in _bad_cases()])
def test_evidence_that_proves_nothing_is_refused(name, evidence):
    with pytest.raises(PeerProtocolError) as e:
        check_fork_evidence(evidence)
    assert e.value.code == "bad_evidence"


# -- rolling upgrade from 0.1: ats-peer/v1 beside v2 (peer_protocol_v1) --------------------------


def v1_only(h: dict[str, str]) -> dict[str, str]:
    """What a 0.1 node sends, or what an attacker makes of a captured request: v2 headers dropped."""
    return {k: v for k, v in h.items() if k not in ("X-ATS-Nonce", "X-ATS-Signature-V2")}


def test_a_request_signed_both_ways_reads_as_v2_and_as_v1_on_an_old_node():
    from consensus.messages import request_message_v1
    from ledger.signing import verify_raw
    import base64

    h = peer_headers("POST", "/v1/peer/notify", b"{}", NOW, KEY, SEED, NONCE, "http://127.0.0.9:1", v1_compat=True)
    signed = check_peer_request(h, "POST", "/v1/peer/notify", b"{}", NOW, 300_000, accept_v1=True)
    assert (signed.version, signed.advertise, signed.nonce) == (2, "http://127.0.0.9:1", NONCE.hex())
    assert len(signed.aliases) == 1
    # a 0.1 node checks X-ATS-Signature as v1: method, path, time, body hash
    v1 = request_message_v1("POST", "/v1/peer/notify", NOW, b"{}")
    assert verify_raw(v1, base64.b64decode(h["X-ATS-Signature"]), KEY)


def test_a_v1_request_is_accepted_only_when_allowed_and_its_advertise_is_never_acted_on():
    h = v1_only(peer_headers("GET", "/v1/peer/frontier", b"", NOW, KEY, SEED, NONCE, None, v1_compat=True))
    h["X-ATS-Advertise"] = "http://127.0.0.66:1"  # unsigned in v1: an attacker's
    with pytest.raises(BadSignature, match="ats-peer/v1"):
        check_peer_request(h, "GET", "/v1/peer/frontier", b"", NOW, 300_000)
    signed = check_peer_request(h, "GET", "/v1/peer/frontier", b"", NOW, 300_000, accept_v1=True)
    assert (signed.version, signed.node, signed.advertise) == (1, KEY, None)
    with pytest.raises(BadSignature):  # the v1 signature covers the path
        check_peer_request(h, "GET", "/v1/peer/frontier?x=1", b"", NOW, 300_000, accept_v1=True)


def test_a_captured_request_counts_once_whether_replayed_as_v2_or_stripped_to_v1():
    h = peer_headers("POST", "/v1/peer/cosign", b"{}", NOW, KEY, SEED, NONCE, None, v1_compat=True)
    guard = ReplayGuard(300_000, 100)
    guard.check(check_peer_request(h, "POST", "/v1/peer/cosign", b"{}", NOW, 300_000, accept_v1=True), NOW)
    for replay in (h, v1_only(h)):
        signed = check_peer_request(replay, "POST", "/v1/peer/cosign", b"{}", NOW + 5, 300_000, accept_v1=True)
        with pytest.raises(Conflict):
            guard.check(signed, NOW + 5)
    # and a v1 request seen first blocks its own replay
    old = v1_only(peer_headers("POST", "/v1/peer/cosign", b"[]", NOW, KEY, SEED, NONCE, None, v1_compat=True))
    guard.check(check_peer_request(old, "POST", "/v1/peer/cosign", b"[]", NOW, 300_000, accept_v1=True), NOW)
    with pytest.raises(Conflict):
        guard.check(check_peer_request(old, "POST", "/v1/peer/cosign", b"[]", NOW, 300_000, accept_v1=True), NOW)


@pytest.mark.parametrize("spelling", ["0{t}", "+{t}", " {t}", "{t} ", "1_{t}", "{t}.0"])
def test_a_peer_time_has_one_spelling(spelling):
    h = peer_headers("GET", "/v1/peer/frontier", b"", NOW, KEY, SEED, NONCE)
    h["X-ATS-Time"] = spelling.format(t=NOW)
    with pytest.raises(BadSignature, match="X-ATS-Time"):
        check_peer_request(h, "GET", "/v1/peer/frontier", b"", NOW, 300_000)
