"""The budget book's pure core: every branch of decide (ledger/bookdecide.py), runs and their holds,
signer roles (ledger/book.py) and the policy fold (ledger/bookpolicy.py). No process, no SQLite."""

from dataclasses import dataclass, field

import pytest

from ledger.book import (
    Admitted, CallHolds, Roles, Run, Runs, call_amounts, run_state, step, trust_penalty,
)
from ledger.bookdecide import Ask, budget_view, decide, dry_run_parts, held, receipt_parts, spent_or
from ledger.bookpolicy import BUCKETS_MAX, PolicyState
from ledger.budget import Bucket, Overage, Rule
from ledger.constants import COUNTER_MAX
from ledger.errors import Conflict, Forbidden, Invalid, LedgerError, OverBudget
from ledger.governance import Governance
from ledger.events import unsigned_event
from ledger.windows import DAY_MS

AGENT = bytes([7]) * 32
AID = AGENT.hex()
DAY = 100 * DAY_MS
TS = DAY + 3_600_000  # an hour into the day
PREV = DAY - DAY_MS
PLAIN = Overage(soft_pct=80, hard_pct=100, throttle=False, suspend=False, reserve_pct=0)
RESERVE = Overage(soft_pct=80, hard_pct=100, throttle=False, suspend=False, reserve_pct=10)
THROTTLE = Overage(soft_pct=50, hard_pct=100, throttle=True, suspend=False, reserve_pct=0)
SUSPEND = Overage(soft_pct=80, hard_pct=100, throttle=False, suspend=True, reserve_pct=0)


def rule(limit, metric="act.cost", overage=PLAIN, scope="agent", scope_id=AID, window="day"):
    return Rule(scope, scope_id, metric, window, limit, overage, "act")


@dataclass
class View:
    """A BookView from plain dicts; `loaded` lists the counters decide asked the node to load."""

    counters: dict = field(default_factory=dict)
    stored: dict = field(default_factory=dict)  # what `counter` loads on a miss
    run_holds: dict = field(default_factory=dict)
    call_holds: dict = field(default_factory=dict)
    buckets: dict = field(default_factory=dict)
    settled: set = field(default_factory=set)
    strict: bool = False
    strict_rules: set = field(default_factory=set)
    refusal: LedgerError | None = None
    loaded: list = field(default_factory=list)

    def counter(self, key):
        self.loaded.append(key)
        self.counters[key] = self.stored.get(key, 0)
        return self.counters[key]

    def is_strict(self, r):
        return r.key in self.strict_rules

    def strict_refusal(self, key, spend):
        return self.refusal


def ask(rules, consume, hold_delta=0, metered=False, enforce=True, dry_run=False, now=TS):
    return Ask(rules, consume, hold_delta, TS, now, metered, enforce, dry_run)


def key(r, start=DAY):
    return r.key + (start,)


# -- decide: admit -----------------------------------------------------------------------------


def test_an_event_that_fits_is_admitted_with_its_counter_after_it():
    r = rule(1000)
    view = View(counters={key(r): 100, key(r, PREV): 0})
    d = decide(ask([r], {"act.cost": 50}), view)
    assert d.refusal is None and not view.loaded
    [c] = d.checks
    assert (c.key, c.consumed, c.spend, c.held, c.window_end_ms, c.flags) == (key(r), 150, 50, 0, DAY + DAY_MS, [])


def test_a_counter_not_known_is_loaded_once_for_the_window_and_the_previous_one():
    r = rule(1000)
    view = View(stored={key(r): 10})
    d = decide(ask([r], {"act.cost": 5}), view)
    assert view.loaded == [key(r), key(r, PREV)]
    assert d.checks[0].consumed == 15


def test_rules_of_metrics_the_event_does_not_move_are_skipped():
    spent, other = rule(1000), rule(1000, metric="dat.bytes")
    d = decide(ask([other, spent], {"act.cost": 5}), View())
    assert [c.rule for c in d.checks] == [spent]


def test_a_run_hold_counts_on_act_cost_and_a_release_alone_is_not_checked():
    r = rule(1000)
    d = decide(ask([r], {}, hold_delta=300), View())
    assert d.checks[0].spend == 0 and d.refusal is None
    assert decide(ask([r], {}, hold_delta=-300), View()).checks == []


