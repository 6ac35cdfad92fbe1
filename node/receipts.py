"""Compact storage of a receipt's budgets, so a duplicate gets the receipt its event got.

A receipt's JSON repeats each scope id in every budget entry (~770 bytes for a
typical ACT event); stored like that it pushed every entry row past what a
SQLite page holds inline. The stored form is CBOR with the scope ids once and
each budget entry as a short array (~200 bytes); `remaining` is derived.
"""

from __future__ import annotations

from typing import Any

import cbor2

_STATUS = ("healthy", "normal", "warning", "critical")


def pack(budgets: list[dict[str, Any]], run: dict[str, Any] | None) -> bytes | None:
    """The stored form of a receipt's budgets and run, or None when both are empty."""
    if not budgets and not run:
        return None
    scopes: list[tuple[str, str]] = []
    rows = []
    for b in budgets:
        scope = (b["scope"], b["scope_id"])
        if scope not in scopes:
            scopes.append(scope)
        rows.append([
            scopes.index(scope), b["metric"], b["window"], b["source"], b["allocated"], b["consumed"], b["held"],
            _STATUS.index(b["status"]), b["window_end"], b.get("flags", []),
        ])
    doc: dict[str, Any] = {"s": [[s, bytes.fromhex(i) if len(i) == 64 else i] for s, i in scopes], "b": rows}
    if run:
        doc["r"] = run
    return cbor2.dumps(doc)


def unpack(blob: bytes | str | None) -> dict[str, Any]:
    """The receipt fields ({"budgets", "run"?}) stored by `pack`."""
    if not blob:
        return {}
    doc = cbor2.loads(blob)
    scopes = [(s, i.hex() if isinstance(i, bytes) else i) for s, i in doc["s"]]
    budgets = []
    for si, metric, window, source, allocated, consumed, held, status, end, flags in doc["b"]:
        scope, scope_id = scopes[si]
        entry = {
            "scope": scope, "scope_id": scope_id, "metric": metric, "window": window, "source": source,
            "allocated": allocated, "consumed": consumed, "held": held,
            "remaining": None if allocated is None else max(0, allocated - consumed - held),
            "status": _STATUS[status], "window_end": end,
        }
        if flags:
            entry["flags"] = flags
        budgets.append(entry)
    out: dict[str, Any] = {"budgets": budgets}
    if "r" in doc:
        out["run"] = doc["r"]
    return out
