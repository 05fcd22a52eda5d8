"""Crash-left files. A writer killed mid-file (kill -9) left its run, session or heralds file
with HDF5's writer flag set, so `h5py.File(path, "r")` refused it ("file is already open for
write"). A restarted daemon now closes its own such files as crashed (a node's session files
through their reconciliation), and `qnode data repair` does the same offline for any file
whose writer is gone; either way plain h5py opens the file and its status says why."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from controller.data.params import ParameterStore
from controller.data.repair import NOT_RECONCILED, cleared_copy, lookup3, writer_flag
from controller.data.runfile import read_run
from controller.data.sessionfile import read_session
from controller.link.reconcile import reconcile_crashed
from controller.operator.daemons import QNODE
from qnode.errors import QnodeError
from sequences.library import rabi
from sequences.operations import Sweep, SweepAxis

pytestmark = pytest.mark.timeout(300)


def plain_status(path) -> tuple[str, str]:
    """What plain h5py sees (the promise of docs/data.md)."""
    with h5py.File(path, "r") as f:
        return tuple(s.decode() for s in f["status"][:])


def refused_by_plain_h5py(path) -> bool:
    try:
        with h5py.File(path, "r"):
            return False
    except OSError as e:
        assert "already open for write" in str(e)
        return True


def data_repair(lab) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*QNODE, "data", "repair", "--lab", lab.source], capture_output=True, text=True, timeout=60
    )


def kill(handle) -> None:
    handle.client.close()
    handle.proc.kill()
    handle.proc.wait(10)


def run_killed_mid_way(start_daemon, node: str) -> tuple[object, Path]:
    daemon = start_daemon(node)
    sweep = Sweep((SweepAxis.linspace("duration_ns", 0, 400, 200, "ns"),))
    run = daemon.client.start(rabi("nv", shots=1000), sweep)
    while daemon.client.status()["run"]["points_done"] < 2:
        time.sleep(0.02)
    kill(daemon)
    return daemon, Path(run["file"])


def test_lookup3_matches_hdf5s_superblock_checksum(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f["a"] = 1
    raw = path.read_bytes()
    n = 12 + 4 * raw[9]
    assert lookup3(raw[:n]).to_bytes(4, "little") == raw[n : n + 4]
    cleared_copy(path, tmp_path / "y.h5")
    assert (tmp_path / "y.h5").read_bytes() == raw  # nothing to clear: the same bytes


@pytest.mark.usefixtures("sim")
def test_run_file_of_a_killed_node_is_closed_as_crashed_offline_and_at_restart(
    start_daemon, data_dir, sim, lab
):
    with ParameterStore(data_dir / "params.sqlite") as store:
        store.set_manual("A", "mw_frequency_hz", sim.truth("A")["qubit_hz"], "test: truth")
    # the break: after kill -9 plain h5py refuses the run file
    _, first = run_killed_mid_way(start_daemon, "A")
    assert writer_flag(first) and refused_by_plain_h5py(first)
    assert read_run(first)["status"] == "running"  # SWMR readers always could read it
    points = read_run(first)["completed_points"]
    # offline: qnode data repair
    done = data_repair(lab)
    assert done.returncode == 0, done.stdout + done.stderr
    assert first.name in done.stdout and "closed as crashed" in done.stdout
    state, reason = plain_status(first)
    assert state == "crashed" and "A stopped without closing it" in reason
    assert "qnode data repair" in reason and f"{points} points kept" in reason
    repaired = read_run(first)
    assert repaired["completed_points"] == points and repaired["counts"].shape[0] == points
    assert not writer_flag(first)
    assert "nothing to repair" in data_repair(lab).stdout  # once is enough

    # at restart: the daemon closes its own crash-left run file
    _, second = run_killed_mid_way(start_daemon, "A")
    assert refused_by_plain_h5py(second)
    daemon = start_daemon("A")
    state, reason = plain_status(second)
    assert state == "crashed" and "closed by node A as it restarted" in reason
    assert "crash-left" in daemon.log()
    # and a live daemon's file is left alone
    sweep = Sweep((SweepAxis.linspace("duration_ns", 0, 400, 200, "ns"),))
    live = daemon.client.start(rabi("nv", shots=1000), sweep)
    while daemon.client.status()["run"]["points_done"] < 1:
        time.sleep(0.02)
    busy = data_repair(lab)
    assert "left alone: A's daemon is running" in busy.stdout, busy.stdout
    assert read_run(live["file"])["status"] == "running"
    daemon.client.abort()
    assert daemon.client.wait(live["run_id"], timeout_s=30)["status"] == "aborted"
    assert plain_status(live["file"])[0] == "aborted"


def write_session_and_die(path: Path) -> None:
    """A node's session file with two delivered pairs, its writer killed."""
    code = f"""
import os, numpy as np
from pathlib import Path
from controller.data.sessionfile import PAIR_ROW, DELIVERED, SessionFile
f = SessionFile(Path({str(path)!r}), session="s1", node="B", role="responder",
    protocol="single_click", request={{"nodes": ["A", "B"]}}, lab_text="",
    parameters={{}}, software_version="test")
rows = np.zeros(2, dtype=PAIR_ROW)
rows["id"], rows["status"] = [b"p1", b"p2"], DELIVERED
f.add_pairs(rows)
f.flush()
os.kill(os.getpid(), 9)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    assert proc.returncode == -signal.SIGKILL


def test_session_file_a_peer_never_answers_for_is_closed_and_reconciled_later(tmp_path):
    path = tmp_path / "runs" / "2026-11-30" / "s1_B_entangle.h5"
    write_session_and_die(path)
    assert refused_by_plain_h5py(path)

    async def silent(peer, session):
        raise QnodeError("A does not answer")

    async def answers(peer, session):
        return {"delivered": ["p2"], "status": "completed"}

    asyncio.run(reconcile_crashed(tmp_path, "B", silent, wait_s=0))
    state, reason = plain_status(path)
    assert state == "crashed" and reason.startswith(NOT_RECONCILED) and "A did not answer" in reason
    asyncio.run(reconcile_crashed(tmp_path, "B", answers, wait_s=0))  # the next start
    state, reason = plain_status(path)
    assert state == "crashed" and "reconciled with A: 1 pairs kept, 1 discarded" in reason
    pairs = read_session(path)["pairs"]
    assert [p["status"] for p in pairs] == [2, 1]  # p1 discarded, p2 kept
    # `qnode data repair` on a session file: closed as not reconciled, still reconcilable
    other = tmp_path / "runs" / "2026-11-30" / "s2_B_entangle.h5"
    write_session_and_die(other)
    env = {**os.environ, "QNODE_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [*QNODE, "data", "repair"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    state, reason = plain_status(other)
    assert state == "crashed" and reason.startswith(NOT_RECONCILED)
    assert "reconciles it with the peer when it starts" in reason


def test_session_file_killed_as_it_was_created_is_closed_by_reconciliation(tmp_path):
    path = tmp_path / "runs" / "2026-11-30" / "s3_B_entangle.h5"
    path.parent.mkdir(parents=True)
    code = f"""
