"""Issue 12, item 8: secret key files are private from their first byte and refused when they
are not; refusals of unknown keys and of clients without CURVE are logged (rate-limited) and
counted by every daemon and by the simulated lab's control channel; one malformed message
does not stop that channel."""

import os
import re
import stat
import time
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from controller.messaging import curve
from controller.messaging.curve import client_socket, ensure_keypair
from controller.messaging.keys import key_dir
from controller.messaging.serving import read_info
from controller.messaging.wire import pack
from controller.operator import daemons
from controller.operator.daemons import StartError
from qnode.errors import QnodeError
from sim_backends.control_keys import curve_socket, make_control_keys


def no_chmod(*args, **kwargs):
    raise AssertionError("a secret key file was made private after it was written")


@pytest.fixture
def loose_umask(monkeypatch):
    """umask 0 (a file is world-readable unless created private), and no chmod afterwards:
    pyzmq's create_certificates writes a secret then someone chmods it."""
    old = os.umask(0)
    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(zmq.auth, "create_certificates", no_chmod)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_keys_are_private_from_their_first_byte(tmp_path, loose_umask):
    public, secret = ensure_keypair(tmp_path / "keys", "node-Z")
    assert mode(secret) == 0o600 and mode(public) == 0o644
    make_control_keys(tmp_path / "sim")
    for name in ("server", "client"):
        assert mode(tmp_path / "sim" / f"{name}.key_secret") == 0o600
    # the same file format as pyzmq's: it loads them
    pub, sec = zmq.auth.load_certificate(str(secret))
    assert sec is not None and zmq.auth.load_certificate(str(public)) == (pub, None)
    assert curve.load_secret(secret)[0] == pub


def test_a_secret_key_readable_by_others_is_refused_with_the_fix(tmp_path):
    _, secret = ensure_keypair(tmp_path, "alice")
    secret.chmod(0o640)
    for load in (
        lambda: curve.load_secret(secret),
        lambda: client_socket(zmq.Context.instance(), zmq.DEALER, secret, secret),
    ):
        with pytest.raises(QnodeError) as refused:
            load()
        assert str(secret) in str(refused.value) and f"chmod 600 {secret}" in str(refused.value)
    with pytest.raises(Exception, match=re.escape(f"chmod 600 {secret}")):
        curve_socket(zmq.Context.instance(), zmq.REQ, secret, None)
    secret.chmod(0o600)
    assert curve.load_secret(secret)[1] is not None


@pytest.mark.usefixtures("sim")
def test_a_daemon_with_a_loose_station_secret_does_not_start(lab, data_dir, sim_process, tmp_path):
    ensure_keypair(key_dir(data_dir), "node-A")
    secret = key_dir(data_dir) / "node-A.key_secret"
    secret.chmod(0o644)
    try:
        with pytest.raises(StartError) as failed:
            daemons.start_daemon(lab, "A", log=tmp_path / "A.log", resource_map=sim_process)
        said = " ".join(str(failed.value).split())  # the error as printed, lines wrapped
        assert f"chmod 600 {secret}" in said and "Traceback" not in said
    finally:
        secret.chmod(0o600)


def refusal_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "refused" in line and "CurveZMQ" in line]


@pytest.mark.usefixtures("sim")
def test_unknown_keys_and_clients_without_curve_are_counted_and_logged_sparingly(
    start_daemon, data_dir, tmp_path
):
    b = start_daemon("B")
    info = read_info(data_dir, "B")
    _, stranger = ensure_keypair(tmp_path / "stranger", "stranger")
    ctx = zmq.Context.instance()
    for k in range(12):  # an unknown key, again and again
        sock = client_socket(ctx, zmq.DEALER, stranger, Path(info["server_public_key"]))
        sock.connect(info["endpoint"])
        sock.send(pack("status", k))
        assert not sock.poll(300)
        sock.close(linger=0)
    for k in range(3):  # no CURVE at all
        plain = ctx.socket(zmq.DEALER)
        plain.connect(info["endpoint"])
        plain.send(pack("status", k))
        assert not plain.poll(300)
        plain.close(linger=0)
    time.sleep(0.3)
    status = b.client.status()
    assert status["refused_clients"] == 12, status
    assert status["refused_handshakes"] >= 3, status
    unknown = [line for line in refusal_lines(b.log()) if "unknown CurveZMQ key" in line]
    assert len(unknown) == 1, unknown  # at most one line per key per 10 s; the count says more
    assert any("handshake" in line for line in refusal_lines(b.log()))


def control_log(sim_process: Path) -> str:
    return (sim_process.parent / "sim.log").read_text()


def test_the_control_channel_counts_and_logs_refusals(sim, sim_process, tmp_path):
    _, stranger = ensure_keypair(tmp_path / "stranger", "stranger")
    ctx = zmq.Context.instance()
    before = sim.request("ping")
    for _ in range(5):
        sock = curve_socket(ctx, zmq.REQ, stranger, sim.server_key)
        sock.connect(sim.endpoint)
        sock.send(msgpack.packb({"cmd": "ping"}))
        assert not sock.poll(300)
        sock.close(linger=0)
    plain = ctx.socket(zmq.REQ)
    plain.connect(sim.endpoint)
    plain.send(msgpack.packb({"cmd": "ping"}))
    assert not plain.poll(300)
    plain.close(linger=0)
    time.sleep(0.3)
    after = sim.request("ping")
    assert after["refused_clients"] - before["refused_clients"] == 5, after
    assert after["refused_handshakes"] - before["refused_handshakes"] >= 1, after
    log = control_log(sim_process)
    assert "refused a client with unknown CurveZMQ key" in log
    assert "handshake" in log


def test_one_malformed_message_does_not_stop_the_control_channel(sim):
    """A request of several frames (one without the empty delimiter a REQ adds, one with two
    body frames): each is dropped or answered with an error; the channel keeps serving."""
    ctx = zmq.Context.instance()
    before = sim.request("ping")
    sock = curve_socket(ctx, zmq.DEALER, sim.client_secret, sim.server_key)
    try:
        sock.connect(sim.endpoint)
        sock.send_multipart([b"no delimiter", msgpack.packb({"cmd": "ping"})])
        sock.send_multipart([b"", msgpack.packb({"cmd": "ping"}), b"a second body frame"])
        assert sock.poll(3000)
        reply = msgpack.unpackb(sock.recv_multipart()[-1])
        assert not reply["ok"] and "frame" in reply["error"]
    finally:
        sock.close(linger=0)
    after = sim.request("ping")
    assert after["ok"] and after["malformed"] - before["malformed"] >= 1
    sim.fault(next(iter(sim.resources)), "clear")  # and the lab still answers real requests
