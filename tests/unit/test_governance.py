"""Governance: the change grammar, m-of-n adoption, and a fold that ignores delivery order."""

from __future__ import annotations

import copy
import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import CODES, Conflict, Forbidden, Invalid, LedgerError, NotFound
from ledger.governance import (
    DEFAULT_POLICY,
    Adoption,
    Burst,
    Governance,
    Policy,
    Proposal,
    Vote,
    apply_changes,
    policy_updated_body,
)
from ledger.multipliers import REPUTATION_TIERS, STAKE_TIERS
from ledger.windows import DAY_MS, HOUR_MS

A, B, C = (bytes([i]) * 32 for i in (1, 2, 3))
OUTSIDER = b"\x09" * 32
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
AGENT_HEX = "ab" * 32


def pid(n: int) -> bytes:
    return bytes([0xA0, n]) + bytes(30)


def vid(n: int) -> bytes:
    return bytes([0xB0, n]) + bytes(30)


def proposal(n: int, changes: dict, *, by: bytes = A, ts: int = T0, activate: int | None = None,
             expires: int | None = None) -> Proposal:
    return Proposal(pid(n), by, ts, changes, T0 if activate is None else activate,
                    T0 + DAY_MS if expires is None else expires)


def vote(n: int, prop: int, voter: bytes, ts: int, approve: bool = True) -> Vote:
    return Vote(vid(n), pid(prop), voter, ts, approve)


def gov(m: int = 2) -> Governance:
    return Governance(frozenset({A, B, C}), m)


def burst(**over) -> dict:
    b = {"scope": "agent", "scope_id": AGENT_HEX, "metric": "act.cost", "factor_pct": 250,
         "start_ms": T0 + HOUR_MS, "end_ms": T0 + 3 * HOUR_MS}
    b.update(over)
    return b


def raises(code: str, fn, *args, **kw) -> LedgerError:
    with pytest.raises(LedgerError) as e:
        fn(*args, **kw)
    assert e.value.code == code, e.value.message
    return e.value


# -- defaults ------------------------------------------------------------------------------


def test_defaults_are_the_owners_numbers():
    b = DEFAULT_POLICY.budgets
    assert list(b) == ["act", "cpt", "dat", "trt"]
    as_rows = {k: (v.metric, v.limit, v.window, v.soft_pct, v.hard_pct, v.throttle, v.suspend, v.reserve_pct)
               for k, v in b.items()}
    assert as_rows == {
        "act": ("act.cost", 5_000_000, "day", 80, 100, True, True, 10),
        "dat": ("dat.bytes", 2_000_000, "day", 85, 100, True, False, 5),
        "cpt": ("cpt.units", 500, "hour", 75, 90, True, True, 15),
        "trt": ("trt.count", 1_000, "week", 90, 100, False, False, 0),
    }
    assert DEFAULT_POLICY.stake_tiers == ((20000, (2, 1)), (5000, (3, 2)), (1000, (5, 4)), (0, (1, 1)))
    assert DEFAULT_POLICY.reputation_tiers == (
        (900000, (3, 2)), (800000, (6, 5)), (700000, (1, 1)), (500000, (4, 5)), (0, (1, 2)))
    assert dict(DEFAULT_POLICY.prices) == {"llm.call.token": 10, "agent.run": 10_000, "tool.browser": 5_000,
                                           "cpt.unit": 1_000, "dat.byte_per_kb": 1}
    assert DEFAULT_POLICY.plan_overrides == {} and DEFAULT_POLICY.bursts == ()


def test_default_tier_tables_agree_with_ledger_multipliers():
    assert DEFAULT_POLICY.stake_table() == STAKE_TIERS
    assert DEFAULT_POLICY.reputation_table() == REPUTATION_TIERS


def test_policy_is_immutable_and_hashable():
    assert hash(DEFAULT_POLICY) == hash(Policy())
    assert DEFAULT_POLICY == Policy()
    with pytest.raises(Exception):
        DEFAULT_POLICY.budgets["act"] = None  # type: ignore[index]
    with pytest.raises(Exception):
        DEFAULT_POLICY.prices = {}  # type: ignore[misc]


# -- apply_changes: each kind of change ----------------------------------------------------


