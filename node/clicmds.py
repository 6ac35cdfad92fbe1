"""The SDK-backed `ats` commands: submit, checkpoint, audit (argparse lives in node/cli.py).

Exit codes (node/cli.py): 0 ok; 1 the node refused, or a verification failed;
2 usage (bad key file, body or verifier key); 3 the node could not be reached.
Every verification runs locally with `ledger/` code through `node.sdk.Auditor`;
the node's word is only ever input to a check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from ledger.checkpoint import Checkpoint, parse_verifier_key
from ledger import events
from ledger.errors import LedgerError
from node.cliexit import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail
from node.tls import TlsError
from node.sdk import AgentClient, AtsError, AtsUnreachable, Auditor, AuditFailed

NOTE_FILE_BYTES_MAX = 65_536  # ledger.checkpoint.NOTE_BYTES_MAX: a saved note is bounded before reading (P6)


class UsageError(Exception):
    """Bad input on the command line: exit 2."""


def body_from_json(kind: str, text: str) -> dict[str, Any]:
    """The event body from --body JSON; byte fields of the kind (agent, subject, run, …) are hex."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError(f"--body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise UsageError("--body must be a JSON object")
    try:
        return events.body_from_json(kind, doc)
    except LedgerError as e:
        raise UsageError(f"--body: {e.message}") from None


def _check_vkey(vkey: str | None) -> None:
    if vkey is not None:
        try:
            parse_verifier_key(vkey)
        except LedgerError as e:
            raise UsageError(f"--vkey: {e.message}") from None


def tls_env() -> dict[str, Any]:
    """How the client commands verify an https node: ATS_TLS_CA (CA bundle) or ATS_TLS_PINS (fingerprints)."""
    pins = tuple(p.strip() for p in os.environ.get("ATS_TLS_PINS", "").split(",") if p.strip())
    return {"tls_ca": os.environ.get("ATS_TLS_CA", ""), "tls_pins": pins}


def _run(coro_fn: Any, args: argparse.Namespace) -> int:
    """Run one command coroutine and map the SDK's exceptions to exit codes."""
    try:
        return asyncio.run(coro_fn(args))
    except (UsageError, TlsError) as e:
        return fail(str(e), EXIT_USAGE)
    except AtsUnreachable as e:
        return fail(f"cannot reach the node: {e.message}", EXIT_UNREACHABLE)
    except AtsError as e:
        return fail(f"{e.code}: {e.message}{_retry_note(e)}", EXIT_FAILED)


def _retry_note(e: AtsError) -> str:
    """Why and when to ask again, from a refusal's Retry-After."""
    if e.retry_after_s is None:
        return ""
    from node.cliident import human_wait

    return f" (Retry-After: {e.retry_after_s:g} s; ask again in {human_wait(int(e.retry_after_s * 1000))})"


def _warn_tofu(auditor: Auditor) -> None:
    if auditor.trust_on_first_use:
        print(
            f"ats: no --vkey given: trusting the key the node reports (trust on first use): {auditor.vkey}",
            file=sys.stderr,
        )


# -- submit ---------------------------------------------------------------------


def submit(args: argparse.Namespace) -> int:
    """`ats submit KIND --key FILE --body JSON`: sign, send, print the receipt."""
    from node.keys import KeyFileError, key_from_text, read_key

    try:
        if args.key:
            seed = read_key(args.key)
        elif os.environ.get("ATS_KEY"):
            seed = key_from_text(os.environ["ATS_KEY"], "ATS_KEY")
        elif os.environ.get("ATS_KEY_FILE"):
            seed = read_key(os.environ["ATS_KEY_FILE"])
        else:
            return fail("no key: pass --key FILE, or set ATS_KEY (the key) or ATS_KEY_FILE (its file)", EXIT_USAGE)
    except KeyFileError as e:
        return fail(str(e), EXIT_USAGE)
    return _run(lambda a: _submit(a, seed), args)