def test_an_unlimited_rule_is_counted_without_flags():
    r = rule(None)
    d = decide(ask([r], {"act.cost": 7}), View())
    assert d.checks[0].consumed == 7 and d.checks[0].flags == []


def test_rules_in_the_same_window_share_its_bounds():
    a, b = rule(1000), rule(1000, scope="user", scope_id="u1")
    d = decide(ask([a, b], {"act.cost": 1}), View())
    assert [c.window_end_ms for c in d.checks] == [DAY + DAY_MS] * 2


def test_holds_of_runs_and_calls_count_against_the_limit():
    r = rule(1000)
    view = View(run_holds={("agent", AID): 600}, call_holds={("agent", AID, "act.cost"): 300})
    assert held(view, ("agent", AID), "act.cost") == 900
    assert held(view, ("agent", AID), "events") == 0
    d = decide(ask([r], {"act.cost": 200}), view)
    assert d.refusal.code == "budget_exceeded"


# -- decide: refuse, throttle, suspend ---------------------------------------------------------


def test_past_the_hard_limit_an_event_is_refused_until_the_window_ends():
    r = rule(1000)
    d = decide(ask([r], {"act.cost": 1}), View(counters={key(r): 1000, key(r, PREV): 0}))
    assert isinstance(d.refusal, OverBudget) and d.refusal.code == "budget_exceeded"
    assert d.refusal.details["retry_after_ms"] == DAY + DAY_MS - TS
    assert d.checks == []


def test_a_refusal_stops_at_the_first_rule_that_refuses():
    first, second = rule(10), rule(10, scope="user", scope_id="u1")
    d = decide(ask([first, second], {"act.cost": 50}), View())
    assert d.refusal is not None and d.checks == []


def test_budgets_off_records_past_the_limit_without_refusing():
    r = rule(10)
    d = decide(ask([r], {"act.cost": 50}, enforce=False), View())
    assert d.refusal is None and d.checks[0].consumed == 50


def test_a_metered_event_past_the_limit_is_recorded_with_over_limit():
    r = rule(10)
    d = decide(ask([r], {"act.cost": 50}, metered=True), View())
    assert d.refusal is None and "over_limit" in d.checks[0].flags


def test_real_spending_past_a_suspending_limit_asks_for_a_suspension():
    r = rule(10, overage=SUSPEND)
    d = decide(ask([r], {"act.cost": 50}), View())
    assert d.refusal.code == "budget_exceeded" and d.suspends == [(r, DAY + DAY_MS)]
    # an estimate (a reservation's hold, no spend) is refused without a suspension
    d = decide(ask([r], {}, hold_delta=50), View())
    assert d.refusal is not None and d.suspends == []


def test_a_throttled_scope_gets_a_bucket_and_is_paced():
    r = rule(1000, overage=THROTTLE)
    view = View(counters={key(r): 600, key(r, PREV): 0})
    d = decide(ask([r], {"act.cost": 10}), view)
    assert d.refusal is None and "throttled" in d.checks[0].flags and r.key in d.buckets
    view.buckets = {r.key: Bucket(tokens=0, updated_ms=TS)}
    d = decide(ask([r], {"act.cost": 10}), view)
    assert d.refusal.code == "throttled" and d.buckets[r.key].tokens == 0


def test_a_counter_that_would_leave_int64_is_refused_invalid():
    r = rule(None)
    with pytest.raises(Invalid) as e:
        decide(ask([r], {"act.cost": 2}), View(counters={key(r): COUNTER_MAX - 1}))
    assert e.value.code == "amount_out_of_range"


# -- decide: strict mode -------------------------------------------------------------------------


def test_strict_mode_without_rights_here_refuses_no_rights_while_the_cluster_has_room():
    r = rule(1000)
    no_rights = OverBudget("no_rights", "asking peers", details={"retry_after_ms": 100})
    view = View(strict=True, strict_rules={r.key}, refusal=no_rights)
    d = decide(ask([r], {"act.cost": 10}), view)
    assert d.refusal is no_rights and not view.loaded[1:]  # no debt read: strict rules carry none


def test_strict_mode_past_the_merged_limit_refuses_budget_exceeded_until_the_window_ends():
    r = rule(1000)
    no_rights = OverBudget("no_rights", "asking peers", details={"retry_after_ms": 100})
    view = View(counters={key(r): 995}, strict=True, strict_rules={r.key}, refusal=no_rights)
    d = decide(ask([r], {"act.cost": 10}), view)
    assert d.refusal.code == "budget_exceeded" and "strict mode" in d.refusal.message


