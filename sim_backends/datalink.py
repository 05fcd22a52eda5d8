"""Simulated ID Quantique DataLinkTarget (DLT): the host service that receives a Time
Controller's timestamps, beside the simulated Time Controller as IDQ's DLT binary runs beside
a real one.

Followed: ID Quantique, "Time Controller Series User Manual", section 10 (Appendix: DLT
Command Reference): text commands over ZeroMQ (REQ/REP; the real service listens on port 6060
of the host, here on an ephemeral port of 127.0.0.1), every answer JSON, a failure
`{"error":{"description":"..."}}`; `start-save`, `start-stream` (timestamps over a ZeroMQ
exclusive PAIR socket bound on `--stream-port`), `stop` (answers `{"status": {...}}`), `list`,
`status` (acquisitions_count, errors, inactivity, timestamps_count). Section 6.3.4 gives the
data: little-endian uint64 timestamps, each followed by its uint64 reference index with
`--with-ref-index`. `--format bin|ascii` of start-save and the empty message that ends a
stream come from IDQ's Python examples (their StreamClient stops at an empty message), not
from the manual. The texts of error descriptions other than the manual's "unrecognised option"
are the simulator's own.

Bounds: a request is one frame of at most MAX_REQUEST_BYTES; a stream message carries at most
TIMESTAMPS_PER_MESSAGE timestamps (so a recording arrives in as many messages as it needs);
at most MAX_ACQUISITIONS are open at once; start-save writes only under the lab's state folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq
import zmq.asyncio

from sim_backends.instruments.tagger import INPUTS, SimTimeController

DLT_DEFAULT_PORT = 6060
MAX_REQUEST_BYTES = 4096
TIMESTAMPS_PER_MESSAGE = 65_536
"""Timestamps per stream message (1 MiB with reference indexes): bounded whatever was recorded."""
MAX_ACQUISITIONS = 32
MAX_QUEUED_BYTES = 256 * 1024 * 1024
"""A stream whose client does not read holds at most this much; what comes beyond is lost and
reported in the acquisition's errors (as a real DLT reports lost timestamps)."""
STREAM_DRAIN_S = 10.0
"""After `stop`, how long a stream may take to hand its last messages to a slow client."""
ALLOWED_OPTIONS = {
    "start-stream": {"--id", "--address", "--channel", "--stream-port", "--with-ref-index"},
    "start-save": {"--id", "--address", "--channel", "--filename", "--with-ref-index", "--format"},
    "stop": {"--id"},
    "status": {"--id"},
    "list": set(),
}
FLAGS = {"--with-ref-index"}


class DltError(Exception):
    """A command that fails: answered as the manual's error object."""


@dataclass
class Acquisition:
    id: str
    channel: int
    with_ref_index: bool
    opened: float = field(default_factory=time.monotonic)
    last_message: float | None = None
    acquisitions_count: int = 0
    timestamps_count: int = 0
    errors: list[dict] = field(default_factory=list)
    stream: zmq.asyncio.Socket | None = None
    stream_port: int = 0
    queue: asyncio.Queue | None = None
    sender: asyncio.Task | None = None
    file: Path | None = None
    text_format: bool = False
    queued_bytes: int = 0

    def status(self) -> dict:
        since = self.last_message if self.last_message is not None else self.opened
        return {
            "acquisitions_count": self.acquisitions_count,
            "errors": list(self.errors),
            "inactivity": round(time.monotonic() - since, 6),
            "timestamps_count": self.timestamps_count,
        }

    def payload(self, pairs: np.ndarray) -> bytes:
        """Section 6.3.4's binary layout: uint64 timestamps (little-endian), each followed by
        its uint64 reference index with --with-ref-index."""
        data = pairs if self.with_ref_index else pairs[:, 0]
        return np.ascontiguousarray(data, dtype="<u8").tobytes()

    def text(self, pairs: np.ndarray) -> str:
        """Section 6.3.4's text layout: `<timestamp>` or `<timestamp>;<index>` per line."""
        if self.with_ref_index:
            return "".join(f"{t};{i}\n" for t, i in pairs.tolist())
        return "".join(f"{t}\n" for t in pairs[:, 0].tolist())


def parse_options(command: str, words: list[str]) -> dict[str, str | bool]:
    """`--name value` pairs and the flags, each option known to `command`."""
    allowed = ALLOWED_OPTIONS[command]
    options: dict[str, str | bool] = {}
    k = 0
    while k < len(words):
        word = words[k]
        if word not in allowed:
            raise DltError(f"unrecognised option '{word}'")
        if word in FLAGS:
            options[word] = True
            k += 1
            continue
        if k + 1 >= len(words) or words[k + 1].startswith("--"):
            raise DltError(f"the required argument for option '{word}' is missing")
        options[word] = words[k + 1]
        k += 2
    return options


