"""Typed keys for application state (aiohttp AppKey)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from node.clock import SystemClock
    from node.config import Config
    from node.ingest import Ingestor, OwnLog
    from node.metrics import NodeMetrics
    from node.queries import Queries

CONFIG_KEY = web.AppKey("config", "Config")
CLOCK_KEY = web.AppKey("clock", "SystemClock")
OWN_LOG_KEY = web.AppKey("own_log", "OwnLog")
INGESTOR_KEY = web.AppKey("ingestor", "Ingestor")
QUERIES_KEY = web.AppKey("queries", "Queries")
METRICS_KEY = web.AppKey("metrics", "NodeMetrics")
ALERTS_KEY = web.AppKey("alerts", "AlertSender")
REPLICATOR_KEY = web.AppKey("replicator", "Replicator")
DASHBOARD_KEY = web.AppKey("dashboard", "Dashboard")
REPORTS_KEY = web.AppKey("reports", "Reports")
EXPORTS_KEY = web.AppKey("exports", "Exports")
METER_KEY = web.AppKey("meter", "Meter")
GATEWAY_KEY = web.AppKey("gateway", "Gateway")
REPLAY_GUARD_KEY = web.AppKey("replay_guard", "ReplayGuard")
WORKERS_KEY = web.AppKey("workers", "WorkerPool")  # node/workers.py
