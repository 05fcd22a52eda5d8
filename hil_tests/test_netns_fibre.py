"""Stations in separate network namespaces, their messages taking their fibre's time.

The network is the metropolitan lab's (labs/sim_three_node_metro.toml): A - M1 - B - M2 - C,
a 10 km link A-B (50 us one way) and a 25 km link B-C (125 us). A CurveZMQ DEALER/ROUTER
pair, authenticated as the daemons' are, measures round trips across it; a station reaches
only the stations it shares a link with; nothing of a network outlives its context.

Run alone with `pytest -m netns`. Needs root (CI is); elsewhere these tests skip, saying so.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from time import perf_counter_ns

import numpy as np
import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from controller.labconfig import load_lab
from controller.messaging.curve import client_socket, copy_public, server_socket, write_keypair
from hil_tests import netns
from hil_tests.netns import FibreNetwork, Link, fibre_network, links_of_lab, list_namespaces

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[1]
METRO_LAB = ROOT / "labs" / "sim_three_node_metro.toml"
PORT = 5555
ROUND_TRIPS = 400
WARM_UP = 20
STATION_TIMEOUT_S = 60.0

# What the path between two stations may add to a round trip beyond the fibre's 2 x delay
# and beyond what the same CurveZMQ pair takes between two sockets of one namespace (the
# "near" round trips, measured alternately with the far ones, so both see the same load).
# Measured on these 2-core machines while other test suites ran (docs/network.md, "Distance
# in the tests"): through the relay, the median excess was 10-70 us (two passes through the
# relay, each a TCP hop in and out and one thread's wake-up), also with both cores kept
# busy by two spinning processes; the p99 excess was at most 1.1 ms (scheduler stalls that
# hit a far message and not its near neighbour). The median of 400 round trips hardly moves
# between runs, so its bound is set tight: about 3.5 times the largest seen, it fails a relay
# that holds a 25 km link's bytes twice as long, or waits on a millisecond timer (as epoll's
# timeout is). The p99 bound catches stalls of the relay itself of 10 ms and more (a poll
# interval in the path) without failing on the scheduler's under CI load (3 ms, 3 times the
# largest seen on a quieter machine, was too close: review S7).
RELAY_MEDIAN_EXCESS_BOUND_S = 250e-6
RELAY_P99_EXCESS_BOUND_S = 10e-3


def serve_echo(secret: str, allow_dir: str, bind: str, seconds: float) -> None:
    """A station's ROUTER: CurveZMQ server, allow-listed clients; answers each message with
    itself until told `stop` or `seconds` pass."""
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=allow_dir)
    sock = server_socket(ctx, zmq.ROUTER, Path(secret))
    sock.bind(bind)
    print("bound", flush=True)
    try:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        deadline_ms = int(seconds * 1000)
        while poller.poll(deadline_ms):
            frames = sock.recv_multipart()
            sock.send_multipart(frames)
            if frames[-1] == b"stop":
                return
    finally:
        sock.close(linger=0)
        auth.stop()
        ctx.term()


def measure_round_trips(
    secret: str, server_public: str, far_endpoint: str, near_endpoint: str, count: int
) -> None:
    """A station's DEALERs, one to the far station, one to an echo server beside it: after
    the handshakes and a warm-up, `count` messages to each, one at a time and alternating,
    each timed from send to its echo. The near round trips are what ZeroMQ, CurveZMQ and
    these processes take without distance or relay, under the same load of the machine at
    the same moments. Prints {"far": [...], "near": [...]} (s) as JSON."""
    ctx = zmq.Context()
    socks = {}
    for name, endpoint in (("far", far_endpoint), ("near", near_endpoint)):
        socks[name] = client_socket(ctx, zmq.DEALER, Path(secret), Path(server_public))
        socks[name].connect(endpoint)
    first_reply_ms = int(STATION_TIMEOUT_S / 2 * 1000)
    round_trips: dict[str, list[float]] = {"far": [], "near": []}
    try:
        for i in range(WARM_UP + count):
            for name, sock in socks.items():
                payload = f"ping {i}".encode()
                start = perf_counter_ns()
                sock.send(payload)
                if not sock.poll(first_reply_ms if i == 0 else 5000):
                    raise SystemExit(f"no answer to message {i} from the {name} server")
                reply = sock.recv()
                elapsed = perf_counter_ns() - start
                if reply != payload:
                    raise SystemExit(f"message {i}: sent {payload!r}, got back {reply!r}")
                if i >= WARM_UP:
                    round_trips[name].append(elapsed / 1e9)
        for sock in socks.values():
            sock.send(b"stop")
            sock.poll(5000)
        print(json.dumps(round_trips), flush=True)
    finally:
        for sock in socks.values():
            sock.close(linger=0)
        ctx.term()


def _station_python(call: str) -> list[str]:
    return [sys.executable, "-c", f"from hil_tests.test_netns_fibre import *; {call}"]


def _station_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), path) if p)}


def _keys(folder: Path) -> dict[str, Path]:
    """Server and client key pairs, the client's public key on the server's allow-list."""
    server_public, server_secret = write_keypair(folder / "server", "server")
    client_public, client_secret = write_keypair(folder / "client", "client")
    copy_public(client_public, folder / "allowed" / "client.key")
    return {
        "server_public": server_public,
        "server_secret": server_secret,
        "client_secret": client_secret,
        "allowed": folder / "allowed",
    }


def _serve(net: FibreNetwork, station: str, keys: dict[str, Path], bind: str) -> None:
    serving = net.popen(
        station,
        _station_python(
            f"serve_echo({str(keys['server_secret'])!r}, {str(keys['allowed'])!r}, "
            f"{bind!r}, {STATION_TIMEOUT_S})"
        ),
        cwd=ROOT,
        env=_station_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert serving.stdout is not None
    assert serving.stdout.readline().strip() == "bound", serving.stderr.read()  # type: ignore[union-attr]


def _round_trips(
    net: FibreNetwork, server: str, client: str, keys: dict[str, Path]
) -> tuple[np.ndarray, np.ndarray]:
    """Round trips (s) of ROUND_TRIPS messages from `client` to an echo server in `server`
    across their link, and as many to one beside `client`, alternating."""
    _serve(net, server, keys, f"tcp://{net.address_on_link(server, client)}:{PORT}")
    _serve(net, client, keys, f"tcp://127.0.0.1:{PORT + 1}")
    result = net.run(
        client,
        _station_python(
            f"measure_round_trips({str(keys['client_secret'])!r}, "
            f"{str(keys['server_public'])!r}, {net.endpoint(server, PORT, client)!r}, "
            f"'tcp://127.0.0.1:{PORT + 1}', {ROUND_TRIPS})"
        ),
        timeout_s=STATION_TIMEOUT_S,
        check=False,
        cwd=ROOT,
        env=_station_env(),
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return np.array(measured["far"]), np.array(measured["near"])


@pytest.fixture(scope="module")
def metro():
    links = links_of_lab(load_lab(METRO_LAB))
    stations = sorted({s for link in links for s in (link.a, link.b)})
    with fibre_network(stations, links) as net:
        yield net


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    return _keys(tmp_path_factory.mktemp("netns-keys"))


def _report(name: str, delay_s: float, rtt: np.ndarray, base: np.ndarray) -> str:
    p50, p99 = np.percentile(rtt, [50, 99])
    b50, b99 = np.percentile(base, [50, 99])
    return (
        f"{name}: {len(rtt)} round trips, 2 x delay {2 * delay_s * 1e6:.0f} us; "
        f"min {rtt.min() * 1e6:.0f} us, p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us, "
        f"max {rtt.max() * 1e6:.0f} us; without distance p50 {b50 * 1e6:.0f} us, "
        f"p99 {b99 * 1e6:.0f} us"
    )


def test_the_metro_lab_file_gives_the_links_their_fibre_delays():
    links = links_of_lab(load_lab(METRO_LAB))
    delays_us = {frozenset((x.a, x.b)): round(x.delay_s * 1e6, 6) for x in links}
    assert delays_us == {
        frozenset(("A", "M1")): 25.0,
        frozenset(("B", "M1")): 25.0,
        frozenset(("A", "B")): 50.0,
        frozenset(("B", "M2")): 62.5,
        frozenset(("C", "M2")): 62.5,
        frozenset(("B", "C")): 125.0,
    }


@pytest.mark.parametrize(
    ("server", "client", "km"), [("B", "A", 10.0), ("C", "B", 25.0)], ids=["10km", "25km"]
)
def test_curve_round_trips_take_the_fibres_time(
    metro: FibreNetwork, keys, server, client, km, record_property
):
    delay_s = metro.link(server, client).delay_s
    assert delay_s == pytest.approx(netns.fibre_delay_s(km))
    rtt, baseline = _round_trips(metro, server, client, keys)
    report = _report(f"{client}->{server} {km:g} km ({metro.mode})", delay_s, rtt, baseline)
    print(report)
    record_property("round_trips", report)

    assert len(rtt) == ROUND_TRIPS
    # no message is faster than light in fibre, there and back: every one, not on average
    assert rtt.min() >= 2 * delay_s, report
    # and the link's time comes on top of the rest, not hidden in it: each far message takes
    # a near one's path plus two relay passes (>= 20 us each, measured) plus 2 x delay, so
    # the far median exceeds the near one by about 2 x delay and more. Under heavy load the
    # near and far samples do not see the same moments (239 us against 250 us was seen at
    # load 9.4), so the bound keeps a fifth in hand: it still finds a relay that holds bytes
    # for half the 25 km delay (125 us + its passes' ~40 us < 200 us; tried); the
    # per-message minimum above is the check that cannot be fooled by overhead.
    assert np.median(rtt) - np.median(baseline) >= 0.8 * 2 * delay_s, report
    excess = np.percentile(rtt, [50, 99]) - 2 * delay_s - np.percentile(baseline, [50, 99])
    assert excess[0] <= RELAY_MEDIAN_EXCESS_BOUND_S, report
    assert excess[1] <= RELAY_P99_EXCESS_BOUND_S, report


def _connect_errno(net: FibreNetwork, station: str, host: str, port: int) -> int:
    """What a TCP connect from `station` to host:port gives: 0, or the errno."""
    probe = (
        "import socket; s = socket.socket(); s.settimeout(3); "
        f"print(s.connect_ex(({host!r}, {port})))"
    )
    return int(net.run(station, [sys.executable, "-c", probe], timeout_s=30).stdout)


def test_a_station_reaches_only_the_stations_it_shares_a_link_with(metro: FibreNetwork):
    listener = metro.popen(
        "A",
        [sys.executable, "-c", "import socket, time; s = socket.create_server(('', 7000));"
         "print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert listener.stdout is not None and listener.stdout.readline().strip() == "up"

    # through its link, B reaches A's port; C, which shares no link with A, is told so
    assert _connect_errno(metro, "B", *metro.address("A", 7000, "B")) == 0
    with pytest.raises(KeyError, match="share no link"):
        metro.address("A", 7000, "C")
    # and has no route to any address of A, of B's side of A-B, or of the relay there
    for station, peer in (("A", "B"), ("A", "M1"), ("B", "A")):
        host = metro.address_on_link(station, peer)
        assert _connect_errno(metro, "C", host, 7000) == errno.ENETUNREACH, host
    assert _connect_errno(metro, "C", *metro.address("A", 7000, "B")) == errno.ENETUNREACH


def _root_interfaces() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C in the middle of a test."""


