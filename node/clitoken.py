"""`ats token grant|revoke`: read tokens issued by an authority (docs/read-access.md).

    ats token grant team ops --days 30 --key authority.key         # prints the token, once
    ats token grant all all --audit --days 7 --key authority.key    # an auditor: the log and proofs
    ats token revoke atsr_… --key authority.key

The token is made here from 32 random bytes and never sent to the node: the `read.grant` record
holds its SHA-256. Readers send it as `Authorization: Bearer <token>`; the CLI sends `$ATS_TOKEN`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from typing import Any

from ledger.readgrants import GRANT_SCOPES, TOKEN_PREFIX, token_hash
from node.cliexit import EXIT_OK, EXIT_USAGE, fail
from node.clicmds import UsageError
from node.clicmds import _run as _run_command
from node.cliident import human_time
from node.sdk import AgentClient

DAY_MS = 86_400_000
_HASH_RE = re.compile(r"[0-9a-f]{64}")


def new_token() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def run(args: argparse.Namespace) -> int:
    from node.keys import KeyFileError, read_key

    try:
        seed = read_key(args.key)
    except KeyFileError as e:
        return fail(str(e), EXIT_USAGE)
    return _run_command(lambda a: _run(a, seed), args)  # exit 2 usage, 1 refused, 3 unreachable


async def _run(args: argparse.Namespace, seed: bytes) -> int:
    from node.clock import SystemClock
    from node.cliident import resolve

    async with AgentClient(args.url, seed) as client:
        if args.action == "grant":
            if args.scope is None or args.id is None:
                raise UsageError("token grant needs a scope and an id, e.g. `team ops` or `all all`")
            scope_id = args.id
            if args.scope in ("agent", "user"):
                scope_id = await resolve(client.http, args.id)
            token = new_token()
            expires = SystemClock().now_ms() + int(args.days * DAY_MS)
            body: dict[str, Any] = {"token": token_hash(token), "scope": args.scope, "id": scope_id,
                                    "role": "audit" if args.audit else "read", "expires": expires}
            if args.label:
                body["label"] = args.label
            receipt = await client.submit("read.grant", body)
            if args.json:
                print(json.dumps({"token": token, "expires": expires, "receipt": receipt}, indent=2))
            else:
                print(token)
                print(f"ats: {'audit' if args.audit else 'read'} token for {args.scope} {scope_id} until"
                      f" {human_time(expires)}; shown once (the node keeps only its hash)", file=sys.stderr)
            return EXIT_OK
        target = args.scope  # `ats token revoke TOKEN`: the first positional
        if target is None:
            raise UsageError("token revoke needs the token (or its SHA-256 in hex)")
        digest = bytes.fromhex(target) if _HASH_RE.fullmatch(target) else token_hash(target)
        receipt = await client.submit("read.revoke", {"token": digest, "reason": args.label or "revoked"})
        print(json.dumps(receipt, indent=2) if args.json else receipt.get("id"))
        return EXIT_OK


def add_arguments(s: argparse.ArgumentParser, default_url: str) -> None:
    """The arguments of `ats token grant|revoke` on the `ats token` parser (node/cli.py; its `action`
    and `--key` are shared with minting a gateway token)."""
    s.add_argument("scope", nargs="?", help=f"grant: one of {', '.join(GRANT_SCOPES)}; revoke: the token")
    s.add_argument("id", nargs="?", help="grant: the scope's id (a name, hex key or key file for agent/user; all for all)")
    s.add_argument("--audit", action="store_true", help="an auditor's token: the log, events and proofs")
    s.add_argument("--days", type=float, default=30, help="lifetime in days (default 30)")
    s.add_argument("--label", help="who it is for (grant) or why (revoke)")
    s.add_argument("--json", action="store_true", help="print raw JSON")
    s.add_argument("--url", default=default_url, help="node URL")
