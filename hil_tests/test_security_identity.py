"""Issue 12, item 4: on every ROUTER the sender is the authenticated CurveZMQ key, never the
routing id a client chose. An allowed key that takes a station's routing id first must not
lock that station out; a routing id that one key used is refused to another."""

import time
from pathlib import Path

import pytest
import zmq

from controller.harness.truth_calibration import calibrate_nodes_from_truth
from controller.messaging.curve import client_socket
from controller.messaging.keys import client_keys, generate_client
from controller.messaging.serving import read_info
from controller.messaging.wire import pack, unpack

pytestmark = [pytest.mark.usefixtures("sim"), pytest.mark.timeout(300)]


def dealer(data_dir: Path, target: str, secret: Path, routing_id: bytes) -> zmq.Socket:
    info = read_info(data_dir, target)
    sock = client_socket(
        zmq.Context.instance(), zmq.DEALER, secret, Path(info["server_public_key"])
    )
    sock.setsockopt(zmq.IDENTITY, routing_id)
    sock.connect(info["endpoint"])
    return sock


def answer(sock: zmq.Socket, timeout_ms: int = 5000) -> dict | None:
    return unpack(sock.recv()) if sock.poll(timeout_ms) else None


def test_a_hijacked_routing_id_does_not_lock_a_station_out(start_daemon, data_dir, sim):
    """The reproduction: the operator's (allowed) key connects DEALERs with routing id b"A"
    to the midpoint and to B before A starts, and speaks for A. A then runs a session that
    completes; the hijacker's claims are refused, counted and logged."""
    calibrate_nodes_from_truth(data_dir, sim)
    m, b = start_daemon("M"), start_daemon("B")
    _, operator = client_keys(data_dir)
    hijacker = {t: dealer(data_dir, t, operator, b"A") for t in ("M", "B")}
    try:
        hijacker["M"].send(pack("hello", 1, node="A"))
        hijacker["B"].send(pack("link_end", 2, session="x", state="failed", reason="hijack"))
        for sock in hijacker.values():
            reply = answer(sock)
            assert reply is not None and not reply["ok"], reply
        a = start_daemon("A")
        started = a.client.entangle(20, "single_click", delivery="Z", deadline_s=60)
        summary = a.client.wait_session(started["session"], timeout_s=120)
        assert summary["state"] == "completed", summary
        assert summary["stats"]["delivered"] >= 20
        hijacker["M"].send(pack("heartbeat", 3, node="A", session=started["session"]))
        assert answer(hijacker["M"], 1000) is None  # a notification: refused without a word
    finally:
        for sock in hijacker.values():
            sock.close(linger=0)
    status = m.client.status()
    assert status["forged"] >= 2, status
    assert "claims to be node A" in m.log()
    assert b.client.status()["refused_peer_messages"] >= 1
    assert "refused" in b.log()


def test_a_routing_id_one_key_used_is_refused_to_another(start_daemon, data_dir):
    """A client may choose its routing id; once one key has used it, another key's messages
    from it are refused (no answer), counted and logged, while the first may use it again."""
    b = start_daemon("B")
    _, operator = client_keys(data_dir)
    generate_client(data_dir, "mallory", force=True)
    _, mallory = client_keys(data_dir, "mallory")
    first = dealer(data_dir, "B", operator, b"X")
    first.send(pack("status", 1))
    assert (answer(first) or {}).get("ok")
    first.close(linger=0)
    time.sleep(0.5)  # B's ROUTER has let the first connection go
    second = dealer(data_dir, "B", mallory, b"X")
    try:
        second.send(pack("status", 2))
        assert answer(second, 1500) is None
    finally:
        second.close(linger=0)
    time.sleep(0.5)
    status = b.client.status()
    assert status["identity_conflicts"] == 1, status
    assert "routing id b'X'" in b.log()
    again = dealer(data_dir, "B", operator, b"X")
    try:
        again.send(pack("status", 3))
        assert (answer(again) or {}).get("ok")
    finally:
        again.close(linger=0)


def test_a_station_that_reconnects_takes_its_place_back(start_daemon, data_dir, sim):
    """B restarts (a new connection, a new routing id): its next authenticated message tells
    the midpoint where B is now, and the heralds of the next session reach it there."""
    calibrate_nodes_from_truth(data_dir, sim)
    m, a, b = start_daemon("M"), start_daemon("A"), start_daemon("B")
    for attempt in range(2):
        started = a.client.entangle(10, "single_click", delivery="Z", deadline_s=60)
        summary = a.client.wait_session(started["session"], timeout_s=120)
        assert summary["state"] == "completed", (attempt, summary)
        assert b.client.session(started["session"])["state"] == "completed"
        if attempt == 0:
            assert b.stop() == 0
            b = start_daemon("B")
    assert "node B reconnected" in m.log()
    assert m.client.status()["undeliverable"] == 0