class _Failed(AssertionError):
    """A test's assertion failing inside the network's context."""


@pytest.mark.parametrize("ending", ["normal", "failure", "interrupt"])
def test_nothing_of_a_network_remains_after_its_context(ending):
    root_before = _root_interfaces()
    thrown = {"normal": None, "failure": _Failed, "interrupt": _Interrupted}[ending]
    built: list[FibreNetwork] = []
    try:
        with fibre_network(["X", "Y", "Z"], [Link("X", "Y", 50e-6), Link("Y", "Z", 0.0)]) as net:
            built.append(net)
            net.popen("Y", ["sleep", "60"])
            net.endpoint("Y", PORT, "X")  # a relay port (relay mode), with its thread
            net.reach_host_loopback("Z", [PORT])  # a bridge to this namespace's loopback
            assert set(net.all_namespaces()) <= set(list_namespaces())
            veths = net.run("Y", ["ip", "-o", "link"]).stdout
            assert "l0-X" in veths and "l1-Z" in veths
            if thrown is not None:
                raise thrown("the test inside failed")
    except (_Failed, _Interrupted) as e:
        assert type(e) is thrown

    (net,) = built
    assert not set(net.all_namespaces()) & set(list_namespaces())
    assert _root_interfaces() == root_before
    interfaces = {a.interface for attachments in net.attachments.values() for a in attachments}
    assert not _root_interfaces() & interfaces
    assert [p.poll() for p in net.processes] == [-9]  # SIGKILL, as the network closed
    if net.relay is not None:
        assert net.relay.threads_alive() == 0
    assert net.host_bridge is not None and net.host_bridge.threads_alive() == 0
    assert not [t for t in threading.enumerate() if t.name.startswith(net.run_id)]


