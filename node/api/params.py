"""Query-string parameters: integers and hex, with the contract's error shape."""

from __future__ import annotations

from aiohttp import web

from ledger.errors import Invalid

INT_PARAM_MAX = 2**63 - 1


def int_param(request: web.Request, name: str, default: int | None = None, *, required: bool = False) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if required:
            raise Invalid("bad_parameter", f"query parameter {name} is required")
        return default
    if not raw.isdigit() or len(raw) > 19 or int(raw) > INT_PARAM_MAX:
        raise Invalid("bad_parameter", f"{name} must be a non-negative decimal integer")
    return int(raw)


def str_param(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    return raw if raw else None
