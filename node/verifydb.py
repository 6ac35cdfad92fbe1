"""`ats verify-db`: recheck every stored value of a data folder against the signed envelopes.

The node decides budgets from values it derived from the envelopes when it stored them; a value
changed in the file would change decisions without breaking a signature. So this tool recomputes
each of them and names every row that differs (table, key, column, stored, expected):

- entries: each envelope parsed (canonical CBOR, schema) and its signature checked; its derived
  columns (event_id, signer, kind, ts, m0..m3, subject) recomputed; indexes contiguous from 0;
- tree_hashes: every stored hash, interior nodes included, rebuilt from the leaves (tlog layout);
  no row missing, none beyond the log;
- origins.size: the number of entries;
- checkpoints: every note's signature by its origin, its size and root columns, and its root
  against the tree rebuilt from the entries at that size; cosignatures: each line verifies;
- usage_counters: every counter, recomputed by replaying the budget book over every entry in the
  order this node stored them (node/budgets.py `replay_own` and `observe`), with the node's
  settings (--config, ATS_* environment);
- the superblock (node/superblock.py): the log holds its size and has its root there.

Not derivable, so not checked: a receipt's `budgets` (what the node answered at the time),
`accepted_ms`, alerts, fork evidence. Reads only: safe on a running node (docs/integrity.md).

A bare ledger file (`ats backup`, `ats restore`: `verify_ledger`) is checked the same way, less
what needs its data folder: the superblock, and the counters (they depend on the node's settings).
The quick check (`--quick`) skips the per-event parse and signature check, the costly part: each
envelope is still hashed into its leaf and the rebuilt tree must give the signed roots, so any
changed byte of any entry is still found, and each stored event id is checked against the SHA-256
of the event bytes. It answers "is this copy intact?", not "were these events ever valid?".
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable

from ledger.checkpoint import NoteSignature, open_checkpoint, origin_line, verify_cosignature
from ledger.encoding import decode
from ledger.errors import LedgerError
from ledger.events import Envelope, parse_envelope
from ledger.merkle import Frontier, leaf_hash, stored_hash_count
from ledger.signing import verify
from node import superblock
from node.clock import SystemClock
from node.config import Config
from node.progress import Progress
from node.store import integrity as store
from node.store import logs as log_store
from node.store import merkle as merkle_store
from node.store.logs import subject_of
from node.store.sqlite import Connection, connect

CHUNK = 2000
NOTES_CHUNK = 500
AHEAD = 8  # chunks in flight in the pool
FINDINGS_MAX = 10_000  # kept for the report; the total is always counted


@dataclass(frozen=True)
class Finding:
    """One stored value that differs from what the envelopes give."""

    table: str
    key: tuple[tuple[str, Any], ...]
    column: str
    stored: Any
    expected: Any

    def doc(self) -> dict[str, Any]:
        return {"table": self.table, "key": {k: _plain(v) for k, v in self.key}, "column": self.column,
                "stored": _plain(self.stored), "expected": _plain(self.expected)}

    def text(self) -> str:
        key = " ".join(f"{k}={_short(v)}" for k, v in self.key)
        return f"DIFF {self.table} {key} {self.column}: stored {_short(self.stored)}, expected {_short(self.expected)}"


def _plain(v: Any) -> Any:
    return v.hex() if isinstance(v, (bytes, bytearray)) else v


def _short(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return json.dumps(v) if isinstance(v, str) or v is None else str(v)


class Findings:
    def __init__(self) -> None:
        self.kept: list[Finding] = []
        self.total = 0

    def add(self, table: str, key: Iterable[tuple[str, Any]], column: str, stored: Any, expected: Any) -> None:
        self.total += 1
        if len(self.kept) < FINDINGS_MAX:
            self.kept.append(Finding(table, tuple(key), column, stored, expected))

    def extend(self, found: list[Finding]) -> None:
        for f in found:
            self.add(f.table, f.key, f.column, f.stored, f.expected)


def expected_columns(env: Envelope) -> tuple:
    """store.ENTRY_COLUMNS as node/store/logs.py append_batch derives them from the envelope."""
    ev = env.event
    m = ev.body.metrics() + (0, 0, 0, 0)
    return (ev.id, ev.signer, ev.kind, ev.ts, m[0], m[1], m[2], m[3], subject_of(ev))


def check_rows(origin_hex: str, rows: list[tuple]) -> tuple[list[bytes], list[Finding]]:
    """Leaf hashes of entry rows (store.entry_rows) and the findings of their columns. Thread-safe."""
    leaves: list[bytes] = []
    found: list[Finding] = []
    for idx, envelope, *stored in rows:
        leaves.append(leaf_hash(envelope))
        key = (("origin", origin_hex), ("idx", idx))
        try:
            env = parse_envelope(envelope, unknown_kinds=True)  # a newer node's kind, stored by replication
            verify(env.event.raw, env.sig, env.event.signer)
        except LedgerError as e:
            found.append(Finding("entries", key, "envelope", f"{e.code}: {e.message}", "a canonical, validly signed envelope"))
            continue
        for name, s, x in zip(store.ENTRY_COLUMNS, stored, expected_columns(env)):
            if s != x or type(s) is not type(x):
                found.append(Finding("entries", key, name, s, x))
    return leaves, found


def check_rows_quick(origin_hex: str, rows: list[tuple]) -> tuple[list[bytes], list[Finding]]:
    """check_rows without parsing events or checking signatures: leaves, and each stored event id
    against the SHA-256 of the envelope's event bytes. Thread-safe."""
    leaves: list[bytes] = []
    found: list[Finding] = []
    for idx, envelope, event_id, *_rest in rows:
        leaves.append(leaf_hash(envelope))
        try:
            event = decode(envelope)["event"]
        except (LedgerError, KeyError, TypeError):
            event = None
        if not isinstance(event, bytes):
            found.append(Finding("entries", (("origin", origin_hex), ("idx", idx)), "envelope", "not a CBOR map with an event",
                                 "a canonical envelope"))
        elif hashlib.sha256(event).digest() != event_id:
            found.append(Finding("entries", (("origin", origin_hex), ("idx", idx)), "event_id", event_id,
                                 hashlib.sha256(event).digest()))
    return leaves, found


