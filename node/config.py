"""Node configuration: defaults in code → TOML file → ATS_* environment → CLI flags.

`SETTINGS` is the registry of every setting (name, default, unit, help); the
docs list them all and a test checks that. `load()` merges the sources in that
order and `validate()` reports every problem at once. After that, values travel
as constructor arguments: nothing else reads the environment or a file.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    unit: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "ats-data", "path", "folder holding the SQLite ledger and the node key"),
    Setting("listen_host", "127.0.0.1", "address", "HTTP listen address (loopback by default)"),
    Setting("listen_port", 8470, "port", "HTTP listen port"),
    Setting("skew_ms", 300_000, "ms", "accept events whose ts is within this much of the node's clock"),
    Setting("body_bytes_max", 4 * 1024 * 1024, "bytes", "largest HTTP request body"),
    Setting("batch_events_max", 1000, "events", "most envelopes in one POST /v1/events/batch"),
    Setting("checkpoint_events_max", 1024, "events", "most events appended in one batch (one transaction, one checkpoint)"),
    Setting("checkpoint_ms_max", 0, "ms", "longest a batch waits for more events before it commits (0: commit as soon as the writer is free)"),
    Setting("sqlite_synchronous", "full", "mode", "SQLite synchronous pragma: full (durable on power loss) or normal (durable on process crash)"),
    Setting("startup_check_entries", 250, "entries", "at start, the newest this many entries of the node's own log and as many random others are rechecked against its signed checkpoint (docs/integrity.md; 0: off)"),
    Setting("verify_threads", 0, "threads", "threads verifying signatures (0: one per core)"),
    Setting("verify_processes", -1, "processes", "worker processes parsing and verifying batches and fetched pages (-1: one per core but one, at least 1; 0: none, all in the node's own process)"),
    Setting("reader_threads", 4, "threads", "SQLite read connections"),
    Setting("entries_page_max", 1000, "entries", "most entries returned by one GET /v1/log/entries"),
    Setting("usage_events_max", 1000, "events", "most events listed by one GET /v1/agents/{agent}/usage"),
    Setting("shutdown_timeout_ms", 10_000, "ms", "grace period for in-flight requests on shutdown"),
    Setting("log_level", "info", "level", "diagnostics level: debug, info, warning, error"),
    Setting("authorities", (), "hex keys", "governance authority public keys: may sign registrations, plans, suspensions, proposals and votes"),
    Setting("oracles", (), "hex keys", "oracle public keys: may sign stake.set records"),
    Setting("governance_threshold", 0, "votes", "approvals that adopt a proposal (m of n; 0: a majority of the authorities)"),
    Setting("unregistered_agents", "default", "mode", "an agent with no agent.register record: 'default' (put on default_plan) or 'refuse' (422 unknown_agent)"),
    Setting("default_plan", "freemium", "plan", "the plan of agents with no agent.register record (when unregistered_agents is default)"),
    Setting("budgets", True, "bool", "enforce budgets at admission (false: record only)"),
    Setting("alert_webhooks", (), "URLs", "URLs that receive every alert as a JSON POST (retried, never blocking admission)"),
    Setting("alert_retry_max", 5, "attempts", "delivery attempts per alert and webhook"),
    Setting("peers", (), "URLs", "static peer list: nodes to replicate with (http://host:port), for networks without multicast"),
    Setting("open_membership", False, "bool", "development only: merge every origin and accept every peer, admitted by a node.admit record or not"),
    Setting("replication_interval_ms", 500, "ms", "pause between anti-entropy rounds with each peer"),
    Setting("replication_entries_max", 1000, "entries", "most entries fetched in one request (bounded frames)"),
    Setting("peer_count_max", 64, "peers", "most peers this node keeps (static, discovered and exchanged)"),
    Setting("witness_quorum", 1, "witnesses", "cosignatures a checkpoint needs to count as anchored"),
    Setting("advertise_url", "", "URL", "the URL peers should use for this node (empty: the listen URL, unless it is a wildcard address)"),
    Setting("anchor_sink", "", "path or URL", "where anchored checkpoints go: a file to append to, or an http(s) URL to POST to (empty: nowhere)"),
    # LAN discovery is opt-in, as Serf's -discover is: by default mDNS stays on 127.0.0.1, so a
    # node never multicasts on the host's networks unless its owner names the interfaces.
    Setting("discovery", "loopback", "mode", "find peers by mDNS: 'loopback' (127.0.0.1 only, nodes of this host), 'interfaces' (the discovery_interfaces) or 'off'"),
    Setting("discovery_interfaces", (), "IPv4 addresses", "addresses of the interfaces mDNS runs on when discovery is 'interfaces' (explicit: never all interfaces)"),
    # Strict mode (docs/strict.md): budget rights in escrow, so the cluster never overspends.
    Setting("strict_budgets", (), "metrics", "budgets enforced in strict mode: a metric ('act.cost') or scope:metric ('team:act.cost'); every member must list the same"),
    Setting("strict_members", (), "hex keys", "node keys among which strict budgets' rights are split (every member must list the same set)"),
    Setting("strict_members_next", (), "hex keys", "the member set from strict_members_from_ms on (empty: no change)"),
    Setting("strict_members_from_ms", 0, "ms", "windows starting at or after this time use strict_members_next"),
    Setting("strict_retry_ms", 100, "ms", "Retry-After of a 429 no_rights refusal (the node is asking its peers for rights), and how often a held event is tried again"),
    Setting("strict_wait_ms", 2000, "ms", "how long an event refused for want of rights is held while the node asks its peers, before it is answered 429 no_rights (0: answer at once)"),
    # The owner's dashboard (docs/dashboard.md): open on a loopback listen address, behind a token elsewhere.
    Setting("dashboard_auth", "auto", "mode", "who may open the dashboard: 'auto' (anyone when listen_host is loopback, else dashboard_token holders) or 'token' (always dashboard_token holders)"),
    Setting("dashboard_token", "", "secret", "the dashboard's access token (at least 16 characters; empty: none, so off loopback the dashboard answers 403)"),
    # Usage reports, anomaly detection and metrics (docs/reports.md).
    Setting("anomaly_detection", True, "bool", "flag sudden spikes per agent and metric at ingest (an anomaly alert and a trust penalty)"),
    Setting("anomaly_threshold_milli", 3500, "z-score × 1000", "score at which a spike is flagged (3500: 3.5 standard deviations above the agent's baseline)"),
    Setting("anomaly_warmup_events", 32, "events", "events of an agent and metric seen before its spikes can be flagged"),
    Setting("anomaly_agents_max", 10_000, "agents", "agents whose detectors are kept in memory (least recently seen forgotten first)"),
    Setting("metrics_budget_scopes_max", 100, "scopes", "most scopes whose budgets /metrics exports (bounds label cardinality)"),
    # Exporters (docs/fleets.md): committed entries to PostgreSQL and NATS JetStream, effectively once; off by default.
    Setting("export_postgres", "", "libpq URL", "export events, log positions and checkpoints to this PostgreSQL database (postgresql://user@host:port/db; empty: off)"),
    Setting("export_nats", "", "URL", "export each event as a message to NATS JetStream at this server (nats://host:port; empty: off)"),
    Setting("export_nats_stream", "ATS", "name", "the JetStream stream that holds the exported subjects ats.events.> (created if missing)"),
    Setting("export_origins", "own", "mode", "which origin logs the exporters send: 'own' (this node's log) or 'all' (every origin held: a fleet collector)"),
    Setting("export_retry_ms_max", 10_000, "ms", "longest pause between two attempts to reach a sink that is down (the backoff doubles up to it)"),
    Setting("export_alert_events", 100_000, "events", "an export_backlog alert fires when a sink's backlog reaches this many entries"),
    Setting("export_alert_ms", 300_000, "ms", "an export_backlog alert also fires when the oldest entry a sink has not yet received is this old"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    data_dir: str = "ats-data"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8470
    skew_ms: int = 300_000
    body_bytes_max: int = 4 * 1024 * 1024
    batch_events_max: int = 1000
    checkpoint_events_max: int = 1024
    checkpoint_ms_max: int = 0
    sqlite_synchronous: str = "full"
    startup_check_entries: int = 250
    verify_threads: int = 0
    verify_processes: int = -1
    reader_threads: int = 4
    entries_page_max: int = 1000
    usage_events_max: int = 1000
    shutdown_timeout_ms: int = 10_000
    log_level: str = "info"
    authorities: tuple[str, ...] = ()
    oracles: tuple[str, ...] = ()
    governance_threshold: int = 0
    unregistered_agents: str = "default"
    default_plan: str = "freemium"
    budgets: bool = True
    alert_webhooks: tuple[str, ...] = ()
    alert_retry_max: int = 5
    peers: tuple[str, ...] = ()
    open_membership: bool = False
    replication_interval_ms: int = 500
    replication_entries_max: int = 1000
    peer_count_max: int = 64
    witness_quorum: int = 1
    advertise_url: str = ""
    anchor_sink: str = ""
    discovery: str = "loopback"
    discovery_interfaces: tuple[str, ...] = ()
    strict_budgets: tuple[str, ...] = ()
    strict_members: tuple[str, ...] = ()
    strict_members_next: tuple[str, ...] = ()
    strict_members_from_ms: int = 0
    strict_retry_ms: int = 100
    strict_wait_ms: int = 2000
    dashboard_auth: str = "auto"
    dashboard_token: str = ""
    anomaly_detection: bool = True
    anomaly_threshold_milli: int = 3500
    anomaly_warmup_events: int = 32
    anomaly_agents_max: int = 10_000
    metrics_budget_scopes_max: int = 100
    export_postgres: str = ""
    export_nats: str = ""
    export_nats_stream: str = "ATS"
    export_origins: str = "own"
    export_retry_ms_max: int = 10_000
    export_alert_events: int = 100_000
    export_alert_ms: int = 300_000

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "ledger.sqlite")

    @property
    def key_path(self) -> str:
        return os.path.join(self.data_dir, "node.key")


class ConfigError(Exception):
    """Every problem found in the configuration, one per line."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


