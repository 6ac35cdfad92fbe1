"""The node's memory: fewer malloc arenas, and freed memory handed back to the kernel.

Theory of operation. The node's threads (event loop, SQLite writer, readers,
verify threads) each allocate and free Python objects, SQLite pages and
request bodies. glibc's malloc gives each thread its own arena (up to 8 per
core) and keeps what a thread frees for that thread's next allocation, so after
a burst of large batches the node holds, as RSS, memory no live object uses
(measured with scripts/bench_ingest.py: the live Python objects of a node at
100,000 events are ~36 MiB of its ~100 MiB). Two arenas serve the node's
threads as well (their allocations are short), and `malloc_trim` every few
seconds returns the free pages of every arena to the kernel. Neither changes
what the node does; where glibc is not there (musl, macOS) both do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging

logger = logging.getLogger("ats.memory")

M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)
ARENAS = 2
TRIM_INTERVAL_S = 5.0


def _libc():
    try:
        libc = ctypes.CDLL(None)  # this process's own symbols: libc's among them
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` malloc arenas for the threads started from now on (call before them)."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, arenas) == 1)


def trim() -> None:
    """Return free memory at the top and inside every malloc arena to the kernel."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


async def trim_periodically(interval_s: float = TRIM_INTERVAL_S) -> None:
    """Trim every interval_s (~1 ms of the loop's time for a ~100 MiB heap) until cancelled."""
    if _LIBC is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        trim()