def test_namespaces_of_a_run_that_was_killed_are_deleted_by_the_next(tmp_path):
    netns.require_netns()
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the run that made the namespace is dead
    stale = f"{netns.NAMESPACE_PREFIX}{gone.pid}-dead00-s-A"
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=10)
    try:
        with fibre_network(["A"], []) as net:
            assert stale not in list_namespaces()
            assert net.namespace("A") in list_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, timeout=10)


def test_without_root_the_tests_skip_and_say_why(monkeypatch):
    monkeypatch.setattr(netns.sys, "platform", "linux")
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="needs root to create network namespaces"):
        netns.require_netns()
    with (
        pytest.raises(pytest.skip.Exception, match="needs root"),
        fibre_network(["A", "B"], [Link("A", "B", 50e-6)]),
    ):
        pass

    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match=r"needs `ip` \(iproute2\)"):
        netns.require_netns()


def test_a_network_description_out_of_bounds_is_refused_before_anything_is_built():
    netns.require_netns()
    ours = f"{netns.NAMESPACE_PREFIX}{os.getpid()}-"
    before = [n for n in list_namespaces() if n.startswith(ours)]
    refusals = [
        (["A", "B"], [Link("A", "Q", 50e-6)], "link A-Q: both ends must be distinct stations"),
        (["A", "B"], [Link("A", "B", 1.0)], r"link A-B: delay 1\.0 s not in \[0, 0\.1\]"),
        (["A/B"], [], "station name 'A/B': a letter, then up to 7 letters or digits"),
        (["A", "A"], [], "station names repeat"),
    ]
    for stations, links, message in refusals:
        with pytest.raises(ValueError, match=message), fibre_network(stations, links):
            pass
    assert [n for n in list_namespaces() if n.startswith(ours)] == before
