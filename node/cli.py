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

from node.cliexit import DEFAULT_URL, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail  # noqa: F401

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return register


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


def parse_duration_s(text: str) -> int:
    """'30d', '12h', '15m', '90s' or plain seconds -> seconds; raises ValueError."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
    text = text.strip().lower()
    scale = units.get(text[-1:], None)
    value = int(text[:-1] if scale else text) * (scale or 1)
    if value <= 0:
        raise ValueError("a duration must be positive")
    return value


@command("token")
def cmd_token(args: argparse.Namespace) -> int:
    """`ats token --key agent.key`: mint a gateway token (offline); `ats token grant|revoke`: an
    authority's read tokens (node/clitoken.py)."""
    from ledger.credentials import mint
    from node.clock import SystemClock
    from node.keys import KeyFileError, read_key

    if args.action in ("grant", "revoke"):
        from node import clitoken

        return clitoken.run(args)
    if args.scope is not None:
        return fail("ats token: mint takes no scope (did you mean `ats token grant SCOPE ID`?)", EXIT_USAGE)
    try:
        seed = read_key(args.key)
        ttl_s = parse_duration_s(args.ttl)
    except KeyFileError as e:
        return fail(str(e), EXIT_USAGE)
    except ValueError:
        return fail(f"--ttl {args.ttl!r} is not a duration like 30d, 12h, 15m or 3600", EXIT_USAGE)
    print(mint(seed, now_s=SystemClock().now_ms() // 1000, ttl_s=ttl_s, jti=args.jti))
    return EXIT_OK


@command("exec")
def cmd_exec(args: argparse.Namespace) -> int:
    import json

    from node.keys import KeyFileError, read_key
    from node.sdk.errors import AtsError, AtsUnreachable
    from node.sdk.task import TaskMeter

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        return fail("exec needs a command after --", EXIT_USAGE)
    try:
        seed = read_key(args.key)
    except KeyFileError as e:
        return fail(str(e), EXIT_USAGE)
    meter = TaskMeter(args.url, seed, argv, estimate=args.estimate, interval_ms=args.interval_ms,
                      timeout_ms=None if args.timeout_s is None else int(args.timeout_s * 1000), cgroup=not args.no_cgroup)
    try:
        asyncio.run(meter.reserve())
    except AtsUnreachable as e:
        return fail(str(e), EXIT_UNREACHABLE)
    except AtsError as e:
        return fail(f"the node refused the task, not started: {e.code}: {e.message}")
    try:
        usage = meter.run()
    except OSError as e:
        return fail(f"cannot run {argv[0]}: {e.strerror}", 127)
    summary = {"task": meter.task, "reserved": meter.reservation.get("reserved"), **vars(usage)}
    try:
        settled = asyncio.run(meter.settle())
        summary.update(cost=settled["cost"], events=settled["events"])
    except (AtsError, AtsUnreachable) as e:
        summary["settle_error"] = str(e)  # the reservation stays: charged when it expires
    if usage.killed_for_cost:
        print(f"ats exec: killed: the task's cost passed max_cost_per_run {meter.reservation.get('max_cost_per_run')}",
              file=sys.stderr)
    print("ats exec: " + json.dumps(summary, sort_keys=True), file=sys.stderr)
    return usage.exit_code


@command("node")
def cmd_node(args: argparse.Namespace) -> int:
    from node import diagnostics
    from node.app import serve
    from node.config import ConfigError, load
    from node.keys import KeyFileError
    from node.tls import TlsError

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
    diagnostics.setup(config.log_level, config.log_repeats_max, config.log_period_ms)
    loop_factory = None
    if config.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            return fail("event_loop is 'uvloop' but uvloop is not installed: pip install 'ats-ledger[uvloop]'", EXIT_USAGE)
        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config))
    except (KeyFileError, TlsError) as e:
        return fail(str(e), EXIT_USAGE)
    return EXIT_OK


@command("backup")
def cmd_backup(args: argparse.Namespace) -> int:
    from node.backup import backup

    return backup(args)