def check_notes(origin_hex: str, public_key: bytes, rows: list[tuple[int, bytes, str, bytes | None]]) -> list[Finding]:
    """Findings of checkpoint rows (size, root column, note, root rebuilt from the entries at that
    size or None if the log is shorter). Thread-safe."""
    found = []
    for size, root, note, rebuilt in rows:
        key = (("origin", origin_hex), ("size", size))
        try:
            cp = open_checkpoint(note, public_key)[0]
        except LedgerError as e:
            found.append(Finding("checkpoints", key, "note", f"{e.code}: {e.message}", "signed by the origin"))
            continue
        if cp.size != size:
            found.append(Finding("checkpoints", key, "size", size, cp.size))
        if cp.root != root:
            found.append(Finding("checkpoints", key, "root", root, cp.root))
        if rebuilt is None:
            found.append(Finding("checkpoints", key, "note", f"signs size {cp.size}", "at most the entries held"))
        elif cp.size == size and rebuilt != cp.root:
            found.append(Finding("checkpoints", key, "note (the entries' root)", cp.root, rebuilt))
    return found


class OriginCheck:
    """Streams one origin log: entries in chunks through the pool, the tree rebuilt in order, and
    the checkpoints of each chunk's sizes checked against it (memory bounded by the chunks)."""

    def __init__(self, conn: Connection, origin_id: int, public_key: bytes, size_column: int,
                 pool: ThreadPoolExecutor, findings: Findings, progress: Progress, extra_sizes: Iterable[int] = (),
                 quick: bool = False):
        self.conn, self.origin_id, self.public_key = conn, origin_id, public_key
        self.hex = public_key.hex()
        self.size_column = size_column
        self.pool, self.findings, self.progress = pool, findings, progress
        self.frontier = Frontier()
        self.extra = set(extra_sizes)
        self.roots: dict[int, bytes] = {}  # rebuilt roots at the extra sizes (the superblock's)
        self.checkpoints = 0
        self._note_futs: list[Future] = []
        self._check_rows = check_rows_quick if quick else check_rows

    def key(self, **more: Any) -> list[tuple[str, Any]]:
        return [("origin", self.hex), *more.items()]

    def run(self) -> int:
        """Check the origin; returns the number of entries held (contiguous from 0)."""
        empty = Frontier().root()
        if 0 in self.extra:
            self.roots[0] = empty
        self._notes(store.checkpoint_rows(self.conn, self.origin_id, 0, 0), {0: empty})
        held = self._entries()
        self._tail(held)
        beyond = store.checkpoint_rows(self.conn, self.origin_id, held + 1, None)
        self._notes(beyond, {})
        if held and not self.checkpoints:
            self.findings.add("checkpoints", self.key(), "(row)", None, "a signed checkpoint")
        for fut in self._note_futs:
            self.findings.extend(fut.result())
        self._cosignatures()
        return held

    def _notes(self, rows: list[tuple[int, bytes, str]], rebuilt: dict[int, bytes]) -> None:
        if rows:
            self.checkpoints += len(rows)
            work = [(size, root, note, rebuilt.get(size)) for size, root, note in rows]
            self._note_futs.append(self.pool.submit(check_notes, self.hex, self.public_key, work))
            while len(self._note_futs) > AHEAD:
                self.findings.extend(self._note_futs.pop(0).result())

    def _entries(self) -> int:
        futures: list[Future] = []
        start = 0
        while True:
            rows = store.entry_rows(self.conn, self.origin_id, start, start + CHUNK)
            if not rows:
                break
            if rows[0][0] != start:
                self.findings.add("entries", self.key(idx=start), "(row)", None, "present (entries are contiguous from 0)")
                break
            gap = next((i for i, r in enumerate(rows) if r[0] != start + i), None)
            if gap is not None:
                rows = rows[:gap]
            futures.append(self.pool.submit(self._check_rows, self.hex, rows))
            start += len(rows)
            while len(futures) > AHEAD:
                self._drain(futures.pop(0))
            if gap is not None:
                self.findings.add("entries", self.key(idx=start), "(row)", None, "present (entries are contiguous from 0)")
                break
        for fut in futures:
            self._drain(fut)
        return self.frontier.size

    def _drain(self, fut: Future) -> None:
        leaves, found = fut.result()
        self.findings.extend(found)
        lo = self.frontier.size
        notes = store.checkpoint_rows(self.conn, self.origin_id, lo + 1, lo + len(leaves))
        wanted = {size for size, _r, _n in notes} | {s for s in self.extra if lo < s <= lo + len(leaves)}
        first = stored_hash_count(lo)
        hashes: list[bytes] = []
        rebuilt: dict[int, bytes] = {}
        pos = 0
        for size in sorted(wanted) + [lo + len(leaves)]:
            # stop at each checkpoint size inside the chunk to record the rebuilt root there
            end = size - lo
            if end > pos:
                hashes.extend(self.frontier.extend(leaves[pos:end])[1])
                pos = end
            if size in wanted:
                rebuilt[size] = self.frontier.root()
        self.roots.update({s: r for s, r in rebuilt.items() if s in self.extra})
        self._notes(notes, rebuilt)
        stored = store.stored_hashes(self.conn, self.origin_id, first, first + len(hashes))
        for i, h in enumerate(hashes):
            s = stored.get(first + i)
            if s != h:
                self.findings.add("tree_hashes", self.key(sidx=first + i), "hash", s, h)
        self.progress.advance(len(leaves))

    def _tail(self, held: int) -> None:
        beyond = store.entries_from(self.conn, self.origin_id, held)
        if beyond:
            self.findings.add("entries", self.key(idx=f">={held}"), "(rows)", beyond, 0)
        if self.size_column != held:
            self.findings.add("origins", self.key(), "size", self.size_column, held)
        for sidx in store.hashes_from(self.conn, self.origin_id, stored_hash_count(held)):
            self.findings.add("tree_hashes", self.key(sidx=sidx), "(row)", "present", "absent (beyond the log)")

    def _cosignatures(self) -> None:
        for size, witness, line, note in store.cosignature_rows(self.conn, self.origin_id):
            try:
                if note is None:
                    raise KeyError(size)
                cp = open_checkpoint(note, self.public_key)[0]
                verify_cosignature(cp, NoteSignature.parse_line(line), origin_line(witness), witness)
            except (LedgerError, KeyError) as e:
                why = f"{e.code}: {e.message}" if isinstance(e, LedgerError) else "no checkpoint at this size"
                self.findings.add("cosignatures", self.key(size=size, witness=witness), "line", why,
                                  "a cosignature of the checkpoint by the witness")


