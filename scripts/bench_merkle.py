"""Benchmark the Merkle log in SQLite: append rate, proof latency, proof sizes.

    python scripts/bench_merkle.py [--sizes 10000,100000,1000000] [--queries 2000] [--seed 1]

For each size, into a fresh SQLite file (WAL, synchronous=NORMAL), through node/store/merkle.py:
- append: leaf hashes appended in batches of 1000 per BEGIN IMMEDIATE ... COMMIT transaction
  (leaf hashing, SHA-256(0x00 ‖ data), is timed separately: append_leaves takes leaf hashes);
- proofs: on a fresh read connection, >= 1000 random queries of each kind, each timed end to end
  (index math + one SELECT + pure compute): inclusion at the head, inclusion at a random older
  size, consistency from a random size to the head, consistency between two random sizes;
- every proof is verified (untimed) and its length compared with the length RFC 9162's PATH and
  PROOF definitions give, counted here arithmetically.
Targets: appends >= 100k leaves/s; each proof <= 0.2 ms at 1M leaves.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import merkle  # noqa: E402
from node.store import merkle as store  # noqa: E402

ORIGIN = 1
BATCH_LEAVES = 1000
APPEND_TARGET_PER_S = 100_000
PROOF_TARGET_MS = 0.2


# --- RFC 9162 proof lengths, from the definitions (§2.1.3.1 PATH, §2.1.4.1 PROOF) ----------------


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_path_len(m: int, n: int) -> int:
    """len(PATH(m, D[n])): one hash per level walked down until a single leaf remains."""
    length = 0
    while n > 1:
        k = _split(n)
        if m < k:
            n = k
        else:
            m, n = m - k, n - k
        length += 1
    return length


def rfc_proof_len(m: int, n: int) -> int:
    """len(PROOF(m, D[n])) for 0 < m <= n: SUBPROOF's walk, plus MTH(D[m]) once b turned false."""
    length, b = 0, True
    while m != n:
        k = _split(n)
        if m <= k:
            n = k
        else:
            m, n, b = m - k, n - k, False
        length += 1
    return length + (0 if b else 1)


# --- Measurement ---------------------------------------------------------------------------------


@dataclass
class Series:
    name: str
    times_ns: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    mismatches: int = 0  # proof length != RFC length
    failures: int = 0  # proof did not verify

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.times_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


@dataclass
class Result:
    size: int
    leaf_hash_per_s: float
    append_per_s: float
    rows: int
    file_mib: float
    series: list[Series]


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _append_all(conn: sqlite3.Connection, leaves: list[bytes]) -> merkle.Frontier:
    frontier = merkle.Frontier()
    for start in range(0, len(leaves), BATCH_LEAVES):
        conn.execute("BEGIN IMMEDIATE")
        store.append_leaves(conn, ORIGIN, frontier, leaves[start : start + BATCH_LEAVES])
        conn.execute("COMMIT")
    return frontier


def _run_queries(
    series: Series,
    queries: int,
    draw: Callable[[], tuple[int, int]],
    prove: Callable[[int, int], list[bytes]],
    verify: Callable[[int, int, list[bytes]], bool],
    rfc_len: Callable[[int, int], int],
) -> None:
    for _ in range(queries):
        a, b = draw()
        t0 = time.perf_counter_ns()
        proof = prove(a, b)
        series.times_ns.append(time.perf_counter_ns() - t0)
        series.lengths.append(len(proof))
        series.mismatches += len(proof) != rfc_len(a, b)
        series.failures += not verify(a, b, proof)


