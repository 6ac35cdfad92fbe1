"""The owner's dashboard, read side: the agents and teams this node knows, and a team's budgets.

The page itself (node/static/) reads these through node/api/dashboard.py, next to
the public read API (balances, reports, peers, checkpoints). Both functions run on
the writer thread, as `Queries.balance` does: they read the budget book, which only
the writer changes, so they see one consistent state.
"""

from __future__ import annotations

from typing import Any

from ledger.budget import thresholds
from node.budgets import BudgetBook
from node.store import dashboard as dashboard_store
from node.store.sqlite import Connection, Database

AGENTS_MAX = 500  # most agents one listing returns
TEAM_AGENTS_MAX = 100  # most agents whose budgets one budget view gathers (one balance each)
ALERTS_MAX = 50  # most alerts one budget view returns, newest first
SCOPE_ORDER = {"team": 0, "platform": 1, "user": 2, "agent": 3}


class Dashboard:
    def __init__(self, db: Database, book: BudgetBook):
        self._db = db
        self._book = book

    async def agents(self, team: str | None) -> dict[str, Any]:
        """The agents known here (registered, or signers of held entries) and the teams they form."""
        return await self._db.write(self._agents, team)

    async def budgets(self, team: str | None, now_ms: int) -> dict[str, Any]:
        """Every budget of a team's agents and their scopes, each once, with soft and hard marks;
        their suspensions and latest alerts. Without a team: of every known agent."""
        return await self._db.write(self._budgets, team, now_ms)

    def _known(self, conn: Connection) -> tuple[list[dict[str, Any]], bool]:
        book = self._book
        known = {agent: {"agent": agent.hex(), "registered": True, "user": reg.user, "team": reg.team,
                         "platform": reg.platform, "plan": reg.plan}
                 for agent, reg in book.registrations.items()}
        # Keys that sign policy and node records are not agents: leave them out of the listing.
        roles = book.authorities | book.oracles | book.nodes
        signed = dashboard_store.signers(conn, AGENTS_MAX + len(roles) + 1)
        for signer in signed:
            if signer not in known and signer not in roles:
                known[signer] = {"agent": signer.hex(), "registered": False, "user": None, "team": None,
                                 "platform": None, "plan": book.default_plan}
        listed = sorted(known.values(), key=lambda a: (a["team"] is None, a["team"] or "", a["agent"]))
        truncated = len(listed) > AGENTS_MAX or len(signed) > AGENTS_MAX + len(roles)
        return listed[:AGENTS_MAX], truncated

    def _agents(self, conn: Connection, team: str | None) -> dict[str, Any]:
        listed, truncated = self._known(conn)
        teams: dict[str, int] = {}
        for a in listed:
            if a["team"] is not None:
                teams[a["team"]] = teams.get(a["team"], 0) + 1
        return {
            "teams": [{"team": t, "agents": n} for t, n in sorted(teams.items())],
            "agents": [a for a in listed if team is None or a["team"] == team],
            "truncated": truncated,
        }

    def _budgets(self, conn: Connection, team: str | None, now_ms: int) -> dict[str, Any]:
        listed, truncated = self._known(conn)
        members = [bytes.fromhex(a["agent"]) for a in listed if team is None or a["team"] == team]
        book = self._book
        budgets: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        suspensions, alerts = [], {}
        for agent in members[:TEAM_AGENTS_MAX]:
            balance = book.balance(conn, agent, now_ms)
            rules = {r.key: r for r in book.rules(conn, book.chain(agent), now_ms)}
            for view in balance["budgets"]:
                key = (view["scope"], view["scope_id"], view["metric"], view["window"])
                if key in budgets:
                    continue
                rule = rules.get(key)
                if rule is not None and rule.limit is not None:
                    soft, hard, reserve = thresholds(rule)
                    view = {**view, "soft": soft, "hard": hard, "reserve": reserve}
                budgets[key] = view
            if balance["suspended"]:
                suspensions.append({"agent": agent.hex(), **balance["suspension"]})
            for alert in balance["alerts"]:
                alerts[alert["id"]] = alert
        ordered = sorted(budgets.values(), key=lambda b: (SCOPE_ORDER.get(b["scope"], 9), b["scope_id"], b["metric"], b["window"]))
        return {
            "team": team,
            "now": now_ms,
            "agents": [a.hex() for a in members[:TEAM_AGENTS_MAX]],
            "truncated": truncated or len(members) > TEAM_AGENTS_MAX,
            "budgets": ordered,
            "suspensions": suspensions,
            "alerts": sorted(alerts.values(), key=lambda a: (-a["ts"], -a["id"]))[:ALERTS_MAX],
        }
