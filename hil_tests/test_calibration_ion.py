"""`qnode calibrate --all` on node A of both ion labs, end to end through the daemons, against
the simulator's hidden truth."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq

from calibration.graph import ROUTINES, plan
from calibration.planning import OPTICAL_PULSE_NS
from calibration.routines.check_threshold import threshold_for
from controller.data.params import ParameterStore
from controller.harness.sim import start_sim
from controller.labconfig import load_lab
from controller.messaging.serving import running_daemon_pid
from controller.operator import daemons
from sim_backends.client import SimControl

pytestmark = pytest.mark.timeout(600)

LABS = Path(__file__).resolve().parent.parent / "labs"
QNODE = [sys.executable, "-m", "controller.cli"]


@pytest.fixture
def ion_lab(tmp_path, monkeypatch):
    """ion_lab(lab_file, seed) -> (lab, sim control, data dir): a simulated lab of its own and
    node A's daemon on it; the midpoint's daemon is left to `qnode calibrate` to start."""
    data = tmp_path / "data"
    monkeypatch.setenv("QNODE_DATA_DIR", str(data))
    procs = []

    def start(lab_file: Path, seed: int):
        lab = load_lab(lab_file)
        resource_map = tmp_path / "resources.json"
        procs.append(start_sim(lab, resource_map, seed=seed, log=tmp_path / "sim.log"))
        log = tmp_path / "node-A.log"
        procs.append(daemons.start_daemon(lab, "A", log=log, resource_map=resource_map))
        return lab, SimControl(resource_map), resource_map, data

    yield start
    for proc in reversed(procs):
        daemons.terminate(proc)


@pytest.mark.parametrize(
    "lab_file, seed", [("sim_two_node_ion.toml", 91), ("sim_two_node_ion_cavity.toml", 92)]
)
def test_calibrate_all_on_an_ion_lab_matches_truth(ion_lab, lab_file, seed):
    lab, sim, resource_map, data = ion_lab(LABS / lab_file, seed)
    truth, mid_truth = sim.truth("A"), sim.truth("M")
    env = {**os.environ, "COLUMNS": "250", "QNODE_DATA_DIR": str(data)}
    args = ["calibrate", "--all", "--lab", str(LABS / lab_file), "--node", "A"]
    args += ["--resource-map", str(resource_map)]
    result = subprocess.run([*QNODE, *args], capture_output=True, text=True, timeout=540, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert running_daemon_pid(lab.data_dir, "M") is None  # started for the run, then stopped

    # every routine of the node and the midpoint updated (a first calibration); the link
    # routines need the peer's daemon (test_link.py runs them) and are skipped
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] in ROUTINES:
            rows[cells[1]] = cells[2]
    # the phase routines are single-click's: the ions herald their photonic qubits
    expected = {
        n: "skipped" if ROUTINES[n].needs_link or "ion" not in ROUTINES[n].platforms else "updated"
        for n in plan()
    }
    assert rows == expected, result.stdout

    with ParameterStore(lab.data_dir / "params.sqlite") as store:
        values = store.values("A", "ion")
        mid_values = store.values("M")
    assert values["mw_frequency_hz"] == pytest.approx(truth["qubit_hz"], abs=20.0)
    pi_true = 1 / (2 * values["pi_duration_ns"] * 1e-9 * truth["rabi_hz_per_v"])
    assert values["pi_amplitude_v"] == pytest.approx(pi_true, rel=0.02)
    assert values["pi2_amplitude_v"] == pytest.approx(pi_true / 2, rel=0.02)
    # free evolution decays with the Gaussian T2* and the Markovian T2 together: the fit's
    # T2* is the 1/e time of both
    t2, t2s = truth["t2_s"], truth["t2star_s"]
    envelope_1e = brentq(lambda t: (t / t2s) ** 2 + t / t2 - 1, 0, t2s)
    assert values["t2star_s"] == pytest.approx(envelope_1e, rel=0.15)
    assert values["check_mean_counts"] == pytest.approx(truth["check_mean"], rel=0.08)
    assert abs(values["cr_threshold"] - threshold_for(truth["check_mean"])) <= 1
    assert values["f0"] > 0.98 and values["f1"] > 0.98

    onset = values["photon_onset_ns"]
    assert onset == pytest.approx(mid_truth["delay_ns"]["A"], abs=2.0)
    # the window opens when the optical pulse is over
    assert values["detection_window_start_ns"] == pytest.approx(onset + OPTICAL_PULSE_NS)
    lifetime = mid_truth["lifetime_ns"]["A"]
    assert values["detection_window_ns"] == pytest.approx(lifetime * np.log(10), rel=0.15)
    assert values["detection_probability"] == pytest.approx(mid_truth["eta"]["A"], rel=0.1)
    assert "piezo_deg_per_volt" not in mid_values
    for name, channel in lab.nodes["M"].channels.detectors.items():
        rate = mid_values[f"dark_count_hz_{name}"]
        assert rate == pytest.approx(mid_truth["dark_count_hz"][str(channel)], rel=0.25)
