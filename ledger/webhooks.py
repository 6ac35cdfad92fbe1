"""Alert webhooks: targets, signatures and the readable line (pure: no I/O, no clock).

A target is written as one string in the setting `alert_webhooks`:

    https://example.com/hook                       the alert as JSON, unsigned
    https://example.com/hook#secret=whsec_abc      the alert as JSON, signed with this secret
    slack+https://hooks.slack.com/services/T/B/X   a Slack-compatible incoming webhook: {"text": line}

(`#…` is a URL fragment: it is never sent over HTTP, so the secret stays on the node.)

Signature, verifiable as Stripe's is: the header

    ATS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

A receiver recomputes v1 over the raw body with its secret, compares in constant time, and refuses
a t too far from its own clock (replays): `verify` does all three.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

SIGNATURE_HEADER = "ATS-Signature"
TOLERANCE_S = 300  # a signature older or newer than this is refused by `verify`

_TITLES = {
    "soft_limit": "soft limit crossed",
    "hard_limit": "hard limit crossed",
    "reserve": "spending from the emergency reserve",
    "suspended": "suspended",
    "lifted": "suspension lifted",
}


@dataclass(frozen=True)
class Target:
    url: str  # what is POSTed to (no fragment)
    secret: bytes | None
    slack: bool

    @property
    def shown(self) -> str:
        """The URL for logs: never the secret."""
        return ("slack+" if self.slack else "") + self.url


def parse_target(text: str) -> Target:
    """A target from its setting string; raises ValueError on anything but an http(s) URL."""
    slack = text.startswith("slack+")
    url = text[len("slack+"):] if slack else text
    url, _, fragment = url.partition("#")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{text.split('#')[0]!r} is not an http(s) URL (optionally slack+https://…)")
    secret = None
    if fragment:
        values = parse_qs(fragment, keep_blank_values=True).get("secret")
        if not values or not values[0]:
            raise ValueError("the fragment of an alert webhook may only be #secret=<secret>")
        secret = values[0].encode()
    return Target(url, secret, slack)


def sign(secret: bytes, t: int, body: bytes) -> str:
    """The ATS-Signature header value of body at unix time t."""
    mac = hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, now_s: int, tolerance_s: int = TOLERANCE_S) -> bool:
    """Whether header signs body with secret, within tolerance_s of now_s (any of several v1 values)."""
    t, macs = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1":
            macs.append(value)
    if t is None or not macs or abs(now_s - t) > tolerance_s:
        return False
    expected = sign(secret, t, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, m) for m in macs)


def _amount(metric: str, value: Any) -> str:
    if not isinstance(value, int):
        return str(value)
    return f"{value / 1000:g} T" if metric == "act.cost" else f"{value:,}"


def text_line(alert: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """One line a person reads: what happened, to whom, how far, on which node."""
    detail = alert.get("detail") if isinstance(alert.get("detail"), dict) else {}
    scope_id = str(alert.get("scope_id", ""))
    who = (names or {}).get(scope_id) or (scope_id[:12] + "…" if len(scope_id) == 64 else scope_id)
    metric = str(alert.get("metric", ""))
    line = f"ATS {_TITLES.get(str(alert.get('type')), alert.get('type'))}: {alert.get('scope')} {who}"
    if metric and metric != "*":
        line += f", {metric}"
    if "consumed" in detail and "limit" in detail and detail["limit"]:
        pct = detail["consumed"] * 100 // detail["limit"]
        line += f" at {_amount(metric, detail['consumed'])} of {_amount(metric, detail['limit'])} ({pct} %)"
    if detail.get("reason"):
        line += f": {detail['reason']}"
    node = str(alert.get("node", ""))
    return line + (f" (node {node[:12]})" if node else "")


def payload(alert: dict[str, Any], target: Target, text: str) -> bytes:
    """The exact body POSTed to target: the alert with its text line, or Slack's {"text": ...}."""
    doc = {"text": text} if target.slack else {**alert, "text": text}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
