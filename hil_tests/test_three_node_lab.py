"""The three-node lab, A - M1 - B - M2 - C: every station served, each midpoint heralding its
own link, B's fibre switch choosing between them, and the fibres of the lab file in the
photons' delays and in how soon a node can learn an attempt's fate.

Two kinds of test: through the real transports (`qnode sim up` in its own process, the
instruments' drivers, `qnode instruments check`, `qnode midpoint serve`), and pure code (the
simulated lab built in this process, its sequencers and taggers driven by their commands, as
hil_tests/test_detection_window.py does) where a test needs the virtual clock's exact times.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from controller.data.sessionfile import DELIVERED
from controller.harness.sim import SimControl, start_sim
from controller.labconfig import load_lab, parse_lab, read_resource_map
from controller.operator.daemons import StartError, terminate
from hil_tests.test_entanglement_physics import calibrate_from_truth
from qnode.errors import LabConfigError, ProgramError, QnodeError
from sequences.program import Instruction, Op, assemble, decode, decode_events, encode
from sim_backends.framing import Message
from sim_backends.instruments.sequencer import SimSequencer
from sim_backends.lab import SimLab, fibre_db_per_km, fibre_transmission

LABS = Path(__file__).resolve().parent.parent / "labs"
THREE = LABS / "sim_three_node.toml"
METRO = LABS / "sim_three_node_metro.toml"
STATIONS = ("A", "B", "C", "M1", "M2")
SEED = 20261130
QNODE = [sys.executable, "-m", "controller.cli"]


# through the real transports ---------------------------------------------------------------
@pytest.fixture(scope="module")
def three_node(tmp_path_factory):
    """`qnode sim up` of the three-node lab in its own process: (lab, resource map)."""
    folder = tmp_path_factory.mktemp("three_node")
    lab = load_lab(THREE)
    resource_map = folder / "resources.json"
    try:
        proc = start_sim(lab, resource_map, seed=SEED, log=folder / "sim.log")
    except StartError as e:
        pytest.fail(str(e))
    try:
        yield lab, resource_map
    finally:
        terminate(proc)


def qnode(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*QNODE, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_sim_up_serves_all_five_stations_and_instruments_check_passes(three_node):
    lab, resource_map = three_node
    resources = read_resource_map(lab, resource_map)
    served = {name.split(".")[0] for name in resources}
    assert served == set(STATIONS)
    expected = {f"{n}.{i}" for n, i, _ in lab.all_instruments()}
    assert set(resources) == expected
    check = qnode("instruments", "check", "--lab", str(THREE), "--resource-map", str(resource_map))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"all {len(expected)} instruments healthy" in check.stdout
    assert "(5 stations: A, B, C, M1, M2)" in " ".join(check.stdout.split())
    # the ground truth names both midpoints, each with its own link's two nodes only
    truth = SimControl(resource_map).truth()
    assert set(truth["M1"]["eta"]) == {"A", "B"}
    assert set(truth["M2"]["eta"]) == {"B", "C"}


def test_sim_up_serves_the_metro_lab_with_its_fibres(tmp_path):
    """The metro variant: the same five stations; each photon's delay after its sync holds
    its node's fibre to the link's midpoint (5 us/km) on top of the 40-90 ns electronics."""
    lab = load_lab(METRO)
    resource_map = tmp_path / "resources.json"
    proc = start_sim(lab, resource_map, seed=SEED, log=tmp_path / "sim.log")
    try:
        resources = read_resource_map(lab, resource_map)
        assert {name.split(".")[0] for name in resources} == set(STATIONS)
        control = SimControl(resource_map)
        for link in lab.all_links.values():
            delays = control.truth(link.midpoint)["delay_ns"]
            assert set(delays) == set(link.nodes)
            for node in link.nodes:
                fibre_ns = link.delay_s(node) * 1e9
                assert fibre_ns + 40.0 <= delays[node] <= fibre_ns + 90.0, (link, node)
            # each node's efficiency holds its converter (15-25 %) and its fibre at 1588 nm
            # (0.2 dB/km): the NV's free-space 2.8e-4..4.2e-4 times that
            eta = control.truth(link.midpoint)["eta"]
            for node in link.nodes:
                fibre = 10 ** (-0.2 * link.fibre_km[node] / 10)
                assert 2.8e-4 * 0.15 * fibre <= eta[node] <= 4.2e-4 * 0.25 * fibre, (link, node)
    finally:
        terminate(proc)


def test_fibre_loss_follows_the_wavelength():
    """Telecom light loses 0.2 dB/km; the NV's own 637 nm light about 7 dB/km (Rayleigh
    scattering, as the fourth power of the wavelength): 5 km of it would take 35 dB."""
    rng = np.random.default_rng(1)
    assert fibre_db_per_km(1588.0) == pytest.approx(0.2)
    assert fibre_db_per_km(637.2) == pytest.approx(0.2 * (1550 / 637.2) ** 4)
    assert 6.5 < fibre_db_per_km(637.2) < 7.5
    assert fibre_transmission("nv", 0.0, None, rng) == 1.0  # no fibre, no converter
    own = fibre_transmission("nv", 5.0, None, rng)
    assert own == pytest.approx(10 ** (-fibre_db_per_km(637.2) * 5 / 10))
    converted = [fibre_transmission("nv", 5.0, 1588.0, rng) for _ in range(200)]
    assert 0.15 * 10**-0.1 <= min(converted) < max(converted) <= 0.25 * 10**-0.1
    assert min(converted) > 100 * own  # conversion is what makes metro links possible


def test_each_midpoint_drives_the_sync_of_its_own_link(three_node):
    """M1's sync reaches A's and B's port 0, M2's reaches B's port 1 and C's port 0: each
    sequencer's WAIT_SYNC on the port of a link returns when that link's midpoint fires."""
    lab, resource_map = three_node
    resources = read_resource_map(lab, resource_map)
    waits = {  # station -> (midpoint, port)
        ("A", "M1"): 0,
        ("B", "M1"): 0,
        ("B", "M2"): 1,
        ("C", "M2"): 0,
    }
    for (node, midpoint), port in waits.items():
        seq = lab.make_driver(node, "seq", resources)
        herald = lab.make_driver(midpoint, "herald", resources)
        other = lab.make_driver("M2" if midpoint == "M1" else "M1", "herald", resources)
        program = assemble(f"WAIT_SYNC 5s, {port}\nEVENT 7\nHALT")
        with seq, herald, other:
            seq.load(program)
            seq.run()
            other.fire_sync()  # the other midpoint's sync reaches another input: still waits
            time.sleep(0.05)
            assert seq.state() == "WAITING", (node, midpoint)
            herald.fire_sync()
            deadline = time.monotonic() + 5
            while seq.state() in ("RUNNING", "WAITING") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert seq.state() == "HALTED", (node, midpoint)
            events = seq.read_events()
            assert [e.code for e in events] == [7], (node, midpoint, events)


def test_midpoint_serve_names_the_midpoints_when_the_lab_has_several(tmp_path):
    env = {**os.environ, "QNODE_DATA_DIR": str(tmp_path)}
    unnamed = qnode("midpoint", "serve", "--lab", str(THREE), env=env)
    assert unnamed.returncode == 2
    text = " ".join((unnamed.stdout + unnamed.stderr).split())
    assert "has 2 midpoints" in text and "M1 (A-B)" in text and "M2 (B-C)" in text
    wrong = qnode("midpoint", "serve", "--lab", str(THREE), "--name", "M3", env=env)
    assert wrong.returncode == 2
    assert "'M3' is not a midpoint" in " ".join((wrong.stdout + wrong.stderr).split())


def test_a_midpoint_daemon_serves_its_own_link(three_node, tmp_path, monkeypatch):
    from controller.midpoint.daemon import link_nodes, served_midpoint
    from controller.operator import daemons
    from controller.operator.client import NodeClient

    lab, resource_map = three_node
    assert served_midpoint(lab, "M2") == "M2" and link_nodes(lab, "M2") == ["B", "C"]
    monkeypatch.setenv("QNODE_DATA_DIR", str(tmp_path / "data"))
    proc = daemons.start_daemon(lab, "M2", log=tmp_path / "M2.log", resource_map=resource_map)
    try:
        with NodeClient.for_lab(lab, "M2", timeout_s=10) as client:
            status = client.status()
        assert status["node"] == "M2"
    finally:
        terminate(proc)


LINK_SHOTS = 20


def test_node_daemons_herald_on_each_link_in_turn(three_node, tmp_path, monkeypatch):
    """The node daemons compile and run the attempt loop on their port of a link (B's
    program points its fibre switch there); the link's midpoint (its herald logic, through
    its driver) releases them with its sync: A-B through M1, then B-C through M2. Every shot
    heralds at that link's midpoint only, with B's photon among those it saw."""
    from controller.operator import daemons
    from controller.operator.client import NodeClient
    from sequences.operations import (
        CRCheck,
        EntanglementAttempt,
        Readout,
        Sequence,
        SpinInit,
        Sweep,
        WaitSync,
    )

    lab, resource_map = three_node
    resources = read_resource_map(lab, resource_map)
    control = SimControl(resource_map)
    monkeypatch.setenv("QNODE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    for node in ("A", "B", "C"):
        calibrate_from_truth(lab.data_dir, control, node)
    procs = {
        node: daemons.start_daemon(
            lab, node, log=tmp_path / f"{node}.log", resource_map=resource_map
        )
        for node in ("A", "B", "C")
    }
    try:
        for link_name, link in lab.all_links.items():
            before = {m: len(control.heralds(midpoint=m)) for m in ("M1", "M2")}
            herald = lab.make_driver(link.midpoint, "herald", resources)
            truth = control.truth(link.midpoint)
            windows = [(truth["delay_ns"][n], truth["lifetime_ns"][n] * 2.3) for n in link.nodes]
            runs = {}
            with herald:
                herald.set_herald_windows(windows)
                herald.set_sync_auto(True)
                try:
                    for node in link.nodes:
                        port = lab.nodes[node].channels.port(link_name)
                        sequence = Sequence(
                            f"attempt_{link_name}",
                            (
                                CRCheck(),
                                WaitSync(port=port),
                                EntanglementAttempt(max_attempts=10**6, port=port),
                                SpinInit(0),
                                Readout(),
                            ),
                            LINK_SHOTS,
                        )
                        with NodeClient.for_lab(lab, node, timeout_s=10) as client:
                            runs[node] = client.start(sequence, Sweep())["run_id"]
                    for node, run_id in runs.items():
                        with NodeClient.for_lab(lab, node, timeout_s=10) as client:
                            done = client.wait(run_id, timeout_s=120)
                        assert done["status"] == "completed", (link_name, node, done)
                finally:
                    herald.set_sync_auto(False)
            after = {m: control.heralds(midpoint=m) for m in ("M1", "M2")}
            other = "M2" if link.midpoint == "M1" else "M1"
            assert len(after[other]) == before[other], link_name
            new = after[link.midpoint][before[link.midpoint] :]
            assert len(new) == LINK_SHOTS, link_name
            # both memories bright (alpha ~0.1) in most heralds: B's photons went to this
            # link's midpoint (a memory that lost its charge state before the attempts is
            # dark; that is rare, ~1 in 20 at most)
            both = [h for h in new if min(h["alphas"][n] for n in link.nodes) > 0]
            assert len(both) >= 0.7 * LINK_SHOTS, (link_name, new)
    finally:
        for proc in procs.values():
            terminate(proc)


def planned_p_success(lab, control, a: str, b: str, midpoint: str, other: str):
    """Barrett-Kok's success per attempt on the link a-b from the stored values (B's photons
    at `midpoint`), and the same with B's photons at the `other` midpoint (the truth's) put in
    their place: what a store of one set per node would have planned with."""
    from calibration.planning import barrett_kok, link_from_calibration, link_parameter
    from controller.data.params import ParameterStore
    from controller.harness.truth_calibration import photon_values

    with ParameterStore(lab.data_dir / "params.sqlite") as store:
        values = {s: store.station_values(s, lab.nodes[s].memory_platform) for s in (a, b)}
        values[midpoint] = store.station_values(midpoint, None)
    one_link = [n for n in (a, b) if len(lab.links_of(n)) == 1]
    link, _ = link_from_calibration(values, [a, b], midpoint, one_link)
    at_other = photon_values(control.truth(other), "B")
    swapped = {**values[midpoint], **{link_parameter("B", k): v for k, v in at_other.items()}}
    wrong, _ = link_from_calibration({**values, midpoint: swapped}, [a, b], midpoint, one_link)
    return barrett_kok(link).p_success, barrett_kok(wrong).p_success


@pytest.mark.timeout(600)
def test_entangle_a_with_b_then_b_with_c(three_node, tmp_path, monkeypatch):
    """The link layer finds the midpoint of the link to its peer and the values calibrated
    for that link: A entangles with B through M1, then B (initiating) with C through M2, one
    session at a time (Barrett-Kok, Z), both links calibrated once (from the truth, per link
    as the routines store them), nothing rewritten between the sessions. Each session's
    expected success per attempt is its own link's."""
    from controller.harness.truth_calibration import calibrate_links_from_truth
    from controller.operator import daemons
    from controller.operator.client import NodeClient

    lab, resource_map = three_node
    control = SimControl(resource_map)
    monkeypatch.setenv("QNODE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    calibrate_links_from_truth(lab, control)
    procs = daemons.ensure_daemons(lab, list(STATIONS), resource_map, tmp_path / "logs")
    pairs = 10
    try:
        for initiator, peer, link_name in (("A", "B", "AB"), ("B", "C", "BC")):
            midpoint = lab.all_links[link_name].midpoint
            other = "M2" if midpoint == "M1" else "M1"
            before = {m: len(control.heralds(midpoint=m)) for m in ("M1", "M2")}
            with NodeClient.for_lab(lab, initiator, timeout_s=30) as client:
                started = client.entangle(
                    pairs, "barrett_kok", deadline_s=200, delivery="Z", peer=peer
                )
                summary = client.wait_session(started["session"], timeout_s=250)
                data = client.session_data(started["session"])
            assert summary["state"] == "completed", (link_name, summary.get("reason"))
            delivered = data["pairs"][data["pairs"]["status"] == DELIVERED]
            assert len(delivered) >= pairs, link_name
            heralds = control.heralds(midpoint=midpoint)[before[midpoint] :]
            assert len(heralds) >= pairs and all(h["protocol"] == "barrett_kok" for h in heralds)
            assert {frozenset(h["alphas"]) for h in heralds} == {frozenset((initiator, peer))}
            assert len(control.heralds(midpoint=other)) == before[other], link_name
            # the session planned with this link's values of B (under its midpoint): the
            # planning model on them, and not on B's values at the other midpoint
            mine, others = planned_p_success(lab, control, initiator, peer, midpoint, other)
            assert abs(others / mine - 1) > 0.05  # B's photons differ at M1 and M2
            assert summary["expected"]["p_success"] == pytest.approx(mine, rel=1e-6), link_name
    finally:
        for proc in reversed(procs):
            terminate(proc)


# pure code: the simulated lab in this process -----------------------------------------------
def send(device, text: str, block: bytes | None = None):
    return device.execute(Message(text, block))


def sequencer_of(lab: SimLab, node: str) -> SimSequencer:
    return next(
        d for d in lab.devices.values() if isinstance(d, SimSequencer) and d.node.name == node
    )


def lasers_on(lab: SimLab, node: str) -> None:
    """The node's lasers on at their nominal power, its memory ready (as after a passed CR
    check: these programs have none)."""
    for path in lab.nodes[node].optics.values():
        path.laser.enabled, path.laser.power_w = True, path.nominal_power_w
    lab.nodes[node].physics.ready = True


INIT_NS, EXCITE_NS = 2000, 20
SYNC_EVENT, HERALD_EVENT, ATTEMPTS_EVENT, EXHAUSTED_EVENT = 10, 11, 12, 13


def attempt_program(port: int, switch_line: int | None, window_ns: int, attempts: int) -> str:
    """The attempt loop (spin pump, optical pi pulse, herald wait) on one link's port, the
    fibre switch pointed at that link's midpoint first; events: the sync, the herald (its
    outcome) and the attempts it took, or the attempts exhausted."""
    switch = ""
    if switch_line is not None:
        switch = f"{'TTL_SET' if port else 'TTL_CLR'} {1 << switch_line:#x}\n"
    return f"""{switch}WAIT_SYNC 5s, {port}
        EVENT {SYNC_EVENT}
        SET r2, 0
top:    ADD r2, 1
        TTL_SET 0x4
        WAIT {INIT_NS}
        TTL_CLR 0x4
        TTL_SET 0x8
        WAIT {EXCITE_NS}
        TTL_CLR 0x8
        WAIT_HERALD r0, {window_ns}, {port}
        BRANCH_GE r0, 1, heralded
        LOOP top, {attempts}
        EVENT {EXHAUSTED_EVENT}, r2
        HALT
heralded: EVENT {HERALD_EVENT}, r0
        EVENT {ATTEMPTS_EVENT}, r2
        HALT
"""


def run_link(
    lab_file: Path, link: str, window_ns: int, attempts: int, runs: int = 1, seed: int = 3
):
    """Both nodes of a link run the attempt loop on their port of it, `runs` times, released
    by that link's midpoint (its herald logic's SYNC:MODE AUTO). Returns each node's events
    per run, the midpoints' ground-truth heralds and the lab's description."""
    config = load_lab(lab_file)
    spec = config.all_links[link]
    loop = asyncio.new_event_loop()
    try:
        with tempfile.TemporaryDirectory() as tmp:

            async def run():
                lab = SimLab(config.model_dump(), seed, Path(tmp), Path(tmp) / "resources.json")
                herald = lab.midpoints[spec.midpoint].herald_logic
                send(herald, "SYNC:MODE AUTO")
                assert send(herald, "SYNC:MODE?") == "AUTO"
                events: dict[str, list] = {n: [] for n in spec.nodes}
                for _ in range(runs):
                    for node in spec.nodes:
                        lasers_on(lab, node)
                        channels = config.nodes[node].channels
                        source = attempt_program(
                            channels.port(link),
                            channels.ttl.get("fibre_switch"),
                            window_ns,
                            attempts,
                        )
                        seq = sequencer_of(lab, node)
                        send(seq, "PROGram:LOAD", assemble(source).encode())
                        send(seq, "RUN")
                    for node in spec.nodes:
                        seq = sequencer_of(lab, node)
                        while send(seq, "STATus?") in ("RUNNING", "WAITING"):
                            await asyncio.sleep(0.001)
                        assert send(seq, "STATus?") == "HALTED"
                        events[node].append(decode_events(send(seq, "EVT:DATA?")))
                heralds = {name: list(m.heralds) for name, m in lab.midpoints.items()}
                return events, heralds, lab

            return loop.run_until_complete(run())
    finally:
        loop.close()


def by_code(events) -> dict[int, object]:
    return {e.code: e for e in events}


@pytest.mark.parametrize("link, quiet", [("AB", "M2"), ("BC", "M1")])
def test_a_herald_on_each_link_b_switching_its_fibre(link, quiet):
    """B's fibre switch sends its photons to the midpoint of the link it attempts on: that
    midpoint heralds (both memories bright in the ground truth: both photons reached it),
    the other never does."""
    runs = 5
    events, heralds, lab = run_link(THREE, link, window_ns=1000, attempts=10**6, runs=runs)
    midpoint = "M1" if link == "AB" else "M2"
    assert heralds[quiet] == []
    assert len(heralds[midpoint]) == runs
    for h in heralds[midpoint]:
        # the memories, pumped to |0> (bright) with no rotation, both emit: each alpha ~1
        assert set(h["alphas"]) == set(link) and min(h["alphas"].values()) > 0.9, h
    for node, per_run in events.items():
        for run in per_run:
            codes = by_code(run)
            assert HERALD_EVENT in codes and codes[HERALD_EVENT].value in (1, 2), (node, run)
    # B's switch line (5) is high after a run on BC (port 1), low after one on AB (port 0)
    assert bool((lab.nodes["B"].ttl >> 5) & 1) == (link == "BC")


def test_switch_pointed_at_the_other_midpoint_leaves_b_dark_there():
    """A wrong fibre switch (B's photons to M1 while it attempts on M2): M2 heralds on C's
    photons alone, and the ground truth says B was dark."""
    config = load_lab(THREE)
    loop = asyncio.new_event_loop()
    try:
        with tempfile.TemporaryDirectory() as tmp:

            async def run():
                lab = SimLab(config.model_dump(), 5, Path(tmp), Path(tmp) / "resources.json")
                send(lab.midpoints["M2"].herald_logic, "SYNC:MODE AUTO")
                for node, port, switch in (("B", 1, None), ("C", 0, None)):
                    lasers_on(lab, node)
                    # B's program leaves its switch low (M1) though it waits on M2's port
                    source = attempt_program(port, switch, 1000, 10**6)
                    seq = sequencer_of(lab, node)
                    send(seq, "PROGram:LOAD", assemble(source).encode())
                    send(seq, "RUN")
                for node in ("B", "C"):
                    seq = sequencer_of(lab, node)
                    while send(seq, "STATus?") in ("RUNNING", "WAITING"):
                        await asyncio.sleep(0.001)
                return list(lab.midpoints["M2"].heralds), list(lab.midpoints["M1"].heralds)

            at_m2, at_m1 = loop.run_until_complete(run())
    finally:
        loop.close()
    assert len(at_m2) == 1 and at_m1 == []
    assert at_m2[0]["alphas"]["B"] == 0.0 and at_m2[0]["alphas"]["C"] > 0.9


def test_metro_herald_wait_returns_one_round_trip_after_the_excitation():
    """On the metro lab's 10 km link (5 km each way) the herald reaches a node 2 x 25 us after
    its photon left: the WAIT_HERALD of the heralding attempt ends exactly then (virtual
    clock), the failed attempts each last their whole wait."""
    window = 60_000  # ns: longer than the 50 us round trip
    events, heralds, lab = run_link(METRO, "AB", window_ns=window, attempts=10**6)
    round_trip = 2 * 5.0 * 5000  # 2 x 5 km x 5 us/km, in ns
    assert lab.midpoints["M1"].round_trip_ns("A") == round_trip
    assert len(heralds["M1"]) == 1
    for node in ("A", "B"):
        codes = by_code(events[node][0])
        attempts = codes[ATTEMPTS_EVENT].value
        assert attempts == heralds["M1"][0]["attempts"]
        period = INIT_NS + EXCITE_NS + window
        after_excitation = (
            codes[HERALD_EVENT].time_ns
            - codes[SYNC_EVENT].time_ns
            - (attempts - 1) * period
            - (INIT_NS + EXCITE_NS)
        )
        assert after_excitation == round_trip, node


def test_metro_herald_wait_shorter_than_the_round_trip_never_hears_a_herald():
    """A herald wait shorter than the round trip gives up before any attempt's fate can come
    back: every attempt times out, none heralds at the node, whatever the midpoint saw."""
    attempts = 40
    events, heralds, _ = run_link(METRO, "AB", window_ns=40_000, attempts=attempts)
    for node in ("A", "B"):
        codes = by_code(events[node][0])
        assert HERALD_EVENT not in codes, node
        assert codes[EXHAUSTED_EVENT].value == attempts
    assert heralds["M1"] == []


def photon_delays(lab_file: Path, node: str, midpoint: str, port: int) -> tuple[np.ndarray, dict]:
    """The delays (ns after their sync) of the tags a node's excitation train leaves on its
    midpoint's tagger, and that midpoint's truth; the node's photons reach the detectors with
    probability 0.2 (raised, for statistics). A short spin pump: 500 excitations light the
    memory for 0.1 ms, well within its ~2 ms to ionise under red light."""
    import dataclasses

    config = load_lab(lab_file)
    switch = config.nodes[node].channels.ttl.get("fibre_switch")
    body = "TTL_SET 0x4\nWAIT 200\nTTL_CLR 0x4\nTTL_SET 0x8\nWAIT 20\nTTL_CLR 0x8\nWAIT 80000\n"
    lead = "" if switch is None else f"{'TTL_SET' if port else 'TTL_CLR'} {1 << switch:#x}\n"
    source = f"{lead}top: {body}LOOP top, 500\nHALT\n"
    loop = asyncio.new_event_loop()
    try:
        with tempfile.TemporaryDirectory() as tmp:

            async def run():
                lab = SimLab(config.model_dump(), 11, Path(tmp), Path(tmp) / "resources.json")
                mid = lab.midpoints[midpoint]
                mid.truth = dataclasses.replace(mid.truth, eta={**mid.truth.eta, node: 0.2})
                lasers_on(lab, node)
                tagger, seq = mid.tagger, sequencer_of(lab, node)
                for channel in mid.detectors:
                    assert send(tagger, f"INPut{channel}:ENABle ON;:RAW{channel}:SEND ON") == ""
                send(seq, "PROGram:LOAD", assemble(source).encode())
                assert send(tagger, "RECord:ENABle ON;DURation 3600 s;PLAY") == ""
                send(seq, "RUN")
                while send(seq, "STATus?") in ("RUNNING", "WAITING"):
                    await asyncio.sleep(0.001)
                send(tagger, "RECord:STOP")
                return tagger.tags["delay_ps"] / 1e3, mid.truth.as_dict()

            return loop.run_until_complete(run())
    finally:
        loop.close()


@pytest.mark.parametrize(
    "lab_file, node, midpoint, port, fibre_ns",
    [
        (THREE, "A", "M1", 0, 5.0),  # 1 m of fibre
        (METRO, "A", "M1", 0, 25_000.0),  # 5 km
        (METRO, "B", "M2", 1, 62_500.0),  # 12.5 km, through B's fibre switch
    ],
)
def test_photons_arrive_one_fibre_delay_later(lab_file, node, midpoint, port, fibre_ns):
    """The delay histogram of a node's photons starts at the fibre delay plus the electronics
    (40-90 ns); the bulk lies within a few lifetimes (12 ns) of the onset."""
    delays, truth = photon_delays(lab_file, node, midpoint, port)
    onset = truth["delay_ns"][node]
    assert fibre_ns + 40.0 <= onset <= fibre_ns + 90.0
    photons = delays[(delays > onset - 5.0) & (delays < onset + 120.0)]
    # ~500 excitations x 0.2: about 100 photons (sd 10) while the memory stays ready; more
    # than 40 is 6 sd below
    assert len(photons) > 40
    # the photon cluster starts at the onset (jitter 0.05 ns), not before
    assert photons.min() >= onset - 0.5
    assert np.median(photons) == pytest.approx(onset + 12.0 * np.log(2), abs=6.0)


# the compiler: ports and the fibre switch ---------------------------------------------------
def compiled_attempt(node: str, port: int) -> str:
    from controller.node.runtime import hardware_of
    from sequences.compiler import compile_sequence
    from sequences.operations import EntanglementAttempt, Sequence, WaitSync
    from sequences.parameters import defaults

    params = {
        **defaults("nv"),
        "alpha_amplitude_v": 0.1,
        "pi_amplitude_v": 0.5,
        "mw_frequency_hz": 2.87e9,
    }
    sequence = Sequence(
        "attempt", (WaitSync(port=port), EntanglementAttempt(max_attempts=10, port=port)), 1
    )
    return compile_sequence(sequence, params, hardware_of(load_lab(THREE), node)).listing


def test_compiler_emits_the_port_and_points_b_s_fibre_switch():
    def waits(listing: str) -> list[str]:
        return [x for x in listing.splitlines() if x.startswith(("WAIT_SYNC", "WAIT_HERALD"))]

    on_bc = compiled_attempt("B", 1).splitlines()
    switch_high = f"TTL_SET {1 << 5:#x}"  # B's fibre_switch line 5, high: the link on port 1
    assert on_bc.count(switch_high) == 1
    first_attempt = next(k for k, x in enumerate(on_bc) if x.startswith("attempt"))
    assert on_bc.index(switch_high) < first_attempt  # set once, before the attempt loop
    assert waits("\n".join(on_bc)) == ["WAIT_SYNC 1000000000, 1", "WAIT_HERALD r3, 1000, 1"]
    on_ab = compiled_attempt("B", 0)
    assert f"TTL_CLR {1 << 5:#x}" in on_ab and switch_high not in on_ab
    assert waits(on_ab) == ["WAIT_SYNC 1000000000", "WAIT_HERALD r3, 1000"]
    on_a = compiled_attempt("A", 0)  # A has no switch
    assert "0x20" not in on_a and waits(on_a) == waits(on_ab)


# the lab file and the program format --------------------------------------------------------
def three_node_raw() -> dict:
    import tomllib

    return tomllib.loads(THREE.read_text())


@pytest.mark.parametrize(
    "change, key, problem",
    [
        (lambda r: r["nodes"]["B"]["channels"].pop("links"), "nodes.B.channels.links", "name the"),
        (
            lambda r: r["nodes"]["B"]["channels"]["ttl"].pop("fibre_switch"),
            "nodes.B.channels.ttl",
            "needs a TTL line 'fibre_switch'",
        ),
        (
            lambda r: r["nodes"]["A"]["channels"].update(links={"BC": 0}),
            "nodes.A.channels.links.BC",
            "A is not an end of a link 'BC'",
        ),
        (
            lambda r: r["nodes"]["B"]["channels"].update(links={"AB": 1, "BC": 1}),
            "nodes.B.channels.links.BC",
            "port 1 is already the port of link AB",
        ),
        (
            lambda r: r["nodes"]["C"]["channels"].update(links={"BC": 4}),
            "nodes.C.channels.links.BC",
            "port 4 is outside 0..3",
        ),
    ],
)
def test_lab_file_link_ports_and_fibre_switch_are_checked(change, key, problem):
    raw = three_node_raw()
    change(raw)
    with pytest.raises(LabConfigError) as error:
        parse_lab(raw, str(THREE))
    assert key in str(error.value) and problem in str(error.value)


def test_program_format_round_trip_with_ports():
    text = "WAIT_SYNC 1ms, 1\nWAIT_HERALD r3, 60us, 2\nWAIT_SYNC 1ms\nWAIT_HERALD r0, 1us\nHALT"
    program = assemble(text)
    assert program.instructions[:4] == [
        Instruction(Op.WAIT_SYNC, b=1, d=1_000_000),
        Instruction(Op.WAIT_HERALD, a=3, b=2, d=60_000),
        Instruction(Op.WAIT_SYNC, b=0, d=1_000_000),
        Instruction(Op.WAIT_HERALD, a=0, b=0, d=1_000),
    ]
    assert decode(program.encode()) == program.instructions
    with pytest.raises(ProgramError, match="port 4 does not exist"):
        assemble("WAIT_HERALD r0, 1us, 4\nHALT")
    with pytest.raises(ProgramError, match="port 9 does not exist"):
        encode([Instruction(Op.WAIT_SYNC, b=9, d=4), Instruction(Op.HALT)])
    with pytest.raises(ProgramError, match="port must not be negative"):
        assemble("WAIT_SYNC 1us, -1\nHALT")


def test_a_herald_sets_its_pair_and_leaves_the_third_memory_alone():
    """With three memories in the register, a link's heralded state replaces its two qubits
    only, in the link's order: the third keeps its state."""
    from sim_backends.register import QubitRegister

    register = QubitRegister(["A", "B", "C"])
    kept = np.array([[0.8, 0.1], [0.1, 0.2]], dtype=complex)
    register.replace("A", kept)
    # (|01> + i|10>)/sqrt(2) with C first: C=0 B=1, or C=1 B=0
    in_c_b = np.array([0, 1, 1j, 0]) / np.sqrt(2)
    register.set_pair("C", "B", np.outer(in_c_b, in_c_b.conj()))
    assert np.allclose(register.reduced("A"), kept)
    rho = register.rho.reshape([2] * 6)  # rows A, B, C; columns A, B, C
    b_c = np.einsum("abcaef->bcef", rho).reshape(4, 4)
    in_b_c = np.array([0, 1j, 1, 0]) / np.sqrt(2)  # B=0 C=1 carries the i
    assert np.allclose(b_c, np.outer(in_b_c, in_b_c.conj()))


# calibrated values per link ------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (  # B sits between M1 and M2: a link routine needs the link
            ["calibrate", "--node", "B", "detection_window"],
            "node B has 2 links: AB (A-B through M1), BC (B-C through M2); name one with --link",
        ),
        (
            ["calibrate", "--node", "B", "--link", "CD", "visibility"],
            "node B has no link 'CD' in sim_three_node (its links: AB (A-B through M1), "
            "BC (B-C through M2))",
        ),
        (
            ["calibrate", "--node", "A", "--link", "BC", "dark_counts"],
            "node A has no link 'BC' in sim_three_node (its links: AB (A-B through M1))",
        ),
        (
            ["entangle", "--node", "B", "--pairs", "10"],
            "node B has 2 peers (A, C): name one with --peer",
        ),
        (
            ["entangle", "--node", "A", "--peer", "C", "--pairs", "10"],
            "node A has no link to 'C' in sim_three_node (its peers: B)",
        ),
    ],
)
def test_cli_names_the_links_and_peers_a_node_has(args, message, tmp_path):
    """Refused at the door (exit 2, before any daemon is reached), naming what there is."""
    env = {**os.environ, "QNODE_DATA_DIR": str(tmp_path)}
    result = qnode(*args, "--lab", str(THREE), env=env)
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, text
    assert message in text and "Traceback" not in text