async def _submit(args: argparse.Namespace, seed: bytes) -> int:
    body = body_from_json(args.kind, args.body)
    async with AgentClient(args.url, seed, **tls_env()) as agent:
        receipt = await agent.submit(args.kind, body, args.ts)
    print(json.dumps(receipt, indent=2) if args.json else receipt.get("id"))
    return EXIT_OK


# -- checkpoint -----------------------------------------------------------------


def _verified_line(cp: Checkpoint) -> str:
    return f"verified: origin {cp.origin} size {cp.size} root {cp.root.hex()}"


def checkpoint(args: argparse.Namespace) -> int:
    """`ats checkpoint`: fetch the latest checkpoint, verify its signature, print it."""
    return _run(_checkpoint, args)


async def _checkpoint(args: argparse.Namespace) -> int:
    _check_vkey(args.vkey)
    async with Auditor(args.url, args.vkey, **tls_env()) as auditor:
        try:
            cp, note = await auditor.checkpoint(args.origin)
        except AuditFailed as e:
            _warn_tofu(auditor)
            print(f"FAIL checkpoint: {e.reason}")
            return EXIT_FAILED
        _warn_tofu(auditor)
    sys.stdout.write(note)
    print(_verified_line(cp))
    return EXIT_OK


# -- audit ----------------------------------------------------------------------


def audit(args: argparse.Namespace) -> int:
    """`ats audit [--id ID]... [--since FILE] [--save FILE]`: one line per check; exit 1 on any FAIL."""
    return _run(_audit, args)


