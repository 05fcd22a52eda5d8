"""The instrument side: a simulated device, its command table, error queue, log and faults.

A device turns one framed command into a reply (or none). Servers (TCP or pty) own the bytes;
faults (freeze, garble, drop, reset, delay) sit between the two, as a flaky box would.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sim_backends.framing import Message


class CommandError(Exception):
    """A SCPI error to queue: code and message as `SYST:ERR?` reports them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def scpi_pattern(spec: str) -> re.Pattern:
    """'SOURce#:FREQuency[:CW]' -> regex accepting long/short forms, '#' a numeric suffix."""
    out = []
    spec = re.sub(r"\[([^\]]+)\]:", r"[\1:]", spec)  # an optional node owns its colon
    tokens = re.findall(r"\[|\]|:|[A-Za-z*]+#?|\?", spec)
    for tok in tokens:
        if tok == "[":
            out.append("(?:")
        elif tok == "]":
            out.append(")?")
        elif tok == ":":
            out.append(":")
        elif tok == "?":
            out.append(r"\?")
        else:
            suffix = tok.endswith("#")
            word = tok.rstrip("#")
            short = "".join(c for c in word if c.isupper() or c == "*")
            rest = word[len(short) :]
            part = re.escape(short) + (f"(?:{re.escape(rest.upper())})?" if rest else "")
            out.append(part + (r"(\d*)" if suffix else ""))
    return re.compile(r":?" + "".join(out), re.IGNORECASE)


Handler = Callable[..., "str | bytes | None"]


@dataclass
class Faults:
    frozen: bool = False
    garble_next: int = 0
    delay_s: float = 0.0
    drops: int = 0
    resets: int = 0


@dataclass
class LoggedCommand:
    time: float
    text: str
    block_bytes: int | None = None


class Device:
    """A simulated instrument; subclasses add commands in `setup()`."""

    terminator: bytes = b"\n"
    reply_terminator: bytes = b"\n"
    allow_blocks: bool = True
    identity: str = "QNODE-SIM,DEVICE,0,1.0"
    scpi_headers: bool = True
    """False for ASCII dialects (Cobolt, MDT): headers then match literally, case-insensitive."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.faults = Faults()
        self.log: list[LoggedCommand] = []
        self.errors: deque = deque(maxlen=32)
        self.on_drop: list[Callable[[], None]] = []
        self.on_reset: list[Callable[[], None]] = []
        self.on_unplug: list[Callable[[], None]] = []
        self.on_plug: list[Callable[[], None]] = []
        self._commands: list[tuple[re.Pattern, Handler]] = []
        self.add("*IDN?", lambda args, *s: self.identity)
        self.add("*RST", lambda args, *s: self.reset_state())
        self.add("*CLS", lambda args, *s: self.errors.clear())
        self.add("*OPC?", lambda args, *s: "1")
        self.add("SYSTem:ERRor[:NEXT]?", lambda args, *s: self._next_error())
        self.setup()
        self.reset_state()

    # to override ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Register commands."""

    def reset_state(self) -> None:
        """Power-on state (also what a serial reset fault does)."""

    def state(self) -> dict:
        """What a test may inspect from the outside (the control channel's `state`)."""
        return {}

    @property
    def command_table(self) -> list[tuple[re.Pattern, Handler]]:
        """Header patterns and their handlers, in matching order (read-only: the fuzz tests
        draw headers from it)."""
        return list(self._commands)

    # machinery ------------------------------------------------------------------------------
    def add(self, spec: str, handler: Handler) -> None:
        pattern = scpi_pattern(spec) if self.scpi_headers else re.compile(re.escape(spec), re.I)
        self._commands.append((pattern, handler))

    def queue_error(self, code: int, message: str) -> None:
        if len(self.errors) == self.errors.maxlen:
            self.errors[-1] = (-350, "Queue overflow")
        else:
            self.errors.append((code, message))

    def _next_error(self) -> str:
        if not self.errors:
            return '0,"No error"'
        code, message = self.errors.popleft()
        return f'{code},"{message}"'

    def execute(self, message: Message) -> str | bytes | None:
        """Run one message: commands separated by ';' (outside quotes; not with a block)
        run in turn, their replies joined by ';' (IEEE 488.2 compound messages)."""
        parts = _compound(message.text) if message.block is None and self.scpi_headers else None
        if parts is None or len(parts) == 1:
            return self._execute_one(message)
        replies = [self._execute_one(Message(part.lstrip(":"), None)) for part in parts]
        texts = [r for r in replies if isinstance(r, str) and r]
        return ";".join(texts) if texts else None

    def _execute_one(self, message: Message) -> str | bytes | None:
        """Run one command; errors go to the queue (SCPI) and the reply is None."""
        self.log.append(
            LoggedCommand(
                time.time(), message.text, len(message.block) if message.block is not None else None
            )
        )
        header, _, args = message.text.strip().partition(" ")
        for pattern, handler in self._commands:
            m = pattern.fullmatch(header)
            if m:
                suffixes = [int(g) if g else 1 for g in m.groups()]
                try:
                    if message.block is not None:
                        return handler(args.strip(), *suffixes, block=message.block)
                    return handler(args.strip(), *suffixes)
                except CommandError as e:
                    self.queue_error(e.code, e.message)
                    return self.error_reply(e)
                except TypeError:
                    self.queue_error(-104, f"Data type error: {message.text[:40]}")
                    return None
        return self.unknown_command(message)

    def unknown_command(self, message: Message) -> str | None:
        self.queue_error(-113, f"Undefined header: {message.text[:40]}")
        return None

    def error_reply(self, error: CommandError) -> str | None:
        """SCPI instruments answer nothing on error; serial ASCII ones may say something."""
        return None


def _compound(text: str) -> list[str] | None:
    """The commands of a compound message (split at ';' outside quotes), or None."""
    if ";" not in text:
        return None
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def number(args: str, low: float | None = None, high: float | None = None) -> float:
    try:
        value = float(args.split(",")[0].strip().split()[0])
    except (ValueError, IndexError):
        raise CommandError(-104, f"Data type error: {args[:30]!r} is not a number") from None
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        raise CommandError(-222, f"Data out of range: {value:g}")
    return value


def boolean(args: str) -> bool:
    text = args.strip().upper()
    if text in ("1", "ON"):
        return True
    if text in ("0", "OFF"):
        return False
    raise CommandError(-104, f"Data type error: {args[:30]!r} is not ON/OFF")


def quoted(args: str) -> tuple[str, str]:
    """First quoted string and the rest after its comma."""
    m = re.match(r'\s*"([^"]*)"\s*,?\s*(.*)$', args, re.DOTALL)
    if not m:
        raise CommandError(-151, f"Invalid string data: {args[:30]!r}")
    return m.group(1), m.group(2)
