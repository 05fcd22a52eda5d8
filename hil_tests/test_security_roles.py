"""Issue 12, item 5: station keys are not client keys. Station names are reserved; no key or
allow-list entry is overwritten without --force; the daemons take peer and station messages
only from station keys and operator requests only from client keys."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from controller.harness.truth_calibration import calibrate_nodes_from_truth
from controller.messaging.curve import client_socket, ensure_keypair
from controller.messaging.keys import key_dir, node_keys
from controller.messaging.serving import read_info
from controller.messaging.wire import pack, unpack

QNODE = [sys.executable, "-m", "controller.cli"]


def qnode(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250", "QNODE_DATA_DIR": str(data_dir)}
    return subprocess.run([*QNODE, *args], capture_output=True, text=True, timeout=60, env=env)


def test_keys_generate_refuses_station_names_and_overwrites_only_with_force(tmp_path):
    made = qnode(tmp_path, "keys", "generate", "alice")
    assert made.returncode == 0, made.stdout + made.stderr
    allowed = tmp_path / "keys" / "allowed" / "alice.key"
    first = allowed.read_text()
    for station in ("node-B", "node-M", "B", "M"):
        refused = qnode(tmp_path, "keys", "generate", station)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "reserved" in refused.stderr and "station" in refused.stderr
    assert not (tmp_path / "keys" / "allowed" / "node-B.key").exists()
    again = qnode(tmp_path, "keys", "generate", "alice")
    assert again.returncode == 2 and "--force" in again.stderr
    assert allowed.read_text() == first
    forced = qnode(tmp_path, "keys", "generate", "alice", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "warning" in (forced.stdout + forced.stderr).lower()
    assert "replaced" in (forced.stdout + forced.stderr)
    assert allowed.read_text() != first
    listed = qnode(tmp_path, "keys", "list")
    assert "alice" in listed.stdout and "client" in listed.stdout


def send(data_dir: Path, target: str, secret: Path, kind: str, **fields) -> dict | None:
    info = read_info(data_dir, target)
    sock = client_socket(
        zmq.Context.instance(), zmq.DEALER, secret, Path(info["server_public_key"])
    )
    try:
        sock.connect(info["endpoint"])
        sock.send(pack(kind, 1, **fields))
        return unpack(sock.recv()) if sock.poll(5000) else None
    finally:
        sock.close(linger=0)


@pytest.fixture
def legacy_forged_entry(data_dir, tmp_path):
    """A data folder as the old `qnode keys generate node-B` left it: a client key in B's
    allow-list entry (keys/allowed/node-B.key), and no station folder yet; the stations had
    run on this machine, so their own keys are there (without them the entry could be B's
    key copied from another machine, and the migration takes it for that: run alone, this
    test used to depend on an earlier test having started B)."""
    for station in ("A", "B", "M"):
        node_keys(data_dir, station)
    _, forged = ensure_keypair(tmp_path / "forged", "node-B")
    allowed = key_dir(data_dir) / "allowed"
    allowed.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(allowed / "stations", ignore_errors=True)
    shutil.copy(forged.with_suffix(".key"), allowed / "node-B.key")
    yield forged
    (allowed / "node-B.key").unlink(missing_ok=True)
    (allowed / "node-B.key.migrated-client").unlink(missing_ok=True)


@pytest.mark.usefixtures("sim")
@pytest.mark.timeout(300)
def test_a_client_key_cannot_speak_for_a_station_and_the_real_one_still_works(
    start_daemon, data_dir, sim, legacy_forged_entry
):
    """The reproduction: with a client key named node-B on the allow-list, A answered
    session_pairs, accepted a forged link_request and link_end, and refused the real B."""
    calibrate_nodes_from_truth(data_dir, sim)
    m, a, b = start_daemon("M"), start_daemon("A"), start_daemon("B")
    forged = legacy_forged_entry
    request = dict(
        session="forged",
        nodes=["B", "A"],
        pairs=1,
        protocol="single_click",
        fidelity_min=0.0,
        deadline_s=5.0,
    )
    for kind, fields in (
        ("link_request", request),
        ("link_end", dict(session="forged", state="failed", reason="forged")),
        ("session_pairs", dict(session="forged")),
    ):
        reply = send(data_dir, "A", forged, kind, **fields)
        assert reply is not None and not reply["ok"], (kind, reply)
        assert "station key" in reply["error"], reply
    reply = send(data_dir, "M", forged, "hello", node="B")
    assert reply is not None and not reply["ok"]
    status = a.client.status()
    assert status["refused_peer_messages"] == 3 and status["session"] is None
    assert m.client.status()["forged"] >= 1
    # the real B: its station key is allowed as a station and it still works
    started = a.client.entangle(10, "single_click", delivery="Z", deadline_s=60)
    summary = a.client.wait_session(started["session"], timeout_s=120)
    assert summary["state"] == "completed", summary
    assert b.client.session(started["session"])["state"] == "completed"
    # a station may ask for status, never for what an operator asks
    station_secret = key_dir(data_dir) / "node-B.key_secret"
    assert (send(data_dir, "A", station_secret, "status") or {}).get("ok")
    refused = send(data_dir, "A", station_secret, "abort")
    assert refused is not None and not refused["ok"] and "client key" in refused["error"]
    refused = send(data_dir, "M", station_secret, "tags_stop")
    assert refused is not None and not refused["ok"] and "client key" in refused["error"]


def test_an_allow_list_of_the_old_layout_is_migrated_on_start(tmp_path):
    """Old layout: every allowed key in keys/allowed/. Station keys move to allowed/stations/
    (this machine's own, or one copied from another machine); a client key under a station's
    name stays a client; clients stay where they are."""
    from controller.messaging.keys import (
        CLIENT,
        STATION,
        allow_station,
        allowed_keys,
        generate_client,
        node_keys,
        public_key,
    )

    keys = key_dir(tmp_path)
    allowed = keys / "allowed"
    own, _ = node_keys(tmp_path, "A")
    remote, _ = ensure_keypair(tmp_path / "elsewhere", "node-B")  # B runs on another machine
    node_keys(tmp_path, "C")
    overwritten, _ = ensure_keypair(tmp_path / "forged", "node-C")  # old `keys generate node-C`
    alice = generate_client(tmp_path, "alice")
    allowed.mkdir(parents=True, exist_ok=True)
    for source in (own, remote, overwritten):
        shutil.copy(source, allowed / source.name)
    allow_station(tmp_path, "A")
    assert sorted(p.name for p in (allowed / "stations").glob("*.key")) == [
        "node-A.key",
        "node-B.key",
    ]
    assert sorted(p.name for p in allowed.glob("*.key")) == ["alice.key", "node-C.key"]
    roles = allowed_keys(tmp_path)
    assert roles[public_key(own)].role == STATION
    assert roles[public_key(remote)].role == STATION
    assert roles[public_key(overwritten)].role == CLIENT
    assert roles[public_key(alice)].role == CLIENT
