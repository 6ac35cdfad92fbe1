"""Every vector of tests/vectors/merkle-vectors.json passes against ledger.merkle.

The file gathers published RFC 6962 / RFC 9162 known answers (transparency-dev/merkle, the
certificate-transparency C++ log, RFC 9162 §2.1.5, draft-ietf-plants-merkle-tree-certs appendix C).
Its "kinds" and "edge_case_semantics" entries say how each group is read; the handlers below follow
them one for one. Proofs are generated the way the node generates them: leaves appended through
`Frontier`, stored hashes kept in a dict keyed by stored index, and read back through the
`*_indexes()` functions. Every vector is counted, and the count must equal the file's total.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger import merkle

VECTORS_PATH = Path(__file__).parent / "merkle-vectors.json"
EXPECTED_VECTOR_COUNT = 244  # 4 + 24 + 5 + 5 + 98 + 98 + 7 + 3, from the file as committed


def _load() -> dict[str, Any]:
    with VECTORS_PATH.open(encoding="utf-8") as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def _hx(s: str) -> bytes:
    return bytes.fromhex(s)


class DictLog:
    """An in-memory log: stored hashes by index, filled by Frontier like the SQLite store."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.frontier = merkle.Frontier()
        self.stored: dict[int, bytes] = {}
        for data in leaves:
            for sidx, h in self.frontier.append(merkle.leaf_hash(data)):
                assert sidx not in self.stored
                self.stored[sidx] = h

    def read(self, indexes: list[int]) -> list[bytes]:
        return [self.stored[i] for i in indexes]

    def root(self, n: int) -> bytes:
        return merkle.tree_hash(n, self.read(merkle.tree_hash_indexes(n)))

    def inclusion(self, index: int, n: int) -> list[bytes]:
        return merkle.inclusion_proof(index, n, self.read(merkle.inclusion_proof_indexes(index, n)))

    def consistency(self, m: int, n: int) -> list[bytes]:
        return merkle.consistency_proof(m, n, self.read(merkle.consistency_proof_indexes(m, n)))


