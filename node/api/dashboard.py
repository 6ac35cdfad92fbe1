"""The owner's dashboard: the page at `/`, its assets under `/static/`, and its two listings.

Who may open it (docs/dashboard.md): with `dashboard_auth = "auto"` and a loopback
`listen_host`, anyone who can reach the node, i.e. this machine; otherwise only
holders of `dashboard_token`, given once as `/?token=` (then kept in an HttpOnly,
SameSite=Strict cookie) or as `Authorization: Bearer`. With no token configured
such a node answers 403 `dashboard_token_unset`. The token guards the dashboard's
own routes only; the agent and auditor API (PROTOCOL.md §5) stays as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
from functools import lru_cache
from importlib import resources
from urllib.parse import urlencode

from aiohttp import web

from ledger.errors import BadSignature, Forbidden, Invalid, LedgerError, NotFound
from ledger.readgrants import TOKEN_PREFIX
from node.appkeys import CLOCK_KEY, CONFIG_KEY, DASHBOARD_KEY, EXPORTS_KEY, QUERIES_KEY
from node.config import Config

COOKIE = "ats_dashboard"
TEAM_CHARS_MAX = 256
# The page and its assets; nothing else under node/static/ is served.
ASSETS = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
# Everything the page loads comes from this node: no inline script, no other origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self';"
                               " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_rule(config: Config) -> str:
    """`open` (no token needed), `token` (the configured token is needed) or `unset` (needed, none set)."""
    if config.dashboard_auth == "auto" and is_loopback(config.listen_host):
        return "open"
    return "token" if config.dashboard_token else "unset"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(b"ats-dashboard/v1\n" + secret.encode()).digest()


def cookie_value(token: str) -> str:
    """What the cookie holds: a hash of the token, so the cookie jar never stores the token itself."""
    return _digest(token).hex()


def authorize(request: web.Request) -> None:
    """Raise unless this request may see the dashboard (compared in constant time)."""
    config = request.app[CONFIG_KEY]
    rule = token_rule(config)
    if rule == "open":
        return
    if _read_grant(request):
        return
    if rule == "unset":
        why = ("dashboard_auth is token" if config.dashboard_auth == "token"
               else f"this node listens on {config.listen_host}, which is not a loopback address,")
        raise Forbidden(
            "dashboard_token_unset",
            f"{why} and no dashboard token is set: set dashboard_token (ATS_DASHBOARD_TOKEN, at least 16 characters)"
            " and open /?token=<token>, or listen on 127.0.0.1",
        )
    if not dashboard_token_presented(request):
        raise BadSignature(
            "token_required",
            "the dashboard needs this node's dashboard_token: open /?token=<token> once (a cookie keeps it),"
            " or send Authorization: Bearer <token>",
        )


def _read_grant(request: web.Request) -> bool:
    """A read token (docs/read-access.md) in Authorization: Bearer also opens the dashboard's data:
    an `all` token every team's, a team token its own team's (`?team=`). Raises its refusal."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.startswith("Bearer ") else ""
    if not token.startswith(TOKEN_PREFIX) or not request.path.startswith("/v1/dashboard/"):
        return False
    grant = request.app[QUERIES_KEY].book.grants.check(token, request.app[CLOCK_KEY].now_ms())
    if grant.role == "read" and (grant.scope == "all" or (grant.scope == "team" and _team(request) == grant.scope_id)):
        return True
    raise Forbidden("token_scope", f"this token reads {grant.scope} {grant.scope_id}: a dashboard view of one team"
                    " needs ?team=<that team>, of every team an all-scope token")