def test_a_node_with_one_link_needs_no_link_named(tmp_path):
    """A and C have one link each: `calibrate --plan` and the link resolution need no --link
    (the plan runs nothing); B with the link named resolves to it."""
    from controller.operator.calibration_access import resolve_link
    from controller.operator.entangle import resolve_peer

    lab = load_lab(THREE)
    assert resolve_link(lab, "A", None)[0] == "AB" and resolve_link(lab, "C", None)[0] == "BC"
    name, link = resolve_link(lab, "B", "BC")
    assert (name, link.midpoint, link.peer("B")) == ("BC", "M2", "C")
    assert resolve_peer(lab, "A", None) == "B" and resolve_peer(lab, "B", "C") == "C"


def test_a_node_between_midpoints_records_its_photons_under_the_link_s_midpoint(tmp_path):
    """The routines record through ClientNodeAccess: B's photon values (the detection window's)
    go under the midpoint of the link being calibrated, as B_<name>; its own values (the
    qubit's) under B. A, with one link, keeps both as its own (as a two-node lab does)."""
    from types import SimpleNamespace

    from controller.data.params import ParameterStore
    from controller.operator.calibration_access import ClientNodeAccess

    lab = load_lab(THREE)
    with ParameterStore(tmp_path / "params.sqlite") as store:
        for node, midpoint, start in (("B", "M1", 62.0), ("B", "M2", 96.0), ("A", "M1", 77.0)):
            access = ClientNodeAccess.for_lab(
                lab, node, None, store, SimpleNamespace(node=midpoint)
            )
            for name, value in (("detection_window_start_ns", start), ("pi_amplitude_v", 0.4)):
                access.record(name, value, routine="test", run_id=None, fit_quality=None)
            assert access.stored("detection_window_start_ns") == start
        assert store.current("M1")["B_detection_window_start_ns"].value == 62.0
        assert store.current("M2")["B_detection_window_start_ns"].value == 96.0
        assert store.current("M2")["B_detection_window_start_ns"].unit == "ns"
        assert "detection_window_start_ns" not in store.current("B")
        assert store.current("B")["pi_amplitude_v"].value == 0.4
        assert store.current("A")["detection_window_start_ns"].value == 77.0
        assert "A_detection_window_start_ns" not in store.current("M1")


