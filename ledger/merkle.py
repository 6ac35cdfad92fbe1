"""RFC 9162 Merkle log: hashes, the append frontier, proofs from stored hashes, verification.

Contract
--------
- Hashing is RFC 9162 §2.1.1: leaf = SHA-256(0x00 ‖ data), node = SHA-256(0x01 ‖ left ‖ right),
  and the root of the empty tree is SHA-256("") (`EMPTY_ROOT`; tlog uses all-zero bytes instead).
- Storage follows Go's golang.org/x/mod/sumdb/tlog: every *perfect* subtree hash is stored once,
  at the dense index `stored_hash_index(level, n)` (Crosby and Wallach, "Efficient Data Structures
  for Tamper-Evident Logging", §3.3). A tree of n leaves holds exactly `stored_hash_count(n)`
  hashes, at indexes 0 .. count-1, and appending leaf n writes the contiguous run that tlog's
  StoredHashes returns: the leaf hash, then every parent that leaf completes.
- Reads are split "indexes → one query → pure compute" (STYLE P8): `*_indexes()` names the stored
  hashes a result needs, the caller reads exactly those (in that order) in one query, and the
  matching pure function computes the result and checks that it consumed every hash (P4).
  A wrong number of hashes is our own bug and raises `InvariantViolation`.
- Proofs are exactly the RFC 9162 §2.1.3.1 PATH and §2.1.4.1 PROOF lists (same hashes, same order).
  Bad arguments (index >= size, old size > new size, old size 0, negative) raise
  `Invalid("bad_range")`.
- `verify_inclusion` and `verify_consistency` run the RFC 9162 §2.1.3.2 / §2.1.4.2 algorithms and
  return False, never raise, for any bad proof or argument. Edge rules (transparency-dev's, pinned
  by tests/vectors/merkle-vectors.json "edge_case_semantics"):
    * index >= size fails; a leaf or proof hash that is not 32 bytes fails; the proof length must
      match exactly;
    * size1 > size2 fails;
    * size1 == 0 fails: a consistency proof from the empty tree is meaningless. An auditor that has
      no earlier checkpoint has nothing to check and trusts the first one it sees (C2SP
      tlog-witness instead accepts old size 0 with an empty proof; we do not);
    * size1 == size2 succeeds iff the proof is empty and root1 == root2 (bytewise).

The module is pure: no I/O, no clock, no storage. `node/store/merkle.py` does the reads and writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from ledger.constants import HASH_SIZE
from ledger.errors import Invalid, check

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: domain separation of leaves ...
_NODE_PREFIX = b"\x01"  # ... from interior nodes, against second-preimage attacks.

# RFC 9162 §2.1.1: "The hash of an empty list is the hash of an empty string".
EMPTY_ROOT: bytes = _sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 §2.1.1 leaf hash SHA-256(0x00 ‖ data)."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 §2.1.1 interior node hash SHA-256(0x01 ‖ left ‖ right)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


# --- Stored hash layout (tlog) -------------------------------------------------------------------


def stored_hash_index(level: int, n: int) -> int:
    """Return the storage index of the n-th perfect subtree at `level` (tlog StoredHashIndex)."""
    if level < 0 or n < 0:
        raise Invalid("bad_range", f"no stored hash at level {level}, position {n}")
    # tlog: level L's n-th hash is written right after level L+1's (2n+1)-th hash, so walk down to
    # level 0 (n -> 2n+1, L times) ...
    n = ((n + 1) << level) - 1
    # ... where hash n sits at n + n/2 + n/4 + ... = 2n - popcount(n), then add the level back.
    return 2 * n - n.bit_count() + level


def stored_hash_count(n: int) -> int:
    """Return how many hashes a tree of n leaves stores (tlog StoredHashCount)."""
    if n < 0:
        raise Invalid("bad_range", f"negative tree size {n}")
    # tlog: stored_hash_index(0, n-1) + 1 + (subtrees completed by leaf n-1), which telescopes to
    # 2n - popcount(n): every leaf adds itself and one parent per trailing 1 bit of its index.
    return 2 * n - n.bit_count()


def _check_size(n: int) -> None:
    if n < 0:
        raise Invalid("bad_range", f"negative tree size {n}")


def _largest_pow2_below(n: int) -> int:
    """Return k, the largest power of two strictly less than n >= 2 (RFC 9162 §2.1.1 split)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- Frontier ------------------------------------------------------------------------------------


