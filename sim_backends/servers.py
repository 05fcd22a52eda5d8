"""Serve a simulated device over TCP (127.0.0.1, ephemeral port) or a pty, with its faults.

Faults act between the device and the wire: a frozen device swallows commands, a garbled
reply is replaced by junk of the same length, a drop closes every connection, a reset (serial)
returns the device to power-on state and prints a boot banner, a delay holds each reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tty

import zmq
import zmq.asyncio

from sim_backends.datalink import DltServer
from sim_backends.device import Device, LoggedCommand
from sim_backends.framing import Framer, FramingError, Message

GARBLE = b"?#!garbled~%&"
BOOT_BANNER = b"\r\n*** power-on reset ***\r\n"


def ieee_block(data: bytes) -> bytes:
    length = str(len(data)).encode()
    return b"#" + str(len(length)).encode() + length + data


def encode_reply(device: Device, reply: str | bytes) -> bytes:
    if isinstance(reply, bytes):
        return ieee_block(reply) + device.reply_terminator
    return reply.encode("latin-1") + device.reply_terminator


def garble(data: bytes, terminator: bytes) -> bytes:
    body_len = max(len(data) - len(terminator), 1)
    junk = (GARBLE * (body_len // len(GARBLE) + 1))[:body_len]
    return junk + terminator


async def respond(device: Device, message: Message | FramingError, send) -> None:
    if isinstance(message, FramingError):
        device.queue_error(-100, f"Command error: {message}")
        return
    if device.faults.frozen:
        device.log.append(LoggedCommand(0.0, f"(frozen, ignored) {message.text}", None))
        return
    reply = device.execute(message)
    if reply is None:
        return
    data = encode_reply(device, reply)
    if device.faults.garble_next > 0:
        device.faults.garble_next -= 1
        data = garble(data, device.reply_terminator)
    if device.faults.delay_s > 0:
        await asyncio.sleep(device.faults.delay_s)
    send(data)


class TcpServer:
    def __init__(self, device: Device, host: str = "127.0.0.1", port: int = 0) -> None:
        self.device = device
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        device.on_drop.append(self.drop_connections)
        device.on_unplug.append(self.unplug)
        device.on_plug.append(self.plug)

    @property
    def resource(self) -> str:
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.drop_connections()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def unplug(self) -> None:
        """Power off: connections gone, nothing listens on the port until plug()."""
        self.drop_connections()
        if self._server is not None:
            self._server.close()
            self._server = None

    def plug(self) -> None:
        if self._server is None:
            asyncio.get_running_loop().create_task(self.start())

    def drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writers.add(writer)
        framer = Framer(self.device.terminator, self.device.allow_blocks)
        try:
            while data := await reader.read(1 << 16):
                for message in framer.feed(data):
                    await respond(self.device, message, writer.write)
                    if writer.transport.is_closing():
                        return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


class PtyServer:
    """A serial device on a pseudo-terminal; the driver opens `resource` with pyserial."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self._master = self._slave = -1
        self.resource = ""
        self._out = bytearray()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._framer = Framer(device.terminator, device.allow_blocks)
        device.on_reset.append(self._reset)

    async def start(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: bytes pass as they are
        os.set_blocking(self._master, False)
        self.resource = os.ttyname(self._slave)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._master, self._readable)
        self._worker = loop.create_task(self._work())

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            loop.remove_reader(self._master)
            loop.remove_writer(self._master)
        if self._worker is not None:
            self._worker.cancel()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        for message in self._framer.feed(data):
            self._queue.put_nowait(message)

    async def _work(self) -> None:
        while True:
            message = await self._queue.get()
            await respond(self.device, message, self._send)

    def _send(self, data: bytes) -> None:
        self._out += data
        self._flush()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except BlockingIOError:
                loop.add_writer(self._master, self._flush)
                return
            except OSError:
                self._out.clear()
                return
            del self._out[:n]
        loop.remove_writer(self._master)

    def _reset(self) -> None:
        self._framer.reset()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._out.clear()
        self.device.reset_state()
        self._send(BOOT_BANNER)


MAX_ZMQ_REQUEST_BYTES = 4096
"""A SCPI request longer than this is answered with an inline error (a reply to every
request: REQ/REP would deadlock otherwise)."""
MAX_ZMQ_FRAME_BYTES = 64 * 1024
"""ZMQ_MAXMSGSIZE: libzmq drops a peer that sends more, before anything is buffered."""


