"""The composition root: builds the aiohttp application and wires the parts.

Every resource (the database, the committer, the verify pool) is an async
context in `app.cleanup_ctx`: started before the first request, closed after
the last one, in reverse order.
"""

from __future__ import annotations

import functools
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from typing import Any, AsyncIterator, Callable

from aiohttp import web

from node import datadir
from node.api import dashboard, events, info, log, peer, tasks
from node.api.errors import error_middleware
from node.httpserver import (HeavyGate, NodeSite, connections_bound, expect_handler, held_bound, raise_open_files_limit,
                             request_bounds)
from node.api import budgets as budgets_api
from node.readauth import read_auth_middleware
from node.alerts import AlertSender
from node.anomaly import AnomalyWatch
from node.reports import Reports
from node.api import reports as report_api
from node.api import escrow as escrow_api
from node.escrow import ESCROW_KEY, EscrowAgent
from node.export import Exports
from node.appkeys import REPORTS_KEY
from node.appkeys import ALERTS_KEY, REPLICATOR_KEY, CLOCK_KEY, CONFIG_KEY, INGESTOR_KEY, METRICS_KEY, OWN_LOG_KEY, QUERIES_KEY
from node.appkeys import DASHBOARD_KEY, EXPORTS_KEY, GATEWAY_KEY, METER_KEY, REPLAY_GUARD_KEY, WORKERS_KEY
from node.gateway import Gateway
from node.gateway.dialects import ANTHROPIC
from node.meter import Meter
from consensus.messages import ReplayGuard
from node.workers import WorkerPool
from node import memory
from node.dashboard import Dashboard
from ledger.checkpoint import verifier_key
from node.budgets import BudgetBook
from node.discovery import discovery_from_config
from node.replication import Replicator
from node.clock import SystemClock
from node.config import Config
from node.ingest import Committer, Ingestor, OwnLog
from node.keys import node_seed
from node.metrics import NodeMetrics
from node.queries import Queries
from node.superblock import path_for as superblock_path
from node.store.sqlite import Database
from node.tls import client_ssl, server_context

logger = logging.getLogger("ats.node")
SWITCH_INTERVAL_S = 0.001


def build_app(config: Config, clock: SystemClock | None = None) -> web.Application:
    """The node's aiohttp application for this config (nothing is opened until startup)."""
    app = web.Application(client_max_size=config.body_bytes_max,
                          middlewares=[error_middleware, read_auth_middleware, request_bounds(
                              config.http_body_timeout_ms,
                              HeavyGate(config.heavy_requests_max, config.heavy_requests_per_client_max))])
    app[CONFIG_KEY] = config
    app[CLOCK_KEY] = clock or SystemClock()
    os.makedirs(config.data_dir, exist_ok=True)
    seed, _source = node_seed(config.node_key, config.node_key_file, config.key_path)
    own = OwnLog(seed, superblock_path(config.data_dir), config.startup_check_entries)
    app[OWN_LOG_KEY] = own
    app[METRICS_KEY] = NodeMetrics(lambda: own.size, lambda: own.checkpoint_size)
    # requests signed before this start are refused: the guard's memory did not survive the restart
    app[REPLAY_GUARD_KEY] = ReplayGuard(config.skew_ms, config.peer_nonces_max, floor_ms=app[CLOCK_KEY].now_ms())
    app.cleanup_ctx.append(_storage)
    add_routes(app)
    if config.llm_gateway:
        gateway = Gateway(config, None, app[CLOCK_KEY], app[METRICS_KEY])
        app[GATEWAY_KEY] = gateway
        app.cleanup_ctx.append(gateway.context)
        add_gateway_routes(app, gateway)
    return app


