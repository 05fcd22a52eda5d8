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
