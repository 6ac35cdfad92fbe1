"""What a refused connection costs the node: CPU microseconds per connection refused (429 too_many_client_connections).

    python scripts/bench_refusals.py [--connections 20000] [--reconnecting 300 --seconds 5]

A slowloris client reopens every connection the node closes; past
`connections_per_client_max` each new one is refused at once. This starts a
real node with connections_per_client_max = 1, holds one connection open, then
opens and closes N more from the same address (each one is refused) as fast
as it can, and prints the node's CPU time (user + system, from /proc) per
refused connection and the refusals per second. Then `--reconnecting` clients
(slowloris-like) each open a connection, send part of a request head and wait
until the node closes it, then reconnect at once, for `--seconds`: it prints the
refusals per second they cause and the node's CPU share. Only 127.0.0.1 is
contacted; the node is killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.bench_ingest import proc_cpu_s as cpu_s  # noqa: E402
from tests.integration.nodeproc import NodeProcess  # noqa: E402


async def reconnecting(host: str, port: int, clients: int, seconds: float) -> int:
    """Clients that reconnect whenever the node closes them; returns the connections they made."""
    made = 0
    deadline = time.monotonic() + seconds

    async def one() -> None:
        nonlocal made
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                made += 1
                writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
                while time.monotonic() < deadline:
                    try:
                        if not await asyncio.wait_for(reader.read(4096), 0.5):
                            break
                    except asyncio.TimeoutError:
                        writer.write(b"X")
                writer.close()
            except OSError:
                await asyncio.sleep(0.01)

    await asyncio.gather(*(one() for _ in range(clients)))
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--reconnecting", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ats-bench-refusals-") as tmp:
        node = NodeProcess(os.path.join(tmp, "node"), env={"ATS_CONNECTIONS_PER_CLIENT_MAX": "1"}).start()
        try:
            held = socket.create_connection((node.host, node.port))
            time.sleep(0.2)
            refused = 0
            cpu0, t0 = cpu_s(node.proc.pid), time.perf_counter()
            for _ in range(args.connections):
                s = socket.create_connection((node.host, node.port))
                data = s.recv(4096)
                refused += b"too_many_client_connections" in data  # the per-address bound of 1
                s.close()
            wall, cpu = time.perf_counter() - t0, cpu_s(node.proc.pid) - cpu0
            cpu1, t1 = cpu_s(node.proc.pid), time.perf_counter()
            made = asyncio.run(reconnecting(node.host, node.port, args.reconnecting, args.seconds))
            wall1, cpu_r = time.perf_counter() - t1, cpu_s(node.proc.pid) - cpu1
            held.close()
        finally:
            node.kill()
    print(f"{args.connections} connections, {refused} refused with 429 too_many_client_connections in {wall:.2f} s "
          f"({args.connections / wall:,.0f}/s); node CPU {cpu * 1e6 / args.connections:.1f} µs per connection")
    print(f"{args.reconnecting} clients reconnecting whenever closed, {wall1:.1f} s: {made / wall1:,.0f} connections/s, "
          f"node CPU {100 * cpu_r / wall1:.0f} % of a core")


if __name__ == "__main__":
    main()
