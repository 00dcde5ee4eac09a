"""The results relay: custody at the owner, what a holder owes, waiting for a result.

The owner's checks run against a real node store; delivery runs between real
libp2p hosts on loopback (no agent runtime: outcomes are made here).
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from meshagent.errors import AgentNotFound
from meshagent.net.host import open_host
from meshagent.node.identity import load_or_create_identity
from meshagent.node.records import AgentRecords
from meshagent.node.results import ResultsRelay
from meshagent.node.snapshots import AgentMeta
from meshagent.node.store import NodeStore
from meshagent.protocol import results as rp
from meshagent.protocol.results import AgentResult, ChildrenNotice, Custody, CustodyNotice, ResultReport
from meshagent.protocol.signed import PeerId
from meshagent.runtime.outcome import Outcome

OWNER, A, B, STRANGER = (PeerId(f"12D3KooW{c * 44}") for c in "OABS")
X = "a1b2c3d4e5f6"


def relay_at(path: Path, me: PeerId, *, trusted: frozenset[PeerId] = frozenset(), host: Any = None,
             addrs: dict[PeerId, tuple[str, ...]] | None = None) -> ResultsRelay:
    store = NodeStore.open(path)
    # Without a host, these tests judge messages and wait for results with no network.
    return ResultsRelay(store, AgentRecords(store, me), host=host, trusted=lambda p: p in trusted, retry_max_s=0.3,
                        addrs=lambda peer: (addrs or {}).get(peer, ()))


def own(relay: ResultsRelay, agent_id: str = X, privacy: str = "any") -> None:
    relay._records.set_meta(agent_id, AgentMeta(relay.me, privacy, "latency"))  # noqa: SLF001


def outcome(agent_id: str = X, stdout: bytes = b"the answer\n", parent: str | None = None) -> Outcome:
    return Outcome(agent_id, parent, "exited", 0, stdout, b"", 12)


def report(agent_id: str = X, stdout: bytes = b"the answer\n", **kw: Any) -> ResultReport:
    return ResultReport(AgentResult(agent_id, kw.pop("parent_id", None), "exited", 0, stdout, b"", 12, None, **kw))


def rows(relay: ResultsRelay, table: str) -> list[tuple]:
    with relay._store.transaction() as db:  # noqa: SLF001
        return db.execute(f"SELECT * FROM {table}").fetchall()


@pytest.fixture
def owner(tmp_path: Path) -> ResultsRelay:
    return relay_at(tmp_path / "owner", OWNER, trusted=frozenset({B}))


# --- the owner's checks ---------------------------------------------------------------------------


async def test_a_result_is_accepted_only_from_the_peer_holding_the_agent(owner):
    own(owner)
    await owner.handed_over(X, 0, A)  # this node handed X to A
    reply, _ = owner.accept(STRANGER, report(stdout=b"forged\n"))
    assert not reply.ok and owner.result(X) is None and rows(owner, "results") == []
    reply, _ = owner.accept(OWNER, report(stdout=b"forged by a peer using the owner's id\n"))
    assert not reply.ok and owner.result(X) is None
    reply, woken = owner.accept(A, report())
    assert reply.ok and woken == [X] and owner.result(X).stdout == b"the answer\n"
    # A repeat (the holder did not hear the ok) changes nothing; a later forgery neither.
    assert owner.accept(A, report(stdout=b"again\n"))[0].ok and owner.result(X).stdout == b"the answer\n"
    assert not owner.accept(STRANGER, report(stdout=b"forged\n"))[0].ok and owner.result(X).stdout == b"the answer\n"


async def test_an_agent_running_at_home_takes_no_result_from_a_peer(owner):
    own(owner)
    assert not owner.accept(STRANGER, report())[0].ok
    assert not owner.accept(B, report())[0].ok  # not even from a paired device: it does not hold it
    assert owner.result(X) is None


async def test_an_unknown_agent_is_never_presumed_owned_here(owner):
    for peer in (STRANGER, A, B):
        assert not owner.accept(peer, report("0123456789ab"))[0].ok
        assert not owner.accept(peer, CustodyNotice("0123456789ab", 5, peer))[0].ok
        assert not owner.accept(peer, ChildrenNotice("0123456789ab", ("ba9876543210",)))[0].ok
    for table in ("results", "agent_meta", "custody", "children"):
        assert rows(owner, table) == [], table
    assert owner.custody("0123456789ab") is None


async def test_an_agent_this_node_holds_for_another_owner_takes_no_result_here(tmp_path):
    holder = relay_at(tmp_path / "holder", A)
    holder._records.set_meta(X, AgentMeta(OWNER, "any", "latency"))  # noqa: SLF001
    assert holder.custody(X) is None
    assert not holder.accept(OWNER, report())[0].ok and holder.result(X) is None


async def test_custody_follows_the_holders_across_hops_and_a_result_before_its_notice_waits(owner):
    own(owner)
    await owner.handed_over(X, 0, A)
    assert owner.custody(X) == Custody(A, 0)
    # B finished X before A's notice arrived: not yet, nothing stored.
    assert not owner.accept(B, report())[0].ok and owner.result(X) is None
    # A stranger cannot move custody, not even with a huge generation.
    assert not owner.accept(STRANGER, CustodyNotice(X, (1 << 63) - 1, STRANGER))[0].ok
    assert owner.custody(X) == Custody(A, 0)
    assert owner.accept(A, CustodyNotice(X, 1, B))[0].ok
    assert owner.custody(X) == Custody(B, 1)
    assert owner.accept(A, CustodyNotice(X, 1, B))[0].ok  # a repeat is acknowledged
    assert not owner.accept(A, report(stdout=b"from the old holder\n"))[0].ok
    assert owner.accept(B, report())[0].ok and owner.result(X).stdout == b"the answer\n"


async def test_notices_from_later_holders_wait_for_the_earlier_ones(owner):
    own(owner)
    await owner.handed_over(X, 0, A)
    assert not owner.accept(B, CustodyNotice(X, 2, STRANGER))[0].ok  # B→S before A→B is known
    assert owner.accept(A, CustodyNotice(X, 1, B))[0].ok
    assert owner.accept(B, CustodyNotice(X, 2, STRANGER))[0].ok
    assert owner.accept(A, CustodyNotice(X, 1, B))[0].ok and owner.custody(X) == Custody(STRANGER, 2)  # old: no change


async def test_an_agent_that_comes_back_is_held_by_its_owner_again(owner):
    own(owner)
    await owner.handed_over(X, 0, A)
    await owner.adopted(X, 1)  # A handed it back
    assert owner.custody(X) == Custody(OWNER, 1)
    assert owner.accept(A, CustodyNotice(X, 1, OWNER))[0].ok  # A's own notice of it: acknowledged, no change
    assert not owner.accept(A, report(stdout=b"stale\n"))[0].ok and owner.result(X) is None
    await owner.handed_over(X, 0, A)  # a recovery repeating an old handoff moves nothing back
    assert owner.custody(X) == Custody(OWNER, 1)


async def test_children_of_a_remote_fork_are_recorded_only_from_the_parents_holder(owner):
    own(owner, privacy="lan")
    await owner.handed_over(X, 0, A)
    kids = ("0123456789ab", "ba9876543210")
    assert not owner.accept(STRANGER, ChildrenNotice(X, kids))[0].ok
    assert rows(owner, "children") == [] and owner.custody(kids[0]) is None
    assert not owner.accept(A, report(kids[0]))[0].ok  # unknown child: not yet
    assert owner.accept(A, ChildrenNotice(X, kids))[0].ok
    assert owner.custody(kids[0]) == Custody(A, -1)
    assert owner._records.meta_row(kids[1]) == AgentMeta(OWNER, "lan", "latency")  # noqa: SLF001
    assert owner.accept(A, report(kids[0], parent_id=X))[0].ok
    # The parent's result lists its children; names the owner never heard of are dropped.
    assert owner.accept(A, report(children=(*kids, "ffffffffffff")))[0].ok
    assert owner.result(X).children == kids


async def test_a_stranger_cannot_fill_the_owners_store_with_children(owner):
    own(owner)
    await owner.handed_over(X, 0, A)
    answers = []
    for n in range(6):  # 6 forks of 64 children: more than a stranger may leave recorded as held by it
        kids = tuple(f"{n:02x}{i:010x}" for i in range(64))
        answers.append(owner.accept(A, ChildrenNotice(X, kids))[0].ok)
    held = sum(1 for r in rows(owner, "custody") if r[1] == A)
    assert held <= rp.MAX_HELD_PER_PEER and answers.count(False) >= 2
    # A paired device is not bounded so.
    own(owner, "cccccccccccc")
    await owner.handed_over("cccccccccccc", 0, B)
    assert all(owner.accept(B, ChildrenNotice("cccccccccccc", tuple(f"d{n}{i:010x}" for i in range(64))))[0].ok
               for n in range(6))


async def test_fetch_is_answered_to_paired_devices_and_the_parents_holder(owner):
    own(owner)
    await owner.handed_over(X, 0, A)
    assert owner.accept(A, ChildrenNotice(X, ("0123456789ab",)))[0].ok
    assert owner._may_fetch(B, X) == (True, True)  # noqa: SLF001  paired
    assert owner._may_fetch(STRANGER, X) == (True, False)  # noqa: SLF001
    assert owner._may_fetch(A, X) == (True, False)  # noqa: SLF001  A holds X, not its parent
    assert owner._may_fetch(A, "0123456789ab") == (True, True)  # noqa: SLF001  a mesh_join on A
    reply = await owner._answer_fetch(STRANGER, X)  # noqa: SLF001
    assert reply.result is None and reply.refused


# --- what a holder owes ------------------------------------------------------------------------


async def test_a_holder_owes_results_notices_and_children_to_the_owner_durably(tmp_path):
    holder = relay_at(tmp_path / "holder", A)
    holder._records.set_meta(X, AgentMeta(OWNER, "any", "latency"))  # noqa: SLF001
    holder._records.record_children(X, ["0123456789ab"])  # noqa: SLF001
    holder.forked(X, ["0123456789ab"], OWNER)
    holder.forked(X, ["0123456789ab"], OWNER)  # a replay of the fork: owed once
    await holder.handed_over("0123456789ab", 0, B)
    await holder.handed_over("0123456789ab", 0, B)  # recovery repeats it
    assert holder.save_ended(outcome()) == OWNER
    assert holder.owed() == [(OWNER, "children", X), (OWNER, "custody", "0123456789ab"), (OWNER, "result", X)]
    holder._store.close()  # noqa: SLF001
    again = relay_at(tmp_path / "holder", A)
    assert len(again.owed()) == 3 and again.result(X).stdout == b"the answer\n"
    # An agent of this node's own is owed to no one.
    own(again, "cccccccccccc")
    assert again.save_ended(outcome("cccccccccccc")) is None and len(again.owed()) == 3


async def test_results_owed_by_an_older_version_carry_over(tmp_path):
    store = NodeStore.open(tmp_path / "old")
    AgentRecords(store, A)
    with store.transaction() as db:
        db.execute("CREATE TABLE unreported (agent_id TEXT PRIMARY KEY, owner TEXT NOT NULL)")
        db.execute("INSERT INTO unreported VALUES (?, ?)", (X, OWNER))
    store.close()
    assert relay_at(tmp_path / "old", A).owed() == [(OWNER, "result", X)]


# --- waiting --------------------------------------------------------------------------------------


async def test_a_result_stored_here_wakes_its_waiter_at_once(owner, mock_clock):
    """The clock is frozen (trio's MockClock at rate 0): a waiter that polled on a timer would never
    look again; only the wake-up at the moment the result is stored can end the wait."""
    own(owner)
    got: list[dict] = []

    async def waiter() -> None:
        got.append(await owner.wait(X))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.to_thread.run_sync(time.sleep, 0.2)  # the waiter has looked and found nothing
        assert got == []
        found_owner = await trio.to_thread.run_sync(owner.save_ended, outcome())
        owner.ended(X, found_owner)
        for _ in range(100):
            if got:
                break
            await trio.to_thread.run_sync(time.sleep, 0.05)
        assert got and got[0]["stdout"] == "the answer\n"
        assert trio.current_time() == 0.0
        nursery.cancel_scope.cancel()


async def test_a_relayed_result_wakes_its_waiter_at_once(owner, mock_clock):
    own(owner)
    await owner.handed_over(X, 0, A)
    got: list[dict] = []
    moves: list[tuple[str, str]] = []

    async def moved(agent_id: str, holder: PeerId) -> None:
        moves.append((agent_id, holder))

    async def waiter() -> None:
        got.append(await owner.wait(X, moved))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.to_thread.run_sync(time.sleep, 0.2)
        assert got == [] and moves == [(X, A)]
        reply, woken = await trio.to_thread.run_sync(owner.accept, A, report())
        assert reply.ok
        for agent_id in woken:
            owner._changed(agent_id)  # noqa: SLF001  as the protocol handler does
        for _ in range(100):
            if got:
                break
            await trio.to_thread.run_sync(time.sleep, 0.05)
        assert got and got[0]["stdout"] == "the answer\n" and trio.current_time() == 0.0


async def test_waiting_for_an_agent_never_known_here_is_an_error(owner):
    with pytest.raises(AgentNotFound):
        await owner.wait("0123456789ab")


# --- delivery between real hosts --------------------------------------------------------------------


@asynccontextmanager
async def hosts(tmp_path: Path, *names: str):
    """A libp2p host on loopback per name (their relays are started by the test)."""
    async with AsyncExitStack() as stack:
        out = {}
        for name in names:
            identity = load_or_create_identity(tmp_path / name)
            out[name] = await stack.enter_async_context(open_host(identity, ["/ip4/127.0.0.1/tcp/0"]))
        yield out


async def start(nursery: trio.Nursery, path: Path, host: Any, everyone: dict[str, Any],
                trusted: frozenset[PeerId] = frozenset()) -> ResultsRelay:
    relay = relay_at(path, host.peer_id, trusted=trusted, host=host, addrs={h.peer_id: h.addrs for h in everyone.values()})
    await nursery.start(relay.run)
    return relay


async def until(predicate, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_a_result_travels_owner_a_b_and_waits_for_the_notice_it_needs(tmp_path):
    """Owner O hands X to A, A hands it to B, B finishes it — B's result reaches O only once A's
    custody notice did; A's notice is delivered only once A runs again."""
    async with hosts(tmp_path, "o", "a", "b") as h, trio.open_nursery() as nursery:
        o = await start(nursery, tmp_path / "o", h["o"], h)
        b = await start(nursery, tmp_path / "b", h["b"], h)
        own(o)
        await o.handed_over(X, 0, h["a"].peer_id)
        # B holds X (from A at generation 1) and finishes it while A's relay is not running.
        b._records.set_meta(X, AgentMeta(o.me, "any", "latency"))  # noqa: SLF001
        b.ended(X, await trio.to_thread.run_sync(b.save_ended, outcome()))
        await until(lambda: o.refused >= 1)  # O said "not yet": it does not know B holds X
        assert o.result(X) is None and b.owed() == [(o.me, "result", X)]
        # A owes O its custody notice (written before it stopped) and delivers it once it runs.
        offline = relay_at(tmp_path / "a", h["a"].peer_id)
        offline._records.set_meta(X, AgentMeta(o.me, "any", "latency"))  # noqa: SLF001
        await offline.handed_over(X, 1, b.me)
        offline._store.close()  # noqa: SLF001
        a = await start(nursery, tmp_path / "a", h["a"], h)
        with trio.fail_after(60):
            waited = await o.wait(X)  # woken by the relayed result itself
        assert waited["stdout"] == "the answer\n" and o.custody(X) == Custody(b.me, 1)
        await until(lambda: not a.owed() and not b.owed())
        nursery.cancel_scope.cancel()


async def test_a_stranger_may_not_fetch_and_a_paired_device_may(tmp_path):
    async with hosts(tmp_path, "o", "stranger", "paired") as h, trio.open_nursery() as nursery:
        o = await start(nursery, tmp_path / "o", h["o"], h, trusted=frozenset({h["paired"].peer_id}))
        stranger = await start(nursery, tmp_path / "stranger", h["stranger"], h)
        paired = await start(nursery, tmp_path / "paired", h["paired"], h)
        own(o)
        o.ended(X, await trio.to_thread.run_sync(o.save_ended, outcome(stdout=b"private\n")))
        assert await stranger._fetch(o.me, X) == "results are answered only to the owner's devices"  # noqa: SLF001
        found = await paired._fetch(o.me, X)  # noqa: SLF001
        assert isinstance(found, AgentResult) and found.stdout == b"private\n"
        nursery.cancel_scope.cancel()