def test_planning_takes_a_node_s_photons_from_its_link_and_never_from_another():
    """link_from_calibration reads B's photons under the link's midpoint; a node-level value
    of B (another link's, or set by hand) does not stand in for a node with two links: the
    planner refuses, naming what to calibrate, rather than plan with the wrong link's."""
    from calibration.planning import link_from_calibration

    photons = {
        "detection_probability": 4e-4,
        "detection_window_ns": 27.6,
        "detection_window_start_ns": 62.0,
        "photon_onset_ns": 60.0,
        "photon_lifetime_ns": 12.0,
    }
    at_m2 = {f"B_{k}": v for k, v in {**photons, "detection_probability": 2e-4}.items()}
    midpoint = {"dark_count_hz_psi_plus": 15.0, "visibility": 0.9}
    values = {"B": dict(photons), "C": dict(photons), "M2": {**midpoint, **at_m2}}
    link, _ = link_from_calibration(values, ["B", "C"], "M2", node_level=["C"])
    same_window = link.eta_b  # C's photons, in the same windows as B's
    assert link.eta_a == pytest.approx(same_window / 2)  # B's at M2: half C's, as stored
    values["M2"] = midpoint  # B's photons at M2 not calibrated: its node-level set is M1's
    with pytest.raises(QnodeError, match=r"not calibrated: M2\.B_detection_probability"):
        link_from_calibration(values, ["B", "C"], "M2", node_level=["C"])
    # a two-node lab (every node with one link): node-level values are the link's
    link, _ = link_from_calibration(values, ["B", "C"], "M2")
    assert link.eta_a == pytest.approx(link.eta_b)


