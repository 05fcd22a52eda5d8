"""Transports: bytes to and from one instrument, with timeouts, framing and reconnects.

Three kinds cover the lab: a raw TCP socket through pyvisa/pyvisa-py (SCPI instruments on port
5025), a serial line through pyserial (lasers, piezo drivers, the sequencer), and a ZeroMQ
REQ socket (the ID Quantique Time Controller, SCPI over ZeroMQ; see ZmqTransport). The first
two:
- time out every read and turn a missing answer into `InstrumentTimeout`;
- treat a connection that went quiet mid-answer as dirty and reconnect before the next call,
  so a late answer can never be taken for the answer to a later question;
- reconnect with bounded exponential back-off when the connection is lost, then retry the
  exchange once (every driver command is an absolute set or a query, so a retry is safe).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import pyvisa
import serial
import zmq
from pyvisa import constants as visa_constants
from pyvisa.resources import MessageBasedResource

from qnode.errors import InstrumentConnectionError, InstrumentReplyError, InstrumentTimeout

T = TypeVar("T")
LARGE_WRITE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential back-off for reconnects."""

    first_s: float = 0.05
    factor: float = 2.0
    max_delay_s: float = 1.0
    budget_s: float = 5.0

    def delays(self) -> Iterator[float]:
        delay, spent = self.first_s, 0.0
        while spent < self.budget_s:
            step = min(delay, self.max_delay_s, self.budget_s - spent)
            yield step
            spent += step
            delay *= self.factor


class Transport(Protocol):
    """What a protocol layer needs from a connection to one instrument."""

    reconnects: int
    """Times the connection was made anew (what the instrument held may be gone since)."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def write(self, message: str) -> None: ...
    def query(self, message: str) -> str: ...
    def write_block(self, message: str, data: bytes) -> None: ...
    def query_block(self, message: str) -> bytes: ...


class _ConnectionLost(Exception):
    """Internal: the peer closed or reset the connection."""


def ieee_header(size: int) -> bytes:
    """IEEE 488.2 definite-length block header: #<digits><length>."""
    length = str(size).encode()
    if len(length) > 9:
        raise ValueError(f"block of {size} bytes is too large for a definite-length header")
    return b"#" + str(len(length)).encode() + length


def ieee_block(data: bytes) -> bytes:
    """IEEE 488.2 definite-length block: #<digits><length><data>."""
    return ieee_header(len(data)) + data


