"""Stations in Linux network namespaces joined by links that take their fibre's time.

A test describes a network (stations, which pairs share a link, each link's one-way delay) and
`fibre_network(...)` builds it: one namespace per station, named uniquely for this run, and
per link a private subnet. The delay comes from netem where the kernel has it (a veth pair
per link, `netem delay` on both ends). Where it does not (the `sch_netem` module is missing
on these machines' kernels), every link goes through a relay namespace: each station reaches
it over a veth of its own per link, and a TCP proxy there holds every byte for the link's
delay in each direction before passing it on. The relay namespace does not forward packets,
so a station reaches another only through the ports a test exposes over their link
(`FibreNetwork.endpoint`): isolation by construction, as in netem mode where a station only
has routes to its links' subnets.

Everything this module creates is deleted when the context exits, by failure or by
KeyboardInterrupt too: processes started in a namespace, relay threads and sockets, then the
namespaces (a veth goes with its namespace; none is ever created in the root namespace).
A run killed outright (SIGKILL) leaves its namespaces; their names carry the pid of their
run, and the next run deletes those whose run is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from controller.labconfig import FIBRE_DELAY_S_PER_KM, LabConfig

T = TypeVar("T")

NAMESPACE_PREFIX = "qnf"
"""Every namespace of this module is `qnf<pid>-<run>-...`: the pid tells whether its run lives."""
MAX_STATIONS = 16
MAX_LINKS = 32
MAX_DELAY_S = 0.1
"""20 000 km of fibre: beyond it a test is waiting, not measuring."""
MAX_RELAYED_PORTS = 64
MAX_RELAYED_CONNECTIONS = 256
RELAY_QUEUE_CHUNKS = 256
"""Chunks (of up to RELAY_CHUNK_BYTES) held per direction of a connection: a full hold stops
the relay reading, and TCP's window then stops the sender (back-pressure, bounded memory)."""
RELAY_CHUNK_BYTES = 65536
WAKE_UP_LATE_S = 60e-6
"""How late a thread may wake from a timed wait in these VMs (measured 25-35 us with a timer
slack of 1 ns, 75-85 us with Linux's default 50 us): the relay sleeps until this long before
a chunk is due and spins the rest."""
RELAY_PRIORITY = 10
"""SCHED_FIFO priority of the relay's threads: above every ordinary process, below the
kernel's own real-time threads (50 and up)."""
IP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
LINK_SUBNETS = ipaddress.IPv4Network("10.201.0.0/16")
"""Per link a /24 of this. Each namespace has its own routing table, so these addresses can
be the same in parallel runs and the host's networks never see them."""

_STATION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,7}$")
_CLONE_NEWNET = 0x40000000
_PR_SET_TIMERSLACK = 29
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def fibre_delay_s(km: float) -> float:
    """One-way time of a message over `km` of fibre (5 us per km, as the lab files use)."""
    return km * FIBRE_DELAY_S_PER_KM


@dataclass(frozen=True)
class Link:
    """Two stations that share a link, and its one-way delay in seconds."""

    a: str
    b: str
    delay_s: float

    def joins(self, x: str, y: str) -> bool:
        return {x, y} == {self.a, self.b}


def links_of_lab(lab: LabConfig) -> list[Link]:
    """The classical links of a lab file: each node to its link's midpoint through its own
    fibre, and the two nodes of a link to each other through both fibres."""
    found: list[Link] = []
    for link in lab.all_links.values():
        a, b = link.nodes
        found.append(Link(a, link.midpoint, link.delay_s(a)))
        found.append(Link(b, link.midpoint, link.delay_s(b)))
        found.append(Link(a, b, link.delay_s(a) + link.delay_s(b)))
    return found


_LOOPBACK_PORT = re.compile(r"127\.0\.0\.1(?:::|:)(\d+)")