def test_budget_change_merges_fields_into_one_kind():
    p = apply_changes(DEFAULT_POLICY, {"budgets": {"act": {"limit": 6_000_000, "soft_pct": 75}}})
    assert (p.budgets["act"].limit, p.budgets["act"].soft_pct, p.budgets["act"].hard_pct) == (6_000_000, 75, 100)
    assert p.budgets["dat"] == DEFAULT_POLICY.budgets["dat"]
    p = apply_changes(p, {"budgets": {"trt": {"window": "minute", "throttle": True}}})
    assert (p.budgets["trt"].window, p.budgets["trt"].throttle) == ("minute", True)
    assert DEFAULT_POLICY.budgets["act"].limit == 5_000_000  # the input is never mutated


def test_plan_override_sets_contract_limits_and_merges():
    p = apply_changes(DEFAULT_POLICY, {"plan_overrides": {"platformium": {"llm_tokens_per_day": 5_000_000}}})
    p = apply_changes(p, {"plan_overrides": {"platformium": {"agent_runs_per_day": 900},
                                             "premium": {"messages_per_day": None}}})
    assert dict(p.plan_overrides["platformium"]) == {"llm_tokens_per_day": 5_000_000, "agent_runs_per_day": 900}
    assert p.plan("platformium").limits["llm_tokens_per_day"] == 5_000_000
    assert p.plan("premium").limits["messages_per_day"] is None
    assert p.plan("premium").limits["agent_runs_per_day"] == 500


def test_tier_tables_are_replaced_and_kept_in_lowest_terms():
    p = apply_changes(DEFAULT_POLICY, {"stake_tiers": [[10_000, 6, 2], [100, 3, 2], [0, 1, 1]],
                                       "reputation_tiers": [[500_000, 1, 1], [0, 1, 4]]})
    assert p.stake_tiers == ((10_000, (3, 1)), (100, (3, 2)), (0, (1, 1)))
    assert p.reputation_table() == ((500_000, Fraction(1)), (0, Fraction(1, 4)))


def test_prices_merge_and_may_add_items():
    p = apply_changes(DEFAULT_POLICY, {"prices": {"agent.run": 120, "tool.search": 20}})
    assert (p.prices["agent.run"], p.prices["tool.search"], p.prices["tool.browser"]) == (120, 20, 5_000)


def test_bursts_are_appended():
    p = apply_changes(DEFAULT_POLICY, {"bursts": [burst()]})
    p = apply_changes(p, {"bursts": [burst(factor_pct=300, start_ms=T0, end_ms=T0 + DAY_MS)]})
    assert p.bursts == (Burst("agent", AGENT_HEX, "act.cost", 250, T0 + HOUR_MS, T0 + 3 * HOUR_MS),
                        Burst("agent", AGENT_HEX, "act.cost", 300, T0, T0 + DAY_MS))


INVALID_CHANGES = {
    "empty": {},
    "unknown top key": {"limits": {}},
    "unknown kind": {"budgets": {"xyz": {"limit": 1}}},
    "unknown budget field": {"budgets": {"act": {"ceiling": 1}}},
    "negative limit": {"budgets": {"act": {"limit": -1}}},
    "bool limit": {"budgets": {"act": {"limit": True}}},
    "soft above hard": {"budgets": {"cpt": {"soft_pct": 95}}},
    "hard above 100": {"budgets": {"act": {"hard_pct": 101}}},
    "negative soft": {"budgets": {"act": {"soft_pct": -5}}},
    "reserve above 100": {"budgets": {"act": {"reserve_pct": 101}}},
    "negative reserve": {"budgets": {"act": {"reserve_pct": -1}}},
    "unknown window": {"budgets": {"act": {"window": "fortnight"}}},
    "throttle not bool": {"budgets": {"act": {"throttle": 1}}},
    "bad metric": {"budgets": {"act": {"metric": "Act Cost"}}},
    "unknown plan": {"plan_overrides": {"goldium": {"llm_tokens_per_day": 1}}},
    "unknown quota": {"plan_overrides": {"premium": {"tokens": 1}}},
    "negative override": {"plan_overrides": {"premium": {"llm_tokens_per_day": -1}}},
    "tiers unsorted": {"stake_tiers": [[1000, 5, 4], [5000, 3, 2], [0, 1, 1]]},
    "tiers duplicate": {"stake_tiers": [[1000, 5, 4], [1000, 3, 2], [0, 1, 1]]},
    "tiers zero multiplier": {"stake_tiers": [[1000, 0, 1], [0, 1, 1]]},
    "tiers zero denominator": {"stake_tiers": [[1000, 1, 0], [0, 1, 1]]},
    "tiers negative threshold": {"stake_tiers": [[0, 1, 1], [-1, 1, 1]]},
    "tiers without 0": {"stake_tiers": [[1000, 2, 1]]},
    "tiers empty": {"stake_tiers": []},
    "tiers bad row": {"stake_tiers": [[0, 1]]},
    "tiers more stake less multiplier": {"stake_tiers": [[1000, 1, 2], [0, 1, 1]]},
    "reputation above 1e6": {"reputation_tiers": [[1_000_001, 2, 1], [0, 1, 1]]},
    "negative price": {"prices": {"agent.run": -1}},
    "bad price name": {"prices": {"Agent Run": 1}},
    "null price": {"prices": {"agent.run": None}},
    "burst factor low": {"bursts": [burst(factor_pct=199)]},
    "burst factor high": {"bursts": [burst(factor_pct=301)]},
    "burst longer than a day": {"bursts": [burst(start_ms=T0, end_ms=T0 + DAY_MS + 1)]},
    "burst ends at its start": {"bursts": [burst(start_ms=T0, end_ms=T0)]},
    "burst ends before its start": {"bursts": [burst(start_ms=T0, end_ms=T0 - 1)]},
    "burst unknown scope": {"bursts": [burst(scope="galaxy")]},
    "burst missing key": {"bursts": [{k: v for k, v in burst().items() if k != "metric"}]},
    "burst extra key": {"bursts": [burst(note="x")]},
    "bursts empty": {"bursts": []},
    "not a map": {"budgets": [1, 2]},
}