class _Zero(dict):
    """Counters the replay has not touched are 0 (never read from the file it is checking)."""

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(key, 0)


def replay_counters(conn: Connection, config: Config, own_key: bytes | None, own_id: int | None,
                    progress: Progress) -> dict[tuple[str, str, str, str, int], int]:
    """Every usage counter recomputed from the envelopes, by replaying the budget book in the order
    the entries were stored (each event id once, in the first origin that brought it)."""
    from node.budgets import BudgetBook

    book = BudgetBook.from_config(config, own_key or bytes(32))
    book.counters = _Zero()
    repeated = store.repeated_ids(conn)
    seen: set[bytes] = set()
    expected: dict[tuple[str, str, str, str, int], int] = {}
    for rows in store.entries_by_arrival(conn):
        for origin, event_id, envelope in rows:
            if event_id in repeated:
                if event_id in seen:
                    continue
                seen.add(event_id)
            try:
                ev = parse_envelope(envelope).event
            except LedgerError:
                continue  # reported with its entry (or a newer node's kind: counted nowhere)
            deltas = book.replay_own(conn, ev) if origin == own_id else book.observe(conn, ev, ev.ts)
            for key, amount in deltas.items():
                expected[key] = expected.get(key, 0) + amount
        progress.advance(len(rows))
    return expected


