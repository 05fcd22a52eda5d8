"""The operator's control of a session: Ctrl-C on `qnode entangle` aborts it on both nodes and
the midpoint (not just the live view); `qnode session list | attach | abort`."""

import os
import signal
import subprocess
import sys
import time

import pytest

from controller.data.sessionfile import DELIVERED, read_session

pytestmark = [pytest.mark.usefixtures("sim"), pytest.mark.timeout(300)]
QNODE = [sys.executable, "-m", "controller.cli"]


def env() -> dict:
    """Now, not at import: the data folder's variable is set by a fixture."""
    return {**os.environ, "COLUMNS": "250"}


MANY = 100_000  # a session that would run for many minutes


PEER_END_S = 5.0


def wait_for_pairs(client, at_least: int = 2, timeout_s: float = 60.0, proc=None) -> str:
    """The id of the node's running session once it has delivered some pairs (`proc`: the
    command that asked for it, which must still run)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the command ended first:\n{proc.stdout.read()}")
        session = client.status()["session"]
        if session is not None and session["stats"]["delivered"] >= at_least:
            return session["session"]
        time.sleep(0.1)
    pytest.fail(f"no session delivered pairs in time: {client.status()}")


def assert_ended_everywhere(stations, data_dir, session: str, state: str) -> None:
    """Both nodes idle, the midpoint's session closed, both files closed as `state` and
    agreeing on the pairs delivered before the end. The peer learns of the end from the
    initiator (link_end): it may take it a moment longer."""
    for node in ("A", "B"):
        deadline = time.monotonic() + PEER_END_S
        status = stations[node].client.status()
        while status["session"] is not None and time.monotonic() < deadline:
            time.sleep(0.05)
            status = stations[node].client.status()
        assert status["session"] is None and status["state"] == "idle", status
    assert stations["M"].client.status()["session"] is None
    delivered = {}
    for node in ("A", "B"):
        (path,) = (data_dir / "runs").glob(f"*/{session}_{node}_entangle.h5")
        data = read_session(path)
        assert data["status"] == state, (node, data["status"], data["reason"])
        delivered[node] = {r["id"] for r in data["pairs"] if r["status"] == DELIVERED}
    assert delivered["A"] == delivered["B"] and 0 < len(delivered["A"]) < MANY


def test_ctrl_c_on_entangle_aborts_the_session_on_both_nodes_and_the_midpoint(
    stations, data_dir, lab
):
    proc = subprocess.Popen(
        [*QNODE, "entangle", "--pairs", str(MANY), "--basis", "Z", "--lab", lab.source],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
        start_new_session=True,  # Ctrl-C goes to this command alone, as in a terminal
    )
    try:
        session = wait_for_pairs(stations["A"].client, proc=proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert f"aborting session {session}" in out
    assert_ended_everywhere(stations, data_dir, session, "aborted")
    assert "aborted by the operator" in stations["A"].client.session(session)["reason"]


def test_session_list_attach_and_abort_from_another_terminal(stations, data_dir, lab):
    a = stations["A"].client
    session = a.entangle(MANY, "single_click", delivery="Z", deadline_s=600)["session"]
    wait_for_pairs(a)
    midpoint = stations["M"].client.status()  # not `idle` while heralds flow
    assert midpoint["state"] == "busy" and midpoint["session"]["session"] == session

    listed = subprocess.run(
        [*QNODE, "session", "list", "--lab", lab.source],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
    )
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if session in line)
    assert "single_click" in line and "running" in line and " A " in f" {line} "

    attach = subprocess.Popen(
        [*QNODE, "session", "attach", session, "--lab", lab.source],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
        start_new_session=True,
    )
    time.sleep(3)
    attach.send_signal(signal.SIGINT)  # detaches: the session runs on
    out, _ = attach.communicate(timeout=30)
    assert attach.returncode == 130 and "detached" in out, out
    assert a.session(session)["state"] == "running"

    aborted = subprocess.run(
        [*QNODE, "session", "abort", session, "--lab", lab.source],
        capture_output=True,
        text=True,
        timeout=90,
        env=env(),
    )
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert f"session {session}: aborted" in aborted.stdout
    assert_ended_everywhere(stations, data_dir, session, "aborted")

    again = subprocess.run(
        [*QNODE, "session", "abort", "20000101-000000-nosuch", "--lab", lab.source],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
    )
    assert again.returncode == 1 and "no session '20000101-000000-nosuch'" in again.stderr
