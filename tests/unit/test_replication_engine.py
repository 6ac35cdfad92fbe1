"""consensus/replication.py on its own: the peer table's transitions, the schedule, the plan for
each origin of a frontier and the merge, with values only (no node, no network, no clock)."""

from __future__ import annotations

import random

import pytest

from consensus.replication import (
    BACKOFF_MS_MAX, DEAD_AFTER_FAILURES, DROP_AFTER_FAILURES, GOSSIP_FANOUT, NEVER_MS, PENALTY_BACKOFF_MS,
    TRANSITIONS, Held, OwnLog, ReplicationEngine, anchor_due, backoff_ms, cluster_digest, merge, pages,
)
from consensus.verify import PeerProtocolError
from ledger.checkpoint import CheckpointSigner
from ledger.events import make_envelope_bytes, parse_envelope
from ledger import encoding
from ledger.signing import public_key_from_seed, sign
from tests.agentkit import TestAgent

OWN_SEED, ORIGIN_SEED = bytes([7]) * 32, bytes([8]) * 32
OWN, ORIGIN = public_key_from_seed(OWN_SEED), public_key_from_seed(ORIGIN_SEED)
NOW = 1_780_000_000_000


def engine(*urls, admitted=lambda o: True):
    return ReplicationEngine(OWN, interval_ms=100, peer_count_max=8, rng=random.Random(1), admitted=admitted,
                             static_peers=urls)


def test_every_transition_of_the_table():
    e = engine("http://a")
    p = e.peers["http://a"]
    assert set(TRANSITIONS) == {"in_sync", "synced", "failed", "penalised", "self", "woken", "heard_from"}
    e.record(p, "failed", NOW, "timeout")
    assert p.failures == 1 and p.status(NOW) == "failing" and NOW < p.next_try_ms <= NOW + 400 and not p.urgent
    e.record(p, "heard_from", NOW)
    assert p.failures == 0 and p.urgent and p.next_try_ms == 0
    for _ in range(DEAD_AFTER_FAILURES):
        e.record(p, "failed", NOW, "refused")
    assert p.status(NOW) == "dead"
    e.record(p, "synced", NOW)
    assert p.status(NOW) == "ok" and p.last_error is None
    e.record(p, "penalised", NOW, "bad_root: no")
    assert p.status(NOW) == "penalised" and p.next_try_ms == NOW + PENALTY_BACKOFF_MS
    e.record(p, "woken", NOW)
    assert p.next_try_ms == NOW + PENALTY_BACKOFF_MS, "a penalised peer is not woken by its notifications"
    e.record(p, "heard_from", NOW)
    assert p.status(NOW) == "penalised", "nor by calling us"
    e.record(p, "in_sync", NOW + PENALTY_BACKOFF_MS)
    assert p.lag_events == 0 and p.status(NOW + PENALTY_BACKOFF_MS) == "ok"
    e.record(p, "self", NOW)
    assert p.next_try_ms == NEVER_MS


