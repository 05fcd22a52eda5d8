"""What every qnode daemon (node or midpoint) shares: one owner per station, an info file
that tells clients where it listens, a CurveZMQ ROUTER that only allow-listed keys reach, and
one daemon loop (StationServer) that receives, checks, dispatches and answers requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from controller.messaging.curve import server_socket
from controller.messaging.keys import (
    CLIENT,
    STATION,
    AllowList,
    KeyEntry,
    KeyNames,
    RateLimitedLog,
    allow_station,
    ensure_default_client,
    node_keys,
)
from controller.messaging.wire import MAX_MESSAGE_BYTES, MessageError, Vocabulary, pack, unpack
from qnode.errors import QnodeError


def node_info_path(data_dir: Path, node: str) -> Path:
    return data_dir / "nodes" / f"{node}.json"


def running_daemon_pid(data_dir: Path, node: str) -> int | None:
    """The pid of a live daemon serving `node` in this data folder, if any."""
    try:
        pid = int(json.loads(node_info_path(data_dir, node).read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def claim(data_dir: Path, node: str) -> None:
    other = running_daemon_pid(data_dir, node)
    if other is not None:
        raise QnodeError(f"node {node} is already served by process {other}: one owner per node")


def write_info(data_dir: Path, node: str, endpoint: str, **extra) -> None:
    path = node_info_path(data_dir, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    public, _ = node_keys(data_dir, node)
    tmp = path.with_suffix(".tmp")
    info = {
        "node": node,
        "endpoint": endpoint,
        "pid": os.getpid(),
        "server_public_key": str(public.resolve()),
        **extra,
    }
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


def remove_info(data_dir: Path, node: str) -> None:
    """Remove the info file, unless another daemon has written its own meanwhile."""
    path = node_info_path(data_dir, node)
    with contextlib.suppress(FileNotFoundError, ValueError, OSError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def read_info(data_dir: Path, node: str) -> dict:
    path = node_info_path(data_dir, node)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise QnodeError(f"{node} is not served: no {path} (start its daemon)") from None
    except (ValueError, OSError) as e:
        raise QnodeError(f"{path}: unreadable ({e})") from None


HANDSHAKE_FAILURES = {
    int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH): "a client without CURVE",
    int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC): "a client with another server key",
}


class HandshakeWatch:
    """Counts and logs (at most a line per kind per 10 s) the connections a CurveZMQ server
    socket refused before ZAP was asked: clients without CURVE, or with a wrong server key.
    Refusals by ZAP (unknown keys) are the allow-list's to count."""

    EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL

    def __init__(self, sock: zmq.Socket, who: str, logger: logging.Logger) -> None:
        self.who = who
        self.refused = 0
        self._log = RateLimitedLog(logger)
        self._sock = sock
        self.monitor: zmq.Socket | None = sock.get_monitor_socket(self.EVENTS)

    def note(self, frames: list[bytes]) -> None:
        if len(frames) != 2 or len(frames[0]) != 6:
            return
        event, value = struct.unpack("=hi", frames[0])
        if not event & self.EVENTS:
            return
        self.refused += 1
        what = HANDSHAKE_FAILURES.get(value, f"protocol error 0x{value & 0xFFFFFFFF:08x}")
        self._log.warning(
            what,
            "%s: refused a connection that failed the CurveZMQ handshake (%s)",
            self.who,
            what,
        )

    async def watch(self) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        while True:
            frames = await monitor.recv_multipart()  # type: ignore[misc]
            self.note(frames)

    def close(self) -> None:
        if self.monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None


class SecureRouter:
    """The station's ROUTER: CurveZMQ server, allow-listed clients, ROUTER_MANDATORY (a
    message to a peer that is not connected raises rather than vanishing), linger 0; the
    handshakes it refuses are counted and logged."""

    def __init__(self, ctx: zmq.asyncio.Context, data_dir: Path, node: str, who: str) -> None:
        self.ctx = ctx
        self.data_dir = data_dir
        self.node = node
        self.who = who
        self.allow_list = AllowList(data_dir, who)
        self.auth: AsyncioAuthenticator | None = None
        self.sock: zmq.asyncio.Socket | None = None
        self.handshakes: HandshakeWatch | None = None
        self.endpoint = ""

    @property
    def refused_handshakes(self) -> int:
        return 0 if self.handshakes is None else self.handshakes.refused

    def bind(self, endpoint: str) -> zmq.asyncio.Socket:
        _, secret = node_keys(self.data_dir, self.node)
        allow_station(self.data_dir, self.node)  # the other stations of the lab may call it
        sock = server_socket(self.ctx, zmq.ROUTER, secret)  # a loose secret: refused here
        self.auth = AsyncioAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve_callback("*", credentials_provider=self.allow_list)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.handshakes = HandshakeWatch(sock, self.who, logging.getLogger("qnode.security"))
        if endpoint.endswith(":0"):
            port = sock.bind_to_random_port(endpoint.rsplit(":", 1)[0])
            self.endpoint = f"{endpoint.rsplit(':', 1)[0]}:{port}"
        else:
            sock.bind(endpoint)
            self.endpoint = endpoint
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.handshakes is not None:
            self.handshakes.close()
        if self.sock is not None:
            self.sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()


