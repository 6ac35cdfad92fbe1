"""Every problem with a node's configuration, as sentences (node/config.py's `validate`).

Each group of settings has its own function; `validate` runs them in a fixed order and
returns every problem at once, so a person fixes a config file in one pass. The checks
only read a `Config`'s fields: nothing here reads a file or the environment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # node/config.py imports this module; the type is only an annotation here
    from node.config import Config

_HEX64 = re.compile(r"[0-9a-f]{64}")


def validate(config: Config) -> list[str]:
    """Every problem with config, as sentences; empty when it is valid."""
    return [problem for check in _CHECKS for problem in check(config)]


# -- shared rules ------------------------------------------------------------------------


def _at_least_1(config: Config, names: Iterable[str]) -> list[str]:
    return [f"{name} must be at least 1" for name in names if getattr(config, name) < 1]


def _not_negative(config: Config, names: Iterable[str]) -> list[str]:
    return [f"{name} must not be negative" for name in names if getattr(config, name) < 0]


def _one_of(config: Config, name: str, choices: tuple[str, ...]) -> list[str]:
    if getattr(config, name) in choices:
        return []
    return [f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}"]


def _hex_keys(config: Config, name: str) -> list[str]:
    return [f"{name}: {key!r} is not 64 lowercase hex digits" for key in getattr(config, name)
            if not _HEX64.fullmatch(key)]


# -- groups, in the order problems are reported ----------------------------------------------


def _basic_problems(config: Config) -> list[str]:
    problems = _at_least_1(config, ("body_bytes_max", "batch_events_max", "checkpoint_events_max", "reader_threads",
                                    "entries_page_max", "usage_events_max"))
    problems += _not_negative(config, ("skew_ms", "checkpoint_ms_max", "wal_checkpoint_ms", "verify_threads", "shutdown_timeout_ms",
                                       "startup_check_entries"))
    if config.verify_processes < -1:
        problems.append("verify_processes must be -1 (one per core), 0 (none) or more")
    if not 0 <= config.listen_port <= 65535:
        problems.append("listen_port must be 0..65535")
    problems += _one_of(config, "sqlite_synchronous", ("full", "normal"))
    problems += _one_of(config, "event_loop", ("asyncio", "uvloop"))
    problems += _one_of(config, "log_level", ("debug", "info", "warning", "error"))
    if not config.data_dir:
        problems.append("data_dir must not be empty")
    return problems


def _governance_problems(config: Config) -> list[str]:
    from ledger.plans import PLANS

    problems = _hex_keys(config, "authorities") + _hex_keys(config, "oracles")
    problems += _one_of(config, "read_auth", ("auto", "token", "open"))
    for entry in config.team_admins:
        team, _, key = entry.partition("=")
        if not re.fullmatch(r"[a-z0-9._-]{1,64}", team) or not _HEX64.fullmatch(key):
            problems.append(f"team_admins: {entry!r} is not team=64 lowercase hex digits")
    if config.governance_threshold < 0 or config.governance_threshold > max(1, len(config.authorities)):
        problems.append("governance_threshold must be between 0 and the number of authorities")
    if config.default_plan not in PLANS:
        problems.append(f"default_plan must be one of {', '.join(sorted(PLANS))}")
    return problems + _one_of(config, "unregistered_agents", ("default", "refuse"))


def _url_problems(config: Config) -> list[str]:
    from ledger.webhooks import parse_target

    problems = []
    for url in config.alert_webhooks:
        try:
            parse_target(url)
        except ValueError as e:
            problems.append(f"alert_webhooks: {e}")
    return problems + [f"peers: {url!r} is not an http(s) URL" for url in config.peers
                       if not url.startswith(("http://", "https://"))]


def _limit_problems(config: Config) -> list[str]:
    problems = _at_least_1(config, ("connections_max", "connections_per_client_max", "http_head_timeout_ms",
                                    "http_body_timeout_ms", "http_header_bytes_max", "http_headers_max",
                                    "commit_share_events", "log_period_ms", "heavy_requests_max",
                                    "heavy_requests_per_client_max", "client_bytes_per_s"))
    problems += _not_negative(config, ("disk_free_bytes_min", "log_repeats_max", "commit_pace_gap_ms", "singles_inline_max",
                                       "http_write_timeout_ms"))
    problems += _at_least_1(config, ("anomaly_threshold_milli", "anomaly_agents_max", "metrics_budget_scopes_max"))
    problems += _not_negative(config, ("anomaly_warmup_events",))
    problems += _at_least_1(config, ("replication_interval_ms", "replication_entries_max", "peer_count_max",
                                     "peer_nonces_max"))
    problems += _not_negative(config, ("witness_quorum",))
    if not 1 <= config.commit_bulk_min_pct <= 100:
        problems.append("commit_bulk_min_pct must be between 1 and 100")
    return problems + _at_least_1(config, ("alert_retry_max",))


def _discovery_problems(config: Config) -> list[str]:
    problems = _one_of(config, "discovery", ("loopback", "interfaces", "off"))
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


def _tls_problems(config: Config) -> list[str]:
    problems = []
    if bool(config.tls_cert) != bool(config.tls_key):
        problems.append("tls_cert and tls_key go together: set both (HTTPS) or neither (HTTP)")
    for pin in config.tls_pins:
        if not _HEX64.fullmatch(pin.replace(":", "").lower()):
            problems.append(f"tls_pins: {pin!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return problems


def _llm_table_problems(config: Config) -> tuple[list[str], list[tuple[str, str]]]:
    """Problems in llm_model_limits, llm_routes and llm_route_keys; and the routes' (setting, URL)."""
    problems, urls = [], []
    for item in config.llm_model_limits:
        model, sep, caps = item.partition("=")
        parts = caps.split(":")
        if not sep or not model.strip() or len(parts) != 2 or not all(p.strip() == "" or p.strip().isdigit() for p in parts):
            problems.append(f"llm_model_limits: {item!r} is not model=context:output (whole numbers, either may be empty)")
    for name in ("llm_routes", "llm_route_keys"):
        for item in getattr(config, name):
            model, sep, value = item.partition("=")
            if not sep or not model.strip() or not value.strip():
                problems.append(f"{name}: {item!r} is not model=value")
            elif name == "llm_routes":
                urls.append((name, value.strip()))
    return problems, urls


