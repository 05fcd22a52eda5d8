"""The sequencer's host watchdog (issue 12, item 2): a dead host must not leave light or
microwaves on the sample. With the heartbeat gone (the node daemon killed with SIGKILL, or a
host that stops petting) the simulated sequencer halts within its timeout, every line at its
safe level; a healthy run, however long its points, is never stopped by it."""

from __future__ import annotations

import time

import pytest

from controller.data.params import ParameterStore
from controller.labconfig import DEFAULT_LAB, LabConfigError, load_lab, parse_lab
from qnode.errors import InstrumentReportedError
from sequences.operations import Readout, Sequence, SpinInit, Sweep, SweepAxis, WaitSync
from sequences.program import assemble

pytestmark = pytest.mark.usefixtures("sim")

LONG_POINT_S = 6.0
MARGIN_S = 1.5


def long_points(points: int = 1) -> tuple[Sequence, Sweep]:
    """Each point waits LONG_POINT_S of wall time for a sync that never comes (the midpoint
    is not running): a point far longer than the watchdog's timeout."""
    sequence = Sequence(
        "long_wait",
        (SpinInit(), WaitSync(timeout_ns=int(LONG_POINT_S * 1e9)), Readout()),
        shots=1,
    )
    readouts = tuple(10_000.0 + 100.0 * k for k in range(points))  # points differ a little
    return sequence, Sweep((SweepAxis("readout_duration_ns", readouts, "ns"),))


def watchdog_of(lab, node: str) -> float:
    return lab.nodes[node].instruments["seq"].watchdog


def wait_for_halt(sim, instrument: str, within_s: float) -> tuple[dict, float]:
    start = time.monotonic()
    while True:
        state = sim.state(instrument)
        if state["status"] == "HALTED":
            return state, time.monotonic() - start
        assert time.monotonic() - start < within_s, f"not halted after {within_s} s: {state}"
        time.sleep(0.05)


def test_kill_9_of_the_node_daemon_halts_the_sequencer_with_its_lines_safe(
    start_daemon, data_dir, sim, lab
):
    with ParameterStore(data_dir / "params.sqlite") as store:
        store.set_manual("A", "mw_frequency_hz", sim.truth("A")["qubit_hz"], "test: truth")
    daemon = start_daemon("A")
    daemon.client.start(*long_points(3))
    deadline = time.monotonic() + 10
    while sim.state("A.seq")["status"] not in ("RUNNING", "WAITING"):
        assert time.monotonic() < deadline, "the long point never started"
        time.sleep(0.02)
    assert sim.state("A.seq")["watchdog_s"] == watchdog_of(lab, "A")
    daemon.proc.kill()  # SIGKILL: no clean-up of any kind on the host
    daemon.proc.wait(10)
    state, took = wait_for_halt(sim, "A.seq", watchdog_of(lab, "A") + MARGIN_S)
    assert state["halt_reason"].startswith("watchdog: no host heartbeat")
    assert state["ttl"] == state["safe_ttl"] == 0
    assert took < LONG_POINT_S - 1  # the watchdog, not the program's own end
    # lasers and microwave stay on behind the closed switches until a daemon is back, which
    # puts them in their safe state at its start
    again = start_daemon("A")
    assert again.client.status()["state"] == "idle"
    assert sim.state("A.mw")["output"] is False
    assert sim.state("A.laser_red")["enabled"] is False


def test_a_healthy_long_run_is_not_stopped_by_the_watchdog(start_daemon, data_dir, sim, lab):
    assert 2 * watchdog_of(lab, "A") < LONG_POINT_S
    daemon = start_daemon("A")
    trips = sim.state("A.seq")["watchdog_trips"]
    data = daemon.client.run(*long_points(2))
    assert data.status == "completed"
    assert data.counts.shape == (2, 1, 1)
    state = sim.state("A.seq")
    assert state["watchdog_trips"] == trips and state["halt_reason"] == ""
    assert daemon.client.status()["state"] == "idle"


@pytest.fixture
def sequencer(open_driver):
    seq = open_driver("sequencer", "B")
    yield seq
    seq.set_watchdog(0)


def test_a_host_that_stops_petting_gets_its_program_halted_and_lines_low(sequencer, sim):
    program = assemble("TTL_SET 0xF\nWAIT_SYNC 20s\nTTL_CLR 0xF\nHALT\n")
    sequencer.set_watchdog(0.5)
    assert sequencer.watchdog() == 0.5
    sequencer.load(program)
    sequencer.run()
    assert sim.state("B.seq")["ttl"] == 0xF  # the AOMs of lines 0-3 open
    for _ in range(10):  # alive for a while: petted, it keeps running
        sequencer.pet_watchdog()
        time.sleep(0.1)
    assert sequencer.state() == "WAITING" and not sequencer.watchdog_tripped()
    state, took = wait_for_halt(sim, "B.seq", 0.5 + MARGIN_S)
    assert took >= 0.3
    assert state["ttl"] == 0 and state["halt_reason"].startswith("watchdog")
    assert sequencer.state() == "HALTED" and sequencer.watchdog_tripped()
    # the next RUN starts afresh
    sequencer.set_watchdog(0)
    sequencer.load(assemble("TTL_SET 0x1\nTTL_CLR 0x1\nHALT\n"))
    sequencer.run()
    time.sleep(0.1)
    assert sequencer.state() == "HALTED" and not sequencer.watchdog_tripped()


def test_watchdog_timeouts_out_of_range_are_refused(sequencer):
    for bad in (0.01, 61.0, float("nan"), -1.0):
        with pytest.raises(ValueError, match="watchdog"):
            sequencer.set_watchdog(bad)
    sequencer.scpi.write("WDOG:TIME 1e9", check=False)
    with pytest.raises(InstrumentReportedError, match="watchdog"):
        sequencer.scpi.check_errors(after="WDOG:TIME 1e9")
    assert sequencer.watchdog() == 0


def test_lab_file_watchdog_setting_is_validated():
    lab = load_lab(DEFAULT_LAB)
    raw = lab.model_dump(exclude={"source"})

    def with_seq(**settings):
        data = {**raw, "nodes": {**raw["nodes"]}}
        node = dict(data["nodes"]["A"])
        node["instruments"] = {**node["instruments"], "seq": {**node["instruments"]["seq"]}}
        node["instruments"]["seq"].update(settings)
        data["nodes"]["A"] = node
        return parse_lab(data, "lab.toml")

    assert with_seq(watchdog_s=None).nodes["A"].instruments["seq"].watchdog == 3.0
    assert with_seq(watchdog_s=5.0).nodes["A"].instruments["seq"].watchdog == 5.0
    for bad in (0.1, 100.0, float("nan")):
        with pytest.raises(LabConfigError, match="watchdog_s"):
            with_seq(watchdog_s=bad)
    with pytest.raises(LabConfigError, match="must exceed timeout_s"):
        with_seq(watchdog_s=1.0, timeout_s=1.0)
    data = {**raw, "nodes": {**raw["nodes"]}}
    node = dict(data["nodes"]["A"])
    node["instruments"] = {**node["instruments"], "mw": {**node["instruments"]["mw"]}}
    node["instruments"]["mw"]["watchdog_s"] = 2.0
    data["nodes"]["A"] = node
    with pytest.raises(LabConfigError, match="only a sequencer has a watchdog"):
        parse_lab(data, "lab.toml")
