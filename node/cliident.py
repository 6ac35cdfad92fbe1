"""Identities and times on the command line: a name, a 64-hex key or a key file; human times.

Every `ats` command that takes an agent or a user accepts any of the three:

    ats balance alice            # a readable name given by agent.register (name / user_name)
    ats balance 3b6a27bc…        # the public key, 64 lowercase hex digits
    ats balance ./alice.key      # a key file from `ats keygen`: its public key
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from urllib.parse import quote

from node.sdk.agent import HttpTransport

_HEX_RE = re.compile(r"[0-9a-f]{64}")


async def resolve(http: HttpTransport, text: str) -> str:
    """The 64-hex key of a name, a hex key or a key file; raises AtsError unknown_name."""
    if _HEX_RE.fullmatch(text):
        return text
    if os.path.isfile(text):
        from ledger.signing import public_key_from_seed
        from node.keys import read_key

        return public_key_from_seed(read_key(text)).hex()
    doc = await http.json("GET", f"/v1/names/{quote(text, safe='')}")
    return str(doc["key"])


def human_time(ms: int | None) -> str:
    """A UTC time a person reads: 2026-12-05 17:20:00 UTC."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def human_wait(ms: int) -> str:
    """A wait a person reads: 45 s, 12 min, 3.5 h, 2.0 days."""
    s = ms / 1000
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
