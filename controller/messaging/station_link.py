"""A station's DEALER to another station's ROUTER (a node to the midpoint, or to its peer).

The node's station key, so the other side knows who speaks (by the key, never by a routing
id: the DEALER takes the one the other side's ROUTER gives it); linger 0; one reader task
that hands replies to their requests (by id) and every other message (heralds, heartbeats,
peer checks) to a handler. A malformed message is counted and dropped. A station that
restarts serves on a new port with a new info file: `refresh` (before every request, and
from the session's heartbeat tick) notices it and reconnects, so the fire-and-forget path of
the pair messages does no file I/O. That path sends on the connection as it was last
refreshed, so whoever opens a session refreshes its links first: the responder of a
`link_request` refreshes its link to the initiator (which may have restarted since the two
last spoke) before its first pair message or `round_done`. An idempotent request that goes
unanswered is asked once more on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio

from controller.labconfig import dial_endpoint
from controller.messaging.curve import client_socket
from controller.messaging.keys import node_keys
from controller.messaging.serving import node_info_path, read_info
from controller.messaging.wire import REPLY, MessageError, Vocabulary, pack, unpack
from qnode.errors import QnodeError

log = logging.getLogger("qnode.link")


class StationUnavailable(QnodeError):
    pass


class StationLink:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        data_dir: Path,
        node: str,
        target: str,
        on_message: Callable[[dict], None],
        accepted: Vocabulary,
    ) -> None:
        self.ctx = ctx
        self.data_dir = data_dir
        self.node = node
        self.target = target
        self.on_message = on_message
        self.accepted = {**accepted, "reply": REPLY}
        self.malformed = 0
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self.endpoint = ""
        self._info_stamp: tuple | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Connect (again) to the station's current endpoint, from its info file."""
        self.close()
        self._info_stamp = self._stamp()
        info = read_info(self.data_dir, self.target)
        _, secret = node_keys(self.data_dir, self.node)
        # no chosen routing id: the station is known by its key, and another client that
        # took a routing id first could otherwise keep this one from connecting
        sock = client_socket(self.ctx, zmq.DEALER, secret, Path(info["server_public_key"]))
        sock.connect(dial_endpoint(self.target, info["endpoint"]))
        self.endpoint = info["endpoint"]
        self._sock = sock
        self._reader = asyncio.get_running_loop().create_task(self._read(sock))

    def _stamp(self) -> tuple | None:
        try:
            st = node_info_path(self.data_dir, self.target).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def refresh(self) -> None:
        """Connected, and to the station as it serves now (it may have restarted)."""
        if self._sock is None:
            self.connect()
            return
        stamp = self._stamp()
        if stamp is None or stamp == self._info_stamp:
            return  # unchanged, or the station is down: keep the socket until it is back
        try:
            info = read_info(self.data_dir, self.target)
        except QnodeError:
            return  # being written: next time
        if info.get("endpoint") != self.endpoint:
            log.warning(
                "%s: %s restarted at %s: reconnecting", self.node, self.target, info.get("endpoint")
            )
            self.connect()
        else:
            self._info_stamp = stamp

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(StationUnavailable(f"link to {self.target} closed"))
        self._waiting.clear()

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            data = await sock.recv()
            try:
                msg = unpack(data, self.accepted)
            except MessageError as e:
                self.malformed += 1
                log.warning("%s: malformed message from %s dropped (%s)", self.node, self.target, e)
                continue
            if msg["type"] == "reply":
                future = self._waiting.pop(msg["id"], None)
                if future is not None and not future.done():
                    future.set_result(msg)
                continue
            try:
                self.on_message(msg)
            except MessageError as e:
                self.malformed += 1
                log.warning(
                    "%s: bad %s from %s dropped (%s)", self.node, msg["type"], self.target, e
                )
            except Exception:
                log.exception("%s: handling %s from %s", self.node, msg["type"], self.target)

    def _connected(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        return self._sock

    def send(self, kind: str, **fields) -> None:
        """Fire and forget (a peer check, a heartbeat): never blocks the loop."""
        sock = self._connected()
        with contextlib.suppress(zmq.Again):
            sock.send(pack(kind, next(self._ids), **fields), flags=zmq.NOBLOCK)

    async def request(
        self, kind: str, timeout_s: float = 10.0, idempotent: bool = False, **fields
    ) -> dict:
        """Ask and wait for the answer (StationUnavailable after `timeout_s`; QnodeError with
        the station's reason if it refuses). An `idempotent` request (one that changes
        nothing when it arrives twice) that goes unanswered is asked once more on a fresh
        connection: the station may have restarted where this link has not looked yet."""
        try:
            return await self._ask(kind, timeout_s, fields)
        except StationUnavailable:
            if not idempotent:
                raise
        log.warning(
            "%s: %s did not answer %s: reconnecting and asking once more",
            self.node,
            self.target,
            kind,
        )
        if self._waiting:  # others wait on this connection: look for a move, keep it
            self.refresh()
        else:
            with contextlib.suppress(QnodeError):
                self.connect()
        return await self._ask(kind, timeout_s, fields)

    async def _ask(self, kind: str, timeout_s: float, fields: dict) -> dict:
        self.refresh()
        msg_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = future
        await self._connected().send(pack(kind, msg_id, **fields))
        try:
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self._waiting.pop(msg_id, None)
            raise StationUnavailable(
                f"{self.target} did not answer {kind} within {timeout_s:g} s"
            ) from None
        if not reply.get("ok"):
            raise QnodeError(f"{self.target} refused {kind}: {reply.get('error', '?')}")
        return reply


class StationDialer:
    """Opens this station's links to the others of the lab (its key, its context)."""

    def __init__(self, ctx: zmq.asyncio.Context, data_dir: Path, node: str) -> None:
        self.ctx = ctx
        self.data_dir = data_dir
        self.node = node

    def dial(
        self, target: str, on_message: Callable[[dict], None], accepted: Vocabulary
    ) -> StationLink:
        """A link to `target`: `accepted` are the message types it may send besides replies
        (checked against their schemas; anything else is counted as malformed)."""
        return StationLink(self.ctx, self.data_dir, self.node, target, on_message, accepted)