def loopback_ports(resources: Iterable[str]) -> set[int]:
    """The TCP ports of 127.0.0.1 that resource strings name (VISA `TCPIP::127.0.0.1::P::SOCKET`,
    ZeroMQ `tcp://127.0.0.1:P[,dlt=tcp://127.0.0.1:Q]`); serial devices (ptys) name none: they
    are files, the same in every network namespace."""
    return {int(port) for text in resources for port in _LOOPBACK_PORT.findall(text)}


def netns_unavailable_reason() -> str | None:
    """Why this machine cannot build namespaces for a test, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if os.geteuid() != 0:
        return (
            "needs root to create network namespaces and veth pairs (CI runs as root); "
            f"this is uid {os.geteuid()}"
        )
    if shutil.which("ip") is None:
        return "needs `ip` (iproute2) to create network namespaces: none on PATH"
    return None


def require_netns() -> None:
    """Skip the calling test, with the reason, where namespaces cannot be built."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def list_namespaces() -> list[str]:
    """Names of the network namespaces `ip netns list` shows."""
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(namespace: str) -> None:
    """Processes still inside a namespace would keep it (and its veths) alive after its name
    is deleted; only this module's tests start processes in these namespaces."""
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def delete_stale_namespaces() -> list[str]:
    """Delete the namespaces of runs that died without cleaning up (their pid is gone)."""
    deleted = []
    for name in list_namespaces():
        match = re.match(rf"^{NAMESPACE_PREFIX}(\d+)-", name)
        if match and not _pid_alive(int(match.group(1))):
            _kill_namespace_processes(name)
            _ip("netns", "del", name, check=False)
            deleted.append(name)
    return deleted


def _tc(namespace: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, "tc"]


def netem_available(namespace: str) -> bool:
    """Whether this kernel has netem: try it on the loopback of a scratch namespace."""
    probe = subprocess.run(
        [*_tc(namespace), "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1us"],
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT_S,
        check=False,
    )
    if probe.returncode != 0:
        return False
    subprocess.run(
        [*_tc(namespace), "qdisc", "del", "dev", "lo", "root"],
        capture_output=True,
        timeout=IP_TIMEOUT_S,
        check=False,
    )
    return True


def _enter_namespace(namespace: str) -> None:
    """Move the calling thread (only it: setns is per thread) into `namespace`; the sockets
    it creates from then on live there."""
    assert _libc is not None
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {namespace}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _precise_timer() -> None:
    """Wake this thread when its sleep ends, not up to 50 us later (the default timer slack
    of a Linux thread, as long as the shortest link's delay)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


def _realtime() -> None:
    """Run this thread before ordinary work (SCHED_FIFO, as root may): the fibre's delay does
    not grow when the machine is busy, so the relay that plays it should not either. Where
    it is refused, the thread runs as it is."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RELAY_PRIORITY))