async def _storage(app: web.Application) -> AsyncIterator[None]:
    config, clock, own, metrics = app[CONFIG_KEY], app[CLOCK_KEY], app[OWN_LOG_KEY], app[METRICS_KEY]
    # default: one core for this process (event loop and writer), the others for workers
    workers = WorkerPool(config.verify_processes if config.verify_processes >= 0 else max(1, (os.cpu_count() or 1) - 1))
    app[WORKERS_KEY] = workers
    starting = asyncio.create_task(workers.start())  # meanwhile batches are checked in this process
    db = Database(config.db_path, synchronous=config.sqlite_synchronous, reader_threads=config.reader_threads,
                  checkpoint_ms=config.wal_checkpoint_ms)
    await db.open()
    await db.write(own.open, clock.now_ms())
    book = BudgetBook.from_config(config, own.public_key)
    await db.write(book.load, clock.now_ms())
    alerts = AlertSender(db, config.alert_webhooks, config.alert_retry_max, own.public_key.hex())
    app[ALERTS_KEY] = alerts
    replicator = Replicator(
        db, own, book, clock, static_peers=config.peers, open_membership=config.open_membership,
        interval_ms=config.replication_interval_ms, entries_max=config.replication_entries_max,
        peer_count_max=config.peer_count_max, witness_quorum=config.witness_quorum, anchor_sink=config.anchor_sink,
        ssl=client_ssl(config.tls_ca, config.tls_pins),
    )
    replicator.v1_compat = config.peer_protocol_v1
    app[REPLICATOR_KEY] = replicator
    replicator.workers = workers
    metrics.extra.append(replicator.metric_lines)  # ats_replication_unknown_kind_events_total
    anomalies = AnomalyWatch(
        metrics, threshold_milli=config.anomaly_threshold_milli, warmup_events=config.anomaly_warmup_events,
        agents_max=config.anomaly_agents_max,
    ) if config.anomaly_detection else None
    exports = Exports.from_config(config, own.public_key, lambda: own.size, clock, lambda signer: _scopes(book, signer),
                                  on_alert=alerts.enqueue)
    app[EXPORTS_KEY] = exports
    if exports.exporters:
        metrics.extra.append(exports.metric_lines)
        replicator.on_store = exports.wake  # entries fetched from peers: a collector exports them at once

    def on_commit() -> None:
        replicator.poke()
        exports.wake()

    committer = Committer(
        db, own, clock, metrics,
        events_max=config.checkpoint_events_max, linger_ms=config.checkpoint_ms_max, skew_ms=config.skew_ms,
        book=book, on_alerts=alerts.enqueue, on_commit=on_commit, anomalies=anomalies,
        rights_wait_ms=config.strict_wait_ms if config.strict_budgets else 0, rights_retry_ms=config.strict_retry_ms,
        share_events=config.commit_share_events, pace_gap_ms=config.commit_pace_gap_ms,
        bulk_min_pct=config.commit_bulk_min_pct,
    )
    committer.start()
    trimming = asyncio.create_task(memory.trim_periodically(), name="ats-malloc-trim")
    ingestor = Ingestor(committer, metrics, clock, config.verify_threads)
    app[INGESTOR_KEY] = ingestor
    escrow_agent = EscrowAgent(db, book, own, replicator, clock)  # strict mode: asks peers for rights
    escrow_agent.ingestor = ingestor
    app[ESCROW_KEY] = escrow_agent
    app[QUERIES_KEY] = Queries(
        db, own, book, clock, entries_page_max=config.entries_page_max, usage_events_max=config.usage_events_max
    )
    meter = Meter(db, book, committer, clock, own, on_alerts=alerts.enqueue)
    app[METER_KEY] = meter
    if GATEWAY_KEY in app:
        app[GATEWAY_KEY].meter = meter
    app[DASHBOARD_KEY] = Dashboard(db, book)
    app[REPORTS_KEY] = Reports(db, book)
    delivery = alerts.run()
    await delivery.__anext__()
    replication = replicator.context()
    await replication.__anext__()
    asking = escrow_agent.context()
    await asking.__anext__()
    exports.start()
    if book.calls and not own.read_only_reason:
        await meter.recover()  # calls a killed node left open: charged at their reservation
    try:
        yield
    finally:
        trimming.cancel()
        await exports.stop()
        await asking.aclose()
        await replication.aclose()
        await delivery.aclose()
        await committer.stop()
        ingestor.close()
        await starting  # bounded: WorkerPool.start gives up after a minute
        await workers.aclose()
        await db.close()
        own.close()


