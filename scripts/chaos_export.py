"""The exporters' chaos run, longer than the test suite's (tests/export/test_export_chaos.py).

    python scripts/chaos_export.py [--rounds 6] [--pause-s 2]

Starts its own PostgreSQL (Debian's postgresql, initdb on a temp folder) and nats-server with
JetStream, then, while a submitter keeps sending events, each round SIGKILLs the node, restarts
PostgreSQL with `pg_ctl -m immediate`, and SIGKILLs nats-server. Prints the comparison of the
sinks with the node's own log: events, rows, messages, distinct ids, lost, cost sums.
Exit status 0 only if both sinks equal the log exactly.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.export.chaos import run_chaos  # noqa: E402
from tests.export.servers import NatsServer, PostgresServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--pause-s", type=float, default=2.0)
    args = parser.parse_args()
    pg, nats = PostgresServer().start(), NatsServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="ats-chaos-") as root:
            r = run_chaos(root, args.rounds, args.pause_s, pg, nats)
    finally:
        pg.remove()
        nats.remove()
    for line in r.faults:
        print(line)
    print(f"rounds: {r.rounds} (node SIGKILL, PostgreSQL -m immediate, nats-server SIGKILL each), {r.seconds:.1f} s")
    print(f"node log: {r.log_events} events (submit attempts that failed while the node was down: {r.submit_errors})")
    print(f"PostgreSQL: {r.pg_rows} rows, {r.pg_distinct} distinct ids, {r.lost_pg} lost, cost {r.cost_pg} mT")
    print(f"JetStream: {r.nats_messages} messages, {r.nats_distinct} distinct ids, {r.lost_nats} lost,"
          f" cost {r.cost_nats} mT")
    print(f"node cost: {r.cost_log} mT")
    print("EXACT" if r.exact else "MISMATCH")
    return 0 if r.exact else 1


if __name__ == "__main__":
    sys.exit(main())