def _in_namespace(namespace: str, make: Callable[[], T]) -> T:
    """`make()` run in a short thread that entered `namespace` (this thread stays put)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            _enter_namespace(namespace)
            result.append(make())
        except BaseException as e:  # handed to the caller
            error.append(e)

    thread = threading.Thread(target=run, name=f"in-{namespace}", daemon=True)
    thread.start()
    thread.join(IP_TIMEOUT_S)
    if error:
        raise error[0]
    if not result:
        raise TimeoutError(f"nothing made in namespace {namespace} in {IP_TIMEOUT_S} s")
    return result[0]


class _Pipe:
    """One direction of a relayed connection, in one thread: each chunk read is stamped with
    the time it may leave (read time + delay) and sent no earlier, in order. Waiting for the
    next due time and for more bytes is one `select` (microsecond timeout, unlike epoll's
    milliseconds), so no hand-over between threads adds to the delay."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay_s: float, name: str):
        self.src, self.dst, self.delay_s = src, dst, delay_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        _precise_timer()
        _realtime()
        held: deque[tuple[float, bytes]] = deque()
        reading = True
        try:
            while not self.stop.is_set() and (reading or held):
                now = time.monotonic()
                while held and held[0][0] <= now:
                    self.dst.sendall(held.popleft()[1])
                    now = time.monotonic()
                wait = held[0][0] - now if held else 0.2
                if wait <= WAKE_UP_LATE_S:
                    while time.monotonic() < held[0][0]:
                        pass  # the last few tens of microseconds: a sleep would overshoot
                    continue
                wait = min(wait - WAKE_UP_LATE_S, 0.2)
                # a full hold stops reading: TCP's window then stops the sender
                watch = [self.src] if reading and len(held) < RELAY_QUEUE_CHUNKS else []
                ready, _, _ = select.select(watch, [], [], max(wait, 0.0))
                if ready:
                    data = self.src.recv(RELAY_CHUNK_BYTES)
                    if data:
                        held.append((time.monotonic() + self.delay_s, data))
                    else:
                        reading = False
            if not reading:
                self.dst.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):  # a socket closed under it (the relay closing)
            for sock in (self.src, self.dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def join(self, timeout_s: float) -> None:
        self.stop.set()
        self.thread.join(timeout_s)


@dataclass
class _Forward:
    """A port of one station offered to another over their link, through the relay."""

    listen: tuple[str, int]
    target: tuple[str, int]
    delay_s: float
    sock: socket.socket | None = None
    thread: threading.Thread | None = None


class DelayRelay:
    """TCP proxies in the relay namespace, each holding bytes for its link's delay.

    One accepting thread per exposed port (it lives in the relay namespace, so the
    connections it opens onward do too), one thread per direction of each connection.
    `select` limits a relayed socket's descriptor to below 1024 (FD_SETSIZE): plenty for a
    test's few connections, and a larger one fails its connection loudly."""

    def __init__(self, namespace: str | None, name: str | None = None) -> None:
        self.namespace = namespace
        """Where the onward connections are made (None: the namespace of this process)."""
        self.name = name or namespace or "relay"
        """The prefix of its threads' names."""
        self.forwards: dict[tuple[str | None, tuple[str, int]], _Forward] = {}
        self.pipes: list[_Pipe] = []
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0

    def forward(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        delay_s: float,
        listen_in: str | None = None,
    ) -> None:
        """Bytes to `listen` reach `target`, `delay_s` later each way. The listening socket is
        made in namespace `listen_in` (default: the relay's own)."""
        where = listen_in or self.namespace
        if (where, listen) in self.forwards:
            return
        if len(self.forwards) >= MAX_RELAYED_PORTS:
            raise RuntimeError(f"the relay forwards at most {MAX_RELAYED_PORTS} ports")

        def listener() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(listen)
            sock.listen(16)
            sock.settimeout(0.2)
            return sock

        sock = listener() if where is None else _in_namespace(where, listener)
        fwd = _Forward(listen, target, delay_s, sock=sock)
        fwd.thread = threading.Thread(
            target=self._accept,
            args=(fwd,),
            name=f"{self.name}-{where or 'here'}-{listen[0]}:{listen[1]}",
            daemon=True,
        )
        self.forwards[(where, listen)] = fwd
        fwd.thread.start()

    def _accept(self, fwd: _Forward) -> None:
        assert fwd.sock is not None
        if self.namespace is not None:
            _enter_namespace(self.namespace)
        while not self.stop.is_set():
            try:
                client, _ = fwd.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                over = self.connections > MAX_RELAYED_CONNECTIONS
            try:
                if over:
                    raise OSError(f"more than {MAX_RELAYED_CONNECTIONS} relayed connections")
                server = socket.create_connection(fwd.target, timeout=IP_TIMEOUT_S)
            except OSError:
                # the far end is not listening (yet): the client sees its connection closed
                # and, as a ZeroMQ socket does, tries again later
                client.close()
                continue
            for sock in (client, server):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            name = f"{self.name}-{fwd.listen[1]}-{self.connections}"
            pipes = [
                _Pipe(client, server, fwd.delay_s, f"{name}-out"),
                _Pipe(server, client, fwd.delay_s, f"{name}-back"),
            ]
            with self.lock:
                self.sockets += [client, server]
                self.pipes += pipes
            for pipe in pipes:
                pipe.start()

    def close(self) -> None:
        """Stop accepting, then end every connection: shut its sockets down (the pipes see
        the end and return), join the pipes, and only then close the sockets, so that no
        thread ever waits on a descriptor that was closed and maybe reused."""
        self.stop.set()
        for fwd in self.forwards.values():
            if fwd.sock is not None:
                fwd.sock.close()
        for fwd in self.forwards.values():
            if fwd.thread is not None:
                fwd.thread.join(STOP_TIMEOUT_S)
        with self.lock:
            sockets, pipes = list(self.sockets), list(self.pipes)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for pipe in pipes:
            pipe.join(STOP_TIMEOUT_S)
        for sock in sockets:
            sock.close()

    def threads_alive(self) -> int:
        threads = [f.thread for f in self.forwards.values() if f.thread is not None]
        threads += [p.thread for p in self.pipes]
        return sum(t.is_alive() for t in threads)


@dataclass
class _Attachment:
    """Where a station meets one of its links: its interface and address there, and (relay
    mode) the relay's address on the same veth."""

    link: Link
    interface: str
    address: str
    relay_address: str | None = None


@dataclass
class FibreNetwork:
    """A built network: its namespaces, its links, how to reach a port and run a process."""

    run_id: str
    stations: tuple[str, ...]
    links: tuple[Link, ...]
    mode: str
    """"netem" (the kernel delays packets) or "relay" (a TCP proxy delays bytes)."""
    attachments: dict[str, list[_Attachment]] = field(default_factory=dict)
    relay: DelayRelay | None = None
    host_bridge: DelayRelay | None = None
    """Zero-delay forwards from stations' loopback ports to this process's namespace's
    (`reach_host_loopback`): made on first use."""
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def namespace(self, station: str) -> str:
        if station not in self.stations:
            raise KeyError(f"no station {station!r} in this network ({', '.join(self.stations)})")
        return f"{self.run_id}-s-{station}"

    @property
    def relay_namespace(self) -> str:
        return f"{self.run_id}-relay"

    def all_namespaces(self) -> list[str]:
        names = [self.namespace(s) for s in self.stations]
        return names + ([self.relay_namespace] if self.mode == "relay" else [])

    def link(self, x: str, y: str) -> Link:
        for link in self.links:
            if link.joins(x, y):
                return link
        raise KeyError(f"stations {x} and {y} share no link: {x} cannot reach {y}")

    def _attachment(self, station: str, link: Link) -> _Attachment:
        return next(a for a in self.attachments[station] if a.link == link)

    def address_on_link(self, station: str, peer: str) -> str:
        """The address `station` has on its link to `peer` (where it binds a server for it)."""
        return self._attachment(station, self.link(station, peer)).address

    def address(self, server: str, port: int, client: str) -> tuple[str, int]:
        """Station `server`'s TCP port `port` as seen from station `client`: what `client`
        connects to so that its bytes take the link's time. KeyError if they share no link."""
        link = self.link(server, client)
        far = self._attachment(server, link)
        if self.mode == "netem":
            return far.address, port
        near = self._attachment(client, link)
        assert self.relay is not None and near.relay_address is not None
        listen = (near.relay_address, port)
        self.relay.forward(listen, (far.address, port), link.delay_s)
        return listen

    def endpoint(self, server: str, port: int, client: str) -> str:
        """`address(...)` as a ZeroMQ endpoint, `tcp://host:port`."""
        host, port = self.address(server, port, client)
        return f"tcp://{host}:{port}"

    def reach_host_loopback(self, station: str, ports: Iterable[int]) -> None:
        """Inside `station`'s namespace, 127.0.0.1:port (each of `ports`) reaches the same port
        of 127.0.0.1 in the namespace this process runs in (the root one: where the simulated
        lab serves its instruments), with no delay: a station's instruments are in its own
        room, on cables of metres. Only these ports: the station reaches nothing else there."""
        if self.host_bridge is None:
            self.host_bridge = DelayRelay(None, name=f"{self.run_id}-host")
        for port in sorted(set(ports)):
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is not a TCP port")
            listen = ("127.0.0.1", port)
            self.host_bridge.forward(listen, listen, 0.0, listen_in=self.namespace(station))

    def dial_hosts(self, station: str, ports: dict[str, int]) -> str:
        """QNODE_STATION_HOSTS for a process in `station` (controller/labconfig.py): itself on
        its loopback; every station it shares a link with where that link reaches it (the
        relay's end of the link, which holds the bytes for the fibre's time, or the far end
        of the veth with netem), each daemon's port `ports[name]` forwarded there."""
        hosts = [f"{station}=127.0.0.1"]
        for link in self.links:
            if station in (link.a, link.b):
                peer = link.b if link.a == station else link.a
                if peer in ports:
                    hosts.append(f"{peer}={self.address(peer, ports[peer], station)[0]}")
        return ",".join(hosts)

    def command(self, station: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(station), *argv]

    def popen(self, station: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside `station`'s namespace; it is killed when the network closes."""
        proc = subprocess.Popen(self.command(station, argv), start_new_session=True, **kwargs)
        self.processes.append(proc)
        return proc

    def run(
        self,
        station: str,
        argv: Sequence[str],
        timeout_s: float = 60.0,
        check: bool = True,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside `station`'s namespace to its end (bounded by `timeout_s`; a
        process still running then is killed, as subprocess.run does)."""
        result = subprocess.run(
            self.command(station, argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} in {station} exited {result.returncode}: {result.stderr}"
            )
        return result


def _validate(stations: Sequence[str], links: Sequence[Link]) -> None:
    if not 1 <= len(stations) <= MAX_STATIONS:
        raise ValueError(f"between 1 and {MAX_STATIONS} stations, not {len(stations)}")
    if len(set(stations)) != len(stations):
        raise ValueError(f"station names repeat: {list(stations)}")
    for name in stations:
        if not _STATION_NAME.match(name):
            raise ValueError(f"station name {name!r}: a letter, then up to 7 letters or digits")
    if len(links) > MAX_LINKS:
        raise ValueError(f"at most {MAX_LINKS} links, not {len(links)}")
    seen: set[frozenset[str]] = set()
    for link in links:
        if link.a not in stations or link.b not in stations or link.a == link.b:
            raise ValueError(f"link {link.a}-{link.b}: both ends must be distinct stations")
        if not 0.0 <= link.delay_s <= MAX_DELAY_S:
            raise ValueError(f"link {link.a}-{link.b}: delay {link.delay_s} s not in [0, 0.1]")
        pair = frozenset((link.a, link.b))
        if pair in seen:
            raise ValueError(f"two links between {link.a} and {link.b}")
        seen.add(pair)


def _host(subnet: ipaddress.IPv4Network, index: int) -> str:
    return str(subnet.network_address + index)


def _veth(ends: Sequence[tuple[str, str, str]], prefix: int) -> None:
    """A veth pair made straight inside two namespaces (never the root one), addressed, up."""
    (ns_a, if_a, _), (ns_b, if_b, _) = ends
    _ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    for namespace, interface, address in ends:
        _ip("-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", interface)
        _ip("-n", namespace, "link", "set", interface, "up")


def _netem(namespace: str, interface: str, delay_s: float) -> None:
    if delay_s > 0:
        us = f"{delay_s * 1e6:.3f}us"
        subprocess.run(
            [*_tc(namespace), "qdisc", "add", "dev", interface, "root", "netem", "delay", us],
            capture_output=True,
            timeout=IP_TIMEOUT_S,
            check=True,
        )


def _build_links(net: FibreNetwork) -> None:
    """Per link a /24 of LINK_SUBNETS; netem: one /30 between the two stations; relay: a /30
    from each station to the relay (station .1/.5, relay .2/.6)."""
    subnets = list(LINK_SUBNETS.subnets(new_prefix=24))
    for station in net.stations:
        net.attachments[station] = []
    for index, link in enumerate(net.links):
        subnet = subnets[index]
        if net.mode == "netem":
            a = _Attachment(link, f"l{index}-{link.b}", _host(subnet, 1))
            b = _Attachment(link, f"l{index}-{link.a}", _host(subnet, 2))
            ns_a, ns_b = net.namespace(link.a), net.namespace(link.b)
            _veth([(ns_a, a.interface, a.address), (ns_b, b.interface, b.address)], 30)
            _netem(ns_a, a.interface, link.delay_s)
            _netem(ns_b, b.interface, link.delay_s)
            net.attachments[link.a].append(a)
            net.attachments[link.b].append(b)
            continue
        for side, (station, peer) in enumerate(((link.a, link.b), (link.b, link.a))):
            att = _Attachment(
                link, f"l{index}-{peer}", _host(subnet, 4 * side + 1), _host(subnet, 4 * side + 2)
            )
            assert att.relay_address is not None
            _veth(
                [
                    (net.namespace(station), att.interface, att.address),
                    (net.relay_namespace, f"l{index}{'ab'[side]}", att.relay_address),
                ],
                30,
            )
            net.attachments[station].append(att)


def _teardown(net: FibreNetwork) -> list[str]:
    """Undo everything of `net`, carrying on past each failure; the failures, as text."""
    problems = []
    for proc in net.processes:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            problems.append(f"process {proc.pid} did not end")
    for relay in (net.relay, net.host_bridge):
        if relay is not None:
            relay.close()
            if relay.threads_alive():
                problems.append(f"{relay.threads_alive()} {relay.name} threads still running")
    for name in list_namespaces():
        if name.startswith(f"{net.run_id}-"):
            _kill_namespace_processes(name)
            result = _ip("netns", "del", name, check=False)
            if result.returncode != 0:
                problems.append(f"namespace {name}: {result.stderr.strip()}")
    return problems


@contextlib.contextmanager
def fibre_network(
    stations: Sequence[str], links: Sequence[Link], use_netem: bool | None = None
) -> Iterator[FibreNetwork]:
    """Build the network, yield it, and always take it down again.

    `use_netem`: None takes netem where the kernel has it and the relay elsewhere; False
    forces the relay; True demands netem (an error where the kernel lacks it)."""
    require_netns()
    _validate(stations, links)
    delete_stale_namespaces()
    run_id = f"{NAMESPACE_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    net = FibreNetwork(run_id, tuple(stations), tuple(links), mode="relay")
    try:
        for station in net.stations:
            _ip("netns", "add", net.namespace(station))
            _ip("-n", net.namespace(station), "link", "set", "lo", "up")
        has_netem = use_netem is not False and netem_available(net.namespace(stations[0]))
        if use_netem and not has_netem:
            raise RuntimeError("netem demanded, and this kernel has no netem qdisc (sch_netem)")
        net.mode = "netem" if has_netem else "relay"
        if net.mode == "relay":
            _ip("netns", "add", net.relay_namespace)
            net.relay = DelayRelay(net.relay_namespace)
        _build_links(net)
        yield net
    except BaseException:
        _teardown(net)  # the test's own failure (or interrupt) is the one to report
        raise
    problems = _teardown(net)
    if problems:
        raise RuntimeError("network teardown left: " + "; ".join(problems))
