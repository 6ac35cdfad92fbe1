"""Spike detection at ingest: a bounded LRU of per-agent detectors (ledger/anomaly.py), on the writer thread.

`AnomalyWatch.observe(event, now_ms, out)` runs in `Committer._write` for each
admitted metering event of this node's own log, so what a spike causes is
written in the same transaction as the event that shows it: an `anomaly` alert
(the alerts table, delivered by node/alerts.py like budget alerts) and a TRT
compliance penalty signed by the node (`node.budgets.trust_penalty`, the
record an automatic suspension writes). At most `agents_max` agents are
tracked; the least recently seen is forgotten first (it warms up again if it
comes back), so memory stays bounded whatever the number of agents.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from ledger.anomaly import AgentDetectors
from ledger.budget import charges
from ledger.events import Event
from ledger.kinds import OBSERVED_KINDS
from node.budgets import Admitted, trust_penalty
from node.metrics import NodeMetrics



class AnomalyWatch:
    def __init__(self, metrics: NodeMetrics | None, *, threshold_milli: int, warmup_events: int, agents_max: int):
        self._metrics = metrics
        self._threshold = threshold_milli / 1000
        self._warmup = warmup_events
        self._agents_max = agents_max
        self._agents: OrderedDict[bytes, AgentDetectors] = OrderedDict()

    @property
    def tracked(self) -> int:
        return len(self._agents)

    def observe(self, ev: Event, now_ms: int, out: Admitted) -> None:
        """Feed one admitted event; adds an alert and a trust penalty to out for each spike it begins."""
        if ev.kind not in OBSERVED_KINDS:
            return
        state = self._agents.get(ev.signer)
        if state is None:
            if len(self._agents) >= self._agents_max:
                self._agents.popitem(last=False)
            state = self._agents[ev.signer] = AgentDetectors()
        else:
            self._agents.move_to_end(ev.signer)
        for hit in state.observe(ev.ts, charges(ev), threshold=self._threshold, warmup=self._warmup):
            detail: dict[str, Any] = {"value": round(hit.value, 3), "expected": round(hit.expected, 3),
                                      "score": round(hit.score, 2), "event": ev.id_hex, "ts": ev.ts}
            out.alerts.append({"ts_ms": now_ms, "type": "anomaly", "scope": "agent", "scope_id": ev.signer.hex(),
                               "metric": hit.metric, "detail": json.dumps(detail, sort_keys=True)})
            out.node_records.append(trust_penalty(ev.signer))
            if self._metrics is not None:
                self._metrics.anomalies.inc(1, hit.metric)
