"""Who may read what (docs/read-access.md): read endpoints are open on a loopback listen address and
need a credential elsewhere.

Credentials, in `Authorization: Bearer <token>`:

* an agent's own JWT (PROTOCOL.md §6.1, with `"aud": "ats-read"`): a compact JWS signed by the
  agent's Ed25519 key; it reads that agent's own balance, usage and report. `verify_agent_jwt`
  is a minimal verifier kept here so reads do not wait for the gateway's (ledger/credentials.py on
  its branch); the two should become one when the gateway lands.
* a read token issued by an authority (`ats token grant …`, a `read.grant` record holding the
  token's SHA-256, ledger/readgrants.py): reads its scope (an agent, user, team, platform or all);
  an `audit` token reads the log, events and proofs. Revocable (`read.revoke`).

The log (checkpoints, proofs, entries, events) stays open to anyone while `log_public` is true
(the default: peers replicate from it), else it needs an audit token or an `all` read token.
The dashboard keeps its own token (docs/dashboard.md); `/v1/node`, `/healthz`, `/v1/openapi.json`,
the submission and peer endpoints are not reads and are not checked here.
"""

from __future__ import annotations

import re
from typing import Awaitable, Callable

from aiohttp import web

from ledger.errors import BadSignature, Forbidden, LedgerError
from ledger.readgrants import Grant, Grants
from ledger.credentials import verify_token
from node.api.dashboard import dashboard_token_presented, is_loopback
from node.api.errors import render
from node.appkeys import CLOCK_KEY, CONFIG_KEY, QUERIES_KEY
from node.config import Config
from node.queries import Queries

READ_AUDIENCE = "ats-read"
_HEX_RE = re.compile(r"[0-9a-f]{64}")

# route (canonical) -> what it reads
AGENT_ROUTES = {"/v1/agents/{agent}/balance", "/v1/agents/{agent}/usage"}
LOG_ROUTES = {"/v1/log/checkpoint", "/v1/log/checkpoint/anchored", "/v1/log/proof/inclusion",
              "/v1/log/proof/consistency", "/v1/log/entries", "/v1/events/{id}"}
NODE_ROUTES = {"/metrics", "/v1/escrow"}
OTHER_ROUTES = {"/v1/reports/{scope}/{id}", "/v1/budgets", "/v1/names/{name}"}
READ_ROUTES = AGENT_ROUTES | LOG_ROUTES | NODE_ROUTES | OTHER_ROUTES


def verify_agent_jwt(token: str, now_s: int, lifetime_max_s: int, audience: str = READ_AUDIENCE) -> bytes:
    """The agent key of a valid compact JWS (EdDSA, RFC 8037) with sub, aud and exp: the gateway's
    own verifier (ledger/credentials.py) with the read audience. Raises token_expired for an
    expired one and bad_token for every other reason (the read endpoints' codes)."""
    try:
        return verify_token(token, now_s=now_s, lifetime_s_max=lifetime_max_s, audience=audience).agent
    except BadSignature as e:
        raise BadSignature("token_expired" if e.code == "token_expired" else "bad_token", e.message) from None


def is_open(config: Config) -> bool:
    """Reads need no credential: read_auth open, or auto on a loopback listen address."""
    return config.read_auth == "open" or (config.read_auth == "auto" and is_loopback(config.listen_host))


def _credential(request: web.Request, grants: Grants, now_ms: int, lifetime_max_s: int) -> Grant:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise BadSignature("read_token_required", "reading this off loopback needs Authorization: Bearer <token>:"
                           " a read token from an authority (ats token grant), or the agent's own JWT")
    token = header[7:].strip()
    if token.count(".") == 2:
        agent = verify_agent_jwt(token, now_ms // 1000, lifetime_max_s)
        return Grant("agent", agent.hex(), "read", now_ms + 1, "agent JWT")
    return grants.check(token, now_ms)


def check(request: web.Request) -> None:
    """Raise unless this request may read what its route reads."""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
    if _needs_no_credential(request, route):
        return
    queries = request.app[QUERIES_KEY]
    config = request.app[CONFIG_KEY]
    grant = _credential(request, queries.book.grants, request.app[CLOCK_KEY].now_ms(), config.read_jwt_lifetime_max_s)
    if _role_decides(grant, route):
        return
    scope, scope_id = _scope_read(request, route, queries)
    chain = queries.book.chain(bytes.fromhex(scope_id)) if scope == "agent" and _HEX_RE.fullmatch(scope_id) else None
    if not grant.covers(scope, scope_id, chain):
        raise Grants.refuse(f"{grant.scope} {grant.scope_id}", scope, scope_id)


def _needs_no_credential(request: web.Request, route: str) -> bool:
    """True when this route is read by anyone here: not a read route, a public log, an open node,
    or the owner's dashboard token (which reads everything its page shows)."""
    if route not in READ_ROUTES:
        return True
    config = request.app[CONFIG_KEY]
    if route in LOG_ROUTES and config.log_public:
        return True
    return is_open(config) or dashboard_token_presented(request)


def _role_decides(grant: Grant, route: str) -> bool:
    """True when the grant's role and scope alone let it read this route; raises when they forbid it;
    False when the scope the route reads must be checked."""
    if route in LOG_ROUTES:
        if grant.role == "audit" or grant.scope == "all":
            return True
        raise Forbidden("token_scope", "the log, events and proofs need an audit token (or an all-scope read token)")
    if grant.role == "audit":
        raise Forbidden("token_scope", "an audit token reads the log and proofs, not balances or reports")
    if route in NODE_ROUTES:
        if grant.scope == "all":
            return True
        raise Grants.refuse(f"{grant.scope} {grant.scope_id}", "node", "all")
    return route == "/v1/names/{name}"  # any valid credential: a name and its key are no secret to a reader


def _scope_read(request: web.Request, route: str, queries: Queries) -> tuple[str, str]:
    """The (scope, scope id) an agent, budgets or report route reads; agents and users by hex key."""
    if route in AGENT_ROUTES:
        return "agent", queries.identity(request.match_info["agent"], "agent").hex()
    if route == "/v1/budgets":
        scope, scope_id = request.query.get("scope", "all"), request.query.get("id", "all")
    else:  # reports
        scope, scope_id = request.match_info["scope"], request.match_info["id"]
    if scope in ("agent", "user") and scope_id != "all":
        scope_id = queries.identity(scope_id, "id").hex()
    return scope, scope_id


@web.middleware
async def read_auth_middleware(request: web.Request,
                               handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    if request.method in ("GET", "HEAD"):
        try:
            check(request)
        except LedgerError as e:
            return render(e)
    return await handler(request)