def _naive_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, straight from the definition (the test's own oracle)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _naive_mth(leaves[:k]) + _naive_mth(leaves[k:])).digest()


# --- one handler per kind: each returns a list of failure messages (empty = pass) ---------------


def _check_hash(group: dict[str, Any], v: dict[str, Any]) -> list[str]:
    op = v["op"]
    if op == "empty_root":
        got = merkle.EMPTY_ROOT
    elif op == "leaf_hash":
        got = merkle.leaf_hash(_hx(v["input_hex"]))
    elif op == "node_hash":
        got = merkle.node_hash(_hx(v["left_hex"]), _hx(v["right_hex"]))
    else:
        return [f"unknown hash op {op!r}"]
    return [] if got.hex() == v["expected_hex"] else [f"got {got.hex()}"]


def _check_tree(group: dict[str, Any], v: dict[str, Any]) -> list[str]:
    log = DictLog([_hx(x) for x in group["leaves_hex"]])
    if v["op"] == "root":
        n = v["tree_size"]
        got = log.root(n)
        prefix = merkle.Frontier()
        for data in group["leaves_hex"][:n]:
            prefix.append(merkle.leaf_hash(_hx(data)))
        errors = [] if got.hex() == v["expected_root_hex"] else [f"tree_hash {got.hex()}"]
        if prefix.root().hex() != v["expected_root_hex"]:
            errors.append(f"frontier root {prefix.root().hex()}")
        return errors
    if v["op"] == "perfect_node":
        # The tlog layout stores every perfect subtree: the node must sit at its stored index.
        got = log.stored[merkle.stored_hash_index(v["level"], v["index"])]
        return [] if got.hex() == v["expected_hex"] else [f"stored node {got.hex()}"]
    return [f"unknown tree op {v['op']!r}"]


def _check_inclusion(group: dict[str, Any], v: dict[str, Any]) -> list[str]:
    errors = []
    ok = merkle.verify_inclusion(
        v["leaf_index"],
        v["tree_size"],
        _hx(v["leaf_hash_hex"]),
        [_hx(p) for p in v["proof_hex"]],
        _hx(v["root_hex"]),
    )
    if ok != v["expect_valid"]:
        errors.append(f"verify_inclusion returned {ok}")
    if "leaves_hex" in group and v["expect_valid"]:
        leaves = [_hx(x) for x in group["leaves_hex"]]
        log = DictLog(leaves)
        proof = [p.hex() for p in log.inclusion(v["leaf_index"], v["tree_size"])]
        if proof != v["proof_hex"]:
            errors.append(f"generated PATH {proof}")
        if merkle.leaf_hash(leaves[v["leaf_index"]]).hex() != v["leaf_hash_hex"]:
            errors.append("leaf_hash_hex is not HASH(0x00 || leaf)")
    return errors


def _check_consistency(group: dict[str, Any], v: dict[str, Any]) -> list[str]:
    errors = []
    ok = merkle.verify_consistency(
        v["size1"],
        v["size2"],
        _hx(v["root1_hex"]),
        _hx(v["root2_hex"]),
        [_hx(p) for p in v["proof_hex"]],
    )
    if ok != v["expect_valid"]:
        errors.append(f"verify_consistency returned {ok}")
    if "leaves_hex" in group and v["expect_valid"] and 0 < v["size1"] < v["size2"]:
        log = DictLog([_hx(x) for x in group["leaves_hex"]])
        proof = [p.hex() for p in log.consistency(v["size1"], v["size2"])]
        if proof != v["proof_hex"]:
            errors.append(f"generated PROOF {proof}")
    return errors


def _reference_tree_leaves() -> list[bytes]:
    for group in _load()["groups"]:
        if group["id"] == "ct-reference-tree":
            return [_hx(x) for x in group["leaves_hex"]]
    raise AssertionError("ct-reference-tree group missing")


def _check_proof_structure(group: dict[str, Any], v: dict[str, Any]) -> list[str]:
    # "Checked with any 7 leaves; the leaves of ct-reference-tree are used."
    leaves = _reference_tree_leaves()
    log = DictLog(leaves)
    names = group["node_names"]
    errors = []
    if [names[x] for x in v["expected_nodes"]] != v["expected_ranges"]:
        errors.append("expected_nodes and expected_ranges disagree")
    want = [_naive_mth(leaves[lo:hi]) for lo, hi in v["expected_ranges"]]
    if v["type"] == "inclusion":
        got = log.inclusion(v["leaf_index"], v["tree_size"])
    elif v["type"] == "consistency":
        got = log.consistency(v["size1"], v["size2"])
    else:
        return [f"unknown proof type {v['type']!r}"]
    if got != want:
        errors.append(f"proof lists {[h.hex()[:8] for h in got]}")
    return errors


# --- rolling digests (draft-ietf-plants-merkle-tree-certs appendix C.1) --------------------------
#
# Lines run over every valid subtree [start, end) of the tree d[i] = bytes([i]), empty ones
# included: end in 0..=leaf_count, start in 0..=end. With start = 0 a line is exactly RFC 9162 MTH,
# PATH or PROOF, and comes from ledger.merkle. A subtree with start > 0 is aligned, so its hash
# and inclusion proofs are those of the stand-alone tree D[start:], also from ledger.merkle. Only
# the draft's subtree consistency proof for start > 0 is outside RFC 9162; it comes from the
# draft's recursive definition, written below.


class _RollingTree:
    def __init__(self, count: int) -> None:
        self.data = [bytes([i]) for i in range(count)]
        # One log per start offset: the subtree [start, end) is the prefix of size end - start.
        self.logs = [DictLog(self.data[start:]) for start in range(count + 1)]
        self._mth: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        key = (lo, hi)
        if key not in self._mth:
            self._mth[key] = self.logs[lo].root(hi - lo)
        return self._mth[key]

    def subtree_consistency(self, start: int, end: int, n: int) -> list[bytes]:
        if start == end:
            return []
        if start == 0:
            return self.logs[0].consistency(end, n)
        return self._subtree_subproof(start, end, 0, n, True)

    def _subtree_subproof(self, start: int, end: int, lo: int, hi: int, known: bool) -> list[bytes]:
        # The draft's SUBTREE_SUBPROOF: RFC 9162 SUBPROOF generalised to an aligned [start, end).
        if start == lo and end == hi:
            return [] if known else [self.mth(lo, hi)]
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if end <= lo + k:
            return self._subtree_subproof(start, end, lo, lo + k, known) + [self.mth(lo + k, hi)]
        if start >= lo + k:
            return self._subtree_subproof(start, end, lo + k, hi, known) + [self.mth(lo, lo + k)]
        # The subtree straddles the split, which validity allows only when it starts at lo.
        assert start == lo
        return self._subtree_subproof(lo + k, end, lo + k, hi, False) + [self.mth(lo, lo + k)]


def _valid_subtree(start: int, end: int) -> bool:
    """The draft's validity: start is 0, or a multiple of BIT_CEIL(end - start); empty is valid."""
    if start == end or start == 0:
        return True
    size = end - start
    return start % (1 << (size - 1).bit_length()) == 0


def _rolling_lines(algorithm: str, tree: _RollingTree, count: int) -> list[str]:
    lines = []
    if algorithm == "subtree_hash":
        for end in range(count + 1):
            for start in range(end + 1):
                if _valid_subtree(start, end):
                    lines.append(f"[{start}, {end}) {tree.mth(start, end).hex()}\n")
    elif algorithm == "subtree_inclusion_proof":
        for end in range(count + 1):
            for start in range(end + 1):
                if not _valid_subtree(start, end):
                    continue
                for index in range(start, end):
                    proof = tree.logs[start].inclusion(index - start, end - start)
                    tail = "".join(" " + h.hex() for h in proof)
                    lines.append(f"{index} [{start}, {end}){tail}\n")
    elif algorithm == "subtree_consistency_proof":
        for n in range(count + 1):
            for end in range(n + 1):
                for start in range(end + 1):
                    if not _valid_subtree(start, end):
                        continue
                    proof = tree.subtree_consistency(start, end, n)
                    tail = "".join(" " + h.hex() for h in proof)
                    lines.append(f"[{start}, {end}) {n}{tail}\n")
    else:
        raise AssertionError(f"unknown rolling algorithm {algorithm!r}")
    return lines


def _rolling_checker() -> Callable[[dict[str, Any], dict[str, Any]], list[str]]:
    trees: dict[int, _RollingTree] = {}

    def check_rolling(group: dict[str, Any], v: dict[str, Any]) -> list[str]:
        count = group["leaf_count"]
        if group["leaf_rule"] != "d[i] = bytes([i])":
            return [f"unknown leaf rule {group['leaf_rule']!r}"]
        if count not in trees:
            trees[count] = _RollingTree(count)
        digest = hashlib.sha256()
        for line in _rolling_lines(v["algorithm"], trees[count], count):
            digest.update(line.encode("ascii"))
        got = digest.hexdigest()
        return [] if got == v["expected_sha256_hex"] else [f"rolling digest {got}"]

    return check_rolling


def test_vectors_file_declares_the_kinds_and_edge_rules_we_implement() -> None:
    doc = _load()
    assert doc["schema"] == "ats-ledger/merkle-vectors/v1"
    assert set(doc["kinds"]) == {
        "hash",
        "tree",
        "inclusion",
        "consistency",
        "proof_structure",
        "rolling_digest",
    }
    assert doc["hash"] == {
        "function": "SHA-256",
        "leaf": "HASH(0x00 || data)",
        "node": "HASH(0x01 || left || right)",
        "empty_tree": "HASH('')",
    }
    # The module docstring of ledger.merkle states these rules; a change here must be re-read.
    assert "size1 == 0 fails" in doc["edge_case_semantics"]["consistency"]
    assert "leaf_index >= tree_size fails" in doc["edge_case_semantics"]["inclusion"]


def test_every_vector_of_every_group_passes() -> None:
    doc = _load()
    handlers: dict[str, Callable[[dict[str, Any], dict[str, Any]], list[str]]] = {
        "hash": _check_hash,
        "tree": _check_tree,
        "inclusion": _check_inclusion,
        "consistency": _check_consistency,
        "proof_structure": _check_proof_structure,
        "rolling_digest": _rolling_checker(),
    }
    checked = 0
    failures = []
    for group in doc["groups"]:
        handler = handlers[group["kind"]]  # KeyError on a kind we do not know: fail loudly
        for v in group["vectors"]:
            for message in handler(group, v):
                failures.append(f"{group['id']}/{v['id']}: {message}")
            checked += 1
    assert failures == []
    assert checked == sum(len(g["vectors"]) for g in doc["groups"])
    assert checked == EXPECTED_VECTOR_COUNT


@pytest.mark.parametrize("size1,size2", [(0, 0), (0, 1), (0, 8)])
def test_consistency_from_the_empty_tree_is_rejected(size1: int, size2: int) -> None:
    # edge_case_semantics: transparency-dev's rule, not C2SP tlog-witness's.
    root2 = DictLog([bytes([i]) for i in range(size2)]).root(size2)
    assert not merkle.verify_consistency(size1, size2, merkle.EMPTY_ROOT, root2, [])
