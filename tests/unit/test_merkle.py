"""ledger.merkle against an independent oracle: RFC 9162 §2.1 written naively, here.

Every tree size 0..64 is tested exhaustively (STYLE P10, P11): roots, every inclusion proof, every
consistency proof, and corruptions of each. Storage is a dict from stored index to hash, filled by
Frontier.append exactly as the SQLite store is.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import Invalid, InvariantViolation

N_MAX = 64
DATA = [b"leaf-%d" % i for i in range(2048)]


# --- The oracle: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 word for word over D = DATA[lo:hi] ----------


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _split(n: int) -> int:
    """k, the largest power of two smaller than n (RFC 9162 §2.1.1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@lru_cache(maxsize=None)
def mth(lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi])."""
    n = hi - lo
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + DATA[lo])
    k = _split(n)
    return _sha(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))


def path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi]), m relative to lo."""
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return path(m, lo, lo + k) + [mth(lo + k, hi)]
    return path(m - k, lo + k, hi) + [mth(lo, lo + k)]


def subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b)."""
    n = hi - lo
    if m == n:
        return [] if b else [mth(lo, hi)]
    k = _split(n)
    if m <= k:
        return subproof(m, lo, lo + k, b) + [mth(lo + k, hi)]
    return subproof(m - k, lo + k, hi, False) + [mth(lo, lo + k)]


def proof(m: int, n: int) -> list[bytes]:
    """PROOF(m, D[n])."""
    return subproof(m, 0, n, True)


# --- tlog's index functions, ported loop for loop, to pin the closed forms in ledger.merkle ------


def tlog_stored_hash_index(level: int, n: int) -> int:
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def tlog_stored_hash_count(n: int) -> int:
    if n == 0:
        return 0
    num = tlog_stored_hash_index(0, n - 1) + 1
    i = n - 1
    while i & 1:
        num += 1
        i >>= 1
    return num


# --- Storage: a dict, filled by Frontier ---------------------------------------------------------


class DictLog:
    def __init__(self) -> None:
        self.frontier = merkle.Frontier()
        self.stored: dict[int, bytes] = {}

    def append(self, data: bytes) -> list[tuple[int, bytes]]:
        pairs = self.frontier.append(merkle.leaf_hash(data))
        for sidx, h in pairs:
            assert sidx not in self.stored, "a stored hash is never rewritten"
            self.stored[sidx] = h
        return pairs

    def read(self, indexes: list[int]) -> list[bytes]:
        return [self.stored[i] for i in indexes]

    def root(self, n: int) -> bytes:
        return merkle.tree_hash(n, self.read(merkle.tree_hash_indexes(n)))

    def inclusion(self, index: int, n: int) -> list[bytes]:
        return merkle.inclusion_proof(index, n, self.read(merkle.inclusion_proof_indexes(index, n)))

    def consistency(self, m: int, n: int) -> list[bytes]:
        return merkle.consistency_proof(m, n, self.read(merkle.consistency_proof_indexes(m, n)))


@pytest.fixture(scope="module")
def log64() -> DictLog:
    log = DictLog()
    for i in range(N_MAX):
        log.append(DATA[i])
    return log


def _flip(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


# --- Hashes and layout ---------------------------------------------------------------------------


def test_hashes_use_rfc9162_domain_separation() -> None:
    assert merkle.EMPTY_ROOT == _sha(b"")
    assert merkle.leaf_hash(b"abc") == _sha(b"\x00abc")
    assert merkle.node_hash(b"L" * 32, b"R" * 32) == _sha(b"\x01" + b"L" * 32 + b"R" * 32)


def test_stored_hash_index_and_count_match_tlog_loops() -> None:
    for level in range(12):
        for n in range(300):
            assert merkle.stored_hash_index(level, n) == tlog_stored_hash_index(level, n)
    for n in list(range(5000)) + [2**40 - 1, 2**40, 2**40 + 12345]:
        assert merkle.stored_hash_count(n) == tlog_stored_hash_count(n)


def test_stored_hash_index_rejects_negative_coordinates() -> None:
    for level, n in [(-1, 0), (0, -1)]:
        with pytest.raises(Invalid) as err:
            merkle.stored_hash_index(level, n)
        assert err.value.code == "bad_range"


# --- Appends and roots ---------------------------------------------------------------------------


def test_frontier_root_equals_mth_for_every_size_0_to_64() -> None:
    log = DictLog()
    assert log.frontier.root() == mth(0, 0) == merkle.EMPTY_ROOT
    assert log.root(0) == merkle.EMPTY_ROOT
    for n in range(1, N_MAX + 1):
        pairs = log.append(DATA[n - 1])
        assert log.frontier.size == n
        assert log.frontier.root() == mth(0, n)
        assert log.root(n) == mth(0, n)
        # Stored hashes are dense: indexes 0 .. count-1, exactly stored_hash_count(n) of them.
        assert sorted(log.stored) == list(range(merkle.stored_hash_count(n)))
        # Leaf n-1 stores itself and one parent per trailing 1 bit of n-1 (tlog StoredHashes).
        first = merkle.stored_hash_index(0, n - 1)
        assert [sidx for sidx, _ in pairs] == list(range(first, first + len(pairs)))
        assert len(pairs) == 1 + ((n - 1) ^ n).bit_length() - 1


def test_every_stored_hash_is_the_perfect_subtree_it_indexes(log64: DictLog) -> None:
    for level in range(7):
        for n in range(N_MAX >> level):
            lo, hi = n << level, (n + 1) << level
            assert log64.stored[merkle.stored_hash_index(level, n)] == mth(lo, hi)


def test_frontier_rebuilt_from_stored_hashes_continues_identically(log64: DictLog) -> None:
    for n in range(N_MAX + 1):
        rebuilt = merkle.Frontier.from_hashes(n, log64.read(merkle.Frontier.indexes(n)))
        assert rebuilt.size == n
        assert rebuilt.root() == mth(0, n)
        for extra in range(min(5, N_MAX - n)):
            pairs = rebuilt.append(merkle.leaf_hash(DATA[n + extra]))
            assert pairs == [(sidx, log64.stored[sidx]) for sidx, _ in pairs]
        assert rebuilt.root() == mth(0, rebuilt.size)


def test_extend_equals_repeated_append() -> None:
    one, many = merkle.Frontier(), merkle.Frontier()
    for batch in [[], [0], [1, 2], list(range(3, 40)), [], [40]]:
        pairs: list[tuple[int, bytes]] = []
        for i in batch:
            pairs += one.append(merkle.leaf_hash(DATA[i]))
        first, hashes = many.extend([merkle.leaf_hash(DATA[i]) for i in batch])
        assert first == merkle.stored_hash_count(one.size - len(batch))
        assert list(zip(range(first, first + len(hashes)), hashes)) == pairs
        assert many.size == one.size and many.root() == one.root()


def test_copy_and_restore_are_independent() -> None:
    f = merkle.Frontier()
    f.extend([merkle.leaf_hash(d) for d in DATA[:5]])
    saved = f.copy()
    f.append(merkle.leaf_hash(DATA[5]))
    assert saved.size == 5 and saved.root() == mth(0, 5)
    f.restore(saved)
    assert f.size == 5 and f.root() == mth(0, 5)


def test_appending_a_leaf_that_is_not_32_bytes_is_an_invariant_violation() -> None:
    f = merkle.Frontier()
    with pytest.raises(InvariantViolation):
        f.append(b"short")
    assert f.size == 0
    with pytest.raises(InvariantViolation):
        merkle.Frontier.from_hashes(3, [merkle.EMPTY_ROOT])  # size 3 needs two hashes


# --- Inclusion proofs ----------------------------------------------------------------------------


def test_every_inclusion_proof_up_to_64_is_rfc_path_and_verifies(log64: DictLog) -> None:
    for n in range(1, N_MAX + 1):
        root = mth(0, n)
        for index in range(n):
            p = log64.inclusion(index, n)
            assert p == path(index, 0, n), (index, n)
            assert merkle.verify_inclusion(index, n, merkle.leaf_hash(DATA[index]), p, root)


def _proof_mutations(p: list[bytes]) -> list[list[bytes]]:
    """Each hash with a bit flipped (low and high), each hash dropped, a hash added anywhere."""
    bad = []
    for i in range(len(p)):
        for bit in (0, 7):
            bad.append(p[:i] + [_flip(p[i], bit)] + p[i + 1 :])
        bad.append(p[:i] + p[i + 1 :])
    for i in range(len(p) + 1):
        bad.append(p[:i] + [mth(0, 1)] + p[i:])
    return bad


def _root(n: int) -> bytes:
    return mth(0, n) if n > 0 else merkle.EMPTY_ROOT


def test_corrupted_inclusion_proofs_fail(log64: DictLog) -> None:
    for n in range(1, N_MAX + 1):
        root = mth(0, n)
        for index in range(n):
            leaf = merkle.leaf_hash(DATA[index])
            p = log64.inclusion(index, n)
            for q in _proof_mutations(p):
                assert not merkle.verify_inclusion(index, n, leaf, q, root), (index, n)
            # The leaf is not at another index (leaves are distinct) ...
            for other in {index - 1, index + 1, index ^ 1, -1, n}:
                assert not merkle.verify_inclusion(other, n, leaf, p, root), (index, n, other)
            # ... and this proof is not its proof in a tree of another size, even with that
            # size's true root. (A size paired with a root that is not its own is the caller's
            # problem: the checkpoint signature binds the two.)
            for size in {n - 1, n + 1, 2 * n, n // 2, 0}:
                if size != n:
                    assert not merkle.verify_inclusion(index, size, leaf, p, _root(size)), (
                        index,
                        n,
                        size,
                    )
            assert not merkle.verify_inclusion(index, n, leaf, p, _flip(root))
            assert not merkle.verify_inclusion(index, n, _flip(leaf), p, root)
            assert not merkle.verify_inclusion(index, n, leaf[:31], p, root)
            if p:
                assert not merkle.verify_inclusion(index, n, leaf, [h[:31] for h in p], root)


def test_inclusion_verification_rejects_bad_arguments() -> None:
    leaf = merkle.leaf_hash(DATA[0])
    assert merkle.verify_inclusion(0, 1, leaf, [], leaf)
    assert not merkle.verify_inclusion(1, 1, leaf, [], leaf)
    assert not merkle.verify_inclusion(-1, 1, leaf, [], leaf)
    assert not merkle.verify_inclusion(0, 0, leaf, [], leaf)
    assert not merkle.verify_inclusion(0, 1, leaf, [], leaf + b"\x00")


# --- Consistency proofs --------------------------------------------------------------------------


def test_every_consistency_proof_up_to_64_is_rfc_proof_and_verifies(log64: DictLog) -> None:
    for n in range(1, N_MAX + 1):
        for m in range(1, n + 1):
            p = log64.consistency(m, n)
            assert p == proof(m, n), (m, n)
            assert merkle.verify_consistency(m, n, mth(0, m), mth(0, n), p)


def test_corrupted_consistency_proofs_fail(log64: DictLog) -> None:
    for n in range(1, N_MAX + 1):
        root2 = mth(0, n)
        for m in range(1, n + 1):
            root1 = mth(0, m)
            p = log64.consistency(m, n)
            for q in _proof_mutations(p) + [p[:i] + [root1] + p[i:] for i in range(len(p) + 1)]:
                assert not merkle.verify_consistency(m, n, root1, root2, q), (m, n)
            assert not merkle.verify_consistency(m, n, _flip(root1), root2, p)
            assert not merkle.verify_consistency(m, n, root1, _flip(root2), p)
            if m != n:
                assert not merkle.verify_consistency(m, n, root2, root1, p)
            # Not a proof between other sizes, even with their true roots.
            for size1 in {m - 1, m + 1, m ^ 1, 0}:
                if size1 != m:
                    assert not merkle.verify_consistency(size1, n, _root(size1), root2, p), (
                        m,
                        n,
                        size1,
                    )
            for size2 in {n - 1, n + 1, 2 * n}:
                if size2 != n:
                    assert not merkle.verify_consistency(m, size2, root1, _root(size2), p), (
                        m,
                        n,
                        size2,
                    )


def test_consistency_edge_rules_follow_transparency_dev() -> None:
    r1, r2 = mth(0, 3), mth(0, 5)
    assert merkle.verify_consistency(3, 3, r1, r1, [])
    assert not merkle.verify_consistency(3, 3, r1, r2, [])
    assert not merkle.verify_consistency(3, 3, r1, r1, [r1])
    assert not merkle.verify_consistency(5, 3, r2, r1, [])
    assert not merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    assert not merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, r2, [])
    assert not merkle.verify_consistency(3, 5, r1, r2, [])


# --- Bad ranges and the P4 consumption check -----------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: merkle.tree_hash_indexes(-1),
        lambda: merkle.tree_hash(-1, []),
        lambda: merkle.inclusion_proof_indexes(3, 3),
        lambda: merkle.inclusion_proof_indexes(-1, 3),
        lambda: merkle.inclusion_proof_indexes(0, 0),
        lambda: merkle.inclusion_proof(5, 3, []),
        lambda: merkle.consistency_proof_indexes(0, 3),
        lambda: merkle.consistency_proof_indexes(4, 3),
        lambda: merkle.consistency_proof_indexes(-1, 3),
        lambda: merkle.consistency_proof(0, 0, []),
        lambda: merkle.stored_hash_count(-1),
    ],
)
def test_bad_ranges_raise_invalid_bad_range(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Invalid) as err:
        call()
    assert err.value.code == "bad_range"


def test_proofs_must_consume_exactly_the_hashes_read(log64: DictLog) -> None:
    hashes = log64.read(merkle.inclusion_proof_indexes(5, 13))
    with pytest.raises(InvariantViolation):
        merkle.inclusion_proof(5, 13, hashes + [hashes[0]])
    with pytest.raises(InvariantViolation):
        merkle.inclusion_proof(5, 13, hashes[:-1])
    hashes = log64.read(merkle.consistency_proof_indexes(6, 13))
    with pytest.raises(InvariantViolation):
        merkle.consistency_proof(6, 13, hashes + [hashes[0]])
    with pytest.raises(InvariantViolation):
        merkle.tree_hash(13, log64.read(merkle.tree_hash_indexes(13))[:-1])
    with pytest.raises(InvariantViolation):
        merkle.tree_hash(0, [merkle.EMPTY_ROOT])


# --- Beyond 64: random shapes up to 2048 leaves --------------------------------------------------


def _build_log2048() -> DictLog:
    log = DictLog()
    for data in DATA:
        log.append(data)
    return log


_LOG2048 = _build_log2048()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_proofs_in_larger_trees_match_the_oracle(data: st.DataObject) -> None:
    log = _LOG2048
    n = data.draw(st.integers(min_value=1, max_value=len(DATA)), label="n")
    index = data.draw(st.integers(min_value=0, max_value=n - 1), label="index")
    m = data.draw(st.integers(min_value=1, max_value=n), label="m")
    assert log.root(n) == mth(0, n)
    p = log.inclusion(index, n)
    assert p == path(index, 0, n)
    assert merkle.verify_inclusion(index, n, merkle.leaf_hash(DATA[index]), p, mth(0, n))
    c = log.consistency(m, n)
    assert c == proof(m, n)
    assert merkle.verify_consistency(m, n, mth(0, m), mth(0, n), c)
