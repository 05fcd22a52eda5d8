"""`qnode sim state INSTRUMENT` (issue 12, item 13): what a simulated instrument shows, for
the operator (a table) and for scripts (--json), through the CLI as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sim_backends.client import SimControlError

QNODE = [sys.executable, "-m", "controller.cli"]
ENV = {**os.environ, "COLUMNS": "250"}


def run(*args, timeout=60):
    return subprocess.run([*QNODE, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_sim_state_as_json_is_what_the_control_channel_says(lab, sim_process, sim):
    for instrument in ("A.seq", "A.mw", "A.awg", "A.laser_red"):
        result = run(
            "sim", "state", instrument, "--json", "--lab", lab.source,
            "--resource-map", str(sim_process),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        expected = sim.state(instrument)
        for key in ("status", "ttl", "output", "enabled", "running"):
            if key in expected:
                assert shown[key] == expected[key], key
    seq = json.loads(
        run("sim", "state", "A.seq", "--json", "--resource-map", str(sim_process)).stdout
    )
    assert {"status", "ttl", "safe_ttl", "halt_reason", "watchdog_s"} <= set(seq)


def test_sim_state_table_shows_outputs_lines_and_levels(lab, sim_process, sim):
    result = run("sim", "state", "A.seq", "--lab", lab.source, "--resource-map", str(sim_process))
    assert result.returncode == 0, result.stderr
    assert "A.seq (simulated)" in result.stdout
    assert "status" in result.stdout and "lines high" in result.stdout
    mw = run("sim", "state", "A.mw", "--resource-map", str(sim_process))
    assert mw.returncode == 0 and "output" in mw.stdout
    awg = run("sim", "state", "A.awg", "--resource-map", str(sim_process))
    assert awg.returncode == 0 and "outputs." in awg.stdout  # per channel


def test_sim_state_of_an_unknown_instrument_is_one_clear_error(sim_process):
    result = run("sim", "state", "A.toaster", "--resource-map", str(sim_process))
    assert result.returncode == 2
    assert "no simulated instrument 'A.toaster'" in result.stderr and "A.seq" in result.stderr
    assert "Traceback" not in result.stderr


def test_sim_state_without_a_running_simulated_lab(tmp_path):
    result = run("sim", "state", "A.seq", "--resource-map", str(tmp_path / "none.json"))
    assert result.returncode == 2
    assert "no simulated lab running" in result.stderr and "qnode sim up" in result.stderr
    assert "Traceback" not in result.stderr
    stale = tmp_path / "stale.json"  # a map left by a lab that is gone: nobody answers
    stale.write_text(
        json.dumps(
            {
                "resources": {"A.seq": "/dev/null"},
                "control": {
                    "endpoint": "tcp://127.0.0.1:9",
                    "server_public_key": str(tmp_path / "none.key"),
                    "client_secret_key": str(tmp_path / "none.key_secret"),
                },
            }
        )
    )
    result = run("sim", "state", "A.seq", "--resource-map", str(stale))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr


def test_the_control_channel_gives_the_joint_state_of_named_qubits(sim):
    """Ground truth for tests (`qubits`): the named qubits' density matrix, a state (unit
    trace, Hermitian, positive), its partial trace the one qubit's; a wrong request refused
    with what is wrong."""
    joint = sim.qubits("A", "B")
    assert joint.shape == (4, 4)
    assert np.isclose(np.trace(joint).real, 1.0) and np.allclose(joint, joint.conj().T)
    assert np.linalg.eigvalsh(joint).min() > -1e-9
    alone = np.einsum("ajbj->ab", joint.reshape(2, 2, 2, 2))
    assert np.allclose(alone, sim.qubits("A"))
    with pytest.raises(SimControlError, match=r"no qubit Q in the register \(it holds A, B"):
        sim.qubits("A", "Q")
    with pytest.raises(SimControlError, match="must list 1 to 3 qubit names"):
        sim.qubits()
    with pytest.raises(SimControlError, match="named twice"):
        sim.qubits("A", "A")