class Frontier:
    """The right edge of a tree: the roots of its maximal perfect subtrees, left to right.

    Enough to append leaves and compute the root without reading storage. For size n there is one
    hash per 1 bit of n, the largest subtree first (RFC 9162 §2.1.1 splits at powers of two).
    """

    __slots__ = ("_size", "_hashes")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @staticmethod
    def indexes(n: int) -> list[int]:
        """Return the stored-hash indexes that rebuild the frontier of a tree of n leaves."""
        return tree_hash_indexes(n)

    @classmethod
    def from_hashes(cls, n: int, hashes: Sequence[bytes]) -> Frontier:
        """Rebuild the frontier of size n from the hashes read at `indexes(n)`, in that order."""
        _check_size(n)
        check(len(hashes) == n.bit_count(), f"frontier of size {n} needs {n.bit_count()} hashes")
        for h in hashes:
            check(len(h) == HASH_SIZE, "stored hash is not 32 bytes")
        frontier = cls()
        frontier._size = n
        frontier._hashes = [bytes(h) for h in hashes]
        return frontier

    @property
    def size(self) -> int:
        """Number of leaves in the tree."""
        return self._size

    def copy(self) -> Frontier:
        """Return an independent copy."""
        other = Frontier()
        other._size = self._size
        other._hashes = list(self._hashes)
        return other

    def restore(self, other: Frontier) -> None:
        """Make this frontier equal to `other` (undoes an append whose storage write failed)."""
        self._size = other._size
        self._hashes = list(other._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, bytes]]:
        """Append one leaf hash; return the (stored index, hash) pairs to store (StoredHashes)."""
        first, hashes = self.extend((leaf,))
        return [(first + i, h) for i, h in enumerate(hashes)]

    def extend(self, leaves: Iterable[bytes]) -> tuple[int, list[bytes]]:
        """Append leaf hashes in order; return (first stored index, the new stored hashes in order).

        The stored hashes of consecutive leaves are contiguous (tlog writes record n's hashes
        starting at StoredHashIndex(0, n)), so the result covers indexes
        stored_hash_count(old size) .. stored_hash_count(new size) - 1 with no gap.
        """
        first = stored_hash_count(self._size)
        out: list[bytes] = []
        emit = out.append
        stack = self._hashes
        pop = stack.pop
        push = stack.append
        sha = _sha256
        prefix = _NODE_PREFIX
        size = self._size
        try:
            for h in leaves:
                if len(h) != HASH_SIZE:
                    check(False, "leaf hash is not 32 bytes")
                emit(h)
                # Each trailing 1 bit of the old size is a perfect subtree that this leaf's
                # subtree now completes: merge it (left) with the new one (right).
                m = size
                while m & 1:
                    h = sha(prefix + pop() + h).digest()
                    emit(h)
                    m >>= 1
                push(h)
                size += 1
        finally:
            # Keep size and stack consistent even if a bad leaf stops the loop half way.
            self._size = size
        return first, out

    def root(self) -> bytes:
        """Return the RFC 9162 §2.1.1 root of the current tree (EMPTY_ROOT when empty)."""
        return _fold_right(self._hashes)

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash the frontier right to left: MTH of a tree is node(left perfect subtree, MTH(rest))."""
    if not hashes:
        return EMPTY_ROOT
    h = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        h = node_hash(hashes[i], h)
    return h


# --- Reads: indexes -> one query -> pure compute -------------------------------------------------
#
# Each reader is a port of tlog's pair (xxxIndex, xxx). The *_index walk appends the stored indexes
# a result needs; the matching compute walk takes the same path and consumes the hashes in the same
# order through a cursor, so the two can only disagree through a bug, which check() catches (P4).


class _Cursor:
    """Hands out the fetched hashes in order and remembers how many were taken."""

    __slots__ = ("hashes", "pos")

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self.hashes = hashes
        self.pos = 0


def _subtree_index(lo: int, hi: int, need: list[int]) -> None:
    """Append the stored indexes whose hashes give MTH(D[lo:hi]) (tlog subTreeIndex)."""
    # The maximal perfect subtrees of [lo, hi), largest first; tlog requires lo to be aligned to
    # each of them, which holds for every range RFC 9162 §2.1 recursion produces.
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        k = 1 << level
        check(lo & (k - 1) == 0, "bad math in subtree index")
        need.append(stored_hash_index(level, lo >> level))
        lo += k


def _subtree_hash(lo: int, hi: int, cur: _Cursor) -> bytes:
    """Return MTH(D[lo:hi]) from the hashes `_subtree_index(lo, hi)` named (tlog subTreeHash)."""
    count = 0
    while lo < hi:
        lo += 1 << ((hi - lo).bit_length() - 1)
        count += 1
    start = cur.pos
    check(start + count <= len(cur.hashes), "bad index math in subtree hash")
    cur.pos = start + count
    return _fold_right(cur.hashes[start : start + count])


def _finish(cur: _Cursor, what: str) -> None:
    check(cur.pos == len(cur.hashes), f"{what} consumed {cur.pos} of {len(cur.hashes)} hashes")


def tree_hash_indexes(n: int) -> list[int]:
    """Return the stored indexes needed for the root of the tree of n leaves (tlog TreeHash)."""
    _check_size(n)
    need: list[int] = []
    _subtree_index(0, n, need)
    return need


def tree_hash(n: int, hashes: Sequence[bytes]) -> bytes:
    """Return the RFC 9162 §2.1.1 root of n leaves from the hashes at tree_hash_indexes(n)."""
    _check_size(n)
    cur = _Cursor(hashes)
    root = _subtree_hash(0, n, cur) if n else EMPTY_ROOT
    _finish(cur, "tree hash")
    return root


def _check_inclusion_args(index: int, n: int) -> None:
    if index < 0 or n < 0 or index >= n:
        raise Invalid("bad_range", f"leaf index {index} is not in a tree of size {n}")


def inclusion_proof_indexes(index: int, n: int) -> list[int]:
    """Return the stored indexes needed to prove leaf `index` in the tree of n leaves."""
    _check_inclusion_args(index, n)
    need: list[int] = []
    _leaf_proof_index(0, n, index, need)
    return need


def _leaf_proof_index(lo: int, hi: int, m: int, need: list[int]) -> None:
    """Append the indexes for PATH(m - lo, D[lo:hi]) (tlog leafProofIndex)."""
    if lo + 1 == hi:
        return
    k = _largest_pow2_below(hi - lo)
    if m < lo + k:
        _leaf_proof_index(lo, lo + k, m, need)
        _subtree_index(lo + k, hi, need)
    else:
        _subtree_index(lo, lo + k, need)
        _leaf_proof_index(lo + k, hi, m, need)


def inclusion_proof(index: int, n: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return the RFC 9162 §2.1.3.1 PATH(index, D[n]) from the hashes at inclusion_proof_indexes."""
    _check_inclusion_args(index, n)
    cur = _Cursor(hashes)
    proof: list[bytes] = []
    _leaf_proof(0, n, index, cur, proof)
    _finish(cur, "inclusion proof")
    return proof