def _read_note(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(NOTE_FILE_BYTES_MAX + 1)
    except OSError as e:
        raise UsageError(f"cannot read checkpoint file {path}: {e.strerror}") from None
    if len(raw) > NOTE_FILE_BYTES_MAX:
        raise AuditFailed(f"{path} is larger than a checkpoint note can be ({NOTE_FILE_BYTES_MAX} bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AuditFailed(f"{path} is not UTF-8 text") from None


def _save_note(path: str, note: str) -> None:
    """Write the verified note atomically (temp file, fsync, rename)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(note)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def _audit(args: argparse.Namespace) -> int:
    _check_vkey(args.vkey)
    failures = 0

    def failed(what: str, reason: str) -> None:
        nonlocal failures
        failures += 1
        print(f"FAIL {what}: {reason}", flush=True)

    async with Auditor(args.url, args.vkey, **tls_env()) as auditor:
        try:
            cp, note = await auditor.checkpoint(args.origin)
        except AuditFailed as e:
            _warn_tofu(auditor)
            failed("checkpoint", e.reason)
            return EXIT_FAILED
        _warn_tofu(auditor)
        print(f"ok   checkpoint origin {cp.origin} size {cp.size} root {cp.root.hex()}", flush=True)
        for event_id in args.ids:
            try:
                proved = await auditor.prove_inclusion(event_id, cp)
            except AuditFailed as e:
                failed(f"inclusion {event_id}", e.reason)
                continue
            print(f"ok   inclusion {event_id} index {proved['index']} size {proved['size']}", flush=True)
        if args.since:
            try:
                old = await auditor.verify_note(_read_note(args.since), args.origin)
            except AuditFailed as e:
                failed(f"since {args.since}", e.reason)
            else:
                try:
                    await auditor.prove_consistency(old, cp)
                except AuditFailed as e:
                    failed(f"consistency {old.size} -> {cp.size}", e.reason)
                else:
                    note_0 = " (nothing to prove from the empty tree)" if old.size == 0 else ""
                    print(f"ok   consistency {old.size} -> {cp.size}{note_0}", flush=True)
    if failures:
        return EXIT_FAILED
    if args.save:
        # Only a checkpoint whose every check passed becomes the next --since.
        _save_note(args.save, note)
        print(f"saved checkpoint size {cp.size} to {args.save}", file=sys.stderr)
    return EXIT_OK


# -- balance --------------------------------------------------------------------


def balance(args: argparse.Namespace) -> int:
    """`ats balance AGENT`: the agent's budgets as the node decides them, as JSON."""
    return _run(_balance, args)


async def _balance(args: argparse.Namespace) -> int:
    from node.cliident import resolve

    async with AgentClient(args.url, bytes(32), **tls_env()) as client:
        client.http.read_token = os.environ.get("ATS_TOKEN") or None
        doc = await client.balance(await resolve(client.http, args.agent))
    print(json.dumps(doc, indent=2) if args.json else balance_text(doc))
    return EXIT_OK


def balance_text(doc: dict[str, Any]) -> str:
    """A balance for a terminal: names, human amounts and times (raw values: --json)."""
    from ledger.pricing import format_t
    from node.cliident import human_time

    def who(scope: dict[str, Any]) -> str:
        name = scope.get("name")
        return f"{name} ({scope['id'][:12]}…)" if name else scope["id"]

    def amount(metric: str, value: int | None) -> str:
        return "unlimited" if value is None else (f"{format_t(value)} T" if metric == "act.cost" else f"{value:,}")

    lines = [f"agent {doc.get('name') or doc['agent']}  ({doc['agent']})  at {human_time(doc['now'])}"]
    lines += [f"  {s['scope']:8s} {who(s)}" + (f"  plan {s['plan']}" if s.get("plan") else "") for s in doc["scopes"]]
    if doc.get("suspended"):
        s = doc["suspension"]
        lines.append(f"SUSPENDED since {human_time(s['since'])} until {human_time(s['until']) if s['until'] else 'lifted'}: {s['reason']}")
    lines += ["", f"{'scope':9s} {'metric':15s} {'window':18s} {'used':>14s} {'limit':>14s} {'status':9s} window ends"]
    for b in doc["budgets"]:
        if b["allocated"] is None and not b["consumed"]:
            continue
        lines.append(f"{b['scope']:9s} {b['metric']:15s} {b['window']:18s} {amount(b['metric'], b['consumed']):>14s}"
                     f" {amount(b['metric'], b['allocated']):>14s} {b['status']:9s} {human_time(b['window_end'])}")
    for r in doc.get("runs", []):
        lines.append(f"run {r['run']}: reserved {format_t(r['reserved'])} T, spent {format_t(r['spent'])} T, expires {human_time(r['expires'])}")
    for a in doc.get("alerts", []):
        lines.append(f"alert {a.get('type')} {a.get('scope')} {a.get('metric')} at {human_time(a.get('ts_ms'))}")
    return "\n".join(lines)


# -- peers ----------------------------------------------------------------------


def peers(args: argparse.Namespace) -> int:
    """`ats peers [--watch]`: the peer table, and per origin how far replication has come."""
    return _run(_peers, args)


async def _peers(args: argparse.Namespace) -> int:
    from node.clock import SystemClock
    from node.progress import Progress

    clock = SystemClock()

    async with AgentClient(args.url, bytes(32), **tls_env()) as client:
        doc = await client.http.json("GET", "/v1/peers")
        for p in doc["peers"]:
            node = (p["node"] or "?")[:16]
            print(f"{p['url']:32s} {node:16s} {p['state']:9s} behind {p['behind_events']:>8} "
                  f"peer behind {p['peer_behind_events']:>8} ({p['peer_behind_bytes']} B)"
                  + (f"  {p['last_error']}" if p["last_error"] else ""))
        if not args.watch:
            for o in doc["origins"]:
                print(f"origin {o['origin'][:16]}  {o['held']}/{o['seen']}")
            return EXIT_OK
        bars = {o["origin"]: Progress(o["seen"], f"origin {o['origin'][:12]}", enabled=True) for o in doc["origins"]}
        deadline = clock.monotonic_s() + args.seconds
        while True:
            for o in doc["origins"]:
                bar = bars.setdefault(o["origin"], Progress(o["seen"], f"origin {o['origin'][:12]}", enabled=True))
                bar.total = max(bar.total, o["seen"])
                bar.advance(o["held"] - bar.done)
            # Caught up: every peer asked at least once (a node just started has not yet seen
            # what its peers hold), and every origin they showed held here.
            asked = all(p["last_contact_ms"] is not None or p["failures"] > 0 for p in doc["peers"])
            if (asked and all(o["held"] >= o["seen"] for o in doc["origins"])) or clock.monotonic_s() > deadline:
                break
            await asyncio.sleep(0.5)
            doc = await client.http.json("GET", "/v1/peers")
        for bar in bars.values():
            bar.finish()
        behind = [o for o in doc["origins"] if o["held"] < o["seen"]]
        return EXIT_OK if not behind else EXIT_FAILED


# -- report ---------------------------------------------------------------------


def report(args: argparse.Namespace) -> int:
    """`ats report SCOPE ID [--period P] [--at MS] [--csv|--json]`: a usage report (docs/reports.md)."""
    return _run(_report, args)


async def _report(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from node.cliident import resolve

    params = {"period": args.period, **({"at": str(args.at)} if args.at is not None else {})}
    async with AgentClient(args.url, bytes(32), **tls_env()) as client:
        client.http.read_token = os.environ.get("ATS_TOKEN") or None
        scope_id = await resolve(client.http, args.id) if args.scope in ("agent", "user") else args.id
        path = f"/v1/reports/{quote(args.scope, safe='')}/{quote(scope_id, safe='')}"
        if args.csv:
            sys.stdout.write(await client.http.text(path, params={**params, "format": "csv"}))
            return EXIT_OK
        doc = await client.http.json("GET", path, params=params)
    print(json.dumps(doc, indent=2) if args.json else report_table(doc))
    return EXIT_OK


def report_table(doc: dict[str, Any]) -> str:
    """A report as plain text tables for a terminal."""
    from ledger.pricing import format_t

    p = doc["period"]
    trend = doc["trend"]["cost_pct"]
    from node.cliident import human_time

    lines = [f"{doc['scope']} {doc['id']}: {p['kind']} from {human_time(p['start_ms'])} to {human_time(p['end_ms'])}",
             f"cost {doc['cost_T']} T" + ("" if trend is None else f" ({trend:+.1f} % vs previous {format_t(doc['previous']['cost_mT'])} T)"),
             "", f"{'kind':6s} {'metric':16s} {'total':>14s}"]
    for kind, fields in doc["totals"].items():
        for name, value in fields.items():
            lines.append(f"{kind:6s} {name:16s} {value:>14}")
    for title, section, key in (("by agent", "by_agent", "agent"), ("by member", "by_member", "user"),
                                ("by operation", "by_operation", "op")):
        if not doc[section]:
            continue
        lines += ["", f"{title:66s} {'events':>8s} {'cost T':>14s}"]
        for row in doc[section]:
            lines.append(f"{str(row[key] if row[key] is not None else '(unregistered)'):66s} {row['events']:>8} {format_t(row['cost_mT']):>14s}")
    if doc["budgets"]:
        lines += ["", f"{'budget':40s} {'consumed':>12s} {'limit':>12s} status"]
        for b in doc["budgets"]:
            if b["allocated"] is not None:
                lines.append(f"{b['metric'] + ' per ' + b['window']:40s} {b['consumed']:>12} {b['allocated']:>12} {b['status']}")
    if doc["anomalies"]:
        lines += ["", "anomalies"]
        lines += [f"  {a['ts']} {a['agent'][:16]} {a['metric']}: {a['value']} vs {a['expected']} expected (score {a['score']})"
                  for a in doc["anomalies"]]
    if doc["recommendations"]:
        lines += ["", "recommendations"]
        lines += [f"  [{r['severity']}] {r['text']}" for r in doc["recommendations"]]
    return "\n".join(lines)