import os, h5py
f = h5py.File({str(path)!r}, "w", libver="latest")
f.attrs["session"] = "s3"
f.flush()
os.kill(os.getpid(), 9)
"""
    subprocess.run([sys.executable, "-c", code])
    assert refused_by_plain_h5py(path)

    async def never_asked(peer, session):
        raise AssertionError("no pairs to reconcile")

    asyncio.run(reconcile_crashed(tmp_path, "B", never_asked, wait_s=0))
    state, reason = plain_status(path)
    assert state == "crashed" and "B crashed as the file was being created" in reason


def session_under_way(stations) -> str:
    a = stations["A"].client
    started = a.entangle(20_000, "single_click", delivery="Z", deadline_s=120)
    deadline = time.monotonic() + 60
    while a.session(started["session"])["stats"]["delivered"] < 20:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return started["session"]


@pytest.mark.usefixtures("sim")
def test_killed_node_and_midpoint_leave_files_plain_h5py_opens(
    stations, data_dir, lab, start_daemon, tmp_path
):
    session = session_under_way(stations)
    kill(stations["B"])
    summary = stations["A"].client.wait_session(session, timeout_s=60)
    assert summary["state"] == "failed"
    runs = data_dir / "runs"
    b_file = next(runs.glob(f"*/{session}_B_entangle.h5"))
    assert refused_by_plain_h5py(b_file)
    start_daemon("B")  # reconciles with A, and closes the file as crashed
    deadline = time.monotonic() + 60
    while writer_flag(b_file):
        assert time.monotonic() < deadline, "B did not reconcile its session file"
        time.sleep(0.2)
    state, reason = plain_status(b_file)
    assert state == "crashed" and "reconciled with A" in reason
    for station in ("A", "M"):  # the survivors closed theirs
        assert plain_status(next(runs.glob(f"*/{session}_{station}_*.h5")))[0] != "running"

    # the midpoint killed mid-session: its heralds file, closed by the midpoint's next start
    session = session_under_way(stations)
    kill(stations["M"])
    stations["A"].client.wait_session(session, timeout_s=60)
    m_file = next(runs.glob(f"*/{session}_M_heralds.h5"))
    assert refused_by_plain_h5py(m_file)
    heralds = len(read_session(m_file)["heralds"])
    assert heralds > 0
    start_daemon("M")
    state, reason = plain_status(m_file)
    assert state == "crashed" and "M stopped without closing it" in reason
    assert "closed by midpoint M as it restarted" in reason
    assert len(read_session(m_file)["heralds"]) == heralds
