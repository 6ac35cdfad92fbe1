"""What a refused connection costs the node: CPU microseconds per connection answered 503 too_many_connections.

    python scripts/bench_refusals.py [--connections 20000]

A slowloris client reopens every connection the node closes; past
`connections_per_client_max` each new one is refused at once. This starts a
real node with connections_per_client_max = 1, holds one connection open, then
opens and closes N more from the same address (each one is refused) as fast
as it can, and prints the node's CPU time (user + system, from /proc) per
refused connection and the refusals per second. Only 127.0.0.1 is contacted;
the node is killed on exit.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.integration.nodeproc import NodeProcess  # noqa: E402


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=20000)
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
                refused += b"too_many_connections" in data
                s.close()
            wall, cpu = time.perf_counter() - t0, cpu_s(node.proc.pid) - cpu0
            held.close()
        finally:
            node.kill()
    print(f"{args.connections} connections, {refused} refused with 503 too_many_connections in {wall:.2f} s "
          f"({args.connections / wall:,.0f}/s); node CPU {cpu * 1e6 / args.connections:.1f} µs per connection")


if __name__ == "__main__":
    main()
