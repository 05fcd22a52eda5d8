"""The node daemon through its ZeroMQ API, against the simulated lab."""

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.optimize import curve_fit

from controller.data.params import ParameterStore
from controller.data.runfile import read_run
from controller.messaging.curve import ensure_keypair
from controller.messaging.serving import node_info_path
from controller.messaging.wire import pack
from controller.operator.client import NodeClient, NodeRequestError, NodeUnavailable
from sequences.library import rabi
from sequences.operations import MwPulse, Param, Readout, Sequence, SpinInit, Sweep, SweepAxis

pytestmark = pytest.mark.usefixtures("sim")


def set_truth(data_dir, sim, node: str) -> dict:
    """Give the node the true resonance (what ESR calibration would find)."""
    truth = sim.truth(node)
    with ParameterStore(data_dir / "params.sqlite") as store:
        store.set_manual(node, "mw_frequency_hz", truth["qubit_hz"], "test: resonance from truth")
    return truth


def rabi_model(t, offset, amplitude, freq, phase):
    return offset + amplitude * np.cos(2 * np.pi * freq * t + phase)


def test_rabi_sweep_frequency_matches_the_hidden_truth(start_daemon, data_dir, sim):
    truth = set_truth(data_dir, sim, "A")
    daemon = start_daemon("A")
    amplitude_v = 0.5
    sweep = Sweep((SweepAxis.linspace("duration_ns", 0, 400, 41, "ns"),))
    data = daemon.client.run(rabi("nv", shots=300), sweep)
    assert data.status == "completed"
    durations_s = data.axes["duration_ns"][0] * 1e-9
    bright = data.bright_fraction()
    expected = truth["rabi_hz_per_v"] * amplitude_v  # at the 10 dBm reference power
    popt, _ = curve_fit(rabi_model, durations_s, bright, p0=[0.5, 0.4, expected * 0.9, 0.0])
    assert abs(popt[2]) == pytest.approx(expected, rel=0.02)
    assert data.counts.shape == (41, 300, 1)
    assert data.valid.mean() > 0.95  # CR checks pass (within their retries)


def test_compiled_run_file_holds_config_params_and_axes(start_daemon, data_dir, sim, lab):
    set_truth(data_dir, sim, "A")
    daemon = start_daemon("A")
    sweep = Sweep((SweepAxis.linspace("duration_ns", 50, 150, 3, "ns"),))
    data = daemon.client.run(rabi("nv", shots=20), sweep)
    with h5py.File(data.file, "r") as f:
        assert f["status"][0].decode() == "completed"
        assert "[nodes.A]" in f["config/lab_toml"][()].decode()
        assert f["parameters/mw_frequency_hz"].attrs["source"] == "manual"
        assert list(f["axes/duration_ns"][:]) == [50.0, 100.0, 150.0]
        assert f["axes/duration_ns"].attrs["unit"] == "ns"
        assert f.attrs["software_version"]
        assert "AWG_TRIG 0\nWAIT 52\n" in f["config/program_listing"][()].decode()
        codes = set(f["events"]["code"])
        assert {1, 1000, 1001} <= codes


def test_abort_mid_sweep_leaves_exactly_the_points_taken(start_daemon, data_dir, sim):
    set_truth(data_dir, sim, "A")
    daemon = start_daemon("A")
    sweep = Sweep((SweepAxis.linspace("duration_ns", 0, 400, 200, "ns"),))
    run = daemon.client.start(rabi("nv", shots=1000), sweep)
    while daemon.client.status()["run"]["points_done"] < 2:
        time.sleep(0.02)
    daemon.client.abort()
    finished = daemon.client.wait(run["run_id"], timeout_s=30)
    assert finished["status"] == "aborted"
    assert 2 <= finished["points_done"] < 200
    stored = read_run(finished["file"])
    assert stored["status"] == "aborted"
    assert stored["completed_points"] == finished["points_done"]
    assert stored["counts"].shape[0] == finished["points_done"]
    assert list(stored["point_index"]) == list(range(finished["points_done"]))
    assert daemon.client.status()["state"] == "idle"
    # the aborted node is usable at once
    again = daemon.client.run(rabi("nv", shots=10), Sweep((SweepAxis("duration_ns", (0.0,)),)))
    assert again.status == "completed"


def test_sigterm_mid_run_leaves_instruments_safe_and_file_valid(start_daemon, data_dir, sim):
    set_truth(data_dir, sim, "B")
    daemon = start_daemon("B")
    sweep = Sweep((SweepAxis.linspace("duration_ns", 0, 400, 200, "ns"),))
    run = daemon.client.start(rabi("nv", shots=1000), sweep)
    # point 0 (0 ns) plays no pulse, so the output is switched on by point 1: after it the
    # microwave is on for the rest of the run
    while (status := daemon.client.status())["run"]["points_done"] < 2:
        assert status["state"] == "busy", status
        time.sleep(0.02)
    assert sim.state("B.mw")["output"] is True, daemon.client.status()
    assert daemon.stop() == 0
    assert sim.state("B.mw")["output"] is False
    awg = sim.state("B.awg")
    assert awg["running"] is False and not any(awg["outputs"].values())
    assert sim.state("B.laser_green")["enabled"] is False
    assert sim.state("B.laser_red")["enabled"] is False
    assert sim.state("B.seq")["ttl"] == 0 and sim.state("B.seq")["status"] == "IDLE"
    stored = read_run(run["file"])
    assert stored["status"] == "aborted"
    assert stored["counts"].shape[0] == stored["completed_points"] >= 1
    assert not node_info_path(data_dir, "B").exists()


