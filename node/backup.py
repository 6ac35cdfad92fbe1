"""`ats backup` and `ats restore`: whole-ledger copies that never fork the node's log.

Backup: SQLite's online backup API from a read connection (node/store/backup.py) into a
temporary file beside the destination, checked with the verify-db logic, fsynced, then
renamed into place; a failed or unverifiable copy leaves nothing behind.

Restore: the danger is not the copy but the key. A node signs checkpoints of its own log;
if an old copy comes back under the same key while peers (or auditors) already hold a
larger checkpoint of that log, the node's next event makes a second, different log at the
same sizes: a fork, the evidence of which makes every peer stop trusting the key. So
before anything is changed the restore asks every peer for its checkpoint of this node's
origin, and refuses when any peer holds more of the log than the copy, or a different
history. The safe ways out are a copy at least as new as the cluster's (a peer's ledger holds
this node's log as far as the cluster has seen it: back it up there and restore it here) or a
new key (`--new-key`: the old log stays, replicated, as another origin).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from typing import Any

import aiohttp

from ledger.checkpoint import open_checkpoint
from ledger.errors import LedgerError
from ledger.signing import public_key_from_seed
from ledger.merkle import EMPTY_ROOT
from node import datadir, superblock, tls
from node.clock import SystemClock
from node.config import Config
from node.keys import KeyFileError, new_seed, node_seed, write_key
from node.store import backup as backup_store
from node.verifydb import verify_ledger

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LEDGER_FILE = "ledger.sqlite"
PEER_TIMEOUT_S = 10
NOTE_BYTES_MAX = 65_536


def _say(message: str) -> None:
    print(f"ats: {message}", file=sys.stderr, flush=True)


def _remove(path: str) -> None:
    for p in (path, path + "-journal", path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.unlink(p)


# -- backup ---------------------------------------------------------------------


def backup(args: argparse.Namespace) -> int:
    """`ats backup DEST [--data-dir DIR] [--force]`: a verified online copy of the node's ledger."""
    clock = SystemClock()
    src = os.path.join(args.data_dir, LEDGER_FILE)
    if not os.path.exists(src):
        _say(f"no ledger at {src} (pass --data-dir)")
        return EXIT_USAGE
    problem = backup_store.ledger_problem(src)
    if problem:
        _say(problem)
        return EXIT_USAGE
    dest = os.path.join(args.dest, LEDGER_FILE) if os.path.isdir(args.dest) else args.dest
    if os.path.abspath(dest) == os.path.abspath(src):
        _say("the backup destination is the ledger itself")
        return EXIT_USAGE
    if os.path.exists(dest) and not args.force:
        _say(f"{dest} exists; pass --force to replace it")
        return EXIT_USAGE
    directory = os.path.dirname(os.path.abspath(dest))
    tmp = os.path.join(directory, f".{os.path.basename(dest)}.tmp.{os.getpid()}")
    try:
        open(tmp, "xb").close()
    except OSError as e:
        _say(f"cannot write the backup to {directory}: {e.strerror}")
        return EXIT_USAGE
    started = clock.monotonic_s()
    try:
        try:
            size = backup_store.backup_file(src, tmp)
        except Exception as e:  # sqlite3.Error or OSError: disk full, I/O, permissions
            _say(f"backup failed, nothing written: {e}")
            return EXIT_FAILED
        copied = clock.monotonic_s()
        if verify_ledger(tmp, quiet=True, quick=args.quick) != 0:
            _say("the copy does not verify (see above); nothing written")
            return EXIT_FAILED
        superblock.fsync_path(tmp)
        os.replace(tmp, dest)
        superblock.fsync_path(directory)
    finally:
        _remove(tmp)
    done = clock.monotonic_s()
    print(f"backup {dest}: {size} bytes, copied in {copied - started:.2f} s, verified in {done - copied:.2f} s")
    print("the node key is not in the backup: keep it with your other secrets", file=sys.stderr)
    return EXIT_OK


# -- restore --------------------------------------------------------------------


async def _peer_note(session: aiohttp.ClientSession, peer: str, origin_hex: str) -> str | None:
    """The peer's latest checkpoint note of origin, None if it holds none; raises on failure."""
    url = f"{peer.rstrip('/')}/v1/log/checkpoint"
    async with session.get(url, params={"origin": origin_hex}) as resp:
        if resp.status == 404:
            return None
        body = await resp.content.read(NOTE_BYTES_MAX + 1)
        if resp.status != 200 or len(body) > NOTE_BYTES_MAX:
            raise OSError(f"HTTP {resp.status}")
        return body.decode("utf-8", "replace")