@pytest.mark.parametrize("changes", INVALID_CHANGES.values(), ids=INVALID_CHANGES.keys())
def test_invalid_change_is_rejected_and_changes_nothing(changes):
    before = copy.deepcopy(DEFAULT_POLICY)
    raises("invalid_policy", apply_changes, DEFAULT_POLICY, changes)
    assert DEFAULT_POLICY == before
    g = gov()
    g.propose(proposal(1, {"prices": {"agent.run": 7}}))
    g.vote(vote(1, 1, A, T0 + 1))
    state = copy.deepcopy(vars(g))
    e = raises("invalid_policy", g.propose, proposal(2, changes))
    assert isinstance(e, Invalid) and e.status_hint == 422
    assert vars(g) == state


def test_burst_of_exactly_a_day_and_exactly_2x_or_3x_is_allowed():
    for factor in (200, 300):
        apply_changes(DEFAULT_POLICY, {"bursts": [burst(factor_pct=factor, start_ms=T0, end_ms=T0 + DAY_MS)]})


def test_the_new_codes_are_registered_with_their_classes():
    assert {k: CODES[k] for k in ("invalid_policy", "not_authority", "proposal_not_found", "proposal_expired")} == {
        "invalid_policy": "Invalid", "not_authority": "Forbidden",
        "proposal_not_found": "NotFound", "proposal_expired": "Conflict"}
    assert Forbidden.status_hint == 403


# -- authorities and votes -----------------------------------------------------------------


@pytest.mark.parametrize(("keys", "m"), [(frozenset(), 1), (frozenset({A, B, C}), 0), (frozenset({A, B, C}), 4),
                                         (frozenset({A, b"short"}), 1)])
def test_governance_needs_one_to_n_of_n_authorities(keys, m):
    raises("invalid_policy", Governance, keys, m)


def test_proposal_by_non_authority_is_forbidden_and_changes_nothing():
    g = gov()
    state = copy.deepcopy(vars(g))
    e = raises("not_authority", g.propose, proposal(1, {"prices": {"agent.run": 1}}, by=OUTSIDER))
    assert isinstance(e, Forbidden) and e.status_hint == 403
    assert vars(g) == state


def test_vote_by_non_authority_is_forbidden_and_changes_nothing():
    g = gov()
    g.propose(proposal(1, {"prices": {"agent.run": 1}}))
    state = copy.deepcopy(vars(g))
    raises("not_authority", g.vote, vote(1, 1, OUTSIDER, T0 + 1))
    raises("not_authority", g.vote, vote(1, 1, OUTSIDER, T0 + 1), hold_unknown=True)
    assert vars(g) == state


def test_vote_for_unknown_proposal_is_not_found():
    g = gov()
    e = raises("proposal_not_found", g.vote, vote(1, 7, A, T0))
    assert isinstance(e, NotFound) and e.status_hint == 404


