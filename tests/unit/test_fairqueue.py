"""The committer's fair queue and pacer (node/fairqueue.py), without a node: the clock is an argument."""

import asyncio

import pytest

from node.fairqueue import Plan, CLIENTS_MAX, FairQueue, Pacer


class Item(list):
    pass


def item(n: int, tag: str = "") -> Item:
    return Item([tag] * n)


def test_take_is_round_robin_with_at_most_a_share_per_client():
    q: FairQueue[Item] = FairQueue()
    for _ in range(4):
        q.put("bulk", item(2, "b"))
    q.put("one", item(1, "o"))
    assert q.queued("bulk") == 8 and q.queued("one") == 1 and q.events == 9
    batch = q.take(events_max=100, share_max=4)
    assert [len(i) for i in batch] == [2, 2, 1]
    assert q.queued("bulk") == 4 and q.queued("one") == 0 and q.events == 4
    assert q.light_clients(4) == ["bulk"]  # what is left of it now fits one share
    assert q.take(100, 4) and q.events == 0 and len(q) == 0


def test_light_and_heavy_clients_and_taking_only_some():
    q: FairQueue[Item] = FairQueue()
    for _ in range(5):
        q.put("bulk", item(2))
    q.put("a", item(1))
    q.put("b", item(1))
    assert q.heavy(4) and sorted(q.light_clients(4)) == ["a", "b"]
    batch = q.take(100, 4, only=["a", "b"])
    assert len(batch) == 2 and q.queued("bulk") == 10 and not q.light_clients(4)
    assert q.take(3, 3) == [item(2)]  # a bulk share that fits the gap: one chunk of 2, not 2 chunks


def test_a_commit_never_passes_events_max_but_its_first_item_always_goes():
    q: FairQueue[Item] = FairQueue()
    q.put("x", item(7))
    assert len(q.take(events_max=2, share_max=2)) == 1 and q.events == 0


def test_wait_change_returns_on_put_or_after_its_timeout():
    async def main():
        q: FairQueue[Item] = FairQueue()
        loop = asyncio.get_running_loop()
        t = loop.time()
        await q.wait_change(0.01)
        assert loop.time() - t >= 0.009
        loop.call_later(0.005, q.put, "x", item(1))
        t = loop.time()
        await q.wait_change(5)
        assert loop.time() - t < 1
    asyncio.run(main())


def test_a_light_client_goes_first_and_alone():
    p = Pacer()
    assert p.plan(0.0, light=True, share=8).action == "light"


def test_without_awaited_light_clients_bulk_gets_a_full_share():
    p = Pacer()
    plan = p.plan(0.0, light=False, share=8)
    assert (plan.action, plan.events) == ("bulk", 8)


def learn_gap(p: Pacer, client: str, gap: float, rounds: int = 30) -> float:
    t = 0.0
    for _ in range(rounds):
        p.served([client], t)
        t += gap
        p.arrived(client, t)
        t += 0.0002
    return t


def test_bulk_is_fitted_into_the_gap_before_a_light_client_is_back():
    p = Pacer()
    for _ in range(30):
        p.committed(1, 0.0003 + 0.0001)
        p.committed(8, 0.0003 + 8 * 0.0001)
    assert p.base_s == pytest.approx(0.0003, rel=0.05) and p.event_s == pytest.approx(0.0001, rel=0.05)
    t = learn_gap(p, "honest", 0.0012)
    p.served(["honest"], t)  # honest is expected back at t + 1.2 ms
    plan = p.plan(t, light=False, share=8)
    # (1.2 ms / 1.25 - 0.3 ms) / 0.1 ms = 6.6: six bulk events fit before the honest client is back
    assert (plan.action, plan.events) == ("bulk", 6)
    late = p.plan(t + 0.0009, light=False, share=8)  # 0.3 ms left: not even one event fits
    assert late.action == "wait" and late.until_s == pytest.approx(t + 0.0012 + p.gap_max_s)
    assert p.plan(t + 0.0013, light=True, share=8).action == "light"


def test_bulk_is_never_starved_it_earns_a_full_share_at_its_floor():
    p = Pacer(bulk_min=0.1)
    t = learn_gap(p, "honest", 0.0001)  # back so fast that nothing fits
    p.served(["honest"], t)
    full = p.cost(8)
    first = p.plan(t, light=False, share=8)
    assert first.action == "wait" and first.until_s == pytest.approx(t + 0.0001 + p.gap_max_s)
    later = t + full / 0.1  # by then 10 % of the time elapsed pays for one full share
    p.served(["honest"], later - 0.0002)  # the honest client keeps coming back
    assert p.plan(later - 0.0001, light=False, share=8).action == "wait"
    assert p.plan(later, light=False, share=8) == Plan("bulk", 8)
    assert p.plan(later, light=False, share=8).action == "wait"  # paid: the next share is earned anew


