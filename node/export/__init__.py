"""Exporters: the node's committed entries to PostgreSQL and NATS JetStream, effectively once (docs/fleets.md).

`Exports.from_config` builds one `Exporter` per configured sink (none by default);
app.py starts them after the store opens, wakes them after every commit, and stops
them before the store closes. The sink clients (asyncpg, nats-py) are imported only
when their sink is configured.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from node.clock import SystemClock
from node.config import Config
from node.export.loop import Exporter
from node.metrics import _labels, _num
from node.store.exports import LogReader, PositionFile

POSITIONS_FILE = "export-positions.sqlite"


class Exports:
    """Every exporter of this node (possibly none)."""

    def __init__(self, exporters: list[Exporter], reader: LogReader | None, positions: PositionFile | None):
        self.exporters = exporters
        self._reader, self._positions = reader, positions

    @classmethod
    def from_config(cls, config: Config, own_key: bytes, own_size: Callable[[], int], clock: SystemClock,
                    scopes: Callable[[bytes], dict[str, str]],
                    on_alert: Callable[[list[dict[str, Any]]], None] | None = None) -> "Exports":
        sinks: list[Any] = []
        if not (config.export_postgres or config.export_nats):
            return cls([], None, None)
        positions = PositionFile(os.path.join(config.data_dir, POSITIONS_FILE))
        if config.export_postgres:
            from node.export.postgres import PostgresSink

            sinks.append(PostgresSink(config.export_postgres))
        if config.export_nats:
            from node.export.jetstream import JetStreamSink

            sinks.append(JetStreamSink(config.export_nats, config.export_nats_stream, positions))
        reader = LogReader(config.db_path)
        exporters = [Exporter(
            sink, reader, positions, clock, own_key=own_key, own_size=own_size, origins=config.export_origins,
            scopes=scopes, retry_ms_max=config.export_retry_ms_max, alert_events=config.export_alert_events,
            alert_ms=config.export_alert_ms, on_alert=on_alert,
        ) for sink in sinks]
        return cls(exporters, reader, positions)

    def start(self) -> None:
        for e in self.exporters:
            e.start()

    async def stop(self) -> None:
        for e in self.exporters:
            await e.stop()
        if self._reader is not None:
            await self._reader.close()
        if self._positions is not None:
            await self._positions.close()

    def wake(self) -> None:
        """After a commit (own or replicated): every exporter looks for new entries now."""
        for e in self.exporters:
            e.wake()

    def views(self) -> list[dict[str, Any]]:
        return [e.view() for e in self.exporters]

    def metric_lines(self) -> list[str]:
        """Prometheus lines: backlog size and age, exported and failed totals, rate, up, per sink."""
        families = (
            ("ats_export_backlog_events", "gauge", "Committed entries not yet exported, per sink.",
             lambda e: e.backlog()),
            ("ats_export_backlog_age_seconds", "gauge", "Age of the oldest entry not yet exported (0 when caught up).",
             lambda e: e.age_ms() / 1000),
            ("ats_export_events_total", "counter", "Entries exported (made durable in the sink), per sink.",
             lambda e: e.exported),
            ("ats_export_errors_total", "counter", "Failed deliveries or connections, per sink (each retried).",
             lambda e: e.errors),
            ("ats_export_rate_events_per_second", "gauge", "Entries exported per second over the last 10 s.",
             lambda e: e.rate()),
            ("ats_export_up", "gauge", "1 while the sink is connected and the last delivery succeeded.",
             lambda e: 1 if e.up else 0),
        )
        lines: list[str] = []
        for name, kind, help_, read in families:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{_labels({'sink': e.sink.name})} {_num(read(e))}" for e in self.exporters]
        return lines


__all__ = ["Exports", "Exporter"]