def _scopes(book: BudgetBook, signer: bytes) -> dict[str, str]:
    """user, team and platform of a signer (its agent.register record), for exported events."""
    return {scope: scope_id for scope, scope_id in book.chain(signer)[1:]}


def _adders(app: web.Application) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """add_get and add_post of app's router, every route with the node's Expect: handler
    (node.httpserver.expect_handler: aiohttp's own answers in text/plain before any middleware)."""
    return (functools.partial(app.router.add_get, expect_handler=expect_handler),
            functools.partial(app.router.add_post, expect_handler=expect_handler))


def add_routes(app: web.Application) -> None:
    get, post = _adders(app)
    post("/v1/events", events.submit)
    post("/v1/events/batch", events.submit_batch)
    get("/v1/events/{id}", events.get_event)
    post("/v1/quota/check", events.quota_check)
    get("/v1/agents/{agent}/balance", info.balance)
    get("/v1/agents/{agent}/usage", info.usage)
    get("/v1/log/checkpoint", log.checkpoint)
    get("/v1/log/proof/inclusion", log.inclusion)
    get("/v1/log/proof/consistency", log.consistency)
    get("/v1/log/entries", log.entries)
    get("/v1/node", info.node_info)
    get("/v1/openapi.json", info.openapi)
    get("/healthz", info.healthz)
    get("/metrics", info.metrics)
    get("/v1/log/checkpoint/anchored", peer.anchored)
    get("/v1/peer/frontier", peer.frontier)
    post("/v1/peer/cosign", peer.cosign)
    post("/v1/peer/notify", peer.notify)
    get("/v1/peers", peer.peers)
    get("/v1/cluster/digest", peer.digest)
    get("/v1/forks", peer.forks)
    post("/v1/peer/escrow/ask", escrow_api.ask)
    get("/v1/escrow", escrow_api.rights)
    get("/v1/reports/{scope}/{id}", report_api.report)
    get("/v1/budgets", budgets_api.listing)
    get("/v1/names/{name}", budgets_api.name)
    get("/", dashboard.index)
    get("/static/{name}", dashboard.static)
    get("/v1/dashboard/agents", dashboard.agents)
    get("/v1/dashboard/budgets", dashboard.budgets)
    get("/v1/dashboard/exports", dashboard.exports)
    post("/v1/tasks", tasks.reserve)
    post("/v1/tasks/{task}", tasks.settle)


def add_gateway_routes(app: web.Application, gateway: Gateway) -> None:
    """The OpenAI-compatible paths of PROTOCOL.md §6.2 (only when llm_gateway is on)."""

    async def chat(request: web.Request) -> web.StreamResponse:
        return await gateway.handle(request, "chat/completions")

    async def embeddings(request: web.Request) -> web.StreamResponse:
        return await gateway.handle(request, "embeddings")

    async def messages(request: web.Request) -> web.StreamResponse:
        return await gateway.handle(request, "messages", ANTHROPIC)

    get, post = _adders(app)
    post("/llm/v1/chat/completions", chat)
    post("/llm/v1/embeddings", embeddings)
    get("/llm/v1/models", gateway.models)
    post("/llm/v1/messages", messages)


def plain_http_warning(config: Config) -> str | None:
    """The start-up warning for a node listening off loopback without TLS, or None."""
    if config.tls_cert:
        return None
    try:
        loopback = ipaddress.ip_address(config.listen_host).is_loopback
    except ValueError:
        loopback = config.listen_host == "localhost"
    if loopback:
        return None
    return (f"listening on {config.listen_host} without TLS: agents' events, dashboard tokens and peer traffic "
            "travel in clear text; set tls_cert and tls_key (docs/operations.md#tls)")


