"""The one error renderer: every failure becomes {"error": {"code", "message"}} (PROTOCOL.md §5)."""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import DecompressSizeError

from ledger.errors import InvariantViolation, LedgerError
from node.appkeys import CONFIG_KEY, METRICS_KEY, OWN_LOG_KEY

logger = logging.getLogger("ats.api")

# aiohttp's own HTTP errors (no route, wrong method, body over client_max_size).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "bad_content_type",
}


# x-should-retry (as Stainless-generated SDKs read it): whether retrying after Retry-After can
# succeed. A spent budget or a suspension will not change by asking again before its time.
SHOULD_RETRY = {"throttled": "true", "no_rights": "true", "too_many_runs": "true", "too_many_client_connections": "true",
                "budget_exceeded": "false", "suspended": "false"}


def error_response(status: int, code: str, message: str, retry_after_ms: int | None = None) -> web.Response:
    resp = web.json_response({"error": {"code": code, "message": message}}, status=status)
    if retry_after_ms is not None:
        resp.headers["Retry-After"] = str(max(1, -(-retry_after_ms // 1000)))
    if code in SHOULD_RETRY:
        resp.headers["x-should-retry"] = SHOULD_RETRY[code]
    return resp


def render(error: LedgerError) -> web.Response:
    return error_response(error.status_hint, error.code, error.message, error.details.get("retry_after_ms"))


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response = await handler(request)
    except InvariantViolation as e:
        own = request.app[OWN_LOG_KEY]
        own.read_only_reason = own.read_only_reason or str(e)
        logger.critical("invariant violated serving %s; node is now read-only: %s", request.path, e)
        response = error_response(500, "internal", "internal error; the node is now read-only")
    except LedgerError as e:
        response = render(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "bad_request")
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        if e.status == 413:
            message = f"request body is larger than this node accepts ({request.app[CONFIG_KEY].body_bytes_max} bytes)"
        response = error_response(e.status, code, message)
        if "Allow" in e.headers:  # RFC 9110 §15.5.6: a 405 names the allowed methods
            response.headers["Allow"] = e.headers["Allow"]
    except web.RequestPayloadError as e:
        # the body did not decode under its Content-Encoding (garbage under gzip or deflate) or its
        # framing (chunks, Content-Length); aiohttp's decompression limit is a body too large
        if isinstance(e.__cause__, DecompressSizeError):
            response = error_response(413, "body_too_large", "request body decompresses to more than this node accepts")
        else:
            response = error_response(400, "bad_content_encoding",
                                      "request body does not decode under its Content-Encoding or framing")
    except ConnectionError:  # the client went away mid-request: nobody to answer, nothing to log above debug
        logger.debug("client %s disconnected during %s %s", request.remote, request.method, request.path)
        response = error_response(400, "bad_request", "client disconnected")
    except Exception:  # a bug, not the client's fault: log it, answer in the contract's shape
        logger.exception("unhandled error serving %s %s", request.method, request.path)
        response = error_response(500, "internal", "internal error")
    request.app[METRICS_KEY].requests.inc(1, route, str(response.status))
    return response