def _gateway_problems(config: Config) -> list[str]:
    problems = _hex_keys(config, "meters")
    urls = [(n, getattr(config, n)) for n in ("llm_upstream", "llm_anthropic_upstream") if getattr(config, n)]
    table_problems, route_urls = _llm_table_problems(config)
    problems += table_problems
    problems += [f"{name}: {url!r} is not an http(s) URL" for name, url in urls + route_urls
                 if not url.startswith(("http://", "https://"))]
    if config.llm_gateway and not (config.llm_upstream or config.llm_anthropic_upstream or config.llm_routes):
        problems.append("llm_gateway needs llm_upstream (or llm_anthropic_upstream, or llm_routes)")
    problems += _at_least_1(config, ("llm_token_lifetime_s_max", "llm_max_tokens_default", "llm_output_tokens_max",
                                     "llm_context_tokens_max", "llm_body_bytes_max", "llm_response_bytes_max",
                                     "llm_timeout_ms", "llm_connect_timeout_ms", "llm_drain_ms"))
    return problems + _not_negative(config, ("llm_drains_max",))


def _strict_problems(config: Config) -> list[str]:
    problems = _hex_keys(config, "strict_members") + _hex_keys(config, "strict_members_next")
    if config.strict_budgets and not config.strict_members:
        problems.append("strict_budgets needs strict_members (the nodes that hold the rights)")
    problems += _not_negative(config, ("strict_wait_ms",))
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
    problems += _one_of(config, "export_origins", ("own", "all"))
    return problems + _at_least_1(config, ("export_retry_ms_max", "export_alert_events", "export_alert_ms"))


def _dashboard_problems(config: Config) -> list[str]:
    problems = _one_of(config, "dashboard_auth", ("auto", "token"))
    token = config.dashboard_token
    if token and (len(token) < 16 or not token.isprintable() or " " in token):
        problems.append("dashboard_token must be at least 16 printable characters without spaces")
    return problems


_CHECKS: tuple[Callable[[Config], list[str]], ...] = (
    _basic_problems, _governance_problems, _url_problems, _limit_problems, _discovery_problems, _tls_problems,
    _gateway_problems, _strict_problems, _export_problems, _dashboard_problems,
)