def test_strict_mode_with_rights_spends_them_and_a_metered_event_spends_them_anyway():
    r = rule(1000)
    view = View(strict=True, strict_rules={r.key})
    assert decide(ask([r], {"act.cost": 10}), view).strict_spends == [(key(r), 10)]
    view.refusal = OverBudget("no_rights", "none", details={"retry_after_ms": 100})
    d = decide(ask([r], {"act.cost": 10}, metered=True), view)
    assert d.refusal is None and d.strict_spends == [(key(r), 10)]


def test_strict_rules_are_not_asked_when_no_rule_may_be_strict():
    r = rule(1000)
    view = View(strict=False, strict_rules={r.key}, refusal=OverBudget("no_rights", "x"))
    assert decide(ask([r], {"act.cost": 10}), view).refusal is None


def test_spent_or_keeps_the_strict_refusal_when_the_event_fits():
    r = rule(1000)
    refusal = OverBudget("no_rights", "x")
    assert spent_or(refusal, r, 0, 0, 10, TS, DAY + DAY_MS) is refusal


# -- decide: optimistic debt ---------------------------------------------------------------------


def test_the_previous_windows_overspend_is_a_debt_penalised_once():
    r = rule(1000)
    view = View(counters={key(r): 0, key(r, PREV): 1500})
    d = decide(ask([r], {"act.cost": 600}), view)
    assert d.refusal.code == "budget_exceeded"  # 600 + a debt of 500 > 1000
    assert d.penalties == [(r.key, PREV)]
    view.settled = {(r.key, PREV)}
    assert decide(ask([r], {"act.cost": 400}), view).penalties == []


def test_a_debt_is_not_penalised_on_a_dry_run_or_for_a_scope_other_than_an_agent():
    r, team = rule(1000), rule(1000, scope="team", scope_id="t")
    view = View(counters={key(r, PREV): 1500, key(team, PREV): 1500})
    assert decide(ask([r], {"act.cost": 1}, dry_run=True), view).penalties == []
    # budgets only recorded (budgets = false): the node neither refuses nor punishes
    d = decide(ask([r], {"act.cost": 600}, enforce=False), view)
    assert d.refusal is None and d.penalties == []
    d = decide(ask([team], {"act.cost": 1}), view)
    assert d.penalties == [] and d.checks[0].consumed == 1


# -- receipts ----------------------------------------------------------------------------------


def test_receipt_parts_report_limited_rules_and_alert_on_each_crossing():
    soft, free = rule(1000, overage=RESERVE), rule(None, scope="user", scope_id="u1")
    view = View(counters={key(soft): 700})
    d = decide(ask([soft, free], {"act.cost": 350}), view)  # 700 -> 1050: soft, hard and into the reserve
    budgets, alerts = receipt_parts(d.checks, view, TS)
    assert [b["scope"] for b in budgets] == ["agent"]
    assert budgets[0]["flags"] == ["reserve"] and budgets[0]["consumed"] == 1050
    assert sorted(a["type"] for a in alerts) == ["hard_limit", "reserve", "soft_limit"]


def test_a_reserve_alert_needs_the_hard_crossing():
    r = rule(1000, overage=RESERVE)
    view = View(counters={key(r): 1010})
    d = decide(ask([r], {"act.cost": 10}), view)
    _budgets, alerts = receipt_parts(d.checks, view, TS)
    assert d.checks[0].flags == ["reserve"] and alerts == []


def test_a_dry_run_reports_the_hold_a_reservation_would_add():
    r = rule(1000)
    d = decide(ask([r], {}, hold_delta=250, dry_run=True), View())
    [view] = dry_run_parts(d.checks, 250)
    assert view["held"] == 250 and view["remaining"] == 750
    assert budget_view(r, 10, 0, 5, [])["status"] == "healthy"


# -- runs ---------------------------------------------------------------------------------------


def new_run(run_id=b"r" * 16, agent=AGENT, reserved=100, expires=TS + 1000, local=True):
    return Run(run_id, agent, [("agent", AID), ("team", "t")], reserved, 0, 0, expires, local=local)


