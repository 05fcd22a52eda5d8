"""Failures the network service reports on all three nodes (docs/network.md, "The network
service: failures"): a node that goes down is known down at once from the session's
heartbeats (not from a machine's deadline), an end down at the start is asked again until the
request's deadline, a stored pair's cut-off reaches its peer naming where it happened, and the
network file's counts hold while a session runs and after its node was killed.

The service's tests run three services in one loop over the fakes of
hil_tests/test_network_service.py (the messages packed and checked as the wire does; a node
"down" is one nothing reaches and nothing leaves, as a killed daemon); the watch is pure; the
repair runs on a file a killed writer left. The repeater killed through the five daemons:
hil_tests/test_network_daemons.py (A discards at once with "node B down"; B's file
interrupted after its restart)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from controller.data.networkfile import CAUSES, DISCARDED, read_network_session
from controller.data.params import ParameterStore
from controller.data.repair import INTERRUPTED, crash_left, read_state, repair_own
from controller.network.service import Timing
from controller.network.swap import PeerWatch
from hil_tests.test_network_daemons import MEMORY_N_1E, network_lab  # noqa: F401
from hil_tests.test_network_service import Lab, check_counts, in_loop, rows

FAST = Timing(
    second_link_s=20.0,
    ack_s=1.0,
    outcome_s=30.0,
    decision_s=30.0,
    request_s=20.0,
    heartbeat_s=0.1,
    silence_s=1.0,
    open_try_s=1.0,
    open_retry_s=0.2,
)
"""The machines' deadlines long (30 s for an end's outcome), the watch's silence short: a
node down is known from the silence, long before any deadline would say it."""
SOON_S = 8.0
"""Generous against a loaded machine (2 cores): the silence is 1 s, the deadlines 30 s."""


def _file(lab: Lab, node: str, session: str) -> dict:
    return read_network_session(lab.net.services[node].sessions[session].file.path)


async def _until(what, limit_s: float, why: str):
    limit = time.monotonic() + limit_s
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < limit, why
        await asyncio.sleep(0.02)


# the watch, sans I/O ------------------------------------------------------------------------
def test_a_silent_node_is_found_down_once_and_back_when_heard():
    watch = PeerWatch(("A", "C"), silence_s=2.0, now=100.0)
    assert watch.tick(101.9) == []
    watch.heard("A", 101.5)
    assert watch.tick(102.1) == ["C"]  # A spoke at 101.5, C never
    assert watch.tick(103.0) == []  # named once
    assert watch.tick(103.6) == ["A"]
    assert watch.heard("C", 104.0) is True and "C" not in watch.down
    assert watch.heard("C", 104.1) is False
    assert watch.heard("D", 104.0) is False  # not watched
    with pytest.raises(ValueError, match="positive"):
        PeerWatch(("A",), silence_s=0.0, now=0.0)


# a node down, reported at once ----------------------------------------------------------------
@in_loop
async def test_the_repeater_down_mid_swap_is_reported_at_the_ends_at_once(tmp_path):
    """B goes down while it makes the B-C link with A's pair stored: A, which holds its half,
    discards the end-to-end attempt with cause node_down, "node B down", within a few
    silences, not after its 30 s wait for the outcome; its counts balance."""
    async with Lab(tmp_path, timing=FAST) as lab:
        lab.world.link_delay[("B", "C")] = 15.0  # B waits for its second link
        session = await lab.start("network_entangle", ends=["A", "C"], pairs=1)
        a = lab.net.services["A"]
        await _until(lambda: a.sessions[session].ledger.attempted, SOON_S, "A never held a pair")
        lab.net.down.add("B")
        down_at = time.monotonic()
        await _until(
            lambda: rows(_file(lab, "A", session), DISCARDED),
            SOON_S,
            "A did not learn that B is down",
        )
        took = time.monotonic() - down_at
        data = _file(lab, "A", session)
    assert took < FAST.outcome_s / 3, took
    (row,) = rows(data, DISCARDED).values()
    assert CAUSES[row["cause"] - 1] == "node_down" and b"node B down" in row["reason"]
    check_counts(data)
    (released,) = [r for r in lab.world.released if r[0] == "A"]
    assert "node B down" in released[2]  # A's half let go with the reason


@in_loop
async def test_an_end_down_mid_swap_ends_the_session_with_the_node_named(tmp_path):
    """C goes down while B makes the B-C link: B discards the attempt (node_down, "node C
    down") and tells A, which discards it too; B's session fails with "node C down" rather
    than making pairs with a node that is gone."""
    async with Lab(tmp_path, timing=FAST) as lab:
        lab.world.link_delay[("B", "C")] = 4.0
        session = await lab.start("network_entangle", ends=["A", "C"], pairs=3)
        b = lab.b
        await _until(lambda: b.sessions[session].ledger.attempted, SOON_S, "B never stored")
        lab.net.down.add("C")
        await _until(lambda: b.sessions[session].state != "running", 30.0, "B went on")
        await asyncio.sleep(0.2)  # B's discard on its way to A
        summary = b.sessions[session].summary()
        data = {n: _file(lab, n, session) for n in "AB"}
    assert summary["state"] == "failed" and summary["reason"] == "node C down", summary
    assert summary["down"] == ["C"]
    for node in "AB":
        (row,) = rows(data[node], DISCARDED).values()
        assert CAUSES[row["cause"] - 1] == "node_down", node
        assert b"node C down" in row["reason"], (node, row["reason"])
        check_counts(data[node])
    assert data["A"]["status"] == "failed"  # B closed A's side with the reason


# an end down at the start -------------------------------------------------------------------
@in_loop
async def test_an_end_down_at_the_start_is_asked_again_until_it_answers(tmp_path):
    """A is down when the operator asks: the session does not fail; B asks A again and,
    once A is back, runs it to the end."""
    async with Lab(tmp_path, timing=FAST) as lab:
        lab.net.down.add("A")
        session = await lab.start("network_entangle", ends=["A", "C"], pairs=2, deadline_s=60.0)
        b = lab.b
        assert b.sessions[session].summary()["unopened"].keys() == {"A"}
        await asyncio.sleep(1.0)
        assert b.sessions[session].state == "running"
        lab.net.down.discard("A")
        await _until(lambda: b.sessions[session].state != "running", 60.0, "never ended")
        summary = b.sessions[session].summary()
    assert summary["state"] == "completed", summary["reason"]
    assert summary["delivered"] == 2 and summary["unopened"] == {}


@in_loop
async def test_an_end_that_stays_down_fails_the_session_at_its_deadline_naming_it(tmp_path):
    """C stays down: the session retries until the request's deadline, then fails with a
    reason naming C; A, which had opened it, is closed with that reason."""
    async with Lab(tmp_path, timing=FAST) as lab:
        lab.net.down.add("C")
        started = time.monotonic()
        session = await lab.start("network_entangle", ends=["A", "C"], pairs=1, deadline_s=3.0)
        b = lab.b
        await _until(lambda: b.sessions[session].state != "running", 30.0, "never ended")
        took = time.monotonic() - started
        summary = b.sessions[session].summary()
        a_data = _file(lab, "A", session)
    assert summary["state"] == "failed", summary
    assert summary["reason"].startswith("node C down: no answer to network_open"), summary
    assert 2.0 < took < 3.0 + 2 * FAST.open_try_s + 5.0, took  # the deadline, give or take
    assert summary["attempted"] == 0
    assert a_data["status"] == "failed" and "node C down" in a_data["reason"]


# a cut-off reaches the stored pair's peer ---------------------------------------------------
@in_loop
async def test_a_cut_off_at_the_repeater_reaches_the_stored_pair_s_peer_naming_it(tmp_path):
    """B's link layer cuts off the stored A-B pair while it makes the B-C link: A hears it
    (B's swap_discard, over its station key) and lets its half go with "cut-off at B"."""
    async with Lab(tmp_path, timing=FAST) as lab:
        lab.world.cut_off.add(("B", "C"))
        session = await lab.start("network_entangle", ends=["A", "C"], pairs=1, deadline_s=2.0)
        b = lab.b
        await _until(lambda: b.sessions[session].state != "running", 30.0, "never ended")
        await asyncio.sleep(0.2)
        data = {n: _file(lab, n, session) for n in "AB"}
    for node in "AB":
        found = rows(data[node], DISCARDED).values()
        assert found and all(CAUSES[r["cause"] - 1] == "cutoff" for r in found), node
        assert all(r["reason"].startswith(b"cut-off at B: ") for r in found), node
        check_counts(data[node])
    at_a = [r for r in lab.world.released if r[0] == "A"]
    assert at_a and all(reason.startswith("cut-off at B: ") for _, _, reason in at_a)


# the network file ---------------------------------------------------------------------------
@in_loop
async def test_the_network_file_counts_open_attempts_while_the_session_runs(tmp_path):
    """With A's pair stored and B waiting for its second link, B's and A's files already
    count the attempt (attempted 1, open 1): their counts add up while the session runs."""
    async with Lab(tmp_path, timing=FAST) as lab:
        lab.world.link_delay[("B", "C")] = 3.0
        session = await lab.start("network_entangle", ends=["A", "C"], pairs=1)
        await _until(lambda: lab.b.sessions[session].ledger.attempted, SOON_S, "nothing stored")
        await asyncio.sleep(0.3)  # A's link pair pushed to A
        during = {n: _file(lab, n, session)["ledger"] for n in "AB"}
        await _until(lambda: lab.b.sessions[session].state != "running", 60.0, "never ended")
        await asyncio.sleep(0.2)
        after = {n: _file(lab, n, session) for n in "AB"}
    for node in "AB":
        ledger = during[node]
        assert (ledger["attempted"], ledger["open"], ledger["delivered"]) == (1, 1, 0), node
        check_counts(after[node])


_KILLED_WRITER = """
import os, sys
from pathlib import Path
from controller.data.networkfile import NetworkSessionFile, network_file_path
f = NetworkSessionFile(
    network_file_path(Path(sys.argv[1]), "n20261130a", "B"), session="n20261130a", node="B",
    role="repeater", application="entangle", request={"pairs": 2}, software_version="test",
)
f.record("ab:1:1|bc:1:1", "delivered", link_pairs=("ab:1:1", "bc:1:1"))
f.ledger({"attempted": 2, "delivered": 1, "open": 1})
os.kill(os.getpid(), 9)
"""


def test_a_killed_node_s_network_file_is_repaired_as_interrupted(tmp_path):
    """A node daemon killed in a network session leaves its file `running` with the writer's
    flag set; its next start (repair_own, as controller/node/daemon.py calls it) closes it
    as interrupted, saying how many attempts were open, every row kept."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], env=env, timeout=120
    )
    assert done.returncode == -9
    (left,) = crash_left(tmp_path, "B")
    assert left.kind == "network" and left.open_pairs == 1
    assert read_state(left.path) == ("running", "")
    (line,) = repair_own(tmp_path, "B", ("run", "network"), "node B as it restarted")
    assert "closed as interrupted" in line
    state, reason = read_state(left.path)
    assert state == INTERRUPTED and "1 end-to-end attempt(s) open" in reason, reason
    data = read_network_session(left.path)
    assert data["status"] == INTERRUPTED and len(data["pairs"]) == 1
    assert data["ledger"]["attempted"] == 2 and data["ledger"]["open"] == 1


# through the daemons: the link layer tells a stored pair's peer of its cut-off ---------------
@pytest.mark.timeout(900)
def test_a_pair_stored_on_both_nodes_cut_off_at_b_is_discarded_at_a(network_lab):  # noqa: F811
    """A and B both store their halves of an A-B pair (single-click, a minimum of 0.5 after
    the move); B's memory forgets within a couple of attempts (c13_n_1e_at_alpha 2), so B's
    next link session (with C) cuts the pair off at B. B's link layer tells A (`pair_cut_off`, over
    its station link with B's station key): A's memory lets its half go with "cut-off at B",
    and holds nothing. Without it A would keep a dead half until its own cut-off."""
    from controller.operator.client import NodeClient
    from hil_tests.test_memory_delivery import calibrate_memory_from_truth

    lab, _procs, control, _resources = network_lab
    store = ParameterStore(lab.data_dir / "params.sqlite")
    try:
        calibrate_memory_from_truth(lab, store, "A", control.truth("A")["memories"]["c13"])
        # A's half barely above the minimum (single-click's alpha is chosen for it): a long
        # planned T2 keeps A's own storage-time cut-off out of the way of B's
        store.set_manual("A", "c13_t2_s", 1e4, "A's half outlasts the test (test)")
        store.set_manual("B", "c13_n_1e_at_alpha", 2.0, "a memory that forgets fast (test)")
        with (
            NodeClient.for_lab(lab, "B", timeout_s=60) as b,
            NodeClient.for_lab(lab, "A", timeout_s=60) as a,
        ):
            pair = _stored_on_both(a, b)
            refused = a.status()["refused_peer_messages"]
            asyncio.run(_forge_cut_off(lab, "C", "A", pair))  # C's key: not the pair's peer
            assert a.status()["refused_peer_messages"] == refused + 1
            assert pair in {h["pair_id"] for h in a.memory()["holds"].values() if h}
            cut = b.entangle(1, "single_click", deadline_s=60, peer="C")
            ended = b.wait_session(cut["session"], timeout_s=240)
            print(f"B-C session: {ended['state']} ({ended['reason']})")
            assert ended["state"] == "cut-off", ended["reason"]
            limit = time.monotonic() + 30
            while True:
                state = a.memory()
                told = [d for d in state["discarded"] if d["pair_id"] == pair]
                if told or time.monotonic() > limit:
                    break
                time.sleep(0.2)
    finally:
        store.set_manual("B", "c13_n_1e_at_alpha", MEMORY_N_1E, "back (test)")
        store.close()
    print(f"A told: {told}")
    assert told, f"A still holds its half of {pair}: {state['holds']}"
    assert told[0]["reason"].startswith("cut-off at B: "), told[0]["reason"]
    assert all(h is None or h["pair_id"] != pair for h in state["holds"].values())


async def _forge_cut_off(lab, station: str, to: str, pair: str) -> None:
    """`pair_cut_off` about `pair` to `to`, sent with `station`'s key over a station link."""
    import zmq.asyncio

    from controller.link.messages import FROM_PEER
    from controller.messaging.station_link import StationDialer

    ctx = zmq.asyncio.Context()
    link = StationDialer(ctx, lab.data_dir, station).dial(to, lambda msg: None, FROM_PEER)
    try:
        link.send("pair_cut_off", pair_id=pair, reason="forged")
        await asyncio.sleep(1.0)  # a notification: no answer to wait for
    finally:
        link.close()
        ctx.term()


def test_a_pair_cut_off_message_is_bounded():
    from controller.link.messages import PEER
    from controller.messaging.wire import MessageError, pack, unpack

    ok = unpack(pack("pair_cut_off", 1, pair_id="s:0:1", reason="cut-off: F 0.49"), PEER)
    assert ok["pair_id"] == "s:0:1"
    with pytest.raises(MessageError, match="at most 200 characters"):
        unpack(pack("pair_cut_off", 1, pair_id="s" * 201, reason=""), PEER)
    with pytest.raises(MessageError, match="missing field 'reason'"):
        unpack(pack("pair_cut_off", 1, pair_id="s:0:1"), PEER)


def _stored_on_both(a, b) -> str:
    """An A-B pair with both halves in memory (a few tries: the move may refuse one)."""
    for _ in range(5):
        started = b.entangle(
            1,
            "single_click",  # alpha chosen for the minimum after the move
            deadline_s=120,
            fidelity_min=0.5,
            delivery="memory",
            peer_delivery="memory",
            peer="A",
        )
        summary = b.wait_session(started["session"], timeout_s=240)
        held_b = [h for h in b.memory()["holds"].values() if h is not None]
        held_a = [h for h in a.memory()["holds"].values() if h is not None]
        common = {h["pair_id"] for h in held_a} & {h["pair_id"] for h in held_b}
        print(f"A-B session {summary['state']}: A holds {held_a}, B holds {held_b}")
        if common:
            return common.pop()
    raise AssertionError("no A-B pair stored on both nodes in five sessions")