def test_backoff_doubles_is_capped_and_jittered():
    rng = random.Random(3)
    assert all(50 <= backoff_ms(1, 50, rng) <= 100 for _ in range(100))
    assert all(BACKOFF_MS_MAX // 2 <= backoff_ms(30, 500, rng) <= BACKOFF_MS_MAX for _ in range(100))


def test_the_schedule_urgent_now_random_healthy_each_interval_none_while_fetching():
    e = engine("http://a", "http://b", "http://c", "http://d")
    assert len(e.due(NOW, set(), False)) == 4  # new peers are urgent
    for p in e.peers.values():
        e.record(p, "synced", NOW)
    assert e.due(NOW + 1, set(), True) == [], "no random round while fetching"
    assert e.wait_ms(NOW + 1, set(), True) == 100, "while fetching, no polling"
    assert e.due(NOW + 1, set(), False) == [] and e.wait_ms(NOW + 1, set()) == 99, "the round is due at NOW + 100"
    picked = e.due(NOW + 100, set(), False)
    assert len(picked) == GOSSIP_FANOUT
    assert e.due(NOW + 101, set(), False) == [] and e.wait_ms(NOW + 101, set()) == 99
    e.wake(b"x" * 32, "http://c", NOW)  # its key unknown: matched by URL
    assert [p.url for p in e.due(NOW + 3, set(), False)] == ["http://c"]
    assert e.due(NOW + 3, {"http://c"}, False) == []


def test_the_table_is_bounded_and_drops_the_dead_that_are_not_static():
    e = engine("http://a")
    for i in range(20):
        e.add_peer(f"http://p{i}/", "exchanged")
    assert len(e.peers) == 8 and e.add_peer("http://q", "discovered") is None
    assert e.add_peer("http://r", "discovered", valid=False) is None
    for p in e.peers.values():
        p.failures = DROP_AFTER_FAILURES
    others = set(e.peers) - {"http://a"}
    assert {p.url for p in e.drop_dead()} == others
    assert list(e.peers) == ["http://a"] and e.notify_targets() == [] and e.known_urls(64) == []


def _note(size, root=bytes(32)):
    return CheckpointSigner(ORIGIN_SEED).sign(size, root)


def test_plans_for_each_origin_of_a_frontier():
    e = engine(admitted=lambda o: o != b"n" * 32)
    own = OwnLog(OWN, 3, CheckpointSigner(OWN_SEED).sign(3, bytes(32)))
    assert e.plan_origin(None, b"n" * 32, 1, "x", None, set(), own).action == "skip"  # not admitted
    assert e.plan_origin(None, ORIGIN, 1, "x", None, {ORIGIN}, own).action == "skip"  # forked
    assert e.plan_origin(None, ORIGIN, 2, _note(2), Held(2, _note(2)), set(), own).reason == "the checkpoint we hold"
    assert e.plan_origin(None, ORIGIN, 0, _note(0), None, set(), own).reason == "empty log"
    with pytest.raises(PeerProtocolError) as info:
        e.plan_origin(None, ORIGIN, 3, _note(2), None, set(), own)
    assert info.value.code == "bad_frontier"
    with pytest.raises(PeerProtocolError) as info:
        e.plan_origin(None, ORIGIN, 2, _note(2).replace("ats", "atz", 1), None, set(), own)
    assert info.value.code == "bad_checkpoint"
    first = e.plan_origin(ORIGIN, ORIGIN, 2, _note(2), None, set(), own)
    assert (first.action, first.start, first.held_cp, first.cosign) == ("fetch", 0, None, True)
    grow = e.plan_origin(None, ORIGIN, 5, _note(5), Held(2, _note(2)), set(), own)
    assert (grow.action, grow.start, grow.held_cp.size, grow.cosign) == ("fetch", 2, 2, False)
    older = e.plan_origin(None, ORIGIN, 2, _note(2), Held(5, _note(1)), set(), own)
    assert (older.action, older.keep) == ("adopt", True)
    assert e.plan_origin(None, ORIGIN, 1, _note(1, bytes([1]) * 32), Held(5, _note(2)), set(), own).keep is False
    mine = CheckpointSigner(OWN_SEED)
    assert e.plan_origin(None, OWN, 3, own.note, None, set(), own).action == "skip"
    assert e.plan_origin(None, OWN, 2, mine.sign(2, bytes(32)), None, set(), own).action == "check_own"
    assert e.plan_origin(None, OWN, 9, mine.sign(9, bytes(32)), None, set(), own).action == "own_ahead"


def test_lag_counts_only_merged_origins():
    e = engine(admitted=lambda o: o != b"n" * 32)
    origins = [(ORIGIN, 10, ""), (OWN, 50, ""), (b"n" * 32, 7, ""), (b"f" * 32, 4, "")]
    assert e.lag(origins, {b"f" * 32}, {ORIGIN: Held(3, None)}) == 7


def test_merge_counts_each_id_once_and_unknown_kinds_nowhere():
    agent = TestAgent(bytes([9]) * 32)
    a, b = parse_envelope(agent.envelope()), parse_envelope(agent.envelope())
    raw = encoding.encode({"v": 1, "kind": "x.new", "signer": agent.public_key, "ts": NOW, "nonce": bytes(16),
                           "body": {}})
    u = parse_envelope(make_envelope_bytes(raw, sign(raw, agent.seed)), unknown_kinds=True)
    m = merge([a, b, a, u], {b.event.id})
    assert m.count == (a,) and m.unknown == (u,) and m.duplicates == 2


def test_pages_anchor_and_digest():
    assert pages(0, 5, 2) == [(0, 2), (2, 4), (4, 5)] and pages(5, 5, 2) == []
    assert anchor_due(1, 5, 4) and not anchor_due(1, 4, 4) and not anchor_due(0, 5, -1) and not anchor_due(1, None, -1)
    rows = [(ORIGIN, 2, _note(2)), (OWN, 0, "")]
    assert cluster_digest(rows) == cluster_digest(rows[:1]) != cluster_digest(rows, [ORIGIN])
