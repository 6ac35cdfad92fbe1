"""Node configuration: defaults in code → TOML file → ATS_* environment → CLI flags.

`SETTINGS` is the registry of every setting (name, default, unit, help); the
docs list them all and a test checks that. `load()` merges the sources in that
order and `validate()` (node/configcheck.py) reports every problem at once. After that, values travel
as constructor arguments: nothing else reads the environment or a file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from node.configcheck import validate


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    unit: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "ats-data", "path", "folder holding the SQLite ledger and the node key"),
    Setting("node_key", "", "secret", "the node's private key as text: 64 hex digits, or a whole key file (ATS JSON, PKCS#8 PEM, OpenSSH); set it from the environment, not a file others read (empty: node_key_file)"),
    Setting("node_key_file", "", "path", "the node's key file (ATS JSON, PKCS#8 PEM or OpenSSH; must exist; any mode but world-writable) (empty: data_dir/node.key, created on first start)"),
    Setting("listen_host", "127.0.0.1", "address", "HTTP listen address (loopback by default)"),
    Setting("listen_port", 8470, "port", "HTTP listen port"),
    # TLS (docs/operations.md#tls): HTTPS on the same port, and how this node verifies its peers.
    Setting("tls_cert", "", "path", "PEM certificate chain: with tls_key, the node serves HTTPS (agents, dashboard, peers) on listen_port (empty: plain HTTP)"),
    Setting("tls_key", "", "path", "PEM private key of tls_cert"),
    Setting("tls_ca", "", "path", "PEM CA bundle that peers' certificates must chain to (empty: the system's trust store)"),
    Setting("tls_pins", (), "SHA-256 fingerprints", "pinned peer certificates: a peer's leaf certificate must have one of these SHA-256 fingerprints (hex, colons allowed); replaces tls_ca"),
    Setting("skew_ms", 300_000, "ms", "accept events whose ts is within this much of the node's clock"),
    Setting("body_bytes_max", 2 * 1024 * 1024, "bytes", "largest HTTP request body (a full batch as JSON fits)"),
    Setting("batch_events_max", 256, "events", "most envelopes in one POST /v1/events/batch (a batch is parsed on the event loop: a bigger one delays every other request for longer)"),
    Setting("checkpoint_events_max", 1024, "events", "most events appended in one batch (one transaction, one checkpoint)"),
    Setting("checkpoint_ms_max", 0, "ms", "longest a batch waits for more events before it commits (0: commit as soon as the writer is free)"),
    Setting("event_loop", "asyncio", "mode", "the event loop: 'asyncio' (the standard library's) or 'uvloop' (libuv's; pip install 'ats-ledger[uvloop]')"),
    Setting("sqlite_synchronous", "full", "mode", "SQLite synchronous pragma: full (durable on power loss) or normal (durable on process crash)"),
    Setting("startup_check_entries", 250, "entries", "at start, the newest this many entries of the node's own log and as many random others are rechecked against its signed checkpoint (docs/integrity.md; 0: off)"),
    Setting("verify_threads", 0, "threads", "threads verifying signatures (0: one per core)"),
    Setting("singles_inline_max", 1024, "requests", "single CBOR events handled at once up to which each is parsed and verified in the node's own process (~60 µs, no round trip); past it they go to the worker processes (0: always to the workers when they run)"),
    Setting("verify_processes", -1, "processes", "worker processes parsing and verifying submitted envelopes (CBOR: single events and batches) and fetched pages (-1: one per core but one, at least 1; 0: none, all in the node's own process)"),
    Setting("reader_threads", 4, "threads", "SQLite read connections"),
    Setting("wal_checkpoint_ms", 100, "ms", "copy the SQLite WAL into the database file on a thread of its own at most this often while commits come in (0: SQLite's automatic checkpoint, inside the writer's commits)"),
    Setting("entries_page_max", 1000, "entries", "most entries returned by one GET /v1/log/entries"),
    Setting("usage_events_max", 1000, "events", "most events listed by one GET /v1/agents/{agent}/usage"),
    Setting("shutdown_timeout_ms", 10_000, "ms", "grace period for in-flight requests on shutdown"),
    Setting("log_level", "info", "level", "diagnostics level: debug, info, warning, error"),
    Setting("authorities", (), "hex keys", "governance authority public keys: may sign registrations, plans, suspensions, proposals and votes"),
    Setting("oracles", (), "hex keys", "oracle public keys: may sign stake.set records"),
    Setting("team_admins", (), "team=hex key", "team admin keys (team=64 hex digits each): may sign budget.set and budget.rm for their own team's scope, as an authority may for any scope; every node of a cluster needs the same list"),
    Setting("governance_threshold", 0, "votes", "approvals that adopt a proposal (m of n; 0: a majority of the authorities)"),
    Setting("unregistered_agents", "default", "mode", "an agent with no agent.register record: 'default' (put on default_plan) or 'refuse' (422 unknown_agent)"),
    Setting("default_plan", "freemium", "plan", "the plan of agents with no agent.register record (when unregistered_agents is default)"),
    Setting("budgets", True, "bool", "enforce budgets at admission (false: record only)"),
    Setting("read_auth", "auto", "mode", "who may read balances, usage, reports, budgets, metrics: 'auto' (anyone on a loopback listen address, a read token or the agent's JWT elsewhere), 'token' (always a credential) or 'open' (anyone, anywhere)"),
    Setting("log_public", True, "bool", "the log, events and proofs are open to anyone (false: an audit or all-scope read token is needed off loopback; peers replicating from this node then need one too)"),
    Setting("read_jwt_lifetime_max_s", 86_400, "s", "longest an agent's read JWT may live (exp - now)"),
    Setting("alert_webhooks", (), "URLs", "URLs that receive every alert as a JSON POST (retried, never blocking admission); URL#secret=S signs each POST (ATS-Signature: t=…,v1=HMAC-SHA256); slack+URL posts Slack's {\"text\": …}"),
    Setting("alert_retry_max", 5, "attempts", "delivery attempts per alert and webhook"),
    Setting("peers", (), "URLs", "static peer list: nodes to replicate with (http://host:port), for networks without multicast"),
    Setting("open_membership", False, "bool", "development only: merge every origin and accept every peer, admitted by a node.admit record or not"),
    Setting("replication_interval_ms", 500, "ms", "pause between anti-entropy rounds with each peer"),
    Setting("replication_entries_max", 1000, "entries", "most entries fetched in one request (bounded frames)"),
    Setting("peer_count_max", 64, "peers", "most peers this node keeps (static, discovered and exchanged)"),
    Setting("peer_protocol_v1", True, "bool", "rolling upgrade from 0.1: also sign peer requests as ats-peer/v1 and accept v1 requests from 0.1 nodes (their unsigned X-ATS-Advertise ignored); turn off once every node runs this release"),
    Setting("peer_nonces_max", 20_000, "requests", "signed peer requests remembered (node and X-ATS-Nonce, for skew_ms) so that none is acted on twice; when full the oldest is forgotten and requests as old are refused"),
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
    # Metering in the path (PROTOCOL.md §6, docs/gateway.md): the LLM gateway and the task meter.
    Setting("meters", (), "hex keys", "keys besides this node's that may sign metered events naming the agent charged (other gateways' nodes)"),
    Setting("llm_gateway", False, "bool", "serve the OpenAI-compatible LLM gateway under /llm/v1 (docs/gateway.md)"),
    Setting("llm_upstream", "", "URL", "base URL of the default OpenAI-compatible upstream, ending in /v1 (llama.cpp, vLLM, Ollama, a provider)"),
    Setting("llm_upstream_key", "", "secret", "the provider key the node sends upstream as its bearer token (never the agent's)"),
    Setting("llm_anthropic_upstream", "", "URL", "base URL of the default Anthropic-compatible upstream for POST /llm/v1/messages, ending in /v1"),
    Setting("llm_anthropic_upstream_key", "", "secret", "the provider key the node sends to llm_anthropic_upstream as x-api-key"),
    Setting("llm_routes", (), "model=URL", "per-model upstreams, 'model=http://host:port/v1'; other models go to llm_upstream"),
    Setting("llm_route_keys", (), "model=secret", "per-model provider keys, 'model=sk-...' (default: llm_upstream_key)"),
    Setting("llm_models", (), "names", "the models the gateway serves (empty: any model the routes and llm_upstream take); others get 404 unknown_model"),
    Setting("llm_token_lifetime_s_max", 90 * 86_400, "s", "the longest lifetime a gateway token may have left (exp - now)"),
    Setting("llm_max_tokens_default", 4096, "tokens", "output tokens reserved for a call that sets no max_tokens"),
    Setting("llm_output_tokens_max", 32_768, "tokens", "most output tokens reserved for one call (max_tokens above is capped here)"),
    Setting("llm_context_tokens_max", 200_000, "tokens", "most prompt tokens reserved for one call: a model's context window (per model: llm_model_limits)"),
    Setting("llm_model_limits", (), "model=context:output", "per-model caps of the reservation, 'model=128000:16384' (context window, most output tokens); either may be left empty"),
    Setting("llm_body_bytes_max", 1_048_576, "bytes", "largest gateway request body"),
    Setting("llm_response_bytes_max", 16 * 1_048_576, "bytes", "largest non-streamed upstream response (beyond: 502 upstream_bad_response, charged at reservation)"),
    Setting("llm_timeout_ms", 300_000, "ms", "longest an upstream call may take, streamed or not (beyond: 504 upstream_timeout, charged at reservation)"),
    Setting("llm_connect_timeout_ms", 5_000, "ms", "longest the gateway waits to connect to an upstream (beyond: 502 upstream_unreachable, nothing charged)"),
    Setting("llm_drain_ms", 60_000, "ms", "after a client leaves a stream, how long the gateway keeps reading it to learn its usage"),
    Setting("llm_drains_max", 32, "streams", "most abandoned streams read at once; beyond, an abandoned stream is cut and charged at reservation"),
    # Hostile clients (issue 10): connections, slow requests, fairness between clients, health, logs.
    Setting("connections_max", 1024, "connections", "open HTTP connections; one more is answered 503 too_many_connections and closed (always at least 256 below the open-files limit, which the node raises to its hard limit at start)"),
    Setting("connections_per_client_max", 64, "connections", "open HTTP connections from one remote address; one more is answered 429 too_many_client_connections"),
    Setting("http_head_timeout_ms", 10_000, "ms", "a connection must send a complete request head within this long of opening or of its previous response, else it is closed (also the idle keep-alive time)"),
    Setting("http_body_timeout_ms", 10_000, "ms", "a request body must arrive within this long of its head, else 408 body_timeout and the connection is closed"),
    Setting("http_write_timeout_ms", 30_000, "ms", "a client must take some of an answer the node is writing (a streamed LLM answer, a page of entries) within this long once the node's buffer for it is full, else the connection is cut (a gateway stream then goes on to learn its usage); 0: no bound"),
    Setting("http_header_bytes_max", 8190, "bytes", "longest request line and longest header line (else 400 header_too_large)"),
    Setting("http_headers_max", 48, "headers", "most header lines in one request (else 400 header_too_large)"),
    Setting("client_bytes_per_s", 4 * 1024 * 1024, "bytes/s", "bytes read per second from one client (remote address), over all its connections, after a burst of body_bytes_max; past it its connections are not read until the budget refills"),
    Setting("heavy_requests_max", 8, "requests", "requests with a body over 16 KiB (batches) processed at once, over all clients; more wait their turn"),
    Setting("heavy_requests_per_client_max", 2, "requests", "requests with a body over 16 KiB processed at once for one client (remote address); its others wait their turn"),
    Setting("commit_share_events", 8, "events", "most events of one client (remote address) in one commit: clients' requests are committed round-robin, so one client's big batches cannot starve another's single events"),
    Setting("commit_pace_gap_ms", 3, "ms", "while a client sending one event at a time is expected back within this long, another client's bulk events are committed only in portions that end before it is back, so it finds the writer free (node/fairqueue.py); 0: no pacing"),
    Setting("commit_bulk_min_pct", 10, "%", "while a client sending one event at a time is expected back (commit_pace_gap_ms), the least share of the writer's time bulk clients still get, in full commit_share_events commits; the rest of their events fill the gaps (node/fairqueue.py); 1-100"),
    Setting("disk_free_bytes_min", 16 * 1024 * 1024, "bytes", "below this much free space in data_dir, /healthz reports writes as failing (disk_full)"),
    Setting("log_repeats_max", 5, "records", "most diagnostics records of one kind (logger, level, message, exception) per log_period_ms; the next period's first says how many were dropped (0: no limit)"),
    Setting("log_period_ms", 10_000, "ms", "the period of log_repeats_max"),
)

_BY_NAME = {s.name: s for s in SETTINGS}
# A secret setting X without its own X_file setting may also be read from a file named by
# X_file in TOML or ATS_X_FILE in the environment (the Docker and systemd credentials habit).
_SECRET_FILES = {f"{s.name}_file": s.name for s in SETTINGS if s.unit == "secret" and f"{s.name}_file" not in _BY_NAME}


@dataclass(frozen=True)
class Config:
    data_dir: str = "ats-data"
    node_key: str = field(default="", repr=False)
    node_key_file: str = ""
    listen_host: str = "127.0.0.1"
    listen_port: int = 8470
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_pins: tuple[str, ...] = ()
    skew_ms: int = 300_000
    body_bytes_max: int = 2 * 1024 * 1024
    batch_events_max: int = 256
    checkpoint_events_max: int = 1024
    checkpoint_ms_max: int = 0
    event_loop: str = "asyncio"
    sqlite_synchronous: str = "full"
    startup_check_entries: int = 250
    verify_threads: int = 0
    singles_inline_max: int = 1024
    verify_processes: int = -1
    reader_threads: int = 4
    wal_checkpoint_ms: int = 100
    entries_page_max: int = 1000
    usage_events_max: int = 1000
    shutdown_timeout_ms: int = 10_000
    log_level: str = "info"
    authorities: tuple[str, ...] = ()
    oracles: tuple[str, ...] = ()
    team_admins: tuple[str, ...] = ()
    governance_threshold: int = 0
    unregistered_agents: str = "default"
    default_plan: str = "freemium"
    budgets: bool = True
    read_auth: str = "auto"
    log_public: bool = True
    read_jwt_lifetime_max_s: int = 86_400
    alert_webhooks: tuple[str, ...] = ()
    alert_retry_max: int = 5
    peers: tuple[str, ...] = ()
    open_membership: bool = False
    replication_interval_ms: int = 500
    replication_entries_max: int = 1000
    peer_count_max: int = 64
    peer_protocol_v1: bool = True
    peer_nonces_max: int = 20_000
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
    dashboard_token: str = field(default="", repr=False)
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
    meters: tuple[str, ...] = ()
    llm_gateway: bool = False
    llm_upstream: str = ""
    llm_upstream_key: str = ""
    llm_anthropic_upstream: str = ""
    llm_anthropic_upstream_key: str = ""
    llm_routes: tuple[str, ...] = ()
    llm_route_keys: tuple[str, ...] = ()
    llm_models: tuple[str, ...] = ()
    llm_token_lifetime_s_max: int = 90 * 86_400
    llm_max_tokens_default: int = 4096
    llm_output_tokens_max: int = 32_768
    llm_context_tokens_max: int = 200_000
    llm_model_limits: tuple[str, ...] = ()
    llm_body_bytes_max: int = 1_048_576
    llm_response_bytes_max: int = 16 * 1_048_576
    llm_timeout_ms: int = 300_000
    llm_connect_timeout_ms: int = 5_000
    llm_drain_ms: int = 60_000
    llm_drains_max: int = 32
    connections_max: int = 1024
    connections_per_client_max: int = 64
    http_head_timeout_ms: int = 10_000
    http_body_timeout_ms: int = 10_000
    http_write_timeout_ms: int = 30_000
    http_header_bytes_max: int = 8190
    http_headers_max: int = 48
    client_bytes_per_s: int = 4 * 1024 * 1024
    heavy_requests_max: int = 8
    heavy_requests_per_client_max: int = 2
    commit_share_events: int = 8
    commit_pace_gap_ms: int = 3
    commit_bulk_min_pct: int = 10
    disk_free_bytes_min: int = 16 * 1024 * 1024
    log_repeats_max: int = 5
    log_period_ms: int = 10_000

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


def _secret_file(path: str, source: str, problems: list[str]) -> str:
    """The stripped text of a secret file named by source; a problem (not an exception) when unreadable."""
    from node.keys import KeyFileError, read_secret_file

    try:
        return read_secret_file(path, f"{source} file").strip()
    except KeyFileError as e:
        problems.append(str(e))
        return ""


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
            if key in _SECRET_FILES:
                values[_SECRET_FILES[key]] = _secret_file(str(value), key, problems)
            elif key not in _BY_NAME:
                problems.append(f"{file}: unknown setting {key!r}")
            else:
                values[key] = _coerce(key, value, problems)
    for key, value in (env or {}).items():
        if key.startswith("ATS_"):
            name = key[4:].lower()
            if name in _BY_NAME:
                values[name] = _coerce(name, value, problems)
            elif name in _SECRET_FILES and f"ATS_{_SECRET_FILES[name].upper()}" not in env:
                values[_SECRET_FILES[name]] = _secret_file(value, key, problems)
    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, problems)
    config = replace(Config(), **values)
    problems.extend(validate(config))
    if problems:
        raise ConfigError(problems)
    return config


assert {f.name for f in fields(Config)} == set(_BY_NAME), "Config and SETTINGS must list the same settings"
assert all(getattr(Config(), s.name) == s.default for s in SETTINGS), "Config defaults must match SETTINGS"
