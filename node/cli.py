"""The `ats` command line: argparse → Config or SDK call → exit code.

Exit codes: 0 success, 1 verification failed or the node refused, 2 usage or
configuration error (argparse's convention), 3 cannot reach the node.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Callable

from node import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:8470"

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return register


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"ats: {message}", file=sys.stderr)
    return code


@command("keygen")
def cmd_keygen(args: argparse.Namespace) -> int:
    from node.keys import new_seed, write_key
    from ledger.signing import public_key_from_seed

    if os.path.exists(args.path) and not args.force:
        return fail(f"{args.path} exists; pass --force to overwrite it", EXIT_USAGE)
    seed = new_seed()
    write_key(args.path, seed)
    print(public_key_from_seed(seed).hex())
    return EXIT_OK


@command("node")
def cmd_node(args: argparse.Namespace) -> int:
    from node import diagnostics
    from node.app import serve
    from node.config import ConfigError, load
    from node.keys import KeyFileError

    flags = {
        "data_dir": args.data_dir,
        "listen_host": args.host,
        "listen_port": args.port,
        "log_level": args.log_level,
    }
    try:
        config = load(args.config, os.environ, flags)
    except ConfigError as e:
        return fail(str(e), EXIT_USAGE)
    diagnostics.setup(config.log_level)
    try:
        asyncio.run(serve(config))
    except KeyFileError as e:
        return fail(str(e), EXIT_USAGE)
    return EXIT_OK


@command("verify-db")
def cmd_verify_db(args: argparse.Namespace) -> int:
    from node.verifydb import verify_data_dir

    return verify_data_dir(args.data_dir, quiet=args.quiet, as_json=args.json, config_file=args.config)


@command("budget")
def cmd_budget(args: argparse.Namespace) -> int:
    from node import clibudget

    problem = clibudget.validate(args)
    if problem:
        return fail(problem, EXIT_USAGE)
    return clibudget.run(args)


@command("token")
def cmd_token(args: argparse.Namespace) -> int:
    from node import clitoken

    return clitoken.run(args)


def _sdk_command(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from node import clicmds

        return getattr(clicmds, name)(args)

    return run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ats", description="ATS ledger: meter AI agents on a verifiable log.")
    p.add_argument("--version", action="version", version=f"ats-ledger {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("keygen", help="create an Ed25519 key file (mode 0600) and print its public key")
    s.add_argument("path", help="key file to create")
    s.add_argument("--force", action="store_true", help="overwrite an existing file")

    s = sub.add_parser("node", help="start the node daemon")
    s.add_argument("--data-dir", help="ledger folder (default: ./ats-data)")
    s.add_argument("--host", help="listen address (default: 127.0.0.1)")
    s.add_argument("--port", type=int, help="listen port (default: 8470; 0 picks a free one)")
    s.add_argument("--config", help="TOML config file")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    s = sub.add_parser("verify-db", help="recheck every stored value of a data folder against the signed envelopes")
    s.add_argument("data_dir", nargs="?", default="ats-data")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the report as JSON (every differing row)")
    s.add_argument("--config", help="the node's TOML config file (its budget settings replay the counters)")

    s = sub.add_parser("submit", help="sign an event with a key file and send it to a node")
    s.add_argument("kind", help="act, dat, cpt or trt")
    s.add_argument("--key", required=True, help="agent key file (from `ats keygen`)")
    s.add_argument("--url", default=os.environ.get("ATS_URL", DEFAULT_URL), help="node URL")
    s.add_argument("--body", required=True, help='event body as JSON, e.g. \'{"op": "llm.call", "cost": 3200}\'; bytes as hex')
    s.add_argument("--ts", type=int, help="timestamp in ms (default: now)")
    s.add_argument("--json", action="store_true", help="print the whole receipt as JSON (default: the event id)")

    s = sub.add_parser("balance", help="print an agent's budgets, scopes, suspension, runs and alerts")
    s.add_argument("agent", help="the agent: its name, public key (64 hex digits) or key file")
    s.add_argument("--json", action="store_true", help="print the raw JSON (default: a table with names and times)")
    s.add_argument("--url", default=os.environ.get("ATS_URL", DEFAULT_URL), help="node URL")

    s = sub.add_parser("report", help="a usage report of an agent, user, team, platform or the node (docs/reports.md)")
    s.add_argument("scope", help="agent, user, team, platform or node")
    s.add_argument("id", help="the scope's id: an agent's or user's name, key (hex) or key file, a team or platform name, or all (node)")
    s.add_argument("--period", choices=["day", "week", "month"], default="day", help="the UTC period holding --at")
    s.add_argument("--at", type=int, help="a time in ms in the period (default: now)")
    out = s.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="print the CSV layout (for spreadsheets)")
    out.add_argument("--json", action="store_true", help="print the raw JSON")
    s.add_argument("--url", default=os.environ.get("ATS_URL", DEFAULT_URL), help="node URL")

    s = sub.add_parser("peers", help="a node's peers and replication progress; --watch draws progress bars while it catches up")
    s.add_argument("--url", default=os.environ.get("ATS_URL", DEFAULT_URL), help="node URL")
    s.add_argument("--watch", action="store_true", help="redraw until every origin is caught up (or --seconds pass)")
    s.add_argument("--seconds", type=float, default=300, help="longest --watch runs")

    s = sub.add_parser("checkpoint", help="fetch and verify a node's latest checkpoint")
    s.add_argument("--url", default=os.environ.get("ATS_URL", DEFAULT_URL), help="node URL")
    s.add_argument("--vkey", help="the node's verifier key (default: trust what /v1/node says)")
    s.add_argument("--origin", help="another origin's log held by this node")

    s = sub.add_parser("audit", help="verify a node's checkpoint, inclusion and consistency proofs offline")
    s.add_argument("--url", default=os.environ.get("ATS_URL", DEFAULT_URL), help="node URL")
    s.add_argument("--vkey", help="the node's verifier key (default: trust what /v1/node says)")
    s.add_argument("--id", action="append", default=[], dest="ids", help="event id to prove included (repeatable)")
    s.add_argument("--since", help="a checkpoint file saved earlier: prove the log grew from it")
    s.add_argument("--save", help="save the verified checkpoint to this file")
    s.add_argument("--origin", help="another origin's log held by this node")

    from node import clibudget

    clibudget.add_parser(sub, os.environ.get("ATS_URL", DEFAULT_URL))
    from node import clitoken

    clitoken.add_parser(sub, os.environ.get("ATS_URL", DEFAULT_URL))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    fn = COMMANDS.get(args.command) or _sdk_command(args.command.replace("-", "_"))
    try:
        return fn(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