def test_vote_after_expiry_is_rejected_and_changes_nothing():
    g = gov()
    g.propose(proposal(1, {"prices": {"agent.run": 1}}, expires=T0 + 1000))
    g.vote(vote(1, 1, A, T0 + 1000))  # at the expiry instant: still in time
    state = copy.deepcopy(vars(g))
    e = raises("proposal_expired", g.vote, vote(2, 1, B, T0 + 1001))
    assert isinstance(e, Conflict) and e.status_hint == 409
    assert vars(g) == state and g.adopted() == []


@pytest.mark.parametrize(("activate", "expires"), [(T0 - 1, T0 + 5), (T0, T0 - 1)])
def test_proposal_never_applies_or_expires_before_it_was_made(activate, expires):
    raises("invalid_policy", gov().propose, proposal(1, {"prices": {"agent.run": 1}}, activate=activate, expires=expires))


def test_duplicate_proposal_is_a_no_op_and_proposing_is_not_voting():
    g = gov(m=1)
    p = proposal(1, {"prices": {"agent.run": 1}})
    g.propose(p)
    g.propose(p)
    assert g.adopted() == [] and g.tally(pid(1)) == (0, 0)


# -- adoption ------------------------------------------------------------------------------


def test_two_of_three_adopts_at_the_second_approval():
    g = gov(m=2)
    g.propose(proposal(1, {"budgets": {"act": {"limit": 6_000_000}}}, activate=T0 + 10))
    g.vote(vote(1, 1, A, T0 + 50))
    assert g.adopted() == [] and g.policy_at(T0 + 10**9) == DEFAULT_POLICY
    g.vote(vote(2, 1, C, T0 + 70))
    assert [(a.proposal, a.effective_ms) for a in g.adopted()] == [(pid(1), T0 + 70)]
    assert g.policy_at(T0 + 69).budgets["act"].limit == 5_000_000
    assert g.policy_at(T0 + 70).budgets["act"].limit == 6_000_000
    g.vote(vote(3, 1, B, T0 + 60))  # a third approval, made earlier: the 2nd approval is now at +60
    assert g.adopted()[0].effective_ms == T0 + 60


def test_effective_time_waits_for_activate_at():
    g = gov(m=2)
    g.propose(proposal(1, {"prices": {"agent.run": 1}}, activate=T0 + HOUR_MS))
    g.vote(vote(1, 1, A, T0 + 1))
    g.vote(vote(2, 1, B, T0 + 2))
    assert g.adopted()[0].effective_ms == T0 + HOUR_MS
    assert g.policy_at(T0 + HOUR_MS - 1).prices["agent.run"] == 10_000
    assert g.policy_at(T0 + HOUR_MS).prices["agent.run"] == 1


def test_duplicate_votes_by_one_voter_count_once_at_their_earliest():
    g = gov(m=2)
    g.propose(proposal(1, {"prices": {"agent.run": 1}}))
    g.vote(vote(1, 1, A, T0 + 30))
    g.vote(vote(1, 1, A, T0 + 30))
    g.vote(vote(2, 1, A, T0 + 10))
    assert g.adopted() == [] and g.tally(pid(1)) == (1, 0)
    g.vote(vote(3, 1, B, T0 + 20))
    assert g.adopted()[0].effective_ms == T0 + 20


def test_a_no_vote_never_withdraws_an_approval():
    g = gov(m=2)
    g.propose(proposal(1, {"prices": {"agent.run": 1}}))
    g.vote(vote(1, 1, A, T0 + 10))
    g.vote(vote(2, 1, B, T0 + 20))
    g.vote(vote(3, 1, A, T0 + 5, approve=False))
    g.vote(vote(4, 1, C, T0 + 5, approve=False))
    assert g.adopted()[0].effective_ms == T0 + 20 and g.tally(pid(1)) == (2, 1)


def test_second_proposal_on_the_same_field_wins_from_its_later_effective_time():
    g = gov(m=2)
    g.propose(proposal(1, {"prices": {"agent.run": 120}}))
    g.propose(proposal(2, {"prices": {"agent.run": 150}}))
    for n, (prop, voter, ts) in enumerate([(2, A, T0 + 20), (2, B, T0 + 30), (1, A, T0 + 5), (1, C, T0 + 10)]):
        g.vote(vote(n, prop, voter, ts))
    assert [a.proposal for a in g.adopted()] == [pid(1), pid(2)]
    assert [g.policy_at(T0 + d).prices["agent.run"] for d in (9, 10, 29, 30)] == [10_000, 120, 120, 150]