class DataLinkTarget:
    """The DLT's commands and acquisitions for the Time Controller(s) it serves (by address)."""

    def __init__(
        self,
        controllers: dict[str, SimTimeController],
        state_dir: Path,
        host: str = "127.0.0.1",
    ) -> None:
        self.controllers = controllers
        self.save_dir = state_dir / "dlt"
        self.host = host
        self.acquisitions: dict[str, Acquisition] = {}
        self._ctx = zmq.asyncio.Context.instance()
        for address, controller in controllers.items():
            controller.tag_sinks.append(
                lambda ch, pairs, address=address: self.receive(address, ch, pairs)
            )
        self._sources: dict[str, str] = {}
        """acquisition id -> the Time Controller address it listens to"""

    # commands -----------------------------------------------------------------------------------
    def answer(self, text: str) -> str:
        """One command's JSON answer."""
        try:
            reply: object = self._run(text)
        except DltError as e:
            reply = {"error": {"description": str(e)}}
        return json.dumps(reply)

    def _run(self, text: str) -> object:
        try:
            words = shlex.split(text)
        except ValueError as e:
            raise DltError(f"the command line cannot be parsed: {e}") from None
        if not words:
            raise DltError("empty command")
        command, rest = words[0], words[1:]
        if command not in ALLOWED_OPTIONS:
            raise DltError(f"unknown command '{command[:40]}'")
        options = parse_options(command, rest)
        if command == "list":
            return list(self.acquisitions)
        if command in ("status", "stop"):
            acquisition = self._find(options)
            self._settle(acquisition.id)
            if command == "status":
                return acquisition.status()
            return {"status": self._stop(acquisition)}
        return {"id": self._start(command, options)}

    def _find(self, options: dict[str, str | bool]) -> Acquisition:
        ident = options.get("--id")
        if not isinstance(ident, str):
            raise DltError("the option '--id' is required but missing")
        if ident not in self.acquisitions:
            raise DltError(f"no opened acquisition with id '{ident[:60]}'")
        return self.acquisitions[ident]

    def _settle(self, ident: str) -> None:
        controller = self.controllers.get(self._sources.get(ident, ""))
        if controller is not None:
            controller.settle()

    def _start(self, command: str, options: dict[str, str | bool]) -> str:
        for required in ("--address", "--channel") + (
            ("--stream-port",) if command == "start-stream" else ("--filename",)
        ):
            if not isinstance(options.get(required), str):
                raise DltError(f"the option '{required}' is required but missing")
        address = str(options["--address"])
        if address not in self.controllers:
            raise DltError(f"no Time Controller answers at address '{address[:60]}'")
        try:
            channel = int(str(options["--channel"]))
        except ValueError:
            raise DltError(f"channel '{options['--channel']}' is not a number") from None
        if channel not in INPUTS:
            raise DltError(f"channel {channel} does not exist (1 to 4)")
        if len(self.acquisitions) >= MAX_ACQUISITIONS:
            raise DltError(f"too many opened acquisitions (at most {MAX_ACQUISITIONS})")
        ident = str(options.get("--id") or self._new_id(address, channel))
        if ident in self.acquisitions:
            raise DltError(f"an acquisition with id '{ident[:60]}' is already opened")
        acquisition = Acquisition(ident, channel, bool(options.get("--with-ref-index")))
        if command == "start-stream":
            self._open_stream(acquisition, str(options["--stream-port"]))
        else:
            self._open_file(acquisition, str(options["--filename"]), options.get("--format"))
        self.acquisitions[ident] = acquisition
        self._sources[ident] = address
        return ident

    def _new_id(self, address: str, channel: int) -> str:
        """As the manual's examples: `<address>:<port>`, a port per channel (5556 for 1)."""
        port = 5555 + channel
        while f"{address}:{port}" in self.acquisitions:
            port += len(INPUTS)
        return f"{address}:{port}"

    def _open_stream(self, acquisition: Acquisition, port_text: str) -> None:
        try:
            port = int(port_text)
        except ValueError:
            raise DltError(f"stream port '{port_text[:20]}' is not a number") from None
        if not 1 <= port <= 65535:
            raise DltError(f"stream port {port} is out of range (1 to 65535)")
        sock = self._ctx.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(f"tcp://{self.host}:{port}")
        except zmq.ZMQError as e:
            sock.close(linger=0)
            raise DltError(f"cannot listen on stream port {port}: {e}") from None
        acquisition.stream, acquisition.stream_port = sock, port
        acquisition.queue = asyncio.Queue()
        acquisition.sender = asyncio.get_running_loop().create_task(self._send(acquisition))

    def _open_file(self, acquisition: Acquisition, filename: str, fmt: object) -> None:
        """A relative path lands in the DLT's folder (the lab's state folder/dlt); a path
        that leaves it is refused (the simulator writes nowhere else)."""
        if fmt not in (None, "bin", "ascii"):
            raise DltError(f"format '{str(fmt)[:20]}' is neither bin nor ascii")
        path = Path(filename)
        target = (self.save_dir / path).resolve()
        if path.is_absolute() or self.save_dir.resolve() not in target.parents:
            raise DltError(f"the simulated DLT saves only under its folder: '{filename[:80]}'")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
        acquisition.file, acquisition.text_format = target, fmt == "ascii"

    def _stop(self, acquisition: Acquisition) -> dict:
        """Close it: the stream gets its queued messages, then an empty one, then closes."""
        del self.acquisitions[acquisition.id]
        self._sources.pop(acquisition.id, None)
        if acquisition.queue is not None:
            acquisition.queue.put_nowait(None)
        return acquisition.status()

    # timestamps from the Time Controller ----------------------------------------------------
    def receive(self, address: str, channel: int, pairs: np.ndarray) -> None:
        """The end of a recording on `channel`: each acquisition of it counts one more and
        passes the timestamps on, message by bounded message."""
        for ident, acquisition in list(self.acquisitions.items()):
            if self._sources.get(ident) != address or acquisition.channel != channel:
                continue
            acquisition.acquisitions_count += 1
            acquisition.timestamps_count += len(pairs)
            acquisition.last_message = time.monotonic()
            for start in range(0, len(pairs), TIMESTAMPS_PER_MESSAGE):
                part = pairs[start : start + TIMESTAMPS_PER_MESSAGE]
                if acquisition.queue is not None:
                    self._queue(acquisition, acquisition.payload(part), len(part))
                elif acquisition.file is not None:
                    self._append(acquisition, part)

    @staticmethod
    def _queue(acquisition: Acquisition, message: bytes, timestamps: int) -> None:
        assert acquisition.queue is not None
        if acquisition.queued_bytes + len(message) > MAX_QUEUED_BYTES:
            acquisition.errors.append(
                {"description": f"stream buffer full: {timestamps} timestamps lost"}
            )
            return
        acquisition.queued_bytes += len(message)
        acquisition.queue.put_nowait(message)

    def _append(self, acquisition: Acquisition, pairs: np.ndarray) -> None:
        assert acquisition.file is not None
        try:
            if acquisition.text_format:
                with acquisition.file.open("a") as f:
                    f.write(acquisition.text(pairs))
            else:
                with acquisition.file.open("ab") as f:
                    f.write(acquisition.payload(pairs))
        except OSError as e:
            acquisition.errors.append({"description": f"cannot write the file: {e}"})

    async def _send(self, acquisition: Acquisition) -> None:
        """The stream: messages in order; after `stop`, the rest and an empty message, within
        STREAM_DRAIN_S (a client that never reads cannot hold the DLT)."""
        assert acquisition.queue is not None and acquisition.stream is not None
        sock, queue = acquisition.stream, acquisition.queue
        stopped_at: float | None = None
        with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError, TimeoutError):
            while True:
                message = await queue.get()
                if message is None:
                    stopped_at = time.monotonic()
                    message = b""
                acquisition.queued_bytes -= len(message)
                if stopped_at is None:
                    await sock.send(message)
                else:
                    left = STREAM_DRAIN_S - (time.monotonic() - stopped_at)
                    await asyncio.wait_for(sock.send(message), max(left, 0.001))
                if stopped_at is not None and message == b"":
                    break
        # sent means queued, not yet on the wire: a linger of 0 would drop the last messages
        # (the empty one too) under load; the rest of the drain time bounds it
        left_s = (
            STREAM_DRAIN_S
            if stopped_at is None
            else STREAM_DRAIN_S - (time.monotonic() - stopped_at)
        )
        sock.close(linger=int(1000 * max(left_s, 0.0)))

    async def close(self) -> None:
        """The service ends: every stream closes at once."""
        for acquisition in list(self.acquisitions.values()):
            self._stop(acquisition)
            if acquisition.sender is not None:
                acquisition.sender.cancel()
            if acquisition.stream is not None:
                acquisition.stream.close(linger=0)