class ZmqServer:
    """A device served as the ID Quantique Time Controller is: SCPI text over ZeroMQ, one
    reply per request (an empty one to a set; errors inline), on 127.0.0.1.

    The socket is a ROUTER speaking the REQ/REP envelope, so that a request the device
    swallows (frozen, dropped) leaves the server free to answer the next one, from the same
    client or from a new REQ socket the client made after its timeout (lazy pirate). The
    host's DataLinkTarget (`dlt`, the time tags' way out) is named in the resource string; it
    is host software, so the instrument's faults (drop, unplug) leave it alone."""

    def __init__(self, device: Device, dlt: DltServer | None = None) -> None:
        self.device = device
        self.dlt = dlt
        self.host = "127.0.0.1"
        self.port = 0
        self._ctx = zmq.asyncio.Context.instance()
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        device.on_drop.append(self.drop_connections)
        device.on_unplug.append(self.unplug)
        device.on_plug.append(lambda: asyncio.get_running_loop().create_task(self._rebind()))

    @property
    def resource(self) -> str:
        main = f"tcp://{self.host}:{self.port}"
        return f"{main},dlt={self.dlt.endpoint}" if self.dlt is not None else main

    async def start(self) -> None:
        self.port = self._bind("scpi", self.port)
        if self.dlt is not None:
            await self.dlt.start()

    def _bind(self, which: str, port: int) -> int:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_ZMQ_FRAME_BYTES)
        if port:
            sock.bind(f"tcp://{self.host}:{port}")
        else:
            port = sock.bind_to_random_port(f"tcp://{self.host}")
        self._sockets[which] = sock
        self._tasks[which] = asyncio.get_running_loop().create_task(self._serve_scpi(sock))
        return port

    def _close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._tasks.clear()
        self._sockets.clear()

    async def stop(self) -> None:
        self._close()
        if self.dlt is not None:
            await self.dlt.stop()

    def drop_connections(self) -> None:
        """Every connection closed (pending requests lost); the ports listen again at once,
        as an instrument whose network stack restarted."""
        self._close()
        asyncio.get_running_loop().create_task(self._rebind())

    async def _rebind(self, attempts: int = 100) -> None:
        """Bind the same ports again; libzmq releases a closed socket's port in its own
        thread, a moment later."""
        for _ in range(attempts):
            try:
                self.plug()
                return
            except zmq.ZMQError:
                self._close()
                await asyncio.sleep(0.01)

    def unplug(self) -> None:
        self._close()

    def plug(self) -> None:
        if not self._sockets:
            self.port = self._bind("scpi", self.port)

    @staticmethod
    def _envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]] | None:
        """(routing envelope incl. the empty delimiter, body frames) of a REQ's message."""
        if b"" not in frames[1:]:
            return None
        cut = frames.index(b"", 1) + 1
        return frames[:cut], frames[cut:]

    async def _serve_scpi(self, sock: zmq.asyncio.Socket) -> None:
        device = self.device
        with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
            while True:
                frames = await sock.recv_multipart()
                split = self._envelope(frames)
                if split is None:
                    continue  # not a REQ: nothing to answer to
                envelope, body = split
                reply = self._answer(body)
                if reply is None:
                    continue
                if device.faults.garble_next > 0:
                    device.faults.garble_next -= 1
                    reply = garble(reply + b"\n", b"\n")[:-1] if reply else GARBLE
                if device.faults.delay_s > 0:
                    await asyncio.sleep(device.faults.delay_s)
                await sock.send_multipart([*envelope, reply])

    def _answer(self, body: list[bytes]) -> bytes | None:
        """The reply to one request (None: the frozen device swallows it)."""
        device = self.device
        text = b"".join(body)
        if device.faults.frozen:
            device.log.append(LoggedCommand(0.0, f"(frozen, ignored) {text[:60]!r}", None))
            return None
        if len(body) != 1 or len(text) > MAX_ZMQ_REQUEST_BYTES:
            why = f"Too much data: {len(text)} bytes in {len(body)} frames"
            device.queue_error(-223, why)
            limit = f"a request is one frame of at most {MAX_ZMQ_REQUEST_BYTES} bytes"
            return f"SCPI_ERR_-223: {why} ({limit})".encode()
        try:
            command = text.decode("ascii").strip()
        except UnicodeDecodeError:
            device.queue_error(-101, "Invalid character: the request is not ASCII")
            return b"SCPI_ERR_-101: Invalid character: the request is not ASCII"
        reply = device.execute(Message(command, None)) if command else ""
        if isinstance(reply, bytes):
            return reply
        return (reply or "").encode("latin-1")