def _leaf_proof(lo: int, hi: int, m: int, cur: _Cursor, proof: list[bytes]) -> None:
    """Append PATH(m - lo, D[lo:hi]) to proof (tlog leafProof)."""
    # RFC 9162 §2.1.3.1: PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k,
    #                                    PATH(m - k, D[k:n]) : MTH(D[0:k]) for m >= k;
    # the leaf itself is not sent: the verifier has it.
    if lo + 1 == hi:
        return
    k = _largest_pow2_below(hi - lo)
    if m < lo + k:
        _leaf_proof(lo, lo + k, m, cur, proof)
        proof.append(_subtree_hash(lo + k, hi, cur))
    else:
        sibling = _subtree_hash(lo, lo + k, cur)
        _leaf_proof(lo + k, hi, m, cur, proof)
        proof.append(sibling)


def _check_consistency_args(m: int, n: int) -> None:
    if m < 1 or n < 1 or m > n:
        raise Invalid("bad_range", f"no consistency proof from size {m} to size {n}")


def consistency_proof_indexes(m: int, n: int) -> list[int]:
    """Return the stored indexes needed for the consistency proof from size m to size n."""
    _check_consistency_args(m, n)
    need: list[int] = []
    _tree_proof_index(0, n, m, need)
    return need


def _tree_proof_index(lo: int, hi: int, m: int, need: list[int]) -> None:
    """Append the indexes for the sub-proof of D[lo:hi] against old size m (tlog treeProofIndex)."""
    if m == hi:
        if lo != 0:
            _subtree_index(lo, hi, need)
        return
    k = _largest_pow2_below(hi - lo)
    if m <= lo + k:
        _tree_proof_index(lo, lo + k, m, need)
        _subtree_index(lo + k, hi, need)
    else:
        _subtree_index(lo, lo + k, need)
        _tree_proof_index(lo + k, hi, m, need)