def compare_counters(stored: dict, expected: dict, findings: Findings) -> None:
    for key in sorted(set(stored) | set(expected), key=lambda k: tuple(map(str, k))):
        s, x = stored.get(key, 0), expected.get(key, 0)
        if s != x:
            scope, scope_id, metric, window, start = key
            findings.add("usage_counters", (("scope", scope), ("scope_id", scope_id), ("metric", metric),
                                            ("window", window), ("start_ms", start)), "amount",
                         stored.get(key), expected.get(key))


def _own_key(data_dir: str) -> bytes | None:
    from node.keys import KeyFileError, read_key
    from ledger.signing import public_key_from_seed

    try:
        return public_key_from_seed(read_key(os.path.join(data_dir, "node.key")))
    except KeyFileError:
        return None


def _superblock(data_dir: str, findings: Findings) -> superblock.Record | None:
    path = superblock.path_for(data_dir)
    try:
        return superblock.read(path)[0]
    except (superblock.SuperblockError, OSError) as e:
        findings.add("superblock", (("file", path),), "(file)", str(e), "a valid record")
        return None


def check_data_dir(data_dir: str, config: Config | None, *, show: bool) -> dict[str, Any]:
    """Check everything; returns the report (see `verify_data_dir`)."""
    return check_ledger(os.path.join(data_dir, "ledger.sqlite"), config, show=show, data_dir=data_dir)


def check_ledger(path: str, config: Config | None, *, show: bool, data_dir: str | None = None,
                 quick: bool = False) -> dict[str, Any]:
    """Check one ledger file; with its data folder also the superblock, and with a config the
    usage counters (a bare backup file has neither). Returns the report (`verify_data_dir`)."""
    clock = SystemClock()
    started = clock.monotonic_s()
    conn = connect(path, readonly=True)
    findings = Findings()
    report: dict[str, Any] = {"data_dir": data_dir, "ledger": path, "origins": []}
    try:
        conn.execute("BEGIN")  # one read snapshot for the whole check, even on a running node
        recorded = _superblock(data_dir, findings) if data_dir is not None else None
        own_key = (_own_key(data_dir) if data_dir is not None else None) or (recorded.origin if recorded else None)
        own_id = None
        total = 0
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            for origin_id, public_key, size in log_store.list_origins(conn):
                extra = [recorded.size] if recorded and recorded.origin == public_key else []
                progress = Progress(size, f"verify {public_key.hex()[:12]}", enabled=show)
                check = OriginCheck(conn, origin_id, public_key, size, pool, findings, progress, extra, quick)
                before = findings.total
                held = check.run()
                progress.finish()
                total += held
                if public_key == own_key:
                    own_id = origin_id
                report["origins"].append({"origin": public_key.hex(), "size": held, "checkpoints": check.checkpoints,
                                          "differences": findings.total - before})
                if extra:
                    _check_recorded(path, recorded, held, check.roots, findings)
        if recorded is not None and recorded.origin not in {bytes.fromhex(o["origin"]) for o in report["origins"]}:
            if recorded.size:
                findings.add("superblock", (("origin", recorded.origin.hex()),), "size", recorded.size, "no such log held")
        report["seconds_logs"] = round(clock.monotonic_s() - started, 3)
        report["counters"] = 0
        if config is not None:
            progress = Progress(store.entry_count(conn), "counters", enabled=show)
            expected = replay_counters(conn, config, own_key, own_id, progress)
            progress.finish()
            stored = store.all_counters(conn)
            compare_counters(stored, expected, findings)
            report["counters"] = len(set(stored) | set(expected))
            report["seconds_counters"] = round(clock.monotonic_s() - started - report["seconds_logs"], 3)
    finally:
        conn.close()
    report.update(entries=total, ok=findings.total == 0, differences=findings.total,
                  findings=[f.doc() for f in findings.kept], seconds=round(clock.monotonic_s() - started, 3))
    report["_text"] = [f.text() for f in findings.kept]
    return report