def _coerce(name: str, value: Any, problems: list[str]) -> Any:
    default = _BY_NAME[name].default
    if isinstance(default, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            problems.append(f"{name}: must be a list of strings")
            return default
        return tuple(i.strip() for i in items if i.strip())
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            problems.append(f"{name}: {value!r} is not an integer")
            return default
    return str(value)


def load(
    file: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge defaults < TOML file < ATS_* environment < flags, then validate."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    if file:
        try:
            with open(file, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError([f"config file {file}: {e}"]) from None
        section = doc.get("node", doc)
        for key, value in section.items():
            if isinstance(value, dict):
                continue  # other sections belong to later features
            if key not in _BY_NAME:
                problems.append(f"{file}: unknown setting {key!r}")
            else:
                values[key] = _coerce(key, value, problems)
    for key, value in (env or {}).items():
        if key.startswith("ATS_"):
            name = key[4:].lower()
            if name in _BY_NAME:
                values[name] = _coerce(name, value, problems)
    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, problems)
    config = replace(Config(), **values)
    problems.extend(validate(config))
    if problems:
        raise ConfigError(problems)
    return config


def validate(config: Config) -> list[str]:
    """Every problem with config, as sentences; empty when it is valid."""
    problems = []
    positive = (
        "body_bytes_max",
        "batch_events_max",
        "checkpoint_events_max",
        "reader_threads",
        "entries_page_max",
        "usage_events_max",
    )
    for name in positive:
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    for name in ("skew_ms", "checkpoint_ms_max", "verify_threads", "shutdown_timeout_ms", "startup_check_entries"):
        if getattr(config, name) < 0:
            problems.append(f"{name} must not be negative")
    if config.verify_processes < -1:
        problems.append("verify_processes must be -1 (one per core), 0 (none) or more")
    if not 0 <= config.listen_port <= 65535:
        problems.append("listen_port must be 0..65535")
    if config.sqlite_synchronous not in ("full", "normal"):
        problems.append("sqlite_synchronous must be full or normal")
    if config.log_level not in ("debug", "info", "warning", "error"):
        problems.append("log_level must be debug, info, warning or error")
    if not config.data_dir:
        problems.append("data_dir must not be empty")
    for name in ("authorities", "oracles"):
        for key in getattr(config, name):
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
                problems.append(f"{name}: {key!r} is not 64 lowercase hex digits")
    if config.governance_threshold < 0 or config.governance_threshold > max(1, len(config.authorities)):
        problems.append("governance_threshold must be between 0 and the number of authorities")
    from ledger.plans import PLANS

    if config.default_plan not in PLANS:
        problems.append(f"default_plan must be one of {', '.join(sorted(PLANS))}")
    if config.unregistered_agents not in ("default", "refuse"):
        problems.append("unregistered_agents must be default or refuse")
    for url in config.alert_webhooks:
        if not url.startswith(("http://", "https://")):
            problems.append(f"alert_webhooks: {url!r} is not an http(s) URL")
    for url in config.peers:
        if not url.startswith(("http://", "https://")):
            problems.append(f"peers: {url!r} is not an http(s) URL")
    for name in ("anomaly_threshold_milli", "anomaly_agents_max", "metrics_budget_scopes_max"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    if config.anomaly_warmup_events < 0:
        problems.append("anomaly_warmup_events must not be negative")
    for name in ("replication_interval_ms", "replication_entries_max", "peer_count_max"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    if config.witness_quorum < 0:
        problems.append("witness_quorum must not be negative")
    if config.alert_retry_max < 1:
        problems.append("alert_retry_max must be at least 1")
    problems.extend(_discovery_problems(config))
    problems.extend(_strict_problems(config))
    problems.extend(_export_problems(config))
    if config.dashboard_auth not in ("auto", "token"):
        problems.append("dashboard_auth must be auto or token")
    if config.dashboard_token and (len(config.dashboard_token) < 16 or not config.dashboard_token.isprintable()
                                   or " " in config.dashboard_token):
        problems.append("dashboard_token must be at least 16 printable characters without spaces")
    return problems


def _strict_problems(config: Config) -> list[str]:
    problems = []
    for name in ("strict_members", "strict_members_next"):
        for key in getattr(config, name):
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
                problems.append(f"{name}: {key!r} is not 64 lowercase hex digits")
    if config.strict_budgets and not config.strict_members:
        problems.append("strict_budgets needs strict_members (the nodes that hold the rights)")
    if config.strict_wait_ms < 0:
        problems.append("strict_wait_ms must not be negative")
    if config.strict_members_from_ms < 0 or config.strict_retry_ms < 1:
        problems.append("strict_members_from_ms must not be negative and strict_retry_ms must be at least 1")
    return problems


def _export_problems(config: Config) -> list[str]:
    problems = []
    if config.export_postgres and not config.export_postgres.startswith(("postgresql://", "postgres://")):
        problems.append("export_postgres must be a libpq URL (postgresql://user@host:port/database)")
    if config.export_nats and not config.export_nats.startswith(("nats://", "tls://")):
        problems.append("export_nats must be a nats:// (or tls://) URL")
    if not config.export_nats_stream or not all(c.isalnum() or c in "_-" for c in config.export_nats_stream):
        problems.append("export_nats_stream must be letters, digits, _ or -")
    if config.export_origins not in ("own", "all"):
        problems.append("export_origins must be own or all")
    for name in ("export_retry_ms_max", "export_alert_events", "export_alert_ms"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    return problems


def _discovery_problems(config: Config) -> list[str]:
    problems = []
    if config.discovery not in ("loopback", "interfaces", "off"):
        problems.append("discovery must be loopback, interfaces or off")
    if config.discovery == "interfaces" and not config.discovery_interfaces:
        problems.append("discovery_interfaces must list at least one IPv4 address when discovery is interfaces")
    for text in config.discovery_interfaces:
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            problems.append(f"discovery_interfaces: {text!r} is not an IPv4 address")
            continue
        if addr.is_unspecified or addr.is_multicast:
            problems.append(f"discovery_interfaces: {text} is not the address of one interface")
    return problems


assert {f.name for f in fields(Config)} == set(_BY_NAME), "Config and SETTINGS must list the same settings"
assert all(getattr(Config(), s.name) == s.default for s in SETTINGS), "Config defaults must match SETTINGS"