def consistency_proof(m: int, n: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return the RFC 9162 §2.1.4.1 PROOF(m, D[n]) from the hashes at consistency_proof_indexes."""
    _check_consistency_args(m, n)
    cur = _Cursor(hashes)
    proof: list[bytes] = []
    _tree_proof(0, n, m, cur, proof)
    _finish(cur, "consistency proof")
    return proof


def _tree_proof(lo: int, hi: int, m: int, cur: _Cursor, proof: list[bytes]) -> None:
    """Append SUBPROOF(m - lo, D[lo:hi], lo == 0) to proof (tlog treeProof)."""
    # RFC 9162 §2.1.4.1: SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])};
    # below the split k, recurse into the side holding the old tree's right edge and append the
    # other side's hash. `lo == 0` plays the RFC's flag b: the old tree is a prefix of D[lo:hi]
    # exactly while we have only gone left, and the verifier already holds its root.
    if m == hi:
        if lo != 0:
            proof.append(_subtree_hash(lo, hi, cur))
        return
    k = _largest_pow2_below(hi - lo)
    if m <= lo + k:
        _tree_proof(lo, lo + k, m, cur, proof)
        proof.append(_subtree_hash(lo + k, hi, cur))
    else:
        sibling = _subtree_hash(lo, lo + k, cur)
        _tree_proof(lo + k, hi, m, cur, proof)
        proof.append(sibling)


# --- Verification (RFC 9162 §2.1.3.2, §2.1.4.2) --------------------------------------------------


def _all_hashes(hashes: Sequence[bytes]) -> bool:
    return all(isinstance(h, (bytes, bytearray)) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Return True iff `proof` shows leaf `index` with hash `leaf_hash` in the tree (size, root)."""
    # RFC 9162 §2.1.3.2 step 1: leaf_index >= tree_size fails.
    if index < 0 or size < 0 or index >= size:
        return False
    if len(leaf_hash) != HASH_SIZE or len(root) != HASH_SIZE or not _all_hashes(proof):
        return False
    # Step 2-3.
    fn, sn = index, size - 1
    r = leaf_hash
    # Step 4.
    for p in proof:
        if sn == 0:  # 4a: more hashes than the path has levels
            return False
        if fn & 1 or fn == sn:  # 4b: p is a left sibling
            r = node_hash(p, r)
            if not fn & 1:
                # fn is the last node of its level with no right sibling: climb until it is a
                # right child (or the root of the left edge).
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:  # p is a right sibling
            r = node_hash(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    # Step 5: sn == 0 also rejects a proof that stops short of the root.
    return sn == 0 and r == root


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> bool:
    """Return True iff `proof` shows the tree (size1, root1) is a prefix of (size2, root2)."""
    decided = _consistency_without_hashing(size1, size2, root1, root2, proof)
    if decided is not None:
        return decided
    return _consistency_path(size1, size2, root1, root2, list(proof))


def _consistency_without_hashing(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> bool | None:
    """The answer of verify_consistency when the sizes and shapes alone decide it, else None."""
    if size1 < 0 or size2 < 0 or size1 > size2:
        return False
    if size1 == 0:
        # transparency-dev rule (module docstring): nothing is consistent *from* the empty tree.
        return False
    if size1 == size2:
        return len(proof) == 0 and bytes(root1) == bytes(root2)
    if len(root1) != HASH_SIZE or len(root2) != HASH_SIZE or not _all_hashes(proof):
        return False
    # RFC 9162 §2.1.4.2 step 1: an empty proof fails (here size1 < size2).
    if not proof:
        return False
    return None


def _consistency_path(size1: int, size2: int, root1: bytes, root2: bytes, path: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2 steps 2-7, for 0 < size1 < size2 and a non-empty proof of hashes."""
    # Step 2: when size1 is a power of two the old root is itself a node of the new tree, so the
    # proof omits it; put it back as the starting point.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # Step 3-4.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:  # 6a
            return False
        if fn & 1 or fn == sn:  # 6b: c is a left sibling, inside the old tree too
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:  # c is a right sibling, only in the new tree
            sr = node_hash(sr, c)
        fn >>= 1  # 6c
        sn >>= 1
    # Step 7.
    return sn == 0 and fr == root1 and sr == root2