def test_run_transitions_move_the_holds_of_every_scope_of_the_chain():
    runs = Runs()
    run = new_run()
    runs.put(run)
    assert runs.holds == {("agent", AID): 100, ("team", "t"): 100} and runs.local_held(("team", "t")) == 100
    runs.put(step(runs.open[run.run], "run.charge", 30, 5))
    assert runs.holds[("agent", AID)] == 70 and runs.open[run.run].tokens == 5
    posted = step(runs.open[run.run], "run.post", 80, 0)
    assert run_state(posted, "run.post") == "posted" and posted.hold == 0
    runs.put(posted)
    assert runs.holds[("agent", AID)] == 0 and run.run in runs and runs.get(run.run).spent == 110
    assert run_state(step(new_run(), "run.void"), "run.void") == "voided"
    assert run_state(new_run(), "run.reserve") == "pending"


def test_a_peers_run_holds_the_scope_but_not_this_nodes_rights():
    runs = Runs()
    runs.put(new_run(local=False))
    assert runs.holds[("agent", AID)] == 100 and runs.local_held(("agent", AID)) == 0


def test_local_held_leaves_out_the_run_being_decided():
    runs = Runs()
    run = new_run()
    runs.put(run)
    assert runs.local_held(("agent", AID), excluding=run) == 0


def test_expired_runs_close_and_release_their_holds():
    runs = Runs()
    runs.put(new_run(expires=TS))
    runs.expire(AGENT, TS)
    assert runs.open == {} and runs.holds[("agent", AID)] == 0 and runs.of_agent(AGENT) == []


def test_runs_are_bounded_open_refused_closed_forgotten_oldest_first():
    runs = Runs(open_max=2, closed_max=2)
    for i in range(2):
        runs.put(new_run(bytes([i]) * 16, expires=TS + 10 + i))
    with pytest.raises(OverBudget) as e:
        runs.check_room(TS)
    assert e.value.code == "too_many_runs" and e.value.details["retry_after_ms"] == 10
    for i in range(3):
        runs.put(step(new_run(bytes([10 + i]) * 16), "run.void"))
    assert list(runs.closed) == [bytes([11]) * 16, bytes([12]) * 16]


def test_call_holds_hold_each_metric_of_the_chain_until_settled():
    @dataclass
    class Call:
        call: bytes
        agent: bytes
        kind: str
        cost: int
        tokens: int = 9

    calls = CallHolds()
    llm, task = Call(b"c" * 16, AGENT, "llm", 50), Call(b"d" * 16, AGENT, "task", 20)
    assert call_amounts(task) == {"act.cost": 20, "act.runs": 1, "events": 3}
    calls.hold(llm, [("agent", AID)])
    calls.hold(task, [("agent", AID)])
    assert calls.holds[("agent", AID, "act.cost")] == 70
    assert calls.settle(llm.call) and not calls.settle(llm.call)
    calls.settle_all([task.call])
    assert calls.holds == {} and calls.calls == {}


# -- roles ---------------------------------------------------------------------------------------

AUTH, ORACLE, NODE, METER, ADMIN = (bytes([i]) * 32 for i in range(1, 6))


def roles():
    return Roles(NODE, frozenset({AUTH}), frozenset({ORACLE}), frozenset({METER, NODE}), frozenset({("t1", ADMIN)}),
                 {NODE})


def ev(kind, signer, body):
    return unsigned_event(kind, signer, TS, body)


REGISTER = {"agent": AGENT, "user": bytes(32), "team": "t1", "platform": "p", "plan": "casual"}
BUDGET = {"scope": "team", "id": "t1", "metric": "cost", "window": "month", "limit": 10}


@pytest.mark.parametrize("kind, body, allowed, refused", [
    ("agent.register", REGISTER, AUTH, ORACLE),
    ("stake.set", {"agent": AGENT, "amount": 5}, ORACLE, AUTH),
    ("budget.set", BUDGET, ADMIN, ORACLE),
    ("budget.set", {**BUDGET, "scope": "platform", "id": "p"}, AUTH, ADMIN),
    ("act", {"op": "llm.call", "cost": 1}, AGENT, None),
    ("act", {"op": "llm.call", "cost": 1, "agent": AGENT}, METER, AGENT),
])
def test_one_table_says_who_may_sign_what(kind, body, allowed, refused):
    r = roles()
    assert r.may_sign(ev(kind, allowed, body))
    r.authorize(ev(kind, allowed, body))
    if refused is not None:
        with pytest.raises(Forbidden):
            r.authorize(ev(kind, refused, body))


