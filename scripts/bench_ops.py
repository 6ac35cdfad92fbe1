"""Operations at scale: backup, restore, Litestream restore and start-up times of a node holding 1M events.

    python scripts/bench_ops.py [--events 1000000] [--data DIR] [--keep] [--no-litestream]

a. Build (or reuse with --data) a data dir of --events events with scripts/bench_node.py's builder
   (envelopes pre-signed in a process pool, appended by node/store/logs.py append_batch in batches
   of 5000, each with its signed checkpoint): exactly what a node writes.
b. Start-up: spawn `ats node` on it, time to the ready line.
c. `ats backup`, then `ats backup --quick`, while the node runs and takes writes (batches of 500
   over HTTP in a thread): total wall time, and the copy and check parts as the command prints them.
d. `ats restore --quick`, then `ats restore`, of that backup into the stopped node's folder (no
   peers to ask): wall time (each checks the whole copy first), then start-up on the restored ledger.
e. Litestream: replicate the ledger to a local S3 stand-in (moto on loopback) while the node runs,
   then time `litestream restore` of the whole database and `ats verify-db` of the result.
Prints every figure; every process started is stopped, the temp dir removed unless --keep.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_ingest import cbor_array, loadavg, presign  # noqa: E402
from bench_node import build, dir_size_mb  # noqa: E402
from tests.integration.nodeproc import NodeProcess  # noqa: E402

SKEW_MS = 3_600_000
ENV = {"ATS_SKEW_MS": str(SKEW_MS), "ATS_DEFAULT_PLAN": "platformium", "ATS_DISCOVERY": "off"}


def ats(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=3600,
                         env={**os.environ, **ENV})
    return time.monotonic() - t0, run


def size_of(data: str) -> int:
    return size_of_file(os.path.join(data, "ledger.sqlite"))


def start(data: str) -> tuple[NodeProcess, float]:
    node = NodeProcess(data, env=ENV)
    t0 = time.monotonic()
    node.start()
    return node, time.monotonic() - t0


def load(node: NodeProcess, events: list[bytes], stop: threading.Event, sent: list[int]) -> None:
    """Batches of 500 pre-signed events over HTTP until stop or the events run out."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    for i in range(0, len(events), 500):
        if stop.is_set():
            break
        conn.request("POST", "/v1/events/batch", body=cbor_array(events[i:i + 500]),
                     headers={"Content-Type": "application/cbor"})
        conn.getresponse().read()
        sent[0] += 500
    conn.close()


def litestream_restore(data: str, work: str, node: NodeProcess) -> None:
    from tests.integration import litestreamkit

    db = os.path.join(data, "ledger.sqlite")
    config = os.path.join(work, "litestream.yml")
    with litestreamkit.s3_server() as endpoint:
        with open(config, "w") as f:
            f.write(litestreamkit.config_text(db, endpoint, sync_ms=1000))
        t0 = time.monotonic()
        with litestreamkit.replicating(config, os.path.join(work, "litestream.log")):
            out = os.path.join(work, "ls-restored.sqlite")
            expect = size_of(data)
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                time.sleep(5)
                for p in (out, out + "-wal", out + "-shm"):
                    if os.path.exists(p):
                        os.remove(p)
                if litestreamkit.restore(config, db, out).returncode == 0 and size_of_file(out) >= expect:
                    break
            print(f"[e] litestream: initial replication of {expect:,} events to S3 (moto) within "
                  f"{time.monotonic() - t0:.1f} s (polled every 5 s)")
        node.kill()
        os.remove(out)
        t0 = time.monotonic()
        run = litestreamkit.restore(config, db, out)
        restore_s = time.monotonic() - t0
        assert run.returncode == 0, run.stderr
    vdir = os.path.join(work, "ls-verify")
    os.makedirs(vdir)
    os.replace(out, os.path.join(vdir, "ledger.sqlite"))
    verify_s, check = ats("verify-db", "--quiet", vdir)
    assert check.returncode == 0, check.stderr
    print(f"[e] litestream restore of {size_of(vdir):,} events ({dir_size_mb(vdir):,.0f} MiB): {restore_s:.1f} s; "
          f"ats verify-db of it: {verify_s:.1f} s", flush=True)
    shutil.rmtree(vdir)


def size_of_file(path: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT max(size) FROM origins").fetchone()[0] or 0
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--data", help="data dir to reuse (or build into, and keep)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-litestream", action="store_true")
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average {loadavg()}")
    work = tempfile.mkdtemp(prefix="ats-bench-ops-", dir="/tmp")
    data = os.path.abspath(args.data) if args.data else os.path.join(work, "data")
    nodes: list[NodeProcess] = []
    try:
        if os.path.exists(os.path.join(data, "ledger.sqlite")) and size_of(data) > 0:
            print(f"[a] reusing {data}: {size_of(data):,} events, {dir_size_mb(data):,.0f} MiB")
        else:
            build(data, args.events, 10_000, "platformium", False)
        node, startup_s = start(data)
        nodes.append(node)
        print(f"[b] start-up on {size_of(data):,} events: ready in {startup_s:.2f} s")

        stop, sent = threading.Event(), [0]
        events = presign(50_000, 1000, int(time.time() * 1000))
        writer = threading.Thread(target=load, args=(node, events, stop, sent))
        writer.start()
        time.sleep(1)
        dest = os.path.join(work, "backup.sqlite")
        for flags in ([], ["--quick"]):
            before = sent[0]
            backup_s, run = ats("backup", dest, "--force", "--data-dir", data, *flags)
            assert run.returncode == 0, run.stderr
            m = re.search(r"(\d+) bytes, copied in ([\d.]+) s, verified in ([\d.]+) s", run.stdout)
            print(f"[c] ats backup {' '.join(flags) or '(full check)'} under load ({sent[0] - before:,} events "
                  f"written meanwhile): {backup_s:.1f} s (copy {m.group(2)} s, check {m.group(3)} s; "
                  f"{int(m.group(1)) / 2**20:,.0f} MiB)", flush=True)
        stop.set()
        writer.join()

        if not args.no_litestream:
            litestream_restore(data, work, node)
        node.kill()
        for flags in (["--quick"], []):
            restore_s, run = ats("restore", dest, "--data-dir", data, *flags)
            assert run.returncode == 0, run.stderr
            print(f"[d] ats restore {' '.join(flags) or '(full check)'}: {restore_s:.1f} s", flush=True)
            for name in os.listdir(data):
                if ".before-restore-" in name:
                    os.remove(os.path.join(data, name))  # the bench's disk, not a user's data
        node, startup_s = start(data)
        nodes.append(node)
        print(f"[d] start-up on the restored {size_of(data):,} events: {startup_s:.2f} s")
    finally:
        for n in nodes:
            n.kill()
        if args.keep or args.data:
            print(f"kept {work}" + (f" and {data}" if args.data else ""))
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