class RoutingIds:
    """Which CurveZMQ key each routing id of a ROUTER speaks with. A routing id is only where
    to send an answer; still, one that a key used in the last `hold_s` is refused to another
    key (a client that chose it to pass for someone else), and the refusal counted and logged.
    Bounded: the least recently used ids are forgotten first."""

    def __init__(self, who: str, hold_s: float = 60.0, size: int = 4096) -> None:
        self.who = who
        self.hold_s = hold_s
        self.size = size
        self.conflicts = 0
        self._ids: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._log = RateLimitedLog(logging.getLogger("qnode.security"))

    def bind(self, routing_id: bytes, key: str, who: str | None) -> bool:
        now = time.monotonic()
        held = self._ids.get(routing_id)
        if held is not None and held[0] != key and now - held[1] < self.hold_s:
            self.conflicts += 1
            self._log.warning(
                key,
                "%s: refused a message from routing id %r with key %s (%s): that routing id "
                "belongs to another key",
                self.who,
                routing_id,
                key,
                who or "unknown",
            )
            return False
        self._ids[routing_id] = (key, now)
        self._ids.move_to_end(routing_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


@dataclass(frozen=True)
class Request:
    """A request as it arrived: the message (checked against its schema), the allow-list
    name of the CurveZMQ key it came with (None: not on the list) and that key's role
    (CLIENT or STATION), and the ROUTER's routing id (only where to send the answer: the key
    says who sent it, never the routing id)."""

    msg: dict
    sender: str | None
    identity: bytes
    role: str | None = None

    @property
    def kind(self) -> str:
        return self.msg["type"]

    @property
    def from_station(self) -> bool:
        return self.role == STATION

    @property
    def from_client(self) -> bool:
        return self.role == CLIENT

    def require_client(self, who: str) -> None:
        """Operator requests come with a client key (a station's key may ask `status`)."""
        if not self.from_client:
            raise QnodeError(
                f"{self.kind} refused by {who}: operator requests need a client key "
                f"(this one is {self.sender or 'unknown'}, role {self.role or 'none'})"
            )


class StationServer(ABC):
    """One daemon loop for the node and the midpoint daemons.

    serve(): claim the station, bind the ROUTER, open the instruments, write the info file,
    receive until SIGINT/SIGTERM or a shutdown request, then close in order. Each request is
    checked against the station's vocabulary (malformed ones are counted and dropped, with
    an error reply where it has an id), handled, and answered unless it is a notification.
    Requests are handled one at a time, in order, except the kinds in `concurrent`: each of
    those is handled in a task of its own (answered when it is done), so a slow one (a run
    whose sweep compiles for seconds) holds up no other request.
    """

    concurrent: frozenset[str] = frozenset()

    def __init__(
        self, data_dir: Path, name: str, who: str, endpoint: str, vocabulary: Vocabulary
    ) -> None:
        self.data_dir = data_dir
        self.name = name
        self.who = who
        self.endpoint_requested = endpoint
        self.vocabulary = vocabulary
        self.ctx = zmq.asyncio.Context()
        self.router = SecureRouter(self.ctx, data_dir, name, who)
        self.key_names = KeyNames(data_dir)  # read once, again only for a new key
        self.routing_ids = RoutingIds(who)
        self.malformed = 0
        self.endpoint = ""
        self.sock: zmq.asyncio.Socket | None = None
        self.log = logging.getLogger(f"qnode.{type(self).__name__}")
        self._stop = asyncio.Event()
        self._answering: set[asyncio.Task] = set()

    # what a daemon adds ---------------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Open the instruments (a failure is a fault state, not an exception)."""

    @abstractmethod
    async def close(self) -> None:
        """End what runs, safe state, close the instruments."""

    @abstractmethod
    async def handle(self, request: Request) -> dict:
        """The reply's fields; raise QnodeError for a refusal with its reason."""

    def background(self) -> list[Coroutine]:
        """Tasks that run while the daemon serves (heartbeats, polls)."""
        return []

    def info(self) -> dict:
        """Extra fields of the info file."""
        return {}

    def state(self) -> str:
        return ""

    # the loop -------------------------------------------------------------------------------
    async def send_to(self, identity: bytes, payload: bytes) -> None:
        """A message to a connected client by its routing id (ROUTER_MANDATORY: a client
        that is not connected raises zmq.ZMQError, never a silent drop)."""
        if self.sock is None:
            raise zmq.ZMQError(zmq.ENOTSOCK, f"{self.who} is not serving")
        await self.sock.send_multipart([identity, payload])

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        claim(self.data_dir, self.name)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        ensure_default_client(self.data_dir)
        self.sock = self.router.bind(self.endpoint_requested)
        self.endpoint = self.router.endpoint
        await self.open()
        write_info(self.data_dir, self.name, self.endpoint, **self.info())
        self.log.info("%s serving on %s (state %s)", self.who, self.endpoint, self.state())
        watch = self.router.handshakes.watch() if self.router.handshakes else None
        coros = (self._receive(self.sock), *self.background(), *([watch] if watch else []))
        tasks = [loop.create_task(c) for c in coros]
        try:
            await self._stop.wait()
        finally:
            for task in (*tasks, *self._answering):
                task.cancel()
            await self.close()
            self.router.close()
            self.ctx.term()
            remove_info(self.data_dir, self.name)
            self.log.info("%s stopped", self.who)

    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart(copy=False)
            identity, payload = frames[0].bytes, frames[-1].bytes
            try:
                key = str(frames[-1].get("User-Id"))
            except zmq.ZMQError:
                key = ""
            entry: KeyEntry | None = self.key_names.entry(key)
            sender = None if entry is None else entry.name
            if not self.routing_ids.bind(identity, key, sender):
                continue  # refused, counted and logged: no answer
            try:
                msg = unpack(payload, self.vocabulary)
            except MessageError as e:
                self.malformed += 1
                self.log.warning("%s: malformed request dropped (%s)", self.who, e)
                msg_id = self._answerable(payload)
                if msg_id is not None:  # a known request with wrong fields: say why
                    with contextlib.suppress(zmq.ZMQError):
                        error = pack("reply", msg_id, ok=False, error=f"malformed: {e}")
                        await sock.send_multipart([identity, error])
                continue
            role = None if entry is None else entry.role
            request = Request(msg, sender, identity, role)
            if msg["type"] in self.concurrent:
                task = asyncio.get_running_loop().create_task(self._answer(sock, request))
                self._answering.add(task)
                task.add_done_callback(self._answering.discard)
                continue
            await self._answer(sock, request)

    async def _answer(self, sock: zmq.asyncio.Socket, request: Request) -> None:
        """Handle one request and send its reply (none for a notification)."""
        msg, identity = request.msg, request.identity
        try:
            body = await self.handle(request)
            reply = pack("reply", msg["id"], ok=True, **body)
        except MessageError as e:
            self.malformed += 1
            self.log.warning("%s: malformed %s dropped (%s)", self.who, msg["type"], e)
            reply = pack("reply", msg["id"], ok=False, error=f"malformed: {e}")
        except QnodeError as e:
            reply = pack("reply", msg["id"], ok=False, error=str(e))
        except Exception as e:
            self.log.exception("%s: request %s failed", self.who, msg["type"])
            reply = pack("reply", msg["id"], ok=False, error=f"{type(e).__name__}: {e}")
        if self.vocabulary[msg["type"]].notification:
            return
        if len(reply) > MAX_MESSAGE_BYTES:  # the client's socket would drop it: say why
            self.log.error("%s: %s reply of %d bytes not sent", self.who, msg["type"], len(reply))
            reply = pack(
                "reply",
                msg["id"],
                ok=False,
                error=f"the reply to {msg['type']} would be {len(reply)} bytes, beyond the "
                f"bound of {MAX_MESSAGE_BYTES} bytes per message",
            )
        with contextlib.suppress(zmq.ZMQError):  # the client left: nothing to tell
            await sock.send_multipart([identity, reply])

    def _answerable(self, payload: bytes) -> int | None:
        """The id of a message of a known type, not a notification, whose own fields failed
        their checks: its sender waits for an answer. Anything else gets none."""
        try:
            msg = unpack(payload)
        except MessageError:
            return None
        schema = self.vocabulary.get(msg["type"])
        return None if schema is None or schema.notification else msg["id"]
