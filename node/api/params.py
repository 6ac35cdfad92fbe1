"""Query-string parameters: integers and hex, with the contract's error shape.

Integers are parsed by hand, ASCII digits only: Python's `int()` and
`str.isdigit()` accept other scripts' digits and superscripts (`int("٣")` is 3,
`"²".isdigit()` is True and `int("²")` raises), and a query string is not the
place for them.
"""

from __future__ import annotations

from aiohttp import web

from ledger.errors import Invalid

INT_PARAM_MAX = 2**63 - 1
_DIGITS_MAX = len(str(INT_PARAM_MAX))


def parse_uint(text: str, name: str, maximum: int = INT_PARAM_MAX) -> int:
    """A non-negative decimal integer of ASCII digits, at most maximum; raises Invalid(bad_parameter)."""
    if not text or len(text) > _DIGITS_MAX or not (text.isascii() and text.isdigit()):
        raise Invalid("bad_parameter", f"{name} must be a non-negative decimal integer (ASCII digits)")
    value = int(text)
    if value > maximum:
        raise Invalid("bad_parameter", f"{name} must be at most {maximum}")
    return value


def int_param(request: web.Request, name: str, default: int | None = None, *, required: bool = False,
              maximum: int = INT_PARAM_MAX) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if required:
            raise Invalid("bad_parameter", f"query parameter {name} is required")
        return default
    return parse_uint(raw, name, maximum)


def str_param(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    return raw if raw else None