def test_unknown_client_key_gets_no_answer_and_is_logged(start_daemon, data_dir, tmp_path):
    daemon = start_daemon("A")
    _, stranger_secret = ensure_keypair(tmp_path / "stranger", "stranger")  # not allow-listed
    stranger = NodeClient(
        daemon.client.endpoint, daemon.client.server_public, stranger_secret, timeout_s=1.5
    )
    with pytest.raises(NodeUnavailable, match="no answer"):
        stranger.status()
    stranger.close()
    status = daemon.client.status()
    assert status["refused_clients"] >= 1
    assert "refused a client with unknown CurveZMQ key" in daemon.log()


def test_malformed_messages_are_dropped_and_counted(start_daemon):
    daemon = start_daemon("A")
    client = daemon.client
    sock = client._socket()
    sock.send(b"\x00garbage")
    sock.send(pack("launch_missiles", 99))
    body = __import__("msgpack").packb({"v": 1, "type": "status"})  # no id, no time
    sock.send(body)
    time.sleep(0.3)
    status = client.status()
    assert status["malformed"] == 3
    assert status["state"] == "idle"


def test_bad_sequence_is_an_error_reply_not_a_fault(start_daemon):
    daemon = start_daemon("A")
    too_short = Sequence("bad", (SpinInit(2), Readout()), shots=5)
    with pytest.raises(
        NodeRequestError, match=r"operation 0 \(SpinInit\).*below the sequencer clock"
    ):
        daemon.client.start(too_short)
    missing = Sequence("bad", (MwPulse(Param("no_such_amplitude"), 100), Readout()), shots=5)
    with pytest.raises(NodeRequestError, match="'no_such_amplitude', which has no value"):
        daemon.client.start(missing)
    assert daemon.client.status()["state"] == "idle"


def test_instrument_lost_mid_run_faults_then_recovers(start_daemon, data_dir, sim):
    set_truth(data_dir, sim, "A")
    daemon = start_daemon("A")
    sweep = Sweep((SweepAxis.linspace("duration_ns", 0, 400, 200, "ns"),))
    run = daemon.client.start(rabi("nv", shots=500), sweep)
    while daemon.client.status()["run"]["points_done"] < 1:
        time.sleep(0.02)
    sim.fault("A.mw", "unplug")
    finished = daemon.client.wait(run["run_id"], timeout_s=60)
    assert finished["status"] == "failed"
    status = daemon.client.status()
    assert status["state"] == "fault"
    assert "A.mw" in status["fault_reason"]
    # the rest of the node went to its safe state
    assert sim.state("A.awg")["running"] is False
    assert sim.state("A.laser_red")["enabled"] is False
    stored = read_run(finished["file"])
    assert stored["status"] == "failed" and stored["counts"].shape[0] == finished["points_done"]
    # while it is gone a run is refused with the reason; once back, runs work again
    with pytest.raises(NodeRequestError, match="still in fault: mw"):
        daemon.client.start(rabi("nv", shots=5), Sweep((SweepAxis("duration_ns", (0.0,)),)))
    sim.fault("A.mw", "plug")
    data = daemon.client.run(rabi("nv", shots=20), Sweep((SweepAxis("duration_ns", (0.0,)),)))
    assert data.status == "completed"
    assert daemon.client.status()["state"] == "idle"


def test_cli_status_and_run(start_daemon, data_dir, sim, lab):
    set_truth(data_dir, sim, "A")
    start_daemon("A")
    cli = [sys.executable, "-m", "controller.cli"]
    env = {**os.environ, "COLUMNS": "400"}
    status = subprocess.run(
        [*cli, "node", "status", "--node", "A", "--lab", lab.source],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert status.returncode == 0 and "node A: idle" in status.stdout
    result = subprocess.run(
        [
            *cli,
            "run",
            "rabi",
            "--node",
            "A",
            "--lab",
            lab.source,
            "--shots",
            "50",
            "--sweep",
            "duration_ns=0:200:5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "completed (5/5 points)" in result.stdout
    png = result.stdout.split("plot: ")[1].split()[0]
    assert png.endswith(".png") and Path(png).stat().st_size > 1000
    bad = subprocess.run(
        [*cli, "run", "rabi", "--node", "A", "--lab", lab.source, "--sweep", "duration_ns=0:200"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert bad.returncode == 2 and "NAME=START:STOP:N" in bad.stderr


def test_a_second_daemon_for_the_same_node_is_refused(start_daemon, lab, sim_process):
    daemon = start_daemon("A")
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "node",
            "serve",
            "--node",
            "A",
            "--lab",
            lab.source,
            "--resource-map",
            str(sim_process),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert second.returncode == 2
    assert f"already served by process {daemon.proc.pid}" in second.stderr
    assert daemon.client.status()["state"] == "idle"  # the first one is untouched