class _ReconnectingTransport:
    """Shared reconnect/timeout policy; subclasses provide the raw I/O."""

    def __init__(self, instrument: str, timeout_s: float, backoff: Backoff) -> None:
        if timeout_s <= 0:
            raise ValueError(f"{instrument}: timeout must be positive, got {timeout_s}")
        self.instrument = instrument
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.reconnects = 0
        self._lock = threading.Lock()
        self._is_open = False
        self._dirty = False

    read_termination: str
    """Set by each subclass: the reply's termination, also after a binary block."""

    # raw I/O, provided by subclasses
    def _connect(self) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _read_exact(self, count: int) -> bytes:
        """Exactly `count` bytes of the reply; TimeoutError if fewer arrive in time."""
        raise NotImplementedError

    def _read_block_reply(self, what: str) -> bytes:
        """An IEEE 488.2 definite-length block reply (`#<digits><length><data>`) and the
        reply's termination after it; the block's data is returned."""
        head = self._read_exact(2)
        if head[:1] != b"#" or not head[1:2].isdigit() or head[1:2] == b"0":
            raise InstrumentReplyError(
                self.instrument, f"reply to {what!r} is not a definite-length block: {head!r}"
            )
        digits = self._read_exact(int(head[1:2]))
        if not digits.isdigit():
            raise InstrumentReplyError(
                self.instrument, f"block header of reply to {what!r} is garbled: {digits!r}"
            )
        block = self._read_exact(int(digits)) if int(digits) else b""
        tail = self._read_exact(len(self.read_termination))
        if tail != self.read_termination.encode():
            raise InstrumentReplyError(
                self.instrument, f"block reply to {what!r} not terminated: {tail!r}"
            )
        return block

    def _peer_closed(self) -> bool:
        """True if the connection is known to be gone (checked without blocking)."""
        return False

    @property
    def is_open(self) -> bool:
        return self._is_open

    def open(self) -> None:
        with self._lock:
            if self._is_open:
                return
            self._connect_with_backoff()
            self._is_open = True

    def close(self) -> None:
        with self._lock:
            if self._is_open:
                self._disconnect()
            self._is_open = False

    def _connect_with_backoff(self) -> None:
        last: Exception | None = None
        try:
            self._connect()
            return
        except (OSError, pyvisa.errors.VisaIOError, serial.SerialException) as e:
            last = e
        for delay in self.backoff.delays():
            time.sleep(delay)
            try:
                self._connect()
                return
            except (OSError, pyvisa.errors.VisaIOError, serial.SerialException) as e:
                last = e
        raise InstrumentConnectionError(
            self.instrument,
            f"cannot connect within {self.backoff.budget_s:g} s of back-off: {last}",
        )

    def _reconnect(self) -> None:
        try:
            self._disconnect()
        except Exception:
            pass
        self.reconnects += 1
        self._connect_with_backoff()
        self._dirty = False

    def _exchange(self, what: str, action: Callable[[], T]) -> T:
        """Run one write or write+read, with the reconnect and timeout policy."""
        with self._lock:
            if not self._is_open:
                raise InstrumentConnectionError(
                    self.instrument, f"not open (while sending {what!r})"
                )
            if self._dirty or self._peer_closed():
                self._reconnect()
            for attempt in (1, 2):
                try:
                    return action()
                except _ConnectionLost:
                    if attempt == 2:
                        raise InstrumentConnectionError(
                            self.instrument, f"connection lost twice while sending {what!r}"
                        ) from None
                    self._reconnect()
                except InstrumentReplyError:
                    self._dirty = True  # the rest of a bad answer may still be on the line
                    raise
                except TimeoutError:
                    self._dirty = True
                    raise InstrumentTimeout(
                        self.instrument, f"no reply to {what!r} within {self.timeout_s:g} s"
                    ) from None
            raise AssertionError("unreachable")


_resource_manager: pyvisa.ResourceManager | None = None
_rm_lock = threading.Lock()


def resource_manager() -> pyvisa.ResourceManager:
    """One pyvisa-py resource manager per process; made anew if someone closed it (pyvisa
    hands every `ResourceManager("@py")` in a process the same session, so another user's
    `close()` closes ours too)."""
    global _resource_manager
    with _rm_lock:
        if _resource_manager is None or not _session_open(_resource_manager):
            _resource_manager = pyvisa.ResourceManager("@py")
        return _resource_manager


def _session_open(manager: pyvisa.ResourceManager) -> bool:
    try:
        manager.session  # noqa: B018 (the property raises once the session is closed)
    except pyvisa.errors.InvalidSession:
        return False
    return True


