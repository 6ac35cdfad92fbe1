"""The kind registry is the one source: a kind added to it is parsed, metered, budgeted, grouped and
documented everywhere, and an incomplete one is refused loudly (ledger/kinds.py).

tests/test_architecture.py adds the other half: no list of kind names outside ledger/kinds.py.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from ledger import budget, encoding, governance, kinds, pricing, reports
from ledger.bodies import Body, _bytes32, _uint, spec
from ledger.events import Event, charged_agent, is_metered, parse_event
from ledger.kinds import DOC_SECTIONS, REGISTRY, ROLES, Kind, Registry
from ledger.signing import public_key_from_seed

PK = public_key_from_seed(bytes(range(32)))
AGENT = b"\x07" * 32
PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


@dataclass(frozen=True)
class GpuBody(Body):
    """A kind of the test's own: GPU-hours, which a meter may sign about an agent."""

    KIND: ClassVar[str] = "test.gpu"
    METRICS: ClassVar[tuple[str, ...]] = ("hours",)
    hours: int = spec(_uint)
    agent: bytes | None = spec(_bytes32, required=False)


GPU_BUDGET = kinds._budget("cpt.units", 10, "day", 80, 100, False, False, 0)
GPU = Kind(GpuBody, "usage", "3.1", group="CPT", meterable=True, observed=True,
           charges={"cpt.units": lambda b: b.hours, "events": lambda b: 1}, budget=GPU_BUDGET)


def _event(registry: Registry, kind: str, body: dict) -> Event:
    raw = encoding.encode({"v": 1, "kind": kind, "signer": PK, "ts": 1, "nonce": bytes(16), "body": body})
    return parse_event(raw, kinds=registry.bodies)


def test_a_new_kind_in_the_registry_is_parsed_metered_budgeted_grouped_and_observed() -> None:
    reg = Registry(REGISTRY.kinds + (GPU,))
    ev = _event(reg, "test.gpu", {"hours": 3, "agent": AGENT})
    assert reg.charges(ev.kind, ev.body) == {"cpt.units": 3, "events": 1}
    assert "test.gpu" in reg.usage and reg.default_budgets["test.gpu"] == GPU_BUDGET
    assert reg.groups["test.gpu"] == "CPT" and "test.gpu" in reg.observed and "test.gpu" in reg.meterable
    assert "test.gpu" not in reg.costed  # it charges no act.cost
    # the node's own table is static: the test's registry changed nothing in it
    assert "test.gpu" not in kinds.KINDS and "test.gpu" not in budget.METRICS["events"]


@pytest.mark.parametrize("change, message", [
    ({"group": None}, "usage kind needs a group"),
    ({"budget": None}, "usage kind needs a group, charges and a default budget"),
    ({"charges": {}}, "usage kind needs a group, charges and a default budget"),
    ({"charges": {"gpu.hours": lambda b: b.hours, "events": lambda b: 1}}, "unknown metric 'gpu.hours'"),
    ({"charges": {"cpt.units": lambda b: b.hours}}, "counts in the `events` metric"),
    ({"role": "stranger"}, "role 'stranger'"),
    ({"docs": "9.9"}, "docs section '9.9'"),
    ({"group": "GPU"}, "group 'GPU'"),
    ({"budget": kinds._budget("act.cost", 10, "day", 80, 100, False, False, 0)}, "does not charge"),
    ({"budget": {"metric": "cpt.units"}}, "default budget must give exactly"),
    ({"role": "oracle"}, "only usage kinds have a default budget"),
])
def test_an_incomplete_kind_is_refused_loudly(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Registry(REGISTRY.kinds + (dataclasses.replace(GPU, **change),))


def test_a_meterable_kind_needs_an_agent_field_and_a_kind_is_registered_once() -> None:
    @dataclass(frozen=True)
    class NoAgentBody(Body):
        KIND: ClassVar[str] = "test.noagent"
        hours: int = spec(_uint)

    with pytest.raises(ValueError, match="needs an `agent` field"):
        Registry((dataclasses.replace(GPU, body=NoAgentBody),))
    with pytest.raises(ValueError, match="registered twice"):
        Registry(REGISTRY.kinds + (REGISTRY.by_name["act"],))


def test_every_view_the_node_uses_is_derived_from_the_registry() -> None:
    usage = tuple(k.name for k in REGISTRY.kinds if k.role == "usage")
    assert kinds.METERING_KINDS == governance.KINDS == usage == ("act", "dat", "cpt", "trt")
    assert set(governance.DEFAULT_POLICY.budgets) == set(usage)
    assert budget.METRICS is kinds.METRICS and reports.KIND_GROUPS is kinds.KIND_GROUPS
    assert set(budget.METRIC_UNITS) == set(budget.METRICS)
    assert {k for k in kinds.KINDS if pricing.event_cost_milli({}, k, None, {"act.cost": 5})} == set(kinds.COSTED_KINDS)
    for role in ROLES:
        assert REGISTRY.role(role) == {k.name for k in REGISTRY.kinds if k.role == role}
    assert set().union(*(REGISTRY.role(r) for r in ROLES)) == set(kinds.KINDS)


def test_a_meter_signed_event_charges_the_agent_it_names() -> None:
    ev = _event(REGISTRY, "cpt", {"node": "n1", "cpu": 1, "gpu": 0, "mem": 1, "jobs": 1, "agent": AGENT})
    assert is_metered(ev) and charged_agent(ev) == AGENT
    trt = _event(REGISTRY, "trt", {"subject": AGENT, "type": "accuracy", "value": 1, "halflife": 1})
    assert not is_metered(trt) and charged_agent(trt) == PK


@pytest.mark.parametrize("kind", REGISTRY.kinds, ids=lambda k: k.name)
def test_every_kind_is_documented_in_its_section_of_the_protocol(kind: Kind) -> None:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    start = text.index(DOC_SECTIONS[kind.docs])
    section = text[start:text.index("\n### ", start + 1)]
    assert f"`{kind.name}`" in section, f"{kind.name} is not in docs/protocol.md §{kind.docs}"
    for f in dataclasses.fields(kind.body):
        assert f"`{f.name}`" in section, f"body key {f.name} of {kind.name} is not in docs/protocol.md §{kind.docs}"


def test_a_kind_the_docs_do_not_name_is_caught() -> None:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    assert "`test.gpu`" not in text  # so the check above would fail for GPU once registered
