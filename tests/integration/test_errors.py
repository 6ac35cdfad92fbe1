"""Every error path of the HTTP API, against a real node: status, stable code, contract shape,
and that nothing was stored."""

import json
import os
import sqlite3
import time

import pytest

from ledger import encoding
from ledger.errors import CODES
from ledger.events import make_envelope_bytes
from ledger.signing import sign
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor, post_json, request
from tests.integration.nodeproc import NodeProcess

AGENT = TestAgent(bytes(range(32)))
AUTHORITY = TestAgent(bytes([7]) * 32)

# Codes no HTTP request can produce yet, and why. The completeness test below
# fails if a code is neither walked nor listed here.
NOT_REACHABLE_OVER_HTTP = {
    "replayed": "reserved: a replayed id is answered as a duplicate (an outcome, not an error)",
    "not_ready": "only while shutting down or on a storage error",
    "write_failing": "/healthz after a storage error other than a full disk (a full disk is walked: disk_full)",
    "internal": "our own bug; rendered by the middleware",
    "malformed_note": "checkpoint parsing is client-side (ats audit), not an API input",
    "malformed_checkpoint": "checkpoint parsing is client-side (ats audit), not an API input",
    "unknown_key": "checkpoint parsing is client-side (ats audit), not an API input",
    "cbor_too_many_items": "only a peer's entries page is bounded in items below its byte count, and a peer's"
                           " bad page is a peer protocol fault, never an API answer",
    "insufficient_rights": "escrow.transfer records are written by the giving node itself, for at most what it"
                           " can spare (an ask is answered with less, or nothing); the check guards the writer",
}
# Codes that need state (a spent budget, an open run): walked by the named test.
WALKED_ELSEWHERE = {
    "read_token_required": "test_read_access.test_read_tokens_from_the_cli_open_reads_and_revoked_or_foreign_ones_do_not",
    "bad_token": "test_read_access.test_read_tokens_from_the_cli_open_reads_and_revoked_or_foreign_ones_do_not",
    "token_expired": "test_read_access.test_read_tokens_from_the_cli_open_reads_and_revoked_or_foreign_ones_do_not",
    "token_revoked": "test_read_access.test_read_tokens_from_the_cli_open_reads_and_revoked_or_foreign_ones_do_not",
    "token_scope": "test_read_access.test_read_tokens_from_the_cli_open_reads_and_revoked_or_foreign_ones_do_not",
    "budget_exists": "test_owner_budgets.test_bad_budget_records_each_get_their_code_and_nothing_is_applied",
    "budget_not_found": "test_owner_budgets.test_bad_budget_records_each_get_their_code_and_nothing_is_applied",
    "effective_in_past": "test_owner_budgets.test_bad_budget_records_each_get_their_code_and_nothing_is_applied",
    "invalid_limit": "test_owner_budgets.test_bad_budget_records_each_get_their_code_and_nothing_is_applied",
    "invalid_scope": "test_owner_budgets.test_bad_budget_records_each_get_their_code_and_nothing_is_applied",
    "unknown_metric": "test_owner_budgets.test_bad_budget_records_each_get_their_code_and_nothing_is_applied",
    "unknown_window": "test_owner_budgets.test_bad_budget_records_each_get_their_code_and_nothing_is_applied",
    "name_taken": "test_owner_budgets.test_names_from_registration_work_wherever_an_identity_is_taken",
    "unknown_name": "test_owner_budgets.test_names_from_registration_work_wherever_an_identity_is_taken",
    "read_only": "test_ingest.test_tampered_log_makes_node_read_only",
    "storage_error": "test_hostile_input.test_a_storage_error_fails_one_batch_and_the_writer_goes_on",
    "unknown_agent": "test_budgets.test_unregistered_agents_get_the_default_plan_or_are_refused",
    "budget_exceeded": "test_budgets.test_reserve_then_hard_limit_rejects_with_retry_after_and_suspends_until_lifted",
    "suspended": "test_budgets.test_reserve_then_hard_limit_rejects_with_retry_after_and_suspends_until_lifted",
    "throttled": "test_budgets.test_soft_limit_warns_then_throttles",
    "too_many_runs": "test_budgets.test_run_reservation_lifecycle",
    "tool_not_allowed": "test_budgets.test_run_reservation_lifecycle",
    "run_limit_exceeded": "test_budgets.test_run_reservation_lifecycle",
    "run_exists": "test_budgets.test_run_reservation_lifecycle",
    "proposal_expired": "test_budgets.test_vote_after_expiry_is_refused",
    "not_anchored": "test_replication.test_witness_cosignatures_anchor_checkpoints",
    "peer_request_replayed": "test_hostile_peers.test_a_captured_peer_request_with_a_forged_advertise_is_refused_and_replays_count_once",
    "malformed_http": "test_hostile_clients.test_malformed_http_gets_a_json_400_with_a_code_and_no_traceback",
    "header_too_large": "test_hostile_clients.test_malformed_http_gets_a_json_400_with_a_code_and_no_traceback",
    "body_timeout": "test_hostile_clients.test_a_slow_body_is_answered_408_body_timeout_and_closed",
    "expectation_failed": "test_hostile_clients.test_an_expect_header_gets_a_json_answer_and_100_continue_only_for_a_body_that_would_be_read",
    "too_many_connections": "test_hostile_clients.test_the_nodes_own_connection_bound_is_503_whoever_asks",
    "too_many_client_connections": "test_hostile_clients.test_connections_over_the_bounds_get_429_or_503_and_a_flood_does_not_flood_the_log",
    "disk_full": "test_hostile_clients.test_health_says_writes_fail_on_a_full_disk_and_recovers",
    "no_rights": "test_strict.test_rights_flow_to_the_one_busy_node_and_99_percent_is_used_before_the_first_429",
    "not_member": "test_strict.test_bad_asks_and_transfers_are_refused_and_write_nothing",
    "not_strict": "test_strict.test_bad_asks_and_transfers_are_refused_and_write_nothing",
    "token_required": "test_dashboard.test_token_opens_the_dashboard_once_then_a_cookie_keeps_it",
    "dashboard_token_unset": "test_dashboard.test_dashboard_without_a_token_off_loopback_answers_403_and_leaves_the_api_open",
    "unknown_scope": "test_reports.test_report_bad_input_gets_its_stable_code",
    "scope_not_found": "test_reports.test_report_bad_input_gets_its_stable_code",
    "bad_period": "test_reports.test_report_bad_input_gets_its_stable_code",
    "not_meter": "test_meter_rules.test_only_meters_sign_metered_events_and_replicas_apply_the_same_rule",
    "cost_mismatch": "test_meter_rules.test_only_meters_sign_metered_events_and_replicas_apply_the_same_rule",
    **{code: "test_gateway.test_bad_credentials_get_401_with_their_code_and_reach_nothing" for code in (
        "invalid_token", "token_signature", "token_audience", "token_expired", "token_not_yet_valid", "token_lifetime")},
    "invalid_request": "test_gateway.test_bad_requests_get_their_code_and_charge_nothing",
    "unknown_model": "test_gateway.test_bad_requests_get_their_code_and_charge_nothing",
    "prompt_too_large": "test_gateway.test_bad_requests_get_their_code_and_charge_nothing",
    "upstream_unreachable": "test_gateway.test_unreachable_upstream_is_502_and_charges_nothing",
    "upstream_bad_response": "test_gateway.test_upstream_garbage_or_hang_is_charged_at_the_reservation",
    "upstream_timeout": "test_gateway.test_upstream_garbage_or_hang_is_charged_at_the_reservation",
    "task_not_found": "test_exec.test_only_the_agent_that_reserved_a_task_settles_it",
}