class VisaSocketTransport(_ReconnectingTransport):
    """SCPI over a raw TCP socket (`TCPIP::host::port::SOCKET`) through pyvisa-py."""

    def __init__(
        self,
        instrument: str,
        resource: str,
        timeout_s: float = 2.0,
        read_termination: str = "\n",
        write_termination: str = "\n",
        backoff: Backoff = Backoff(),
    ) -> None:
        super().__init__(instrument, timeout_s, backoff)
        if not resource.upper().startswith("TCPIP") or not resource.upper().endswith("SOCKET"):
            raise ValueError(
                f"{instrument}: resource {resource!r} is not a TCPIP::host::port::SOCKET resource"
            )
        self.resource = resource
        self.read_termination = read_termination
        self.write_termination = write_termination
        self._res: MessageBasedResource | None = None
        self._sock: socket.socket | None = None

    def _connect(self) -> None:
        rm = resource_manager()
        res = rm.open_resource(
            self.resource,
            open_timeout=int(self.timeout_s * 1000),
            read_termination=self.read_termination,
            write_termination=self.write_termination,
            timeout=int(self.timeout_s * 1000),
        )
        assert isinstance(res, MessageBasedResource)  # a TCPIP SOCKET resource always is
        # the TCP socket under the session (the resource manager is pyvisa-py's, "@py")
        sock: socket.socket = rm.visalib.sessions[res.session].interface  # type: ignore[attr-defined]
        try:
            sock.getpeername()  # pyvisa-py can return a session whose connect was refused
        except OSError:
            res.close()
            raise
        # pyvisa-py leaves Nagle on: ~40 ms per write-then-query without this.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._res, self._sock = res, sock

    def _disconnect(self) -> None:
        res, self._res, self._sock = self._res, None, None
        if res is not None:
            try:
                res.close()
            except Exception:
                pass

    @property
    def _resource(self) -> MessageBasedResource:
        """The open VISA resource; a closed one counts as a lost connection."""
        if self._res is None:
            raise _ConnectionLost()
        return self._res

    def _peer_closed(self) -> bool:
        sock = self._sock
        if sock is None:
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            pending = sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        if pending == b"":
            return True
        # Stale bytes from an earlier answer: the stream is out of step, start afresh.
        return True

    def _write_raw(self, data: bytes) -> None:
        try:
            self._resource.write_raw(data)
        except (OSError, pyvisa.errors.VisaIOError) as e:
            raise _ConnectionLost() from e

    def _read_raw(self) -> bytes:
        try:
            return self._resource.read_raw()
        except pyvisa.errors.VisaIOError as e:
            if e.error_code == visa_constants.StatusCode.error_timeout:
                raise TimeoutError() from e
            raise _ConnectionLost() from e
        except OSError as e:
            raise _ConnectionLost() from e

    def _read_exact(self, count: int) -> bytes:
        try:
            data = self._resource.read_bytes(count, break_on_termchar=False)
        except pyvisa.errors.VisaIOError as e:
            if e.error_code == visa_constants.StatusCode.error_timeout:
                raise TimeoutError() from e
            raise _ConnectionLost() from e
        if len(data) != count:
            raise TimeoutError()
        return data

    def _decode(self, what: str, raw: bytes) -> str:
        term = self.read_termination.encode()
        if not raw.endswith(term):
            raise TimeoutError()
        try:
            return raw[: -len(term)].decode("ascii")
        except UnicodeDecodeError:
            raise InstrumentReplyError(
                self.instrument, f"reply to {what!r} is not ASCII: {raw[:40]!r}"
            ) from None

    def write(self, message: str) -> None:
        data = (message + self.write_termination).encode("ascii")
        self._exchange(message, lambda: self._write_raw(data))

    def query(self, message: str) -> str:
        data = (message + self.write_termination).encode("ascii")

        def action() -> str:
            self._write_raw(data)
            return self._decode(message, self._read_raw())

        return self._exchange(message, action)

    def write_block(self, message: str, data: bytes) -> None:
        head = message.encode("ascii") + ieee_header(len(data))
        tail = self.write_termination.encode()
        self._exchange(message, lambda: self._write_parts(head, data, tail))

    def _write_parts(self, *parts: bytes) -> None:
        """A large write in one `sendall` per part on the session's socket (pyvisa-py's own
        writes go out in 4096-byte slices with a select() each: half the speed for a
        waveform); a small one in one write_raw."""
        sock = self._sock
        if sock is None or sum(len(p) for p in parts) < LARGE_WRITE_BYTES:
            self._write_raw(b"".join(parts))
            return
        try:
            sock.settimeout(self.timeout_s)
            try:
                for part in parts:
                    sock.sendall(part)
            finally:
                sock.settimeout(None)  # back to blocking, as pyvisa-py keeps it
        except TimeoutError:
            raise  # an instrument that stopped reading: the timeout policy's
        except OSError as e:
            raise _ConnectionLost() from e

    def query_block(self, message: str) -> bytes:
        data = (message + self.write_termination).encode("ascii")

        def action() -> bytes:
            self._write_raw(data)
            # Binary data may hold the termination byte: switch it off for the block.
            self._resource.read_termination = None
            try:
                return self._read_block_reply(message)
            finally:
                self._resource.read_termination = self.read_termination

        return self._exchange(message, action)


