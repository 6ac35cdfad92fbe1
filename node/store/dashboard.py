"""Small listings for the owner's dashboard: who signed entries held here."""

from __future__ import annotations

import sqlite3


def signers(conn: sqlite3.Connection, limit: int) -> list[bytes]:
    """Distinct signers of the entries held here (every origin), in key order, at most limit.

    DISTINCT over the (signer, ts) index streams, so the LIMIT bounds the work as well as the answer.
    """
    rows = conn.execute("SELECT DISTINCT signer FROM entries ORDER BY signer LIMIT ?", (limit,)).fetchall()
    return [bytes(r[0]) for r in rows]
