"""Alert delivery to webhooks: retried with backoff, never blocking admission.

Alerts are written in the same transaction as the event that raised them (the
`alerts` table, shown in `balance`); delivery happens afterwards, from a
bounded queue, by one background task. An alert that cannot be delivered after
`alert_retry_max` attempts stays undelivered in the table (and is logged);
the queue drops the oldest alerts when full rather than grow without bound.

Each target (ledger/webhooks.py) gets the alert with a readable `text` line, or a Slack-compatible
`{"text": ...}`; a target with a secret gets an `ATS-Signature: t=…,v1=…` header (HMAC-SHA256).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any, AsyncIterator

import aiohttp

from ledger import webhooks as hooks
from node.aio import cancel_and_wait
from node.clock import SystemClock
from node.store import budgets as budget_store
from node.store.sqlite import Database

logger = logging.getLogger("ats.alerts")

QUEUE_ALERTS_MAX = 10_000
BACKOFF_MS_FIRST = 200
BACKOFF_MS_MAX = 30_000
TIMEOUT_S = 5


class AlertSender:
    def __init__(self, db: Database, webhooks: tuple[str, ...], retry_max: int, origin: str):
        self._db = db
        self._webhooks = tuple(hooks.parse_target(w) for w in webhooks)
        self._clock = SystemClock()
        self._retry_max = retry_max
        self._origin = origin
        self._queue: deque[dict[str, Any]] = deque(maxlen=QUEUE_ALERTS_MAX)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.delivered = 0
        self.failed = 0

    def enqueue(self, alerts: list[dict[str, Any]]) -> None:
        """Called on the event loop after a commit: never blocks, never raises."""
        if not self._webhooks:
            return
        self._queue.extend(alerts)
        self._wake.set()

    async def run(self) -> AsyncIterator[None]:
        """An aiohttp cleanup context: the delivery task lives between startup and cleanup."""
        self._task = asyncio.create_task(self._loop(), name="ats-alerts")
        try:
            yield
        finally:
            await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    alert = self._queue.popleft()
                    ok = all([await self._deliver(session, url, alert) for url in self._webhooks])
                    if ok and "id" in alert:
                        await self._db.write(budget_store.mark_delivered_tx, alert["id"])

    async def _deliver(self, session: aiohttp.ClientSession, target: hooks.Target, alert: dict[str, Any]) -> bool:
        doc = {**alert, "node": self._origin}
        if isinstance(doc.get("detail"), str):
            doc["detail"] = json.loads(doc["detail"])
        body = hooks.payload(doc, target, hooks.text_line(doc))
        url = target.shown  # for logs: never the secret
        backoff = BACKOFF_MS_FIRST
        for attempt in range(1, self._retry_max + 1):
            headers = {"Content-Type": "application/json"}
            if target.secret is not None:  # signed at each attempt: its t is the time it is sent
                headers[hooks.SIGNATURE_HEADER] = hooks.sign(target.secret, self._clock.now_ms() // 1000, body)
            try:
                async with session.post(target.url, data=body, headers=headers) as resp:
                    if resp.status < 300:
                        self.delivered += 1
                        return True
                    logger.warning("alert webhook %s answered %s (attempt %d)", url, resp.status, attempt)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                logger.warning("alert webhook %s failed: %s (attempt %d)", url, e, attempt)
            if attempt < self._retry_max:
                await asyncio.sleep(backoff / 1000)
                backoff = min(BACKOFF_MS_MAX, backoff * 2)
        self.failed += 1
        logger.error("alert %s not delivered to %s after %d attempts", alert.get("type"), url, self._retry_max)
        return False