def test_adoption_that_clashes_with_an_earlier_one_is_skipped_with_a_reason():
    g = gov(m=1)
    g.propose(proposal(1, {"budgets": {"act": {"hard_pct": 90}}}))
    g.propose(proposal(2, {"budgets": {"act": {"soft_pct": 95}}}))  # valid against the base alone
    g.vote(vote(1, 2, B, T0 + 20))
    assert g.policy_at(T0 + 20).budgets["act"].soft_pct == 95
    g.vote(vote(2, 1, A, T0 + 10))
    assert g.policy_at(T0 + 20).budgets["act"].soft_pct == 80
    assert g.policy_at(T0 + 20).budgets["act"].hard_pct == 90
    [r] = g.rejected()
    assert (r.proposal, r.effective_ms) == (pid(2), T0 + 20) and "soft_pct 95 exceeds hard_pct 90" in r.message


def test_policy_at_is_cached_until_an_adoption_appears():
    g = gov(m=1)
    g.propose(proposal(1, {"prices": {"agent.run": 1}}))
    g.vote(vote(1, 1, A, T0 + 5))
    first = g.policy_at(T0 + 100)
    assert g.policy_at(T0 + 100) is first and g.policy_at(T0 + 5) is first
    g.propose(proposal(2, {"prices": {"agent.run": 2}}))
    g.vote(vote(2, 2, A, T0 + 50))
    assert g.policy_at(T0 + 100).prices["agent.run"] == 2 and g.policy_at(T0 + 49) == first


def test_new_adoptions_reports_each_once_and_again_only_if_it_moves_earlier():
    g = gov(m=2)
    g.propose(proposal(1, {"prices": {"agent.run": 1}}))
    g.vote(vote(1, 1, A, T0 + 10))
    g.vote(vote(2, 1, B, T0 + 30))
    [a] = g.new_adoptions()
    assert policy_updated_body(a) == {"proposal": pid(1), "effective": T0 + 30}
    assert g.new_adoptions() == []
    g.vote(vote(3, 1, C, T0 + 20))
    assert [x.effective_ms for x in g.new_adoptions()] == [T0 + 20]
    g2 = gov(m=2)  # a node that replays its own record on restart does not write it again
    g2.mark_reported(pid(1), T0 + 20)
    for record in (proposal(1, {"prices": {"agent.run": 1}}), vote(1, 1, A, T0 + 10), vote(3, 1, C, T0 + 20)):
        deliver(g2, record)
    assert g2.new_adoptions() == []


def test_replicated_vote_that_outruns_its_proposal_is_held():
    g = gov(m=2)
    g.vote(vote(1, 1, A, T0 + 10), hold_unknown=True)
    g.vote(vote(2, 1, B, T0 + 99), hold_unknown=True)  # expired by the proposal: dropped on arrival
    g.propose(proposal(1, {"prices": {"agent.run": 1}}, expires=T0 + 50))
    assert g.tally(pid(1)) == (1, 0) and g.adopted() == []
    g.vote(vote(3, 1, C, T0 + 40))
    assert g.adopted()[0].effective_ms == T0 + 40


# -- bursts --------------------------------------------------------------------------------


def test_burst_is_in_force_only_over_its_window_and_the_largest_wins():
    g = gov(m=1)
    g.propose(proposal(1, {"bursts": [burst(), burst(factor_pct=200, start_ms=T0, end_ms=T0 + 2 * HOUR_MS)]}))
    g.vote(vote(1, 1, A, T0))
    at = lambda ms: g.active_bursts("agent", AGENT_HEX, "act.cost", ms)  # noqa: E731
    assert [at(T0 - 1), at(T0), at(T0 + HOUR_MS), at(T0 + 2 * HOUR_MS), at(T0 + 3 * HOUR_MS)] == [100, 200, 250, 250, 100]
    assert g.active_bursts("agent", AGENT_HEX, "dat.bytes", T0 + HOUR_MS) == 100
    assert g.active_bursts("agent", "cd" * 32, "act.cost", T0 + HOUR_MS) == 100


def test_burst_waits_for_its_proposal_to_take_effect():
    g = gov(m=2)
    g.propose(proposal(1, {"bursts": [burst(start_ms=T0, end_ms=T0 + HOUR_MS)]}))
    g.vote(vote(1, 1, A, T0 + 100))
    assert g.active_bursts("agent", AGENT_HEX, "act.cost", T0 + 200) == 100
    g.vote(vote(2, 1, B, T0 + 150))
    assert [g.active_bursts("agent", AGENT_HEX, "act.cost", T0 + d) for d in (149, 150)] == [100, 250]