def bench_size(n: int, directory: Path, queries: int, seed: int) -> Result:
    path = directory / f"merkle-{n}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)

    t0 = time.perf_counter()
    leaves = [merkle.leaf_hash(b"bench leaf %d" % i) for i in range(n)]
    leaf_hash_s = time.perf_counter() - t0

    conn = _connect(path)
    conn.execute(store.TREE_HASHES_DDL)
    t0 = time.perf_counter()
    frontier = _append_all(conn, leaves)
    append_s = time.perf_counter() - t0
    sql = "SELECT count(*) FROM tree_hashes WHERE origin = ?"
    (rows,) = conn.execute(sql, (ORIGIN,)).fetchone()
    head_root = store.tree_hash_at(conn, ORIGIN, n)
    if rows != merkle.stored_hash_count(n) or head_root != frontier.root():
        raise SystemExit(f"size {n}: store disagrees with the frontier")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    file_mib = os.path.getsize(path) / 2**20

    reader = _connect(path)  # a fresh connection, as the node's readers use
    reader.execute("PRAGMA query_only=ON")
    rng = random.Random(seed)
    roots: dict[int, bytes] = {}

    def root(size: int) -> bytes:
        if size not in roots:
            roots[size] = store.tree_hash_at(reader, ORIGIN, size)
        return roots[size]

    def prove_inclusion(index: int, size: int) -> list[bytes]:
        return store.inclusion_proof_at(reader, ORIGIN, index, size)

    def verify_inclusion(index: int, size: int, proof: list[bytes]) -> bool:
        return merkle.verify_inclusion(index, size, leaves[index], proof, root(size))

    def prove_consistency(m: int, size: int) -> list[bytes]:
        return store.consistency_proof_at(reader, ORIGIN, m, size)

    def verify_consistency(m: int, size: int, proof: list[bytes]) -> bool:
        return merkle.verify_consistency(m, size, root(m), root(size), proof)

    def index_at_head() -> tuple[int, int]:
        return rng.randrange(n), n

    def index_at_random_size() -> tuple[int, int]:
        size = rng.randint(1, n)
        return rng.randrange(size), size

    def size_to_head() -> tuple[int, int]:
        return rng.randint(1, n), n

    def size_to_random_size() -> tuple[int, int]:
        size = rng.randint(1, n)
        return rng.randint(1, size), size

    # The bench's own million leaf hashes are not the node's heap: keep them out of the
    # collector's full passes, which would otherwise land on random queries as multi-ms pauses.
    gc.collect()
    gc.freeze()
    # Warm the statement cache and the page cache so the figures are steady-state reads.
    for _ in range(200):
        prove_inclusion(*index_at_random_size())
        prove_consistency(*size_to_random_size())

    series = [
        Series("inclusion @ head"),
        Series("inclusion @ random size"),
        Series("consistency random -> head"),
        Series("consistency random -> random"),
    ]
    inclusion = (prove_inclusion, verify_inclusion, rfc_path_len)
    consistency = (prove_consistency, verify_consistency, rfc_proof_len)
    _run_queries(series[0], queries, index_at_head, *inclusion)
    _run_queries(series[1], queries, index_at_random_size, *inclusion)
    _run_queries(series[2], queries, size_to_head, *consistency)
    _run_queries(series[3], queries, size_to_random_size, *consistency)
    reader.close()
    gc.unfreeze()
    return Result(n, n / leaf_hash_s, n / append_s, rows, file_mib, series)


def _mark(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def report(results: list[Result], queries: int) -> bool:
    all_ok = True
    print()
    print(
        f"Appends: batches of {BATCH_LEAVES} leaves per transaction; "
        f"target >= {APPEND_TARGET_PER_S:,} leaves/s"
    )
    print(
        f"{'leaves':>10} {'append leaves/s':>16} {'':>12} {'leaf_hash/s':>12} "
        f"{'rows':>10} {'file MiB':>9}"
    )
    for r in results:
        ok = r.append_per_s >= APPEND_TARGET_PER_S
        all_ok &= ok
        print(
            f"{r.size:>10,} {r.append_per_s:>16,.0f} {_mark(ok):>12} {r.leaf_hash_per_s:>12,.0f} "
            f"{r.rows:>10,} {r.file_mib:>9.1f}"
        )
    print()
    print(
        f"Proofs: {queries} random queries each, fresh read connection; "
        f"target p99 <= {PROOF_TARGET_MS} ms at 1M leaves"
    )
    print(
        f"{'leaves':>10}  {'query':<30} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  "
        f"{'hashes mean/max':>15}  {'len == RFC':>10}  {'verified':>8}  target"
    )
    for r in results:
        for s in r.series:
            p50, p99, top = s.quantile_ms(0.5), s.quantile_ms(0.99), max(s.times_ns) / 1e6
            sizes_ok = s.mismatches == 0
            verified_ok = s.failures == 0
            all_ok &= sizes_ok and verified_ok
            target = ""
            if r.size >= 1_000_000:
                ok = p99 <= PROOF_TARGET_MS
                all_ok &= ok
                target = _mark(ok)
            mean_len = sum(s.lengths) / len(s.lengths)
            print(
                f"{r.size:>10,}  {s.name:<30} {p50:>8.3f} {p99:>8.3f} {top:>8.3f}  "
                f"{mean_len:>9.1f}/{max(s.lengths):<5}  "
                f"{'yes' if sizes_ok else f'NO ({s.mismatches})':>10}  "
                f"{'all' if verified_ok else f'{s.failures} FAILED':>8}  {target}"
            )
    print()
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="leaf counts, a,b,c")
    parser.add_argument("--queries", type=int, default=2000, help="per proof kind, >= 1000")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="keep the SQLite files here")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    if args.queries < 1000:
        parser.error("--queries must be at least 1000")

    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-merkle-") as tmp:
        directory = args.dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            print(f"  {n:,} leaves ...", flush=True)
            results.append(bench_size(n, directory, args.queries, args.seed))
    return 0 if report(results, args.queries) else 1


if __name__ == "__main__":
    sys.exit(main())
