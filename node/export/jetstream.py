"""The NATS JetStream sink: one message per event, `Nats-Msg-Id` = event id, position saved after the acks.

Subjects: `ats.events.<origin hex>.<kind>` in the stream `export_nats_stream`
(created if missing: file storage, subjects `ats.events.>`). The message body is
the envelope's exact CBOR bytes (the Merkle leaf: a subscriber can verify the
signature and the leaf hash without unwrapping anything); the JSON summary travels
in the `Ats-Summary` header, with `Ats-Origin`, `Ats-Index` and `Ats-Kind`.

Effectively once. A batch is published in log order on one connection, each
message asking for its own ack, and the position (`export-positions.sqlite`) is
saved only when every ack arrived. A crash or a failure in between leaves the
position behind what the stream may hold; re-sending that part is absorbed by the
stream's duplicate window (`Nats-Msg-Id`, 2 minutes by default) — but only within
that window. So the sink never relies on it: whenever it (re)opens, the position of
an origin is max(saved position, 1 + `Ats-Index` of the stream's last message on
`ats.events.<origin>.>`). A stream stores the messages of one connection in the order
they were published, so what it holds of a failed batch is a prefix, and the
position resumes exactly after it, however long the outage was. The saved position
still matters when the stream no longer holds the origin's last message (a purge,
a retention limit).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import nats
from nats.aio.msg import Msg

from node.export.records import SUBJECT_PREFIX, Record, origin_filter, subject, summary_json
from node.store.exports import CheckpointRow, PositionFile

logger = logging.getLogger("ats.export")

CONNECT_TIMEOUT_S = 3
API_TIMEOUT_S = 5
ACK_TIMEOUT_S = 5  # for a whole batch's acks


class JetStreamError(Exception):
    """The server refused a message or an API request, or did not answer in time."""


async def _quiet(_e: Exception) -> None:
    """Connection errors surface as exceptions in the exporter loop, which logs them once."""


class JetStreamSink:
    name = "nats"
    dedupes_ids = False  # Nats-Msg-Id dedupes only within the stream's duplicate window

    def __init__(self, url: str, stream: str, positions: PositionFile):
        self._url, self._stream, self._file = url, stream, positions
        self._nc: Any = None
        self._acks: dict[str, asyncio.Future] = {}
        self._inbox = ""
        self._saved: dict[bytes, int] = {}
        self._serial = 0

    async def open(self) -> None:
        # nats-py retries a refused first connection forever unless max_reconnect_attempts > 0;
        # the exporter loop does its own backoff, so one quick retry at most, and a deadline.
        self._nc = await asyncio.wait_for(nats.connect(
            self._url, allow_reconnect=False, connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=1,
            reconnect_time_wait=0.05, error_cb=_quiet, disconnected_cb=self._lost, name="ats-export",
        ), 2 * CONNECT_TIMEOUT_S)
        await self._ensure_stream()
        self._inbox = self._nc.new_inbox()
        await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        self._saved = await self._file.load(self.name)

    async def _api(self, what: str, doc: dict[str, Any]) -> dict[str, Any]:
        msg = await self._nc.request(f"$JS.API.{what}", json.dumps(doc).encode(), timeout=API_TIMEOUT_S)
        try:
            return json.loads(msg.data)
        except ValueError:
            raise JetStreamError(f"{what}: not a JetStream answer (is JetStream enabled?)") from None

    async def _ensure_stream(self) -> None:
        info = await self._api(f"STREAM.INFO.{self._stream}", {})
        if "error" not in info:
            return
        if info["error"].get("code") != 404:
            raise JetStreamError(f"stream {self._stream}: {info['error'].get('description')}")
        created = await self._api(f"STREAM.CREATE.{self._stream}", {
            "name": self._stream, "subjects": [f"{SUBJECT_PREFIX}.>"], "storage": "file", "retention": "limits",
            "discard": "old", "duplicate_window": 120 * 10**9,
        })
        if "error" in created and created["error"].get("err_code") != 10058:  # 10058: created meanwhile
            raise JetStreamError(f"cannot create stream {self._stream}: {created['error'].get('description')}")

    async def position(self, origin: bytes) -> int:
        """max(saved, 1 + index of the stream's last message of this origin) (module docstring)."""
        answer = await self._api(f"STREAM.MSG.GET.{self._stream}", {"last_by_subj": origin_filter(origin)})
        last = -1
        if "error" in answer:
            if answer["error"].get("code") != 404:
                raise JetStreamError(f"last message of {origin.hex()}: {answer['error'].get('description')}")
        else:
            last = _index_header(base64.b64decode(answer["message"].get("hdrs") or ""))
        return max(self._saved.get(origin, 0), last + 1)

    async def _lost(self) -> None:
        """The connection dropped: the acks still awaited will never come, so fail them now."""
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(JetStreamError("connection to the NATS server lost"))

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._acks.pop(msg.subject.rsplit(".", 1)[-1], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def prepare(self, records: list[Record]) -> list[tuple[str, bytes, dict[str, str]]]:
        """(subject, body, headers) of each message, in log order."""
        return [(subject(r.origin, r.kind), r.envelope, {
            "Nats-Msg-Id": r.event_id.hex(), "Ats-Origin": r.origin.hex(), "Ats-Index": str(r.index),
            "Ats-Kind": r.kind, "Ats-Summary": summary_json(r),
        }) for r in records]

    async def deliver(self, origin: bytes, start: int, end: int, prepared: list[tuple[str, bytes, dict[str, str]]],
                      checkpoints: list[CheckpointRow]) -> int:
        nc = self._nc
        loop = asyncio.get_running_loop()
        futures = []
        for subj, body, headers in prepared:  # in log order, on one connection: the stream stores them in this order
            self._serial += 1
            token = str(self._serial)
            fut = loop.create_future()
            self._acks[token] = fut
            futures.append(fut)
            await nc.publish(subj, body, reply=f"{self._inbox}.{token}", headers=headers)
        try:
            acks = await asyncio.wait_for(asyncio.gather(*futures), ACK_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise JetStreamError(f"no acknowledgement for {len(futures)} messages within {ACK_TIMEOUT_S} s") from None
        finally:
            for fut in futures:
                fut.cancel()
            self._acks.clear()
        for ack in acks:
            try:
                doc = json.loads(ack.data)
            except ValueError:
                doc = {"error": {"description": f"status {(ack.headers or {}).get('Status', '?')}"}}
            if "error" in doc:
                raise JetStreamError(f"message refused: {doc['error'].get('description')}")
        self._saved[origin] = end
        return end

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        for fut in self._acks.values():
            fut.cancel()
        self._acks.clear()
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), 2)
            except Exception:
                pass


def _index_header(raw: bytes) -> int:
    """The Ats-Index of a stored message's headers (NATS/1.0 header block), -1 if absent."""
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "ats-index":
            try:
                return int(value.strip())
            except ValueError:
                return -1
    return -1