# -- order independence --------------------------------------------------------------------


def deliver(g: Governance, record) -> None:
    """Feed one replicated record, as the node does: errors are answers, never state."""
    try:
        if isinstance(record, Proposal):
            g.propose(record)
        else:
            g.vote(record, hold_unknown=True)
    except LedgerError:
        pass


PROBES = [T0 + d for d in (0, 9, 10, 15, 20, 25, 30, 40, 10**6)]


def outcome(g: Governance) -> tuple:
    return (g.adopted(), g.rejected(), [g.policy_at(t) for t in PROBES],
            [g.active_bursts("agent", AGENT_HEX, "act.cost", t) for t in PROBES],
            [g.tally(pid(n)) for n in range(4)])


def fold(records, m: int = 2) -> tuple:
    g = gov(m)
    for r in records:
        deliver(g, r)
    return outcome(g)


# Two clashing proposals (hard 90, soft 95), votes out of time order, a duplicate approval,
# an expired vote and a non-authority's vote.
CLASH = [
    proposal(1, {"budgets": {"act": {"hard_pct": 90}}}, expires=T0 + 40),
    proposal(2, {"budgets": {"act": {"soft_pct": 95}}, "bursts": [burst(start_ms=T0, end_ms=T0 + 30)]}),
    vote(1, 1, A, T0 + 25),
    vote(2, 1, B, T0 + 15),
    vote(3, 2, C, T0 + 20),
    vote(4, 2, A, T0 + 10),
    vote(5, 2, C, T0 + 30),
]
EXTRA = [vote(6, 1, C, T0 + 41), vote(7, 1, OUTSIDER, T0 + 1), vote(8, 2, B, T0 + 5, approve=False)]


def test_every_delivery_order_of_proposals_and_votes_gives_the_same_state():
    expected = fold(CLASH)
    assert [(a.proposal, a.effective_ms) for a in expected[0]] == [(pid(2), T0 + 20), (pid(1), T0 + 25)]
    assert [r.proposal for r in expected[1]] == [pid(1)]
    assert expected[2][-1].budgets["act"].soft_pct == 95 and expected[2][-1].budgets["act"].hard_pct == 100
    assert expected[3][:5] == [100, 100, 100, 100, 250]
    for order in itertools.permutations(CLASH):
        assert fold(order) == expected


def test_expired_duplicate_and_outsider_votes_never_change_the_outcome():
    expected = fold(CLASH + EXTRA)
    assert expected[:4] == fold(CLASH)[:4]  # only the tally sees B's no
    for order in itertools.permutations(CLASH[2:] + EXTRA, 4):
        assert fold(list(order) + CLASH + EXTRA) == expected


POOL = [
    proposal(0, {"prices": {"agent.run": 120}}),
    proposal(1, {"prices": {"agent.run": 150}, "budgets": {"cpt": {"limit": 600}}}, activate=T0 + 15),
    proposal(2, {"budgets": {"cpt": {"soft_pct": 85}}}, expires=T0 + 25),
    proposal(3, {"budgets": {"cpt": {"hard_pct": 80}}, "bursts": [burst(start_ms=T0, end_ms=T0 + 35)]}),
] + [vote(10 * p + i, p, voter, T0 + ts, approve)
     for p in range(4)
     for i, (voter, ts, approve) in enumerate([(A, 10 + p, True), (B, 20 - p, True), (C, 30, True),
                                                (C, 12 + 3 * p, True), (B, 9, False), (A, 40, True)])]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(POOL), max_size=len(POOL) * 2), st.randoms(use_true_random=False), st.sampled_from([1, 2, 3]))
def test_shuffled_records_with_duplicates_fold_to_the_same_state(chosen, rnd, m):
    shuffled = list(chosen)
    rnd.shuffle(shuffled)
    assert fold(shuffled, m) == fold(sorted({r.id: r for r in chosen}.values(), key=lambda r: (isinstance(r, Vote), r.id)), m)


def test_adoption_body_is_the_policy_updated_record():
    a = Adoption(pid(3), T0 + 7, {})
    assert policy_updated_body(a) == {"proposal": pid(3), "effective": T0 + 7}