def event_with(**over):
    m = {"v": 1, "kind": "act", "signer": AGENT.public_key, "ts": int(time.time() * 1000), "nonce": bytes(16),
         "body": {"op": "a", "cost": 1}}
    m.update(over)
    raw = encoding.encode(m)
    return make_envelope_bytes(raw, sign(raw, AGENT.seed))


def signed_raw(raw: bytes) -> bytes:
    return make_envelope_bytes(raw, sign(raw, AGENT.seed))


def cases():
    good = AGENT.envelope()
    bad_sig = bytearray(good)
    bad_sig[-1] ^= 0x55
    yield "malformed_cbor", 400, ("POST", "/v1/events", b"\xff\xff", "application/cbor")
    yield "malformed_json", 400, ("POST", "/v1/events", b"{not json", "application/json")
    yield "malformed_envelope", 400, ("POST", "/v1/events", encoding.encode({"event": b"x"}), "application/cbor")
    yield "malformed_envelope", 400, ("POST", "/v1/events", json.dumps({"event": "***", "sig": "AA=="}).encode(), "application/json")
    yield "not_canonical", 400, ("POST", "/v1/events", good + b"\x00", "application/cbor")
    # the event map's length in a one-byte argument instead of the head byte: not the shortest form
    raw = encoding.encode({"v": 1, "kind": "act", "signer": AGENT.public_key, "ts": 1, "nonce": bytes(16), "body": {"op": "a", "cost": 1}})
    yield "not_canonical", 400, ("POST", "/v1/events", signed_raw(b"\xb8\x06" + raw[1:]), "application/cbor")
    yield "unknown_field", 400, ("POST", "/v1/events", event_with(colour="red"), "application/cbor")
    yield "bad_request", 400, ("POST", "/v1/events", b"", "application/cbor")
    yield "bad_content_type", 400, ("POST", "/v1/events", good, "text/plain")
    yield "bad_signature", 401, ("POST", "/v1/events", bytes(bad_sig), "application/cbor")
    yield "event_not_found", 404, ("GET", "/v1/events/" + "ab" * 32, None, None)
    yield "event_not_found", 404, ("GET", "/v1/log/proof/inclusion?id=" + "ab" * 32, None, None)
    yield "origin_not_found", 404, ("GET", "/v1/log/checkpoint?origin=" + "cd" * 32, None, None)
    yield "not_found", 404, ("GET", "/v1/nothing-here", None, None)
    yield "method_not_allowed", 405, ("DELETE", "/v1/events", None, None)
    yield "stale_timestamp", 409, ("POST", "/v1/events", event_with(ts=1), "application/cbor")
    yield "future_timestamp", 409, ("POST", "/v1/events", event_with(ts=int(time.time() * 1000) + 3_600_000), "application/cbor")
    # amounts and instants past the documented bounds (docs/protocol.md), refused before anything is stored
    yield "amount_out_of_range", 422, ("POST", "/v1/events", event_with(ts=2**62), "application/cbor")
    yield "amount_out_of_range", 422, ("POST", "/v1/events", event_with(body={"op": "a", "cost": 2**63}), "application/cbor")
    yield "body_too_large", 413, ("POST", "/v1/events", b"\x00" * (5 * 1024 * 1024), "application/cbor")
    yield "batch_too_large", 413, ("POST", "/v1/events/batch", b"\x99\x03\xe9" + good * 1001, "application/cbor")
    yield "batch_too_large", 413, ("POST", "/v1/events/batch", json.dumps({"events": [{}] * 1001}).encode(), "application/json")
    yield "event_too_large", 413, ("POST", "/v1/events", encoding.encode({"event": b"\x00" * 5000, "sig": bytes(64)}), "application/cbor")
    yield "invalid_event", 422, ("POST", "/v1/events", event_with(signer=b"short"), "application/cbor")
    yield "invalid_event", 422, ("POST", "/v1/events", signed_raw(encoding.encode([1, 2])), "application/cbor")
    yield "invalid_body", 422, ("POST", "/v1/events", event_with(body={"op": "UPPER", "cost": 1}), "application/cbor")
    yield "unknown_kind", 422, ("POST", "/v1/events", event_with(kind="gov.nope"), "application/cbor")
    yield "unsupported_version", 422, ("POST", "/v1/events", event_with(v=2), "application/cbor")
    yield "bad_range", 422, ("GET", "/v1/log/proof/consistency?from=0&to=0", None, None)
    yield "bad_range", 422, ("GET", "/v1/log/proof/consistency?from=5&to=9", None, None)
    yield "bad_range", 422, ("GET", "/v1/log/entries?start=10&end=5", None, None)
    yield "bad_parameter", 422, ("GET", "/v1/log/proof/consistency?from=abc", None, None)
    yield "bad_parameter", 422, ("GET", "/v1/log/proof/inclusion?id=xyz", None, None)
    yield "bad_parameter", 422, ("GET", "/v1/agents/ABC/balance", None, None)
    yield "bad_parameter", 422, ("GET", "/v1/log/entries?start=0", None, None)
    # policy records: the error node names AUTHORITY as its only governance authority
    reg = {"agent": bytes(32), "user": bytes(32), "team": "t", "platform": "p", "plan": "freemium"}
    yield "not_authority", 403, ("POST", "/v1/events", AGENT.envelope("agent.register", reg), "application/cbor")
    yield "unknown_plan", 422, ("POST", "/v1/events", AUTHORITY.envelope("agent.register", {**reg, "plan": "gold"}), "application/cbor")
    now = int(time.time() * 1000)
    bad = {"title": "x", "changes": {"budgets": {"act": {"limit": -5}}}, "activate_at": now, "expires_at": now + 1000}
    yield "invalid_policy", 422, ("POST", "/v1/events", AUTHORITY.envelope("gov.propose", bad), "application/cbor")
    vote = {"proposal": bytes(32), "approve": True}
    yield "proposal_not_found", 404, ("POST", "/v1/events", AUTHORITY.envelope("gov.vote", vote), "application/cbor")
    charge = {"run": bytes(16), "cost": 1, "tokens": 1}
    yield "unknown_run", 422, ("POST", "/v1/events", AGENT.envelope("run.charge", charge), "application/cbor")
    # untrusted CBOR is bounded in what it expands to (PROTOCOL.md §2): tags and depth
    yield "cbor_tag", 400, ("POST", "/v1/events", b"\xd8\x1c\x81\xd8\x1d\x00", "application/cbor")
    yield "cbor_too_deep", 400, ("POST", "/v1/events", b"\x81" * 6 + b"\x00", "application/cbor")
    yield "bad_content_encoding", 400, ("POST", "/v1/events", b"not gzip", "application/json", {"Content-Encoding": "gzip"})
    # peer endpoints: unsigned or badly signed peer requests
    yield "bad_signature", 401, ("GET", "/v1/peer/frontier", None, None)