async def _ask_peers(peers: list[str], origin: bytes, ssl: tls.ClientSsl) -> list[tuple[str, int, bytes] | tuple[str, str]]:
    """Per peer: (peer, size, root) of its verified checkpoint of origin, (peer, "none") or (peer, error)."""
    out: list[Any] = []
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=tls.connector(ssl)) as session:
        for peer in peers:
            try:
                note = await _peer_note(session, peer, origin.hex())
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                out.append((peer, f"unreachable: {e or type(e).__name__}"))
                continue
            if note is None:
                out.append((peer, "none"))
                continue
            try:
                cp, _ = open_checkpoint(note, origin)
            except LedgerError as e:
                out.append((peer, f"its checkpoint does not verify: {e.message}"))
                continue
            out.append((peer, cp.size, cp.root))
    return out


def _fork_risks(src: str, origin: bytes, ours: int, answers: list[Any], allow_unreachable: bool) -> list[str]:
    """Why restoring src under origin would fork its log, one sentence per peer; empty when safe."""
    risks = []
    for answer in answers:
        if len(answer) == 2:
            peer, what = answer
            if what != "none" and not (allow_unreachable and what.startswith("unreachable")):
                risks.append(f"{peer}: {what} (cannot tell whether it holds more of this log)")
            continue
        peer, size, root = answer
        if size > ours:
            risks.append(f"{peer} holds {size} events of this node's log; the copy holds {ours}")
        elif backup_store.root_at(src, origin, size) != root:
            risks.append(f"{peer} holds a different history of this node's log at size {size}")
    return risks


def _key_for_restore(args: argparse.Namespace, config: Config, clock: SystemClock) -> tuple[bytes | None, str]:
    """(seed, description) of the key the node will run under; seed None with --new-key (made later)."""
    default_path = config.key_path
    if args.new_key:
        if config.node_key or config.node_key_file:
            raise KeyFileError("--new-key makes data_dir/node.key: unset ATS_NODE_KEY / node_key_file, "
                               "or give the node a new key there yourself")
        return None, f"a new key in {default_path}"
    if not (config.node_key or config.node_key_file or os.path.exists(default_path)):
        raise KeyFileError(f"no node key ({default_path}, ATS_NODE_KEY or node_key_file): put the node's key back "
                           "first, or pass --new-key to run the copy under a new identity")
    seed, source = node_seed(config.node_key, config.node_key_file, default_path)
    return seed, source


def restore(args: argparse.Namespace, config: Config, ssl: tls.ClientSsl = None) -> int:
    """`ats restore SRC [--data-dir DIR] [--peer URL]... [--new-key]`: put a backup back, never forking."""
    clock = SystemClock()
    src, data_dir = args.src, config.data_dir
    problem = backup_store.ledger_problem(src) if os.path.exists(src) else f"{src} does not exist"
    if problem:
        _say(problem)
        return EXIT_USAGE
    holder = datadir.in_use(data_dir)
    if holder:
        _say(f"data folder {data_dir} is in use ({holder}): stop the node first; nothing changed")
        return EXIT_FAILED
    if verify_ledger(src, quiet=True, quick=args.quick) != 0:
        _say(f"{src} does not verify (see above); nothing changed")
        return EXIT_FAILED
    try:
        seed, key_source = _key_for_restore(args, config, clock)
    except KeyFileError as e:
        _say(str(e))
        return EXIT_USAGE
    if seed is not None:
        origin = public_key_from_seed(seed)
        head = backup_store.own_head(src, origin)
        ours = head[0] if head else 0
        peers = list(dict.fromkeys([*config.peers, *args.peer]))
        if not peers:
            _say("no peers to ask (peers setting or --peer): make sure no other node, witness or auditor holds a "
                 "newer checkpoint of this node's log")
        answers = asyncio.run(_ask_peers(peers, origin, ssl))
        risks = _fork_risks(src, origin, ours, answers, args.allow_unreachable) + _superblock_risks(src, origin, ours, data_dir)
        if risks:
            _say("refusing to restore: the cluster has moved on past this copy of the node's own log "
                 f"(origin {origin.hex()}, {ours} events in the copy):")
            for risk in risks:
                print(f"  {risk}", file=sys.stderr)
            print("Restoring it under the same key would make the node sign a second, different log (a fork),\n"
                  "and peers would stop trusting the key. Safe paths:\n"
                  "  - catch up from a peer first: on the peer that holds the most of this node's log, run\n"
                  "    `ats backup peer-copy.sqlite`, then here `ats restore peer-copy.sqlite` (the peer's\n"
                  "    ledger holds this node's log, signed by this key, as far as the cluster has seen it);\n"
                  "  - or restore under a new key: ats restore SRC --new-key (the old log stays, as another origin).\n"
                  "Nothing was changed.", file=sys.stderr)
            return EXIT_FAILED
    return _place(src, data_dir, seed, clock, key_source)