def dashboard_token_presented(request: web.Request) -> bool:
    """Whether the request carries the configured dashboard token (Bearer, ?token= or the cookie).

    node/readauth.py also takes it as the owner's all-scope read credential, so the page's own
    reads (reports, metrics, the log) work off loopback with the cookie alone."""
    config = request.app[CONFIG_KEY]
    if not config.dashboard_token:
        return False
    expected = _digest(config.dashboard_token)
    header = request.headers.get("Authorization", "")
    candidates = []
    if header.startswith("Bearer "):
        candidates.append(_digest(header[7:].strip()))
    if "token" in request.query:
        candidates.append(_digest(request.query["token"]))
    try:
        candidates.append(bytes.fromhex(request.cookies.get(COOKIE, "")))  # the cookie holds the digest
    except ValueError:
        pass
    # every candidate is compared, so the time taken does not say which one matched
    ok = False
    for candidate in candidates:
        ok |= hmac.compare_digest(candidate, expected)
    return ok


@lru_cache(maxsize=len(ASSETS))
def _asset(name: str) -> tuple[bytes, str]:
    """(bytes, ETag) of a shipped asset, read once."""
    body = resources.files("node").joinpath("static", name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _serve(request: web.Request, name: str) -> web.Response:
    body, etag = _asset(name)
    # no-cache: the browser keeps the asset but asks again each load; an unchanged one costs a 304
    headers = {"Cache-Control": "no-cache", "ETag": etag, **SECURITY_HEADERS}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=ASSETS[name], charset="utf-8", headers=headers)


def _refusal_page(error: LedgerError) -> web.Response:
    """The 401/403 as a small page with a token form, for a browser that asked for HTML."""
    form = "" if error.code != "token_required" else (
        '<form method="get" action="/"><label>Dashboard token <input type="password" name="token"'
        ' autocomplete="current-password" required></label> <button>Open</button></form>'
    )
    text = (
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>ATS dashboard: access</title>'
        f'<body><h1>ATS dashboard</h1><p data-testid="refusal-code"><code>{html.escape(error.code)}</code></p>'
        f"<p>{html.escape(error.message)}</p>{form}</body></html>"
    )
    return web.Response(text=text, status=error.status_hint, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", **SECURITY_HEADERS})


async def index(request: web.Request) -> web.StreamResponse:
    """GET /: the dashboard page. `?token=` sets the cookie and redirects to the same URL without it."""
    try:
        authorize(request)
    except LedgerError as e:
        if "text/html" in request.headers.get("Accept", ""):
            return _refusal_page(e)
        raise
    config = request.app[CONFIG_KEY]
    if "token" in request.query and token_rule(config) == "token":
        rest = [(k, v) for k, v in request.query.items() if k != "token"]
        location = "/" + ("?" + urlencode(rest) if rest else "")
        response = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
        response.set_cookie(COOKIE, cookie_value(config.dashboard_token), path="/", httponly=True, samesite="Strict")
        return response
    return _serve(request, "index.html")


async def static(request: web.Request) -> web.Response:
    """GET /static/{name}: the page's script and style sheet."""
    authorize(request)
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound("not_found", f"no asset {name[:64]!r}")
    return _serve(request, name)


def _team(request: web.Request) -> str | None:
    team = request.query.get("team") or None
    if team is not None and len(team) > TEAM_CHARS_MAX:
        raise Invalid("bad_parameter", f"team must be at most {TEAM_CHARS_MAX} characters")
    return team


async def agents(request: web.Request) -> web.Response:
    """GET /v1/dashboard/agents?team=: the agents and teams this node knows."""
    authorize(request)
    return web.json_response(await request.app[DASHBOARD_KEY].agents(_team(request)))


async def budgets(request: web.Request) -> web.Response:
    """GET /v1/dashboard/budgets?team=: a team's budgets (each once), suspensions and alerts."""
    authorize(request)
    now_ms = request.app[CLOCK_KEY].now_ms()
    return web.json_response(await request.app[DASHBOARD_KEY].budgets(_team(request), now_ms))


async def exports(request: web.Request) -> web.Response:
    """GET /v1/dashboard/exports: each configured exporter's state (backlog, age, rate, errors)."""
    authorize(request)
    exporters = request.app[EXPORTS_KEY].views() if EXPORTS_KEY in request.app else []
    return web.json_response({"exporters": exporters})