def test_metro_lab_calibrated_per_link_holds_each_fibre_in_b_s_windows(tmp_path, monkeypatch):
    """From the truth of the metro lab (A-M1 5 km, B-M1 5 km, B-M2 12.5 km, C-M2 12.5 km), per
    link as the routines store it: B's window at M2 opens (12.5 - 5) km x 5 us/km = 37.5 us
    later than at M1 (each after its own 40-90 ns of electronics), A's and C's are their own
    (one link each); what the planner and the midpoint read as B's on each link is that
    link's."""
    from calibration.planning import OPTICAL_PULSE_NS, on_link
    from controller.data.params import ParameterStore
    from controller.harness.truth_calibration import calibrate_links_from_truth

    monkeypatch.setenv("QNODE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    lab = load_lab(METRO)
    resource_map = tmp_path / "resources.json"
    proc = start_sim(lab, resource_map, seed=SEED, log=tmp_path / "sim.log")
    try:
        control = SimControl(resource_map)
        calibrate_links_from_truth(lab, control)
        truth = {m: control.truth(m) for m in ("M1", "M2")}
    finally:
        terminate(proc)
    links = lab.all_links
    with ParameterStore(lab.data_dir / "params.sqlite") as store:
        at = {m: store.station_values(m, None) for m in ("M1", "M2")}
        nodes = {n: store.station_values(n, "nv") for n in ("A", "B", "C")}
    b_m1, b_m2 = (at[m]["B_detection_window_start_ns"] for m in ("M1", "M2"))
    fibre_ns = {name: link.delay_s("B") * 1e9 for name, link in links.items()}
    assert fibre_ns == {"AB": 25_000.0, "BC": 62_500.0}
    for start, fibre in ((b_m1, fibre_ns["AB"]), (b_m2, fibre_ns["BC"])):
        assert fibre + 40.0 + OPTICAL_PULSE_NS <= start <= fibre + 90.0 + OPTICAL_PULSE_NS
    assert b_m2 - b_m1 == pytest.approx(37_500.0, abs=50.0)
    assert "detection_window_start_ns" not in nodes["B"]  # no one set for both links
    for node, link in (("A", links["AB"]), ("C", links["BC"])):
        start = nodes[node]["detection_window_start_ns"]
        assert start == pytest.approx(link.delay_s(node) * 1e9 + 65.0, abs=25.0 + OPTICAL_PULSE_NS)
        assert f"{node}_detection_window_start_ns" not in at[link.midpoint]
    for midpoint in ("M1", "M2"):  # B's photons as each midpoint sees them
        assert at[midpoint]["B_detection_probability"] == truth[midpoint]["eta"]["B"]
    # what the planner and the midpoint read as B's on each link
    for midpoint in ("M1", "M2"):
        seen = on_link(nodes["B"], at[midpoint], "B", node_level=False)
        assert seen["detection_probability"] == truth[midpoint]["eta"]["B"]
        assert seen["photon_onset_ns"] == truth[midpoint]["delay_ns"]["B"]


@pytest.mark.timeout(600)
def test_entangle_b_with_c_through_the_cli(three_node, tmp_path, monkeypatch):
    """`qnode entangle --node B --peer C`: the CLI starts B, C and M2 (not M1, not A), B
    entangles with C through M2 with the values calibrated for link BC, and stops them."""
    from controller.harness.truth_calibration import calibrate_links_from_truth
    from controller.messaging.serving import running_daemon_pid

    lab, resource_map = three_node
    control = SimControl(resource_map)
    data = tmp_path / "data"
    env = {**os.environ, "QNODE_DATA_DIR": str(data), "COLUMNS": "250"}
    data.mkdir()
    monkeypatch.setenv("QNODE_DATA_DIR", str(data))  # the CLI's data folder, for the harness
    calibrate_links_from_truth(lab, control)
    before = {m: len(control.heralds(midpoint=m)) for m in ("M1", "M2")}
    args = ["entangle", "--lab", str(THREE), "--resource-map", str(resource_map)]
    args += ["--node", "B", "--peer", "C", "--pairs", "6", "--protocol", "barrett-kok"]
    result = subprocess.run(
        [*QNODE, *args, "--basis", "Z", "--deadline", "200"],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        check=False,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "6 of 6 asked" in text and "both nodes agree" in text, text
    heralds = control.heralds(midpoint="M2")[before["M2"] :]
    assert len(heralds) >= 6 and {frozenset(h["alphas"]) for h in heralds} == {frozenset("BC")}
    assert len(control.heralds(midpoint="M1")) == before["M1"]
    logs = {p.stem for p in (data / "logs").glob("*.log")}
    assert logs == {"B", "C", "M2"}, logs
    assert all(running_daemon_pid(data, s) is None for s in STATIONS)


@pytest.mark.timeout(600)
def test_calibrate_walks_each_link_of_b_with_its_own_midpoint(three_node, tmp_path, monkeypatch):
    """What `qnode calibrate --node B --all` does per link, with one midpoint routine: the walk
    starts M1 for link AB and M2 for link BC (each stopped after), and each midpoint's dark
    counts land under its own name, as its truth has them. `--link BC` walks BC only."""
    from calibration.routine import UPDATED
    from controller.cli.calibrate import walk
    from controller.data.params import ParameterStore
    from controller.messaging.serving import running_daemon_pid
    from controller.operator import daemons

    lab, resource_map = three_node
    control = SimControl(resource_map)
    monkeypatch.setenv("QNODE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    proc = daemons.start_daemon(lab, "B", log=tmp_path / "B.log", resource_map=resource_map)
    try:
        outcomes = walk(lab, "B", ["dark_counts"], ["AB", "BC"], False, resource_map)
        assert {name: [o.verdict for o in per] for name, per in outcomes.items()} == {
            "AB": [UPDATED],
            "BC": [UPDATED],
        }
        only = walk(lab, "B", ["dark_counts"], ["BC"], True, resource_map)
        assert list(only) == ["BC"]
    finally:
        terminate(proc)
    assert all(running_daemon_pid(lab.data_dir, m) is None for m in ("M1", "M2"))
    with ParameterStore(lab.data_dir / "params.sqlite") as store:
        for midpoint in ("M1", "M2"):
            truth = control.truth(midpoint)["dark_count_hz"]
            for name, channel in lab.nodes[midpoint].channels.detectors.items():
                rows = store.history(midpoint, f"dark_count_hz_{name}")
                assert len(rows) == (2 if midpoint == "M2" else 1), (midpoint, rows)
                # ~15-20 Hz over 30 s: ~500 counts, sigma ~5 %; 25 % is 5 sigma
                assert rows[-1].value == pytest.approx(truth[str(channel)], rel=0.25)


def test_a_second_link_s_walk_does_not_run_the_node_s_routines_again():
    """run_graph with the node's outcomes of the first link's walk (`done`): the node's own
    routines are neither run again nor reported again; the link's routine is judged on them
    (here skipped: no midpoint reached) and only it is returned."""
    from types import SimpleNamespace

    from calibration.graph import plan, run_graph
    from calibration.routine import SKIPPED, UPDATED, Outcome

    def never(*_args, **_kwargs):
        raise AssertionError("a node routine ran again")

    node = SimpleNamespace(node="B", platform="nv", midpoint=None, link=None, run=never)
    before = [n for n in plan(["detection_window"]) if n != "detection_window"]
    done = {n: Outcome(n, UPDATED, "first link") for n in before}
    outcomes = run_graph(node, ["detection_window"], done=done)
    assert [(o.routine, o.verdict) for o in outcomes] == [("detection_window", SKIPPED)]
    assert "no midpoint" in outcomes[0].reason


def test_the_cavity_lab_pins_weak_memories_and_collects_through_cavities(tmp_path):
    """labs/sim_three_node_cavity.toml: every 13C's hyperfine coupling pinned (`[simulation.
    c13]`), the rest of its truth still drawn from the seed (the same as the lab-scale lab's);
    each node's efficiency in the simulator's cavity range (0.02-0.05), ~100 x free space."""
    import tomllib

    cavity = tomllib.loads((LABS / "sim_three_node_cavity.toml").read_text())
    free = tomllib.loads((LABS / "sim_three_node.toml").read_text())
    pinned = SimLab(cavity, SEED, tmp_path / "c", tmp_path / "c.json")
    drawn = SimLab(free, SEED, tmp_path / "f", tmp_path / "f.json")
    pinned._build()
    drawn._build()
    for node in "ABC":
        p = pinned.nodes[node].physics.memories[0].truth
        d = drawn.nodes[node].physics.memories[0].truth
        assert (p.a_par_hz, p.a_perp_hz) == (-12000.0, 15000.0)
        assert abs(d.a_par_hz) >= 20e3  # the lab-scale lab's are drawn in 20-60 kHz
        assert (p.larmor_hz, p.t2star_s, p.t2_hahn_s) == (d.larmor_hz, d.t2star_s, d.t2_hahn_s)
    for midpoint in pinned.midpoints.values():
        assert all(0.02 * 0.99 <= eta <= 0.05 for eta in midpoint.truth.eta.values())
    for midpoint in drawn.midpoints.values():
        assert all(eta <= 4.2e-4 for eta in midpoint.truth.eta.values())


def test_the_published_set_lab_pins_each_link_and_the_memory(tmp_path):
    """labs/sim_pompili_2021.toml: both midpoints with the published optics, each with its own
    phase noise (`[simulation.midpoints.M1]` over `[simulation.midpoint]`), every node's
    initialisation 0.997, and a 13C whose dephasing per attempt on the simulator's physics
    gives the stand-in N_1/e (1400 at alpha 0.5, bench/published.py) within 10 %."""
    import tomllib

    from controller.harness.truth_calibration import memory_n_1e_from_truth

    raw = tomllib.loads((LABS / "sim_pompili_2021.toml").read_text())
    lab = SimLab(raw, SEED, tmp_path / "p", tmp_path / "p.json")
    noise = {name: m.truth.phase_noise_deg for name, m in lab.midpoints.items()}
    assert noise == {"M1": 19.6, "M2": 24.6}
    for midpoint in lab.midpoints.values():
        for eta in midpoint.truth.eta.values():  # less the lab's 1 m of fibre
            assert eta == pytest.approx(3.9977e-4, rel=2e-3)
        assert set(midpoint.truth.p_double.values()) == {0.04}
        assert midpoint.truth.visibility == 0.9
        assert set(midpoint.truth.dark_count_hz.values()) == {20.0}
    values = {"spin_pump_duration_ns": 3000.0, "pi_duration_ns": 100.0}
    values["excitation_duration_ns"] = 8.0
    for node in "ABC":
        physics = lab.nodes[node].physics
        assert physics.truth.init_fidelity == 0.997
        memory = physics.memories[0].truth
        n_1e = memory_n_1e_from_truth(
            memory.__dict__, {"init_fidelity": 0.997}, values, 0.5, 1008.0
        )
        assert 1260 <= n_1e <= 1540, n_1e


def test_a_pin_for_a_station_that_heralds_no_link_is_refused():
    raw = three_node_raw()
    raw["simulation"] = {"midpoints": {"M3": {"phase_noise_deg": 10.0}}}
    with pytest.raises(LabConfigError, match=r"simulation.midpoints.M3.*'M3' is not a midpoint"):
        parse_lab(raw, str(THREE))