class SerialTransport(_ReconnectingTransport):
    """ASCII over a serial line (or a pty in the simulated lab) through pyserial."""

    def __init__(
        self,
        instrument: str,
        port: str,
        timeout_s: float = 2.0,
        baudrate: int = 115200,
        read_termination: str = "\r\n",
        write_termination: str = "\r",
        backoff: Backoff = Backoff(),
    ) -> None:
        super().__init__(instrument, timeout_s, backoff)
        self.port = port.removeprefix("ASRL").removesuffix("::INSTR")
        self.baudrate = baudrate
        self.read_termination = read_termination
        self.write_termination = write_termination
        self._serial: serial.Serial | None = None

    def _connect(self) -> None:
        self._serial = serial.Serial(
            self.port,
            self.baudrate,
            timeout=self.timeout_s,
            write_timeout=self.timeout_s,
            exclusive=True,
        )

    def _disconnect(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except Exception:
                pass

    def _peer_closed(self) -> bool:
        return self._serial is None or not self._serial.is_open

    def _reconnect(self) -> None:
        super()._reconnect()
        self._drain_until_quiet()

    def _drain_until_quiet(self, quiet_s: float = 0.05, limit_s: float = 2.0) -> None:
        """After a timeout the rest of a late answer may still be arriving: let it pass."""
        port = self._serial
        if port is None:
            return
        deadline = time.monotonic() + limit_s
        previous_timeout = port.timeout
        port.timeout = quiet_s
        try:
            while time.monotonic() < deadline and port.read(65536):
                pass
        except (serial.SerialException, OSError):
            pass
        finally:
            port.timeout = previous_timeout

    def _io(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except serial.SerialTimeoutException:
            raise TimeoutError() from None
        except (serial.SerialException, OSError) as e:
            raise _ConnectionLost() from e

    @property
    def _port(self) -> serial.Serial:
        """The open serial port; a closed one counts as a lost connection."""
        if self._serial is None:
            raise _ConnectionLost()
        return self._serial

    def _send(self, data: bytes) -> None:
        port = self._port
        # Whatever sits in the input buffer now (a boot banner, a reply that came too late)
        # belongs to no question of ours.
        self._io(port.reset_input_buffer)
        self._io(lambda: port.write(data))
        self._io(port.flush)

    def _read_line(self, what: str) -> str:
        term = self.read_termination.encode()
        port = self._port
        raw: bytes = self._io(lambda: port.read_until(term))
        if not raw.endswith(term):
            raise TimeoutError()
        try:
            return raw[: -len(term)].decode("ascii")
        except UnicodeDecodeError:
            raise InstrumentReplyError(
                self.instrument, f"reply to {what!r} is not ASCII: {raw[:40]!r}"
            ) from None

    def write(self, message: str) -> None:
        data = (message + self.write_termination).encode("ascii")
        self._exchange(message, lambda: self._send(data))

    def query(self, message: str) -> str:
        data = (message + self.write_termination).encode("ascii")

        def action() -> str:
            self._send(data)
            return self._read_line(message)

        return self._exchange(message, action)

    def write_block(self, message: str, data: bytes) -> None:
        payload = message.encode("ascii") + ieee_block(data) + self.write_termination.encode()
        self._exchange(message, lambda: self._send(payload))

    def _read_exact(self, count: int) -> bytes:
        port = self._port
        got: bytes = self._io(lambda: port.read(count))
        if len(got) != count:
            raise TimeoutError()
        return got

    def query_block(self, message: str) -> bytes:
        data = (message + self.write_termination).encode("ascii")

        def action() -> bytes:
            self._send(data)
            return self._read_block_reply(message)

        return self._exchange(message, action)


MAX_ZMQ_REPLY_BYTES = 64 * 1024 * 1024
"""The largest reply a ZeroMQ instrument may send (ZMQ_MAXMSGSIZE): libzmq drops a peer that
sends more before buffering it."""


def split_zmq_resource(resource: str) -> tuple[str, str | None]:
    """`tcp://host:port[,dlt=tcp://host:port]`: the instrument's command endpoint and its
    host's DataLinkTarget (ID Quantique's DLT, port 6060 of the host; None if not given)."""
    main, _, rest = resource.partition(",")
    if rest and not rest.startswith("dlt="):
        raise ValueError(f"resource {resource!r}: {rest!r} is not dlt=tcp://host:port")
    dlt = rest.removeprefix("dlt=") if rest else None
    for endpoint in (main, dlt):
        if endpoint is not None and not endpoint.startswith("tcp://"):
            raise ValueError(f"resource {resource!r}: {endpoint!r} is not a tcp:// endpoint")
    return main, dlt


def free_local_port() -> int:
    """A TCP port nothing listens on now (the OS's pick), for a service on this host to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ZmqPairStream:
    """The receiving end of a ZeroMQ exclusive-pair stream (IDQ's DLT streams timestamps so:
    it binds the port, the client connects, each message a block of data). A message that
    does not come within the timeout is an InstrumentTimeout naming the instrument: a stream
    that stops must not hang its reader. Messages are bounded by MAX_ZMQ_REPLY_BYTES."""

    def __init__(self, instrument: str, endpoint: str, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"{instrument}: timeout must be positive, got {timeout_s}")
        self.instrument = instrument
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._sock: zmq.Socket | None = None

    def open(self) -> None:
        sock: zmq.Socket = zmq.Context.instance().socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_ZMQ_REPLY_BYTES)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            raise InstrumentConnectionError(
                self.instrument, f"cannot connect to the stream {self.endpoint}: {e}"
            ) from e
        self._sock = sock

    def receive(self, what: str) -> bytes:
        """The next message; `what` names the stream in the error."""
        if self._sock is None:
            raise InstrumentConnectionError(self.instrument, f"{what}: the stream is not open")
        try:
            if not self._sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
                raise InstrumentTimeout(
                    self.instrument,
                    f"{what} ({self.endpoint}) sent nothing for {self.timeout_s:g} s",
                )
            return bytes(self._sock.recv(zmq.NOBLOCK))
        except zmq.ZMQError as e:
            raise InstrumentConnectionError(
                self.instrument, f"{what} ({self.endpoint}): ZeroMQ error {e}"
            ) from e

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close(linger=0)


class ZmqTransport:
    """Request/reply over a ZeroMQ REQ socket (SCPI over ZeroMQ, as the ID Quantique Time
    Controller speaks it): every request gets exactly one reply, so there is no framing and
    no termination. The lazy-pirate pattern (ZeroMQ guide, ch. 4): a request unanswered
    within the timeout closes the socket (linger 0, the request dropped) and makes it anew,
    because a REQ socket that waits for a reply can send nothing else; the caller gets
    InstrumentTimeout and the next request goes out on the fresh socket. Replies are bounded
    by MAX_ZMQ_REPLY_BYTES."""

    def __init__(
        self,
        instrument: str,
        endpoint: str,
        timeout_s: float = 2.0,
        max_reply_bytes: int = MAX_ZMQ_REPLY_BYTES,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"{instrument}: timeout must be positive, got {timeout_s}")
        if not endpoint.startswith("tcp://"):
            raise ValueError(f"{instrument}: endpoint {endpoint!r} is not tcp://host:port")
        self.instrument = instrument
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_reply_bytes = max_reply_bytes
        self.reconnects = 0
        self._lock = threading.Lock()
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._connected_before = False

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def _new_socket(self) -> zmq.Socket:
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_reply_bytes)
        sock.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))
        # libzmq reconnects a lost TCP connection by itself: its monitor tells us it did
        self._monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED)
        self._connected_before = False
        sock.connect(self.endpoint)
        return sock

    def _close_socket(self) -> None:
        sock, monitor, self._sock, self._monitor = self._sock, self._monitor, None, None
        if sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            sock.close(linger=0)
        if monitor is not None:
            monitor.close(linger=0)

    def _count_reconnects(self) -> None:
        """Connections made since the last look, beyond the socket's first: reconnects (the
        instrument's end was closed; what it held may be gone)."""
        monitor = self._monitor
        if monitor is None:
            return
        while monitor.poll(0):
            with contextlib.suppress(zmq.ZMQError):
                monitor.recv_multipart(zmq.NOBLOCK)
            if self._connected_before:
                self.reconnects += 1
            self._connected_before = True

    def open(self) -> None:
        with self._lock:
            if self._sock is not None:
                return
            self._ctx = zmq.Context.instance()
            try:
                self._sock = self._new_socket()
            except zmq.ZMQError as e:
                raise InstrumentConnectionError(
                    self.instrument, f"cannot connect to {self.endpoint}: {e}"
                ) from e

    def close(self) -> None:
        with self._lock:
            self._close_socket()

    def request(self, message: bytes, what: str) -> bytes:
        """One request, its one reply (a single frame)."""
        with self._lock:
            if self._sock is None:
                raise InstrumentConnectionError(
                    self.instrument, f"not open (while sending {what!r})"
                )
            sock = self._sock
            try:
                sock.send(message)
                if not sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
                    raise TimeoutError()
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except (TimeoutError, zmq.Again):
                self._renew()
                raise InstrumentTimeout(
                    self.instrument, f"no reply to {what!r} within {self.timeout_s:g} s"
                ) from None
            except zmq.ZMQError as e:
                self._renew()
                raise InstrumentConnectionError(
                    self.instrument, f"ZeroMQ error while sending {what!r}: {e}"
                ) from e
            self._count_reconnects()
            if len(frames) != 1:
                raise InstrumentReplyError(
                    self.instrument, f"reply to {what!r} has {len(frames)} frames, not 1"
                )
            return bytes(frames[0])

    def _renew(self) -> None:
        """Lazy pirate: the REQ socket is stuck waiting; close it and make another."""
        self._close_socket()
        self._sock = self._new_socket()
        self.reconnects += 1

    def query(self, message: str) -> str:
        reply = self.request(message.encode("ascii"), message)
        try:
            return reply.decode("ascii")
        except UnicodeDecodeError:
            raise InstrumentReplyError(
                self.instrument, f"reply to {message!r} is not ASCII: {reply[:40]!r}"
            ) from None

    def write(self, message: str) -> None:
        """A set: its reply must be empty (anything else, e.g. an inline error, raises)."""
        reply = self.query(message)
        if reply:
            raise InstrumentReplyError(
                self.instrument, f"{message!r} answered {reply[:80]!r} (expected nothing)"
            )

    def write_block(self, message: str, data: bytes) -> None:
        reply = self.request(message.encode("ascii") + ieee_block(data), message)
        if reply:
            raise InstrumentReplyError(
                self.instrument, f"{message!r} answered {reply[:80]!r} (expected nothing)"
            )

    def query_block(self, message: str) -> bytes:
        """A reply that is one IEEE 488.2 definite-length block; its data."""
        reply = self.request(message.encode("ascii"), message)
        if reply[:1] != b"#" or not reply[1:2].isdigit() or reply[1:2] == b"0":
            raise InstrumentReplyError(
                self.instrument,
                f"reply to {message!r} is not a definite-length block: {reply[:20]!r}",
            )
        digits = int(reply[1:2])
        length_text = reply[2 : 2 + digits]
        if not length_text.isdigit() or len(reply) != 2 + digits + int(length_text):
            raise InstrumentReplyError(
                self.instrument,
                f"block reply to {message!r}: header {reply[: 2 + digits]!r} does not match "
                f"its {len(reply)} bytes",
            )
        return reply[2 + digits :]
