"""A failing run ends in the safe state (issue 12, item 1): whatever fails in a run or in its
clean-up (the run file's own close included), the instruments end safe as the simulator sees
them, the node is in fault with the reason, the file is closed or parked for a later close,
and the next run works once the cause is gone."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import h5py
import pytest
from conftest import small_tmpfs

from controller.data import runfile
from controller.data.params import ParameterStore
from controller.data.runfile import parked_files, read_run
from controller.node.runtime import NodeRuntime
from sequences.library import rabi
from sequences.operations import Sweep, SweepAxis

pytestmark = pytest.mark.usefixtures("sim")

ONE_POINT = Sweep((SweepAxis("duration_ns", (0.0,)),))


def set_truth(store_path: Path, sim, node: str) -> None:
    truth = sim.truth(node)
    with ParameterStore(store_path) as store:
        store.set_manual(node, "mw_frequency_hz", truth["qubit_hz"], "test: resonance from truth")


def assert_node_safe(sim, node: str) -> None:
    """What the simulated lab shows: microwave off, AWG stopped with its outputs off, lasers
    off, every sequencer line low."""
    assert sim.state(f"{node}.mw")["output"] is False
    awg = sim.state(f"{node}.awg")
    assert awg["running"] is False and not any(awg["outputs"].values())
    assert sim.state(f"{node}.laser_green")["enabled"] is False
    assert sim.state(f"{node}.laser_red")["enabled"] is False
    assert sim.state(f"{node}.seq")["ttl"] == 0


@pytest.fixture
def small_disk(data_dir):
    """The run folder of the lab's data folder on a 2 MB tmpfs (root only), unmounted after."""
    with small_tmpfs(data_dir / "runs", "2m") as runs:
        yield runs


def test_full_disk_ends_the_run_in_fault_and_safe_then_runs_again(
    small_disk, start_daemon, data_dir, sim
):
    set_truth(data_dir / "params.sqlite", sim, "A")
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * max(shutil.disk_usage(small_disk).free - 900_000, 0))
    daemon = start_daemon("A")
    sweep = Sweep((SweepAxis.linspace("duration_ns", 0, 400, 101, "ns"),))
    run = daemon.client.start(rabi("nv", shots=300), sweep)
    finished = daemon.client.wait(run["run_id"], timeout_s=120)
    assert finished["status"] == "failed"
    assert "No space left on device" in finished["reason"]
    assert 1 <= finished["points_done"] < 101
    status = daemon.client.status()
    assert status["state"] == "fault"
    assert "No space left on device (disk full)" in status["fault_reason"]
    assert_node_safe(sim, "A")
    # the file is closed (plain h5py opens it) and says why it ended
    with h5py.File(finished["file"], "r") as f:
        assert f["status"][0].decode() == "failed"
        assert "No space left on device" in f["status"][1].decode()
        assert f["data/counts"].shape[0] == finished["points_done"]
    # once there is space again, the next run completes and the node is idle
    ballast.unlink()
    again = daemon.client.run(rabi("nv", shots=20), ONE_POINT)
    assert again.status == "completed"
    assert daemon.client.status()["state"] == "idle"
    assert daemon.stop() == 0


@pytest.fixture
def runtime(lab, resources, tmp_path, sim):
    store = ParameterStore(tmp_path / "params.sqlite")
    set_truth(tmp_path / "params.sqlite", sim, "A")
    runtime = NodeRuntime(lab, "A", resources, store)
    runtime.open()
    try:
        yield runtime
    finally:
        runtime.safe_state()
        runtime.close()
        store.close()


def test_run_file_close_that_raises_still_ends_safe_and_in_fault(
    runtime, tmp_path, sim, monkeypatch
):
    def full_disk(self, state, reason=""):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfile.RunFile, "close", full_disk)
    sweep = Sweep((SweepAxis.linspace("duration_ns", 0, 100, 2, "ns"),))
    prepared = runtime.prepare(rabi("nv", shots=20), sweep, tmp_path)
    progress = runtime.execute(prepared)  # returns: the clean-up's failure is not raised
    assert progress.finished is not None and progress.points_done == 2
    assert progress.status == "failed" and "not closed" in progress.reason
    assert runtime.state == "fault"
    assert "not closed" in runtime.fault_reason and "No space left" in runtime.fault_reason
    assert_node_safe(sim, "A")
    path = Path(progress.file)
    assert path in parked_files()  # given up by the run, kept for a later close
    # the cause goes away: the next run closes the parked file and runs
    monkeypatch.undo()
    again = runtime.execute(runtime.prepare(rabi("nv", shots=20), ONE_POINT, tmp_path))
    assert again.status == "completed" and runtime.state == "idle"
    assert path not in parked_files()
    with h5py.File(path, "r") as f:  # closed: plain h5py opens it
        state, reason = (s.decode() for s in f["status"][:])
        assert state == "failed" and "closed late" in reason and "No space left" in reason
        assert f["completed_points"][()] == 2  # every point is there
    assert read_run(Path(again.file))["status"] == "completed"


def test_an_exception_in_the_safe_state_still_ends_in_fault(runtime, tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("safe state exploded")

    monkeypatch.setattr(NodeRuntime, "safe_state", broken)
    progress = runtime.execute(runtime.prepare(rabi("nv", shots=20), ONE_POINT, tmp_path))
    monkeypatch.undo()
    assert runtime.state == "fault" and "safe state exploded" in runtime.fault_reason
    stored = read_run(Path(progress.file))
    assert stored["status"] == "failed" and "safe state exploded" in stored["reason"]
    assert stored["completed_points"] == 1  # the data are kept
    again = runtime.execute(runtime.prepare(rabi("nv", shots=20), ONE_POINT, tmp_path))
    assert again.status == "completed" and runtime.state == "idle"


def test_a_close_refused_for_space_parks_the_file_and_closes_it_later(tmp_path, monkeypatch):
    import numpy as np

    from controller.data.runfile import EVENT_DTYPE, RunFile, retry_parked

    path = tmp_path / "r.h5"
    rf = RunFile(
        path, run_id="r", node="A", sequence_data={"name": "t"}, axes=[], shots=2,
        readouts=["r"], lab_text="", parameters={}, software_version="0",
    )  # fmt: skip
    rf.add_point(0, np.zeros((2, 1), "i4"), np.ones(2, bool), np.zeros(2, "i4"),
                 np.zeros(0, EVENT_DTYPE))  # fmt: skip
    real = shutil.disk_usage
    full = real(tmp_path)._replace(free=1000)
    monkeypatch.setattr(runfile.shutil, "disk_usage", lambda p: full)
    with pytest.raises(OSError, match="No space left on device"):
        rf.add_point(1, np.zeros((2, 1), "i4"), np.ones(2, bool), np.zeros(2, "i4"),
                     np.zeros(0, EVENT_DTYPE))  # fmt: skip
    with pytest.raises(OSError, match="No space left on device"):
        rf.close("failed", "disk full")
    assert not rf.is_open and path in parked_files()
    assert retry_parked() and path in parked_files()  # still full: still parked, no crash
    monkeypatch.setattr(runfile.shutil, "disk_usage", real)
    assert retry_parked() == [] and path not in parked_files()
    with h5py.File(path, "r") as f:
        assert [s.decode() for s in f["status"][:]] == ["failed", "disk full"]
        assert f["completed_points"][()] == 1