def _check_recorded(path: str, recorded: superblock.Record, held: int, roots: dict[int, bytes],
                    findings: Findings) -> None:
    key = (("origin", recorded.origin.hex()),)
    if recorded.size > held and not _committed_since(path, recorded):
        findings.add("superblock", key, "size", recorded.size, f"at most the {held} entries held (entries were lost)")
    elif recorded.size <= held and roots.get(recorded.size) != recorded.root:
        findings.add("superblock", key, "root", recorded.root, roots.get(recorded.size))


def _committed_since(path: str, recorded: superblock.Record) -> bool:
    """On a running node the superblock runs ahead of a snapshot by the batch being committed:
    whether a fresh snapshot holds the recorded size, with the recorded root there."""
    conn = connect(path, readonly=True)
    try:
        row = log_store.origin_row(conn, recorded.origin)
        return row is not None and row[1] >= recorded.size and merkle_store.tree_hash_at(
            conn, row[0], recorded.size) == recorded.root
    except LedgerError:
        return False
    finally:
        conn.close()


def verify_data_dir(data_dir: str, *, quiet: bool = False, as_json: bool = False, config_file: str | None = None) -> int:
    """Exit code 0 if every stored value checks out, 1 if any differs (each named), 2 on usage errors."""
    from node.config import ConfigError, load

    path = os.path.join(data_dir, "ledger.sqlite")
    if not os.path.exists(path):
        print(f"ats: no ledger at {path}", file=sys.stderr)
        return 2
    try:
        config = load(config_file, os.environ, {"data_dir": data_dir})
    except ConfigError as e:
        print(f"ats: {e}", file=sys.stderr)
        return 2
    report = check_data_dir(data_dir, config, show=not quiet and not as_json and sys.stderr.isatty())
    return _print_report(report, as_json)


def verify_ledger(path: str, *, quiet: bool = False, quick: bool = False) -> int:
    """verify_data_dir for a bare ledger file (a backup): logs, tree hashes, checkpoints and
    cosignatures; quick: no per-event signature checks (module docstring). 0 ok, 1 differs."""
    report = check_ledger(path, None, show=not quiet and sys.stderr.isatty(), quick=quick)
    return _print_report(report, False, sys.stderr)  # the caller's own output is on stdout


def _print_report(report: dict[str, Any], as_json: bool, out: Any = None) -> int:
    out = out or sys.stdout
    lines = report.pop("_text")
    if as_json:
        print(json.dumps(report, indent=1), file=out)
        return 0 if report["ok"] else 1
    for o in report["origins"]:
        state = "ok  " if not o["differences"] else "FAIL"
        print(f"{state} origin {o['origin']} size {o['size']} checkpoints {o['checkpoints']}", file=out)
    for line in lines:
        print(line, file=out)
    if report["differences"] > len(lines):
        print(f"... and {report['differences'] - len(lines)} more", file=out)
    if not report["ok"]:
        print(f"FAIL {report['differences']} stored values differ from the envelopes", file=sys.stderr)
        return 1
    print(f"verified {report['entries']} entries, {report['counters']} counters in {report['seconds']} s", file=out)
    return 0