def _superblock_risks(src: str, origin: bytes, ours: int, data_dir: str) -> list[str]:
    """What this node's own superblock (the largest checkpoint it ever signed, node/superblock.py)
    says against the copy: signing again from a copy that lacks it would fork the log."""
    try:
        recorded = superblock.read(superblock.path_for(data_dir))[0]
    except (superblock.SuperblockError, OSError):
        return []  # unreadable: the node's own start-up refuses it; the peers' answers decide here
    if recorded is None or recorded.origin != origin:
        return []
    if recorded.size > ours:
        return [f"this node's superblock: it signed a checkpoint at size {recorded.size}, the copy holds {ours}"]
    if backup_store.root_at(src, origin, recorded.size) != recorded.root:
        return [f"this node's superblock: the copy has another root at size {recorded.size} than the node signed"]
    return []


def _start_superblock(src: str, data_dir: str, origin: bytes, suffix: str) -> None:
    """Give the restored ledger the superblock of the key that will run it: the copy's latest
    checkpoint of that key's log (size 0 for a new key). A superblock of that key that already
    records as much is kept (the checks above made sure the copy holds it)."""
    path = superblock.path_for(data_dir)
    try:
        recorded = superblock.read(path)[0]
    except (superblock.SuperblockError, OSError):
        recorded = None
    head = backup_store.own_head(src, origin)
    size = head[0] if head else 0
    if recorded is not None and recorded.origin == origin and recorded.size >= size:
        return
    if os.path.exists(path):
        os.replace(path, path + suffix)
    root = backup_store.root_at(src, origin, size) if size else EMPTY_ROOT
    superblock.Superblock.create(path, origin, size, root or EMPTY_ROOT).close()


def _place(src: str, data_dir: str, seed: bytes | None, clock: SystemClock, key_source: str) -> int:
    """Copy src into data_dir/ledger.sqlite; the previous file (and key, with a new one) kept aside."""
    try:
        lock_fd = datadir.hold(data_dir, "restore")
    except datadir.DataDirInUse as e:
        _say(f"{e}; nothing changed")
        return EXIT_FAILED
    try:
        target = os.path.join(data_dir, LEDGER_FILE)
        tmp = os.path.join(data_dir, f".{LEDGER_FILE}.restore.{os.getpid()}")
        try:
            backup_store.backup_file(src, tmp)
            superblock.fsync_path(tmp)
        except Exception as e:
            _remove(tmp)
            _say(f"cannot copy {src} into {data_dir}: {e}; nothing changed")
            return EXIT_FAILED
        suffix = f".before-restore-{clock.now_ms()}"
        if os.path.exists(target):
            for ext in ("", "-wal", "-shm"):
                if os.path.exists(target + ext):
                    os.replace(target + ext, target + suffix + ext)
            print(f"the previous ledger is kept as {target + suffix}", file=sys.stderr)
        os.replace(tmp, target)
        if seed is None:  # --new-key
            seed = new_seed()
            key_path = os.path.join(data_dir, "node.key")
            if os.path.exists(key_path):
                shutil.move(key_path, key_path + suffix)
                print(f"the previous node key is kept as {key_path + suffix}", file=sys.stderr)
            write_key(key_path, seed)
            key_source = key_path
        _start_superblock(target, data_dir, public_key_from_seed(seed), suffix)
        superblock.fsync_path(data_dir)
    finally:
        os.close(lock_fd)
    print(f"restored {src} into {target} (node key: {key_source}); start the node")
    return EXIT_OK