@command("restore")
def cmd_restore(args: argparse.Namespace) -> int:
    from node.backup import restore
    from node.config import ConfigError, load

    try:
        config = load(args.config, os.environ, {"data_dir": args.data_dir})
    except ConfigError as e:
        return fail(str(e), EXIT_USAGE)
    from node.tls import TlsError, client_ssl

    try:
        ssl = client_ssl(config.tls_ca, config.tls_pins)
    except TlsError as e:
        return fail(str(e), EXIT_USAGE)
    return restore(args, config, ssl)


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

    s = sub.add_parser("token", help="mint a bearer token for a node's LLM gateway from an agent key (offline; docs/gateway.md),"
                                     " or grant or revoke a read token (docs/read-access.md)")
    s.add_argument("action", nargs="?", choices=["mint", "grant", "revoke"], default="mint",
                   help="mint (default): a gateway token from --key; grant, revoke: an authority's read tokens")
    s.add_argument("--key", required=True, help="mint: the agent's key file (from `ats keygen`); grant, revoke: an authority's key file")
    s.add_argument("--ttl", default="30d", help="mint: lifetime: 30d, 12h, 15m or seconds (default 30d; nodes refuse more than llm_token_lifetime_s_max)")
    s.add_argument("--jti", help="mint: a token id to put in the jti claim")
    from node import clitoken

    clitoken.add_arguments(s, os.environ.get("ATS_URL", DEFAULT_URL))

    s = sub.add_parser("exec", help="run a command as a metered task of an agent: reserve, run, measure, record (docs/gateway.md)")
    s.add_argument("--key", required=True, help="agent key file (from `ats keygen`)")
    s.add_argument("--url", default=os.environ.get("ATS_URL", DEFAULT_URL), help="node URL")
    s.add_argument("--estimate", type=int, help="milli-T to reserve before the command starts (default: the price of agent.run)")
    s.add_argument("--timeout-s", type=float, help="how long the reservation lasts (default 3600); a task not settled by then is charged at it")
    s.add_argument("--interval-ms", type=int, default=100, help="how often the task's cost is checked against max_cost_per_run")
    s.add_argument("--no-cgroup", action="store_true", help="measure with rusage and /proc only, even where a cgroup v2 can be made")
    s.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...", help="the command and its arguments")

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

    s = sub.add_parser("backup", help="copy a node's ledger while it runs (SQLite online backup), verified")
    s.add_argument("dest", help="backup file to write (or a folder: DEST/ledger.sqlite)")
    s.add_argument("--data-dir", default="ats-data", help="the node's data folder (default: ./ats-data)")
    s.add_argument("--force", action="store_true", help="replace an existing backup file")
    s.add_argument("--quick", action="store_true", help="check the copy's leaves and roots, not every signature "
                   "(much faster on large ledgers)")

    s = sub.add_parser("restore", help="put a backup back into a stopped node's data folder, refusing to fork its log")
    s.add_argument("src", help="backup file (from `ats backup`)")
    s.add_argument("--data-dir", help="the node's data folder (default: data_dir setting, ./ats-data)")
    s.add_argument("--config", help="the node's TOML config file (for its peers and key settings)")
    s.add_argument("--peer", action="append", default=[], help="a peer to ask for this node's log (repeatable; "
                   "added to the peers setting)")
    s.add_argument("--new-key", action="store_true", help="run the restored ledger under a new node key (the old "
                   "key is kept aside)")
    s.add_argument("--allow-unreachable", action="store_true", help="do not refuse when a peer cannot be asked")
    s.add_argument("--quick", action="store_true", help="check the backup's leaves and roots, not every signature")

    s = sub.add_parser("submit", help="sign an event with a key file and send it to a node")
    s.add_argument("kind", help="act, dat, cpt or trt")
    s.add_argument("--key", help="signing key file: from `ats keygen`, a PKCS#8 PEM or an OpenSSH ed25519 key "
                   "(default: the key in $ATS_KEY, else the file $ATS_KEY_FILE)")
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