async def serve(config: Config, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the node until SIGINT or SIGTERM; prints one ready line with the bound URL."""
    try:
        lock_fd = datadir.hold(config.data_dir)
    except datadir.DataDirInUse as e:
        raise SystemExit(f"ats node: {e}") from None
    try:
        await _serve(config, on_ready)
    finally:
        os.close(lock_fd)


async def _serve(config: Config, on_ready: Callable[[str], None] | None) -> None:
    ssl_context = server_context(config.tls_cert, config.tls_key) if config.tls_cert else None  # before any write
    client_ssl(config.tls_ca, config.tls_pins)  # a bad CA bundle stops the node now, not at the first sync
    warning = plain_http_warning(config)
    if warning:
        logger.warning("%s", warning)
    app = build_app(config)
    # The writer and verify threads run Python between their C calls; at the default 5 ms switch
    # interval the event loop could wait that long for the GIL on every request (issue 10, class 8).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    memory.limit_arenas()  # before the writer, reader and verify threads start (node/memory.py)
    open_files = raise_open_files_limit()
    connections_max = connections_bound(config.connections_max, open_files)
    if connections_max < config.connections_max:
        logger.warning("connections_max lowered to %d: the open-files limit is %d", connections_max, open_files)
    # Passed to every connection's handler (aiohttp RequestHandler): keepalive_timeout is also the time a
    # new connection has to send its first request head (see node.httpserver).
    handler_args = {
        "keepalive_timeout": config.http_head_timeout_ms / 1000, "max_line_size": config.http_header_bytes_max,
        "max_field_size": config.http_header_bytes_max, "max_headers": config.http_headers_max,
        # after an early answer (413) the rest of the body is read and dropped for at most 1 s, so the client
        # sees the answer rather than a reset; client_bytes_per_s bounds what that reading costs
        "lingering_time": 1.0, "access_log": None,
    }
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout_ms / 1000, **handler_args)
    await runner.setup()
    site = NodeSite(runner, config.listen_host, config.listen_port, connections_max=connections_max,
                    per_client_max=config.connections_per_client_max, handler_args=handler_args,
                    bytes_per_s=config.client_bytes_per_s, burst_bytes=config.body_bytes_max + 64 * 1024,
                    held_max=held_bound(connections_max, open_files), write_timeout_ms=config.http_write_timeout_ms,
                    ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise SystemExit(f"ats node: cannot listen on {config.listen_host}:{config.listen_port}: {e.strerror}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = runner.addresses[0][:2]
    url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
    own = app[OWN_LOG_KEY]
    if config.advertise_url:
        app[REPLICATOR_KEY].own_url = config.advertise_url.rstrip("/")
    elif host not in ("0.0.0.0", "::"):
        app[REPLICATOR_KEY].own_url = url
    line = f"ats node ready: {url} origin={own.public_key.hex()} size={own.checkpoint_size} data_dir={config.data_dir}"
    # discovery announces the port actually bound, so it starts once the site listens
    replicator = app[REPLICATOR_KEY]
    discovery = discovery_from_config(
        config, own.public_key, verifier_key(own.origin_line, own.public_key), port,
        on_peer=lambda info: [replicator.add_peer(u, "discovered") for u in info.urls],
    )
    if discovery is not None:
        await discovery.start()
    loop_type = type(asyncio.get_running_loop())
    logger.info("event loop: %s.%s", loop_type.__module__, loop_type.__qualname__)
    print(line, flush=True)
    if on_ready:
        on_ready(url)
    await stop.wait()
    print("ats node: shutting down", file=sys.stderr, flush=True)
    if discovery is not None:
        await discovery.close()
    await runner.cleanup()
