"""The `qnode` command line against the simulated lab: instruments check, sim up lifecycle."""

import json
import os
import signal
import subprocess
import sys
import time

from controller.labconfig import DEFAULT_LAB
from controller.messaging.serving import running_daemon_pid

QNODE = [sys.executable, "-m", "controller.cli"]
ENV = {**os.environ, "COLUMNS": "250"}


def run(*args, timeout=60):
    return subprocess.run([*QNODE, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_instruments_check_lists_every_instrument_healthy(lab, sim_process):
    where = ["--resource-map", str(sim_process)] if sim_process else []
    result = run("instruments", "check", "--lab", lab.source, *where)
    assert result.returncode == 0, result.stdout + result.stderr
    for node, name, _ in lab.all_instruments():
        assert f"{node}.{name}" in result.stdout
    assert f"all {sum(1 for _ in lab.all_instruments())} instruments healthy" in result.stdout


def test_instruments_check_fails_on_a_frozen_instrument(lab, sim_process, sim):
    sim.fault("A.mw", "freeze")
    result = run("instruments", "check", "--lab", lab.source, "--resource-map", str(sim_process))
    assert result.returncode == 1
    assert "A.mw" in result.stderr and "1 unhealthy" in result.stderr
    assert "no reply" in result.stdout


def test_instruments_check_without_a_running_sim(tmp_path):
    result = run("instruments", "check", "--resource-map", str(tmp_path / "none.json"))
    assert result.returncode == 2
    assert "qnode sim up" in result.stderr


def test_bad_lab_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_LAB.read_text().replace("timeout_s = 1.0", 'timeout_s = "1 s"', 1))
    result = run("lab", "check", str(bad))
    assert result.returncode == 2
    assert "nodes.A.instruments.mw.timeout_s" in result.stderr
    assert "Traceback" not in result.stderr


def test_sim_up_serves_and_stops_cleanly_on_sigterm(tmp_path):
    resource_map = tmp_path / "map.json"
    proc = subprocess.Popen(
        [*QNODE, "sim", "up", "--seed", "5", "--resource-map", str(resource_map)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 30
        while not resource_map.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(resource_map.read_text())
        assert (
            len(info["resources"]) == 16
        )  # 6 per node; M: tagger, herald logic, piezo, reference laser
        assert info["seed"] == 5
        tcp = [r for r in info["resources"].values() if r.startswith("TCPIP::127.0.0.1::")]
        zmq = [r for r in info["resources"].values() if r.startswith("tcp://127.0.0.1:")]
        ptys = [r for r in info["resources"].values() if r.startswith("/dev/")]
        assert len(tcp) == 5 and len(zmq) == 3 and len(ptys) == 8  # zmq: the time taggers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not resource_map.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_params_set_show_history(tmp_path):
    env = {**ENV, "QNODE_DATA_DIR": str(tmp_path)}

    def q(*args):
        return subprocess.run([*QNODE, *args], capture_output=True, text=True, timeout=60, env=env)

    assert q("params", "set", "pi_amplitude_v", "0.42", "--reason", "first guess").returncode == 0
    assert q("params", "set", "pi_amplitude_v", "0.44", "--reason", "after drift").returncode == 0
    missing = q("params", "set", "pi_amplitude_v", "0.5")
    assert missing.returncode == 2 and "--reason" in missing.stderr
    show = q("params", "show", "--node", "A")
    assert show.returncode == 0 and "pi_amplitude_v" in show.stdout and "0.44" in show.stdout
    history = q("params", "history", "pi_amplitude_v")
    assert "0.42" in history.stdout and "0.44" in history.stdout and "after drift" in history.stdout
    assert q("params", "history", "nothing_here").returncode == 1


def test_keys_generate_and_list(tmp_path):
    env = {**ENV, "QNODE_DATA_DIR": str(tmp_path)}
    made = subprocess.run(
        [*QNODE, "keys", "generate", "alice"], capture_output=True, text=True, timeout=60, env=env
    )
    assert made.returncode == 0 and (tmp_path / "keys" / "allowed" / "alice.key").exists()
    listed = subprocess.run(
        [*QNODE, "keys", "list"], capture_output=True, text=True, timeout=60, env=env
    )
    assert "alice" in listed.stdout
    bad = subprocess.run(
        [*QNODE, "keys", "generate", "../evil"], capture_output=True, text=True, timeout=60, env=env
    )
    assert bad.returncode == 2


def test_calibrate_starts_the_midpoint_daemon_it_needs_and_stops_it(
    lab, start_daemon, data_dir, sim_process, sim
):
    """The midpoint's instruments are reached only through its daemon: `qnode calibrate` of a
    midpoint routine starts it when it is not running (as `qnode entangle` does), then stops it."""
    start_daemon("A")
    assert running_daemon_pid(lab.data_dir, "M") is None
    env = {**ENV, "QNODE_DATA_DIR": str(data_dir)}
    args = ["calibrate", "dark_counts", "--lab", lab.source, "--resource-map", str(sim_process)]
    result = subprocess.run([*QNODE, *args], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not available" not in result.stderr
    row = next(line for line in result.stdout.splitlines() if "dark_counts" in line)
    assert "updated" in row or "in spec" in row, result.stdout
    assert running_daemon_pid(lab.data_dir, "M") is None
    assert "midpoint" in (data_dir / "logs" / "M.log").read_text()


def test_bad_numbers_on_the_command_line_get_one_clear_error_before_anything_starts():
    """No daemon runs here: each is refused at the door, with exit code 2 and no traceback."""
    for args, message in (
        (["run", "rabi", "--sweep", "duration_ns=0:inf:3"], "start and stop must be finite"),
        (["entangle", "--pairs", "10", "--deadline", "nan"], "--deadline nan: must be a number"),
        (["entangle", "--pairs", "10", "--fidelity-min", "nan"], "'--fidelity-min'"),
        (  # the NV lab's midpoint has no polarisation-resolving detectors
            ["entangle", "--pairs", "10", "--protocol", "two-photon"],
            "herald single-click or barrett-kok",
        ),
    ):
        result = run(*args, "--lab", DEFAULT_LAB)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


# qnode network (the daemon-free part: help and argument errors) ---------------------------------
THREE_NODE_LAB = str(DEFAULT_LAB.parent / "sim_three_node.toml")


def test_network_help_lists_its_commands():
    result = run("network", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("entangle", "ghz", "teleport"):
        assert command in result.stdout
    for command, option in (("entangle", "--ends"), ("ghz", "--shots"), ("teleport", "--from")):
        sub = run("network", command, "--help")
        assert sub.returncode == 0 and option in sub.stdout, sub.stdout + sub.stderr


def test_network_argument_errors_are_one_clear_line():
    cases = [
        (("entangle", "--ends", "A", "A", "--pairs", "2"), "same node"),
        (("entangle", "--ends", "A", "B", "--pairs", "2"), "no node of"),
        (("entangle", "--ends", "A", "D", "--pairs", "2"), "'D' is not a memory node"),
        (("entangle", "--ends", "A", "C", "--pairs", "2", "--protocol", "x"), "--protocol"),
        (("entangle", "--ends", "A", "C", "--pairs", "2", "--fidelity-min", "1.2"), "[0, 1)"),
        (("entangle", "--ends", "A", "C", "--pairs", "2", "--deadline", "nan"), "--deadline"),
        (("ghz", "--shots", "5", "--repeater", "A"), "needs exactly two"),
        (("teleport", "--from", "A", "--to", "C", "--states", "all"), "cardinal"),
    ]
    for args, message in cases:
        result = run("network", *args, "--lab", THREE_NODE_LAB)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    result = run("network", "entangle", "--ends", "A", "C", "--pairs", "0", "--lab", THREE_NODE_LAB)
    assert result.returncode == 2 and "Traceback" not in result.stderr