def test_node_records_are_the_nodes_own_and_merged_only_from_admitted_nodes():
    r = roles()
    suspended = {"agent": AGENT, "metric": "act.cost", "until": TS + 1, "reason": "x"}
    r.authorize(ev("agent.suspended", NODE, suspended))
    with pytest.raises(Forbidden):
        r.authorize(ev("agent.suspended", AUTH, suspended))
    assert not r.may_sign(ev("agent.suspended", AUTH, suspended))
    assert r.role(NODE, False) == "system" and r.role(AGENT, True) == "peer" and r.role(AGENT, False) == "user"


# -- the policy fold ------------------------------------------------------------------------------


def state():
    return PolicyState(Governance(frozenset({AUTH}), 1), "default", "freemium", nodes={NODE})


def test_a_registration_names_the_chain_and_a_name_cannot_be_taken_twice():
    s = state()
    s.apply(ev("agent.register", AUTH, {**REGISTER, "name": "alice"}), TS)
    assert s.chain(AGENT) == [("agent", AID), ("user", bytes(32).hex()), ("team", "t1"), ("platform", "p")]
    assert s.plan_of("agent", AID) == "casual" and s.plan_of("team", "t1") is None and s.version == 1
    other = {**REGISTER, "agent": bytes([9]) * 32, "name": "alice"}
    with pytest.raises(Conflict):
        s.apply(ev("agent.register", AUTH, other), TS)
    assert s.apply(ev("agent.register", AUTH, other), TS, replay=True)  # a replicated loser: warned, key only
    assert s.names["alice"] == AGENT


def test_suspend_and_lift_move_suspensions_buckets_and_alerts():
    s = state()
    out = Admitted()
    s.buckets[("agent", AID, "act.cost", "day")] = Bucket(1, TS)
    s.apply(ev("agent.suspend", AUTH, {"agent": AGENT, "reason": "abuse"}), TS, out)
    with pytest.raises(OverBudget) as e:
        s.check_suspended(AGENT, TS)
    assert e.value.code == "suspended" and s.suspended_agents(TS) == {AGENT}
    s.apply(ev("agent.lift", AUTH, {"agent": AGENT, "reason": "ok"}), TS + 1, out)
    assert s.active_suspension(AGENT, TS + 1) is None and s.buckets == {}
    assert [a["type"] for a in out.alerts] == ["suspended", "lifted"]


def test_the_node_suspends_once_until_the_latest_end_with_records_and_an_alert():
    s, out = state(), Admitted()
    r = rule(10, overage=SUSPEND)
    s.auto_suspend(AGENT, r, TS + 100, TS, out)
    s.auto_suspend(AGENT, r, TS + 50, TS, out)  # already suspended longer: nothing more
    assert [k for k, _ in out.node_records] == ["agent.suspended", "trt"] and len(out.alerts) == 1
    assert out.node_records[1] == trust_penalty(AGENT)


def test_plans_stakes_owner_budgets_and_admitted_nodes_fold_and_bump_the_version():
    s = state()
    s.apply(ev("plan.assign", AUTH, {"scope": "team", "id": "t1", "plan": "premium"}), TS)
    s.apply(ev("stake.set", ORACLE, {"agent": AGENT, "amount": 5}), TS)
    s.apply(ev("budget.set", AUTH, BUDGET), TS)
    s.apply(ev("node.admit", AUTH, {"node": METER, "name": "m1"}), TS)
    assert s.plan_of("team", "t1") == "premium" and s.stakes[AGENT] == 5 and METER in s.nodes
    assert s.owner_budgets.in_force("team", "t1", TS) and s.version == 3
    assert s.apply(ev("act", AGENT, {"op": "llm.call", "cost": 1}), TS) == []  # not a policy record


def test_throttle_buckets_are_bounded():
    s = state()
    for i in range(BUCKETS_MAX + 1):
        s.set_bucket(("agent", str(i), "m", "day"), Bucket(0, 0))
    assert len(s.buckets) == BUCKETS_MAX and ("agent", "0", "m", "day") not in s.buckets


def test_admitted_batches_merge_their_writes():
    a, b = Admitted(deltas={("a", "b", "c", "d", 0): 1}), Admitted(deltas={("a", "b", "c", "d", 0): 2}, alerts=[{}])
    a.merge(b)
    assert a.deltas == {("a", "b", "c", "d", 0): 3} and a.alerts == [{}]
