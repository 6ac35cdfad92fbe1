"""Small asyncio and aiohttp pieces shared by the node's background tasks and clients."""

from __future__ import annotations

import asyncio

import aiohttp


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole response body, or None as soon as it exceeds limit bytes (P6: bounded before parsing)."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    chunks, total = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """A stream's bytes until its end, or the first limit + 1 of them (so the caller sees it is too long).

    StreamReader.read(n) returns what is buffered, which may be less than the body: loop to the end.
    """
    chunks, total = [], 0
    while total <= limit:
        chunk = await stream.read(limit + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