CASES = list(cases())


@pytest.fixture(scope="module")
def error_node(tmp_path_factory):
    """One node for all error paths: none of them may store anything."""
    env = {"ATS_AUTHORITIES": AUTHORITY.public_key.hex()}
    proc = NodeProcess(str(tmp_path_factory.mktemp("errors") / "node"), env=env).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.mark.parametrize("code, status, req", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_error_path_has_stable_code_and_contract_shape(error_node, code, status, req):
    node = error_node
    method, path, body, ctype, *headers = req
    reply = request(node.url, method, path, body, ctype, *headers)
    assert reply.status == status, reply.body[:300]
    doc = reply.json()
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}
    assert doc["error"]["code"] == code and doc["error"]["message"]
    # nothing was stored
    assert node_size(node) == 0


def node_size(node) -> int:
    conn = sqlite3.connect(os.path.join(node.data_dir, "ledger.sqlite"))
    try:
        return conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    finally:
        conn.close()


def test_every_error_code_is_walked_or_explained():
    import importlib

    walked = {c[0] for c in CASES}
    missing = set(CODES) - walked - set(NOT_REACHABLE_OVER_HTTP) - set(WALKED_ELSEWHERE)
    assert not missing, f"error codes with no test path: {sorted(missing)}"
    assert not (walked & set(NOT_REACHABLE_OVER_HTTP))
    for code, where in WALKED_ELSEWHERE.items():
        module, name = where.split(".")
        test = getattr(importlib.import_module(f"tests.integration.{module}"), name)
        assert f'"{code}"' in open(test.__code__.co_filename).read(), code