def test_the_floors_wait_ends_when_its_share_is_earned():
    p = Pacer(gap_max_s=0.003, bulk_min=0.5)
    t = learn_gap(p, "honest", 0.0008)
    p.served(["honest"], t)
    p.plan(t - 1.0, light=True, share=8)  # long ago: a full share's cost earned since (and no more)
    assert p.plan(t, light=False, share=8) == Plan("bulk", 8)
    plan = p.plan(t, light=False, share=8)  # paid; 0.8 ms of room: a portion fits
    assert plan.action == "bulk" and 1 <= plan.events < 8
    late = p.plan(t + 0.0007, light=False, share=8)  # 0.1 ms of room: nothing fits
    assert late.action == "wait" and late.until_s == pytest.approx(t + 0.0007 + (p.cost(8) - p.credit_s) / 0.5)


@pytest.mark.parametrize("floor", [0.05, 0.1, 0.3])
def test_while_a_light_client_keeps_coming_bulk_gets_its_floor_of_the_writer_and_not_much_more(floor):
    p = Pacer(bulk_min=floor)
    for _ in range(30):
        p.committed(1, 0.0004)
        p.committed(8, 0.0012)
    t = learn_gap(p, "honest", 0.0001)
    p.served(["honest"], t)
    start, bulk_s, light_commits = t, 0.0, 0
    while t < start + 2.0:  # two simulated seconds: the light client commits, is back 0.1 ms later
        plan = p.plan(t, light=False, share=8)
        if plan.action == "bulk":
            assert plan.events == 8
            bulk_s += p.cost(8)
            t += p.cost(8)
        else:
            assert plan.action == "wait"
            t += 0.0001
            assert p.plan(t, light=True, share=8).action == "light"
            t += 0.0004
            p.served(["honest"], t)
            light_commits += 1
    # the floor, less what is earned past one share between two plans (the credit holds one share)
    assert 0.9 * floor * 2.0 <= bulk_s <= floor * 2.0 + p.cost(8)
    assert light_commits > 0


def test_a_light_client_that_does_not_come_back_stops_being_awaited():
    p = Pacer()
    t = learn_gap(p, "honest", 0.001)
    p.served(["honest"], t)
    plan = p.plan(t + 0.001 + p.gap_max_s + 0.0001, light=False, share=8)
    assert (plan.action, plan.events) == ("bulk", 8)


def test_a_slow_client_is_not_awaited():
    p = Pacer(gap_max_s=0.003)
    t = learn_gap(p, "slow", 0.05)
    p.served(["slow"], t)
    assert p.plan(t, light=False, share=8) .events == 8


def test_the_pacer_remembers_a_bounded_number_of_clients():
    p = Pacer()
    for i in range(CLIENTS_MAX + 100):
        p.served([f"c{i}"], float(i))
        p.arrived(f"c{i}", i + 0.001)
    assert len(p._served) == CLIENTS_MAX and len(p._gaps) <= CLIENTS_MAX


def test_odd_commit_observations_are_ignored():
    p = Pacer()
    base, per = p.base_s, p.event_s
    p.committed(0, 1.0)
    p.committed(5, -1.0)
    assert (p.base_s, p.event_s) == (base, per)


def test_a_clients_gap_is_the_shortest_of_its_recent_ones():
    p = Pacer()
    t = 0.0
    for gap in (0.002, 0.0008, 0.0015) + (0.002,) * (Pacer.GAPS_KEPT - 1):
        p.served(["c"], t)
        t += gap
        p.arrived("c", t)
    assert p.gap("c") == pytest.approx(0.0015)  # 0.8 ms has left the window of the last GAPS_KEPT
    assert p.gap("never") is None


def test_a_commit_cost_that_varies_makes_the_bulk_share_smaller():
    steady, jumpy = Pacer(), Pacer()
    for i in range(40):
        steady.committed(1, 0.0004)
        jumpy.committed(1, 0.0002 if i % 2 else 0.0006)  # the same mean
    for p in (steady, jumpy):
        t = learn_gap(p, "honest", 0.002)
        p.served(["honest"], t)
    assert jumpy.plan(t, False, 64).events < steady.plan(t, False, 64).events


@pytest.mark.parametrize("pct, ok", [(0, False), (1, True), (10, True), (100, True), (101, False), (-5, False)])
def test_the_bulk_floor_setting_is_a_percentage(pct, ok):
    from node.config import Config
    from node.configcheck import validate

    problems = validate(Config(commit_bulk_min_pct=pct))
    assert (problems == []) is ok
    assert ok or problems == ["commit_bulk_min_pct must be between 1 and 100"]
