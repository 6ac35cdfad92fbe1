"""The budget book on the writer thread: loads counters and policy from SQLite, decides with the
pure rules, and returns the deltas the writer commits.

Theory of operation. Every input is an event in the log, so the book is a fold:
policy records rebuild `PolicyState` (ledger/bookpolicy.py) and run records
rebuild `Runs` (ledger/book.py) at start-up, and every admitted or merged event
moves them in the writer-thread step that appends it. `admit(event)` asks
`ledger.bookdecide.decide` over the rules of the event's chain and the counters
this module loads on demand, applies the Decision (counters, buckets, runs,
suspensions) in memory and returns what the transaction must also write
(`Admitted`: counter deltas, alerts, the node's own records). The writer adds
the deltas in bulk (one executemany per commit, node/store/budgets.py); after a
rolled-back commit the caller rebuilds the book (`reload`).

Caches, each bounded (what happens at the bound):
* counters: two generations of `COUNTER_GENERATION_MAX` keys; when the young one
  is full the old one is dropped and read again from SQLite on the next use. A
  batch touches far fewer keys than a generation (events_max x the keys of one
  event's rules), so no key written by a batch not yet committed is dropped.
* effective limits (rules) per scope and per agent chain: `RULE_CACHE_MAX` each,
  oldest dropped; an entry holds until a policy record changes `version` or the
  time leaves the span where the policy, bursts, owner budgets and the day's
  reputation are those it was computed from.
* reputation: `REPUTATION_MAX` agents, oldest dropped (recomputed from SQLite).
* settled debts: `SETTLED_MAX`, oldest dropped (the debt of a window so old may be
  penalised once more on this node).
* runs: ledger/book.py (open runs refused past OPEN_RUNS_MAX, closed ones forgotten).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, MutableMapping

from ledger import escrow as escrow_rules
from ledger.book import (
    RUN_TIMEOUT_MS_MAX, Admitted, CallHolds, Chain, CounterKey, Registration, Roles, Run, Runs, ScopeKey,
    call_amounts, check_run_limits, run_state, step, trust_penalty,
)
from ledger.bookdecide import Ask, Decision, decide, dry_run_parts, held, receipt_parts
from ledger.bookpolicy import PolicyState
from ledger.budget import Rule, charges
from ledger.errors import Conflict, Invalid, LedgerError
from ledger.events import Event, charged_agent, is_metered
from ledger.governance import Governance
from ledger.kinds import RUN_KINDS
from ledger.pricing import estimate_milli, llm_cost_milli
from ledger.reputation import Rating, performance_trust, score_ppm
from ledger.windows import DAY_MS, window_bounds
from node import budgetcalls, budgetmerge, budgetviews
from node.budgetmerge import METERING
from node.budgetcounters import COUNTER_GENERATION_MAX, CounterCache, DecideView
from node.budgetrules import RuleCache
from node.escrow import EscrowBook
from node.store import budgets as budget_store
from node.store import meter as meter_store
from node.store.meter import OpenCall
from node.store.sqlite import Connection

if TYPE_CHECKING:
    from node.config import Config

__all__ = ["Admitted", "BudgetBook", "Registration", "Run", "call_amounts", "trust_penalty", "RUN_TIMEOUT_MS_MAX"]

logger = logging.getLogger("ats.budgets")

REPUTATION_MAX = 100_000
SETTLED_MAX = 100_000


class BudgetBook:
    """Policy state, usage counters and run reservations, owned by the writer thread."""

    def __init__(self, *, node_key: bytes, authorities: tuple[bytes, ...], oracles: tuple[bytes, ...],
                 threshold: int, unregistered: str, default_plan: str, enforce: bool, escrow: EscrowBook | None = None,
                 meters: tuple[bytes, ...] = (), team_admins: tuple[tuple[str, bytes], ...] = ()):
        # strict mode (node/escrow.py): the same EscrowBook survives a reload, with its want callback
        self.escrow = escrow or EscrowBook(node_key, strict=(), members=())
        self._args = dict(node_key=node_key, authorities=authorities, oracles=oracles, threshold=threshold,
                          unregistered=unregistered, default_plan=default_plan, enforce=enforce, escrow=self.escrow,
                          meters=meters, team_admins=team_admins)
        self.node_key = node_key
        self.enforce = enforce
        self.roles = Roles(node_key, frozenset(authorities), frozenset(oracles), frozenset(meters) | {node_key},
                           frozenset(team_admins), {node_key})
        m = threshold or (len(authorities) // 2 + 1 if authorities else 1)
        governance = Governance(frozenset(authorities), m) if authorities else Governance(frozenset({node_key}), 1)
        self.policy = PolicyState(governance, unregistered, default_plan, nodes=self.roles.nodes)
        self.runs = Runs()
        self.call_book = CallHolds()
        # `ats verify-db` puts a mapping that starts every counter at 0 (node/verifydb.py)
        self.counters: MutableMapping[CounterKey, int] = CounterCache()
        self.reputation: dict[bytes, tuple[int, int]] = {}  # agent -> (UTC day start, score ppm)
        self.settled: dict[tuple[tuple[str, str, str, str], int], None] = {}  # debts already penalised here
        self.run_holds, self.call_holds = self.runs.holds, self.call_book.holds  # what bookdecide.held reads
        self._rules = RuleCache(self)
        self._view = DecideView(self)  # what decide reads (ledger.bookdecide.BookView), moved to each event

    # names the rest of the node reads (queries, reports, dashboard, meter, escrow)
    authorities = property(lambda self: self.roles.authorities)
    oracles = property(lambda self: self.roles.oracles)
    meters = property(lambda self: self.roles.meters)
    team_admins = property(lambda self: self.roles.team_admins)
    nodes = property(lambda self: self.roles.nodes)
    governance = property(lambda self: self.policy.governance)
    registrations = property(lambda self: self.policy.registrations)
    users = property(lambda self: self.policy.users)
    names = property(lambda self: self.policy.names)
    key_names = property(lambda self: self.policy.key_names)
    plans = property(lambda self: self.policy.plans)
    stakes = property(lambda self: self.policy.stakes)
    owner_budgets = property(lambda self: self.policy.owner_budgets)
    grants = property(lambda self: self.policy.grants)
    unregistered = property(lambda self: self.policy.unregistered)
    default_plan = property(lambda self: self.policy.default_plan)
    calls = property(lambda self: self.call_book.calls)

    @classmethod
    def from_config(cls, config: "Config", node_key: bytes) -> "BudgetBook":
        """The book a node with this Config keeps (node/config.py's governance and budget settings)."""
        return cls(
            node_key=node_key,
            authorities=tuple(bytes.fromhex(k) for k in config.authorities),
            oracles=tuple(bytes.fromhex(k) for k in config.oracles),
            threshold=config.governance_threshold,
            unregistered=config.unregistered_agents,
            default_plan=config.default_plan,
            enforce=config.budgets,
            escrow=EscrowBook.from_config(config, node_key),
            meters=tuple(bytes.fromhex(k) for k in getattr(config, "meters", ())),
            team_admins=tuple((t, bytes.fromhex(k)) for t, _, k in (e.partition("=") for e in config.team_admins)),
        )

    # -- start-up ---------------------------------------------------------------------

    def load(self, conn: Connection, now_ms: int) -> None:
        """Rebuild the book from the log's policy and run records (few; a partial index finds them)."""
        for event in budget_store.policy_events(conn, now_ms - RUN_TIMEOUT_MS_MAX):
            if not self.roles.may_sign(event):
                continue  # replicated from a node whose authorities are not ours: ignored live, ignored now
            self.fold(event, local=True)
        self.policy.announced = {a.proposal for a in self.policy.governance.adopted()}
        for call in meter_store.open_calls(conn):
            self.call_book.hold(call, self.chain(call.agent))

    def reload(self, conn: Connection, now_ms: int) -> None:
        """Forget everything and rebuild from the log (after a rolled-back transaction)."""
        self.__init__(**self._args)  # type: ignore[misc]
        self.load(conn, now_ms)

    def rollback(self, conn: Connection, now_ms: int) -> str | None:
        """After a rolled-back transaction whose effects this book already holds (a batch, a merged
        page): rebuild it from the log. None, or why it could not be (the node must turn read-only)."""
        try:
            self.reload(conn, now_ms)
        except Exception as e:
            return f"budget book could not be rebuilt after a failed commit: {e}"
        return None

    def fold(self, ev: Event, *, local: bool) -> None:
        """A policy or run record decided elsewhere (replayed, merged): applied, never refused."""
        if ev.kind in RUN_KINDS:
            self.replay_run(ev, local)
            return
        try:
            for warning in self.policy.apply(ev, ev.ts, replay=True):
                logger.warning("%s", warning)
        except LedgerError as e:  # recorded once admitted; a later rule change may refuse it now
            logger.info("policy record %s %s does not apply here: %s", ev.kind, ev.id_hex, e.message)

    # -- scopes, rules and counters ---------------------------------------------------------

    def chain(self, signer: bytes) -> Chain:
        """The scopes an event by signer charges: agent, then its user, team and platform."""
        return self.policy.chain(signer)

    def spending_rules(self, conn: Connection, agent: bytes, at_ms: int, metrics: tuple[str, ...]) -> list[Rule]:
        """The rules an event charging agent on these metrics moves, in chain order (cached, as admission's)."""
        return self._rules.agent_spending(conn, agent, at_ms, metrics)

    def rules(self, conn: Connection, chain: Chain, at_ms: int) -> list[Rule]:
        """Every rule on the chain's scopes in force at at_ms, with multipliers and bursts applied."""
        return self._rules.rules(conn, chain, at_ms)

    def score(self, conn: Connection, agent: bytes, at_ms: int) -> int:
        """Reputation (ppm) as of the start of the UTC day holding at_ms: stable within a day."""
        day = at_ms - at_ms % DAY_MS
        cached = self.reputation.get(agent)
        if cached is not None and cached[0] == day:
            return cached[1]
        # |value| is capped at 1000 (one full rating) so no single record can dominate a score
        ratings = [
            Rating(ts_ms=ts, value_milli=max(-1000, min(1000, value)), halflife_s=halflife,
                   issuer_role=self.roles.role(issuer, issuer in self.policy.registrations), type=type_)
            for ts, issuer, value, halflife, type_ in budget_store.ratings_about(conn, agent, day)
        ]
        score = score_ppm(ratings, day)
        if agent not in self.reputation and len(self.reputation) >= REPUTATION_MAX:
            del self.reputation[next(iter(self.reputation))]
        self.reputation[agent] = (day, score)
        return score

    def rated(self, subject: bytes) -> None:
        """A rating about subject arrived: its score and the limits computed from it are stale."""
        self.reputation.pop(subject, None)
        self._rules.forget_agent(subject)

    def consumed(self, conn: Connection, key: CounterKey) -> int:
        """The counter of key: cached, else from SQLite (and cached, in the bounded generations)."""
        counters = self.counters
        value = counters.get(key)
        if value is not None:
            return value
        if type(counters) is not CounterCache:
            value = budget_store.counter(conn, key)
            counters[key] = value
            return value
        value = counters.old.pop(key, None)
        if value is None:
            value = budget_store.counter(conn, key)
        counters.load(key, value, COUNTER_GENERATION_MAX)
        return value

    def _settle(self, conn: Connection) -> None:
        if type(self.counters) is CounterCache:
            self.counters.settle(conn)

    def prefetch(self, conn: Connection, rules: list[Rule], ts_ms: int) -> None:
        """Load, in one query, the counters these rules read for an event at ts_ms (its window and the
        previous one) that the cache does not hold: a scope's first event of a window costs one
        SQLite read instead of one per counter."""
        counters = self.counters
        if type(counters) is not CounterCache:
            return  # `ats verify-db` counts from 0, nothing to read
        old = counters.old
        missing = []
        for rule in rules:
            start = window_bounds(rule.window, ts_ms)[0]
            keys = [rule.key + (start,)]
            if rule.limit is not None:  # a limited rule also reads its previous window (the debt)
                keys.append(rule.key + (window_bounds(rule.window, start - 1)[0],))
            missing.extend(k for k in keys if counters.get(k) is None and k not in old)
        if missing:
            for key, value in budget_store.counters(conn, list(dict.fromkeys(missing))).items():
                counters.load(key, value, COUNTER_GENERATION_MAX)

    def held(self, scope_key: ScopeKey, metric: str) -> int:
        """What open runs (act.cost) and open metered calls (their worst case) hold of a scope's metric."""
        return held(self, scope_key, metric)  # type: ignore[arg-type]

    def local_held(self, key: CounterKey, run: Run | None = None, hold_delta: int = 0) -> int:
        """act.cost held by open reservations admitted here, with `run`'s hold moved by hold_delta.

        Strict mode counts them against this node's rights. Runs replayed at start-up count
        as local whatever node admitted them: holding too much is safe, too little is not.
        """
        if key[2] != "act.cost":
            return 0
        scope = (key[0], key[1])
        total = self.runs.local_held(scope, excluding=run) + self.call_book.holds.get(scope + ("act.cost",), 0)
        if run is not None and scope in run.chain:
            total += max(0, (run.hold if run.run in self.runs.open else 0) + hold_delta)
        return total

    # -- admission ----------------------------------------------------------------------------

    def authorize(self, ev: Event) -> None:
        """Policy records only from their signers (ledger.policy), metered events only from meters; raises Forbidden."""
        self.roles.authorize(ev)

    def admit(self, conn: Connection, ev: Event, now_ms: int, *, dry_run: bool = False) -> tuple[Admitted, LedgerError | None]:
        """Decide ev against the book and apply it if admitted: (what to write, the rejection or None).

        Raises the LedgerError of a record that is invalid whatever the budgets
        (not an authority, unknown run, run limits). With dry_run nothing moves:
        the answer of POST /v1/quota/check.
        """
        self.roles.authorize(ev)
        counters = self.counters
        if type(counters) is CounterCache and conn.total_changes != counters.changes:
            counters.settle(conn)  # the writer committed since: nothing is dirty any more
        out = Admitted()
        if ev.kind == "escrow.transfer":
            # this node gives rights away: holder-only and spare, debited in this transaction
            if not dry_run:
                out.deltas.update(self.escrow.give(self, conn, ev, self.local_held(ev.body.key)))
            return out, None
        if ev.kind not in METERING and ev.kind not in RUN_KINDS:
            if not dry_run:
                self.policy.apply(ev, now_ms, out)
            return out, None
        if ev.kind == "trt" and not dry_run:
            self.rated(ev.body.subject)  # a late rating may change a score already computed
        # a metered event (PROTOCOL.md §6) records work already done: it charges the agent it
        # names, settles the call it closes, and is never refused for budget (it may suspend)
        metered = is_metered(ev)
        if ev.signer == self.node_key and not metered:
            return out, None  # the node's own trust records are not metered
        return self._admit_spend(conn, ev, now_ms, metered, dry_run, out)

    def _admit_spend(self, conn: Connection, ev: Event, now_ms: int, metered: bool, dry_run: bool,
                     out: Admitted) -> tuple[Admitted, LedgerError | None]:
        """admit for an event that spends (metering and run kinds): decide, then apply."""
        subject = charged_agent(ev)
        self._check_spender(ev, subject, now_ms, metered)
        if metered and not dry_run and self.call_book.settle(ev.nonce):
            out.settled_calls.append(ev.nonce)
        if ev.kind in RUN_KINDS or ev.signer in self.runs.by_agent:
            run, after, hold_delta = self._run_move(ev, now_ms)
        else:  # no run record and no open run to expire: the common case, without the calls
            run, after, hold_delta = None, None, 0
        consume = self.charges(ev)
        metrics = tuple(consume) + (("act.cost",) if hold_delta > 0 else ())
        # only the rules of the metrics the event moves: decide skips the others anyway
        rules = self._rules.agent_spending(conn, subject, ev.ts, metrics)
        view = self._view
        view.conn, view.run, view.hold_delta, view.counters = conn, run, hold_delta, self.counters
        view.rules, view.ts_ms = rules, ev.ts
        decision = decide(Ask(rules, consume, hold_delta, ev.ts, now_ms, metered, self.enforce, dry_run), view)
        if not dry_run and (decision.buckets or decision.penalties or decision.suspends):
            self._apply_side_effects(decision, subject, now_ms, out)
        if decision.refusal is not None:
            return out, decision.refusal
        if dry_run:
            out.budgets = dry_run_parts(decision.checks, hold_delta)
            if run is not None and ev.kind == "run.reserve":
                out.run = {"run": run.run.hex(), "state": "estimate", "reserved": run.reserved, "expires": run.expires_ms}
            return out, None
        self._apply_spend(conn, decision, out)
        if after is not None:
            self._apply_run(ev, after, out)
        out.budgets, alerts = receipt_parts(decision.checks, view, now_ms)
        out.alerts.extend(alerts)
        return out, None

    def _check_spender(self, ev: Event, subject: bytes, now_ms: int, metered: bool) -> None:
        """Refusals whatever the budgets: an unregistered agent (if refused), a mispriced LLM call, a suspension."""
        if not metered and ev.kind != "trt" and ev.signer not in self.policy.registrations \
                and self.policy.unregistered == "refuse":
            raise Invalid("unknown_agent", "this agent has no agent.register record and the node refuses unregistered agents")
        if metered:
            self._check_price(ev)
        if self.enforce and not metered:
            self.policy.check_suspended(subject, now_ms)

    def _run_move(self, ev: Event, now_ms: int) -> tuple[Run | None, Run | None, int]:
        """(the run a run record touches, the run after it, the act.cost hold it adds): (None, None, 0) for others."""
        run = self._run_precheck(ev, now_ms)
        if run is None:
            return None, None, 0
        if ev.kind == "run.reserve":
            return run, run, run.hold
        after = step(run, ev.kind, getattr(ev.body, "cost", 0), getattr(ev.body, "tokens", 0))
        return run, after, after.hold - run.hold

    def _apply_side_effects(self, decision: Decision, subject: bytes, now_ms: int, out: Admitted) -> None:
        """What a decision moves even when it refuses: buckets, debts penalised, suspensions."""
        for key, bucket in decision.buckets.items():
            self.policy.set_bucket(key, bucket)
        for settled in decision.penalties:
            if len(self.settled) >= SETTLED_MAX:
                del self.settled[next(iter(self.settled))]
            self.settled[settled] = None
            out.node_records.append(trust_penalty(bytes.fromhex(settled[0][1])))
        for rule, until_ms in decision.suspends:
            self.policy.auto_suspend(subject, rule, until_ms, now_ms, out)

    def _apply_spend(self, conn: Connection, decision: Decision, out: Admitted) -> None:
        """Admitted: the counters move (in memory now, in SQLite with the batch's commit)."""
        deltas = out.deltas
        for c in decision.checks:
            if c.spend and c.key not in deltas:
                self.counters[c.key] = c.consumed
                deltas[c.key] = c.spend
        for key, spend in decision.strict_spends:
            own = EscrowBook.counter(key, escrow_rules.OWN)  # consumed from this node's own rights
            if spend and own not in deltas:
                self.counters[own] = self.consumed(conn, own) + spend
                deltas[own] = spend

    def _apply_run(self, ev: Event, run: Run, out: Admitted) -> None:
        self.runs.put(run)
        if ev.kind == "run.post" and ev.body.score is not None:
            value = performance_trust(ev.body.score)
            if value is not None:
                out.node_records.append(("trt", {"subject": ev.signer, "type": "reliability", "value": value,
                                                  "halflife": 30 * 86_400}))
        limit = self.max_cost_per_run(ev.signer)
        out.run = {
            "run": run.run.hex(),
            "state": run_state(run, ev.kind),
            "reserved": run.reserved,
            "spent": run.spent,
            "held": run.hold,
            "max_cost_per_run": limit,
            "expires": run.expires_ms,
            "stop": bool(run.open and ((limit is not None and run.spent >= limit) or run.spent >= run.reserved)),
        }

    # -- runs -----------------------------------------------------------------------------------

    def _run_precheck(self, ev: Event, now_ms: int) -> Run | None:
        """Validate a run record against the agent's run limits; the run it touches, if any."""
        self.runs.expire(ev.signer, now_ms)  # any event of an agent releases its expired runs' holds
        if ev.kind not in RUN_KINDS:
            return None
        if ev.kind != "run.reserve":
            run = self.runs.open.get(ev.body.run)
            if run is None or run.agent != ev.signer:
                raise Invalid("unknown_run", "no open run with this id for this agent (never reserved, already posted or voided)")
            return run
        body = ev.body
        if body.run in self.runs:
            raise Conflict("run_exists", "a run with this id was already reserved")
        if not 0 < body.timeout <= RUN_TIMEOUT_MS_MAX:
            raise Invalid("invalid_body", f"timeout must be 1..{RUN_TIMEOUT_MS_MAX} ms")
        cost = body.cost if body.cost is not None else self.estimate(body.op, body.tokens, ev.ts)
        reg = self.policy.registrations.get(ev.signer)
        if reg is not None:
            check_run_limits(reg, body, cost, self.runs.of_agent(ev.signer), now_ms)
        self.runs.check_room(now_ms)
        return Run(body.run, ev.signer, self.chain(ev.signer), cost, 0, 0, ev.ts + body.timeout)

    def replay_run(self, ev: Event, local: bool) -> None:
        """A run record admitted before (start-up) or by a peer (merged): its transition, no checks."""
        b = ev.body
        if ev.kind == "run.reserve":
            cost = b.cost if b.cost is not None else self.estimate(b.op, b.tokens, ev.ts)
            self.runs.put(Run(b.run, ev.signer, self.chain(ev.signer), cost, 0, 0, ev.ts + b.timeout, local=local))
            return
        run = self.runs.open.get(b.run)
        if run is not None:
            self.runs.put(step(run, ev.kind, getattr(b, "cost", 0), getattr(b, "tokens", 0)))

    # -- replicated and replayed events (node/budgetmerge.py) -----------------------------------

    def observe(self, conn: Connection, ev: Event, now_ms: int, origin: bytes | None = None) -> dict[CounterKey, int]:
        """Fold a replicated event (another origin's, verified) into the book; the counter deltas to write."""
        self._settle(conn)
        return budgetmerge.observe(self, conn, ev, now_ms, origin)

    def replay_own(self, conn: Connection, ev: Event) -> dict[CounterKey, int]:
        """Fold an event of this node's own log, replayed; the counter deltas its admission wrote."""
        return budgetmerge.replay_own(self, conn, ev)

    # -- reads ---------------------------------------------------------------------------------------

    def budget_views(self, conn: Connection, scopes: list[tuple[str, str]], now_ms: int) -> list[dict[str, Any]]:
        return budgetviews.budget_views(self, conn, scopes, now_ms)

    def resolve(self, text: str) -> bytes | None:
        return budgetviews.resolve(self, text)

    def owner_listing(self, conn: Connection, scope: str | None, scope_id: str | None, now_ms: int) -> dict[str, Any]:
        return budgetviews.owner_listing(self, conn, scope, scope_id, now_ms)

    def balance(self, conn: Connection, agent: bytes, now_ms: int) -> dict[str, Any]:
        return budgetviews.balance(self, conn, agent, now_ms)

    def suspended_agents(self, now_ms: int) -> set[bytes]:
        """The agents suspended at now_ms (by the node or by an authority)."""
        return self.policy.suspended_agents(now_ms)

    # -- prices ------------------------------------------------------------------------------------

    def charges(self, ev: Event) -> dict[str, int]:
        """ledger.budget.charges, with an LLM call's cost priced from the table in force at its ts."""
        out = charges(ev)
        if ev.kind == "act" and ev.body.model is not None and is_metered(ev):
            out["act.cost"] = self.llm_price(ev.body.model, ev.body.tokens_in, ev.body.tokens_out, ev.ts)
        return out

    def llm_price(self, model: str, tokens_in: int, tokens_out: int, at_ms: int) -> int:
        """An LLM call's cost in milli-T from the governed price table in force at at_ms."""
        return llm_cost_milli(self.policy.governance.policy_at(at_ms).prices, model, tokens_in, tokens_out)

    def _check_price(self, ev: Event) -> None:
        if ev.kind == "act" and ev.body.model is not None:
            want = self.llm_price(ev.body.model, ev.body.tokens_in, ev.body.tokens_out, ev.ts)
            if ev.body.cost != want:
                raise Invalid("cost_mismatch", f"an LLM call's cost is {want} milli-T at the prices in force at its ts, not {ev.body.cost}")

    def estimate(self, op: str, tokens: int, at_ms: int) -> int:
        """A run's cost estimate in milli-T from the pricing table (milli-T per unit)."""
        return estimate_milli(self.policy.governance.policy_at(at_ms).prices, op, tokens)

    def prices_at(self, at_ms: int) -> dict[str, int]:
        """The governed price table in force at at_ms (milli-T per unit)."""
        return dict(self.policy.governance.policy_at(at_ms).prices)

    def max_cost_per_run(self, agent: bytes) -> int | None:
        """The agent's registered max_cost_per_run (milli-T), if any."""
        reg = self.policy.registrations.get(agent)
        return reg.max_cost_per_run if reg is not None else None

    # -- metered calls (the LLM gateway, the task meter) ----------------------------------------

    def reserve_call(self, conn: Connection, call: OpenCall, now_ms: int,
                     persist: bool = True) -> tuple[Admitted, LedgerError | None]:
        """Hold a call's worst case against every budget of its agent and scopes, or say why not
        (node/budgetcalls.py). Writer thread only."""
        return budgetcalls.reserve_call(self, conn, call, now_ms, persist)

    def drop_holds(self, calls: list[OpenCall]) -> None:
        """Forget holds whose reservations could not be persisted (the batch rolled back)."""
        self.call_book.settle_all(c.call for c in calls)

    def release_call(self, conn: Connection, call_id: bytes) -> None:
        """Forget a call that charges nothing (refused or failed upstream before any work)."""
        self.call_book.settle(call_id)
        meter_store.delete_calls(conn, [call_id])
