"""consensus: peer request signatures and self-checking fork evidence (pure, no I/O)."""

from __future__ import annotations

import os

import pytest

from consensus.messages import check_peer_request, peer_headers
from consensus.verify import PeerProtocolError, check_consistent, check_fork_evidence, fork_evidence
from ledger.checkpoint import Checkpoint, open_checkpoint, origin_line, sign_checkpoint
from ledger.errors import BadSignature
from ledger.merkle import Frontier, leaf_hash
from ledger.signing import public_key_from_seed
from tests.unit.test_merkle import mth, proof

SEED = bytes(range(32))
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
    h = peer_headers("GET", "/v1/peer/frontier?digest=ab", b"", NOW, KEY, SEED)
    assert check_peer_request(h, "GET", "/v1/peer/frontier?digest=ab", b"", NOW + 1000, 300_000) == KEY


@pytest.mark.parametrize("change", ["path", "method", "body", "stale", "future", "node", "sig", "missing"])
def test_a_changed_or_stale_peer_request_is_refused(change):
    h = peer_headers("POST", "/v1/peer/cosign", b'{"size":1}', NOW, KEY, SEED)
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
    else:
        del h["X-ATS-Time"]
    with pytest.raises(BadSignature):
        check_peer_request(h, method, path, body, now, 300_000)


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