class DltServer:
    """The DLT's command socket: a ROUTER speaking the REQ/REP envelope, one JSON answer per
    request."""

    def __init__(self, dlt: DataLinkTarget) -> None:
        self.dlt = dlt
        self.host = dlt.host
        self.port = 0
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    async def start(self) -> None:
        sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
        self.port = sock.bind_to_random_port(f"tcp://{self.host}")
        self._sock = sock
        self._task = asyncio.get_running_loop().create_task(self._serve(sock))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = self._task = None
        await self.dlt.close()

    async def _serve(self, sock: zmq.asyncio.Socket) -> None:
        with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
            while True:
                frames = await sock.recv_multipart()
                if b"" not in frames[1:]:
                    continue  # not a REQ: nothing to answer to
                cut = frames.index(b"", 1) + 1
                envelope, body = frames[:cut], frames[cut:]
                await sock.send_multipart([*envelope, self._answer(body).encode()])

    def _answer(self, body: list[bytes]) -> str:
        text = b"".join(body)
        if len(body) != 1 or len(text) > MAX_REQUEST_BYTES:
            why = f"a command is one frame of at most {MAX_REQUEST_BYTES} bytes"
            return json.dumps({"error": {"description": why}})
        try:
            command = text.decode("utf-8")
        except UnicodeDecodeError:
            return json.dumps({"error": {"description": "the command is not UTF-8 text"}})
        return self.dlt.answer(command)