def test_batch_with_a_bad_element_reports_it_and_keeps_the_others(node):
    good = AGENT.envelope()
    body = b"\x83" + good + encoding.encode({"event": b"x", "sig": bytes(64)}) + event_with(kind="nope")
    reply = post_cbor(node.url, "/v1/events/batch", body)
    codes = [r.get("error", {}).get("code") or r["status"] for r in reply.json()["results"]]
    assert codes == ["accepted", "malformed_cbor", "unknown_kind"] or codes == ["accepted", "invalid_event", "unknown_kind"]
    assert node_size(node) == 1


def test_batch_array_that_lies_about_its_length_is_malformed(node):
    reply = post_cbor(node.url, "/v1/events/batch", b"\x85" + AGENT.envelope())
    assert reply.status == 400 and reply.code == "malformed_cbor"
    reply = post_cbor(node.url, "/v1/events/batch", b"\x9f" + AGENT.envelope() + b"\xff")
    assert reply.status == 400 and reply.code == "not_canonical"
    assert node_size(node) == 0


def test_quota_check_records_nothing(node):
    env = AGENT.envelope("act", {"op": "agent.run", "cost": 5000})
    reply = post_cbor(node.url, "/v1/quota/check", env)
    assert reply.status == 200 and reply.json()["allowed"] is True and reply.json()["id"]
    agent = AGENT.public_key.hex()
    est = post_json(node.url, "/v1/quota/check", {"agent": agent, "kind": "act", "body": {"op": "llm.call", "cost": 10}})
    assert est.status == 200
    cost = [b for b in est.json()["budgets"] if b["scope"] == "agent" and b["metric"] == "act.cost"][0]
    assert cost["consumed"] == 10 and cost["allocated"] == 5_000_000
    too_much = post_json(node.url, "/v1/quota/check", {"agent": agent, "kind": "act", "body": {"op": "x", "cost": 6_000_000}})
    doc = too_much.json()
    assert too_much.status == 200 and doc["allowed"] is False and doc["error"]["code"] == "budget_exceeded"
    assert doc["retry_after_ms"] > 0
    bad = post_json(node.url, "/v1/quota/check", {"agent": agent, "kind": "act", "body": {"op": "x", "cost": -1}})
    assert bad.status == 422 and bad.code == "invalid_body"
    extra = post_json(node.url, "/v1/quota/check", {"agent": agent, "kind": "act", "amounts": {}})
    assert extra.status == 400 and extra.code == "unknown_field"
    assert node_size(node) == 0
    assert get(node.url, f"/v1/agents/{agent}/usage").json()["totals"] == {}
    # nothing moved: a real submission still starts from zero
    first = post_cbor(node.url, "/v1/events", AGENT.envelope("act", {"op": "x", "cost": 7}))
    assert [b for b in first.json()["budgets"] if b["metric"] == "act.cost"][0]["consumed"] == 7
