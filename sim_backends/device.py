"""The instrument side: a simulated device, its command table, error queue, log and faults.

A device turns one framed command into a reply (or none). Servers (TCP or pty) own the bytes;
faults (freeze, garble, drop, reset, delay) sit between the two, as a flaky box would.

SCPI devices (`scpi_headers = True`) follow IEEE Std 488.2-1992 ("IEEE Standard Codes,
Formats, Protocols, and Common Commands") and SCPI-1999.0 ("Standard Commands for
Programmable Instruments", SCPI Consortium): program headers in long and short form with
numeric suffixes and optional nodes, compound messages with the SCPI path rule, decimal
numeric data with suffixes and multipliers, MINimum/MAXimum/DEFault, booleans, strings in
either quote, the mandatory common commands with the status registers, and the SYSTem:ERRor
queue. docs/instruments.md ("SCPI behaviour of every simulated SCPI instrument") describes
what is and is not modelled. ASCII dialects (Cobolt, MDT) set `scpi_headers = False` and get
none of it: they are not IEEE 488.2 instruments.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sim_backends.framing import Message, split_outside_quotes

STANDARD_ERRORS = {
    0: "No error",
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -103: "Invalid separator",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -120: "Numeric data error",
    -131: "Invalid suffix",
    -138: "Suffix not allowed",
    -141: "Invalid character data",
    -151: "Invalid string data",
    -161: "Invalid block data",
    -168: "Block data not allowed",
    -200: "Execution error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -224: "Illegal parameter value",
    -241: "Hardware missing",
    -300: "Device-specific error",
    -350: "Queue overflow",
    -400: "Query error",
    -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED",
    -440: "Query UNTERMINATED after indefinite response",
}
"""Error texts as SCPI-1999 (its error/event number list) and IEEE 488.2 define them."""

ERROR_QUEUE_LENGTH = 32
MAX_ERROR_TEXT = 255
"""SCPI: the error description is at most 255 characters."""

# Standard Event Status Register bits (IEEE 488.2 "Standard Event Status Register")
ESR_OPC, ESR_RQC, ESR_QYE, ESR_DDE, ESR_EXE, ESR_CME, ESR_URQ, ESR_PON = (1 << i for i in range(8))
# Status Byte bits: bit 2 the SCPI error/event queue, 4 MAV, 5 ESB, 6 MSS/RQS
STB_EAV, STB_MAV, STB_ESB, STB_MSS = 1 << 2, 1 << 4, 1 << 5, 1 << 6


class CommandError(Exception):
    """A SCPI error to queue: code and message as `SYST:ERR?` reports them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_text(code: int, message: str) -> str:
    """`<standard text>;<detail>` (SCPI's device-dependent information after a ';'): a
    message given as 'Standard text: detail' or as the bare detail is written that way."""
    standard = STANDARD_ERRORS.get(code)
    if standard is None:
        return message[:MAX_ERROR_TEXT]
    if message == standard or not message:
        return standard
    for sep in (": ", ":", ";"):
        if message.startswith(standard + sep):
            message = message[len(standard) + len(sep) :]
            break
    else:
        if message.lower().startswith(standard.lower()):
            message = message[len(standard) :].lstrip(":; ")
    return f"{standard};{message}"[:MAX_ERROR_TEXT] if message else standard


def scpi_pattern(spec: str) -> re.Pattern:
    """'SOURce#:FREQuency[:CW]' -> regex accepting long/short forms, '#' a numeric suffix."""
    out = []
    # a leading optional node owns the colon after it ('[SOURce]:FREQ'); a node in the middle
    # owns the colon before it ('TRIGger[:SEQuence]:LEVel'), which it already has
    spec = re.sub(r"\[([^\]:][^\]]*)\]:", r"[\1:]", spec)
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
    """False for ASCII dialects (Cobolt, MDT): headers then match literally, case-insensitive,
    and none of the IEEE 488.2 common commands or status registers exist."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.faults = Faults()
        self.log: list[LoggedCommand] = []
        self.errors: deque = deque(maxlen=ERROR_QUEUE_LENGTH)
        self.on_drop: list[Callable[[], None]] = []
        self.on_reset: list[Callable[[], None]] = []
        self.on_unplug: list[Callable[[], None]] = []
        self.on_plug: list[Callable[[], None]] = []
        self._commands: list[tuple[re.Pattern, Handler]] = []
        self.event_status = ESR_PON  # power-on
        self.event_enable = 0
        self.service_request_enable = 0
        if self.scpi_headers:
            self._add_common_commands()
        self.setup()
        self.reset_state()

    # to override ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Register commands."""

    def reset_state(self) -> None:
        """Power-on state (also what a serial reset fault does, and *RST)."""

    def state(self) -> dict:
        """What a test may inspect from the outside (the control channel's `state`)."""
        return {}

    def self_test(self) -> int:
        """*TST?: 0 passed (IEEE 488.2); a simulated instrument has nothing to fail."""
        return 0

    @property
    def command_table(self) -> list[tuple[re.Pattern, Handler]]:
        """Header patterns and their handlers, in matching order (read-only: the fuzz tests
        draw headers from it)."""
        return list(self._commands)

    # IEEE 488.2 common commands and SCPI's SYSTem subsystem ---------------------------------
    def _add_common_commands(self) -> None:
        self.add("*IDN?", lambda a, *s: no_arguments(a) or self.identity)
        self.add("*RST", lambda a, *s: no_arguments(a) or self.reset_state())
        self.add("*CLS", lambda a, *s: no_arguments(a) or self.clear_status())
        self.add("*ESE", lambda a, *s: setattr(self, "event_enable", _register(a)))
        self.add("*ESE?", lambda a, *s: no_arguments(a) or str(self.event_enable))
        self.add("*ESR?", lambda a, *s: no_arguments(a) or str(self._read_event_status()))
        self.add("*SRE", lambda a, *s: setattr(self, "service_request_enable", _register(a)))
        self.add("*SRE?", lambda a, *s: no_arguments(a) or str(self.service_request_enable))
        self.add("*STB?", lambda a, *s: no_arguments(a) or str(self.status_byte()))
        self.add("*OPC", lambda a, *s: no_arguments(a) or self._operation_complete())
        self.add("*OPC?", lambda a, *s: no_arguments(a) or "1")
        self.add("*WAI", lambda a, *s: no_arguments(a))
        self.add("*TST?", lambda a, *s: no_arguments(a) or str(self.self_test()))
        self.add("SYSTem:ERRor[:NEXT]?", lambda a, *s: no_arguments(a) or self._next_error())
        self.add("SYSTem:ERRor:ALL?", lambda a, *s: no_arguments(a) or self._all_errors())
        self.add("SYSTem:ERRor:COUNt?", lambda a, *s: no_arguments(a) or str(len(self.errors)))
        self.add("SYSTem:ERRor:CODE[:NEXT]?", lambda a, *s: no_arguments(a) or self._next_code())
        self.add("SYSTem:ERRor:CODE:ALL?", lambda a, *s: no_arguments(a) or self._all_codes())
        self.add("SYSTem:VERSion?", lambda a, *s: no_arguments(a) or "1999.0")

    def clear_status(self) -> None:
        """*CLS: the error queue and the event status register (not the enable registers)."""
        self.errors.clear()
        self.event_status = 0

    def _read_event_status(self) -> int:
        value, self.event_status = self.event_status, 0  # *ESR? reads and clears
        return value

    def _operation_complete(self) -> None:
        # every simulated operation has completed when its command returns
        self.event_status |= ESR_OPC

    def status_byte(self) -> int:
        """*STB?: EAV (error queue not empty), ESB (an enabled event), MSS (an enabled
        summary). MAV is 0: the reply to *STB? is the only message, not yet queued."""
        stb = STB_EAV if self.errors else 0
        if self.event_status & self.event_enable:
            stb |= STB_ESB
        if stb & self.service_request_enable & ~STB_MSS:
            stb |= STB_MSS
        return stb

    def _format_error(self, code: int, message: str) -> str:
        return f'{code},"{message.replace(chr(34), chr(34) * 2)}"'

    def _next_error(self) -> str:
        if not self.errors:
            return '0,"No error"'
        return self._format_error(*self.errors.popleft())

    def _all_errors(self) -> str:
        if not self.errors:
            return '0,"No error"'
        text = ",".join(self._format_error(*e) for e in self.errors)
        self.errors.clear()
        return text

    def _next_code(self) -> str:
        return str(self.errors.popleft()[0]) if self.errors else "0"

    def _all_codes(self) -> str:
        codes = ",".join(str(code) for code, _ in self.errors) or "0"
        self.errors.clear()
        return codes

    # machinery ------------------------------------------------------------------------------
    def add(self, spec: str, handler: Handler) -> None:
        pattern = scpi_pattern(spec) if self.scpi_headers else re.compile(re.escape(spec), re.I)
        self._commands.append((pattern, handler))

    def queue_error(self, code: int, message: str) -> None:
        """Queue an error (the last slot becomes -350 when full) and set its event bit."""
        self.event_status |= _event_bit(code)
        if len(self.errors) >= ERROR_QUEUE_LENGTH:
            # SCPI: a full queue keeps its oldest errors; the newest becomes -350
            self.errors[-1] = (-350, STANDARD_ERRORS[-350])
            self.event_status |= ESR_DDE
        else:
            self.errors.append((code, error_text(code, message)))

    def execute(self, message: Message) -> str | bytes | None:
        """Run one message: commands separated by ';' (outside quotes; not with a block)
        run in turn, their replies joined by ';' (IEEE 488.2 compound messages). In a SCPI
        device a header after ';' with no leading ':' is relative to the previous header's
        path (the SCPI-1999 Vol. 1 rule for compound commands): `SOUR:FREQ 1GHZ;POW -5`
        sets SOUR:POW."""
        parts = _compound(message.text) if message.block is None and self.scpi_headers else None
        if parts is None or len(parts) == 1:
            return self._execute_one(message)
        replies, path, indefinite = [], "", False
        for part in parts:
            header = part.split(None, 1)[0] if part.split() else ""
            text = part.lstrip(":") if header.startswith((":", "*")) else path + part
            if not header.startswith("*"):
                full = (text.split(None, 1) or [""])[0]
                path = full.rsplit(":", 1)[0] + ":" if ":" in full else ""
            if indefinite and header.endswith("?"):
                # *IDN?'s reply is arbitrary ASCII: nothing may follow it in a message
                self.queue_error(-440, f"Query UNTERMINATED after indefinite response: {header}")
                continue
            replies.append(self._execute_one(Message(text, None)))
            indefinite = indefinite or header.upper() == "*IDN?"
        texts = [r for r in replies if isinstance(r, str) and r]
        return ";".join(texts) if texts else None

    def _execute_one(self, message: Message) -> str | bytes | None:
        """Run one command; errors go to the queue (SCPI) and the reply is None."""
        self.log.append(
            LoggedCommand(
                time.time(), message.text, len(message.block) if message.block is not None else None
            )
        )
        header, args = _header_and_arguments(message.text)
        for pattern, handler in self._commands:
            m = pattern.fullmatch(header)
            if m:
                suffixes = [int(g) if g else 1 for g in m.groups()]
                try:
                    if message.block is not None:
                        return handler(args, *suffixes, block=message.block)
                    return handler(args, *suffixes)
                except CommandError as e:
                    self.queue_error(e.code, e.message)
                    return self.error_reply(e)
                except TypeError:
                    if message.block is not None:
                        error = CommandError(-168, f"Block data not allowed: {header[:40]}")
                    else:
                        error = CommandError(-104, f"Data type error: {message.text[:40]}")
                    self.queue_error(error.code, error.message)
                    return self.error_reply(error)
        if self.scpi_headers and _suffix_misplaced(header, self._commands):
            self.queue_error(-114, f"Header suffix out of range: {header[:40]}")
            return None
        return self.unknown_command(message)

    def unknown_command(self, message: Message) -> str | None:
        self.queue_error(-113, f"Undefined header: {message.text[:40]}")
        return None

    def error_reply(self, error: CommandError) -> str | None:
        """SCPI instruments answer nothing on error (the client's read times out, as with
        the real instrument on a raw socket); serial ASCII ones may say something."""
        return None


def _event_bit(code: int) -> int:
    """The event status bit an error sets, by its class (IEEE 488.2 / SCPI-1999)."""
    if -199 <= code <= -100:
        return ESR_CME
    if -299 <= code <= -200:
        return ESR_EXE
    if -499 <= code <= -400:
        return ESR_QYE
    if code > 0 or -399 <= code <= -300:
        return ESR_DDE
    return 0


def _header_and_arguments(text: str) -> tuple[str, str]:
    """The program header and its parameters (separated by white space)."""
    parts = text.strip().split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _suffix_misplaced(header: str, commands: Sequence[tuple[re.Pattern, Handler]]) -> bool:
    """The header exists without its numeric suffixes (e.g. `OUTP2` where only one output
    exists): -114 Header suffix out of range rather than -113."""
    plain = re.sub(r"(?<=[A-Za-z])\d+(?=:|\?|$)", "", header)
    return plain != header and any(p.fullmatch(plain) for p, _ in commands)


def _compound(text: str) -> list[str] | None:
    """The commands of a compound message (split at ';' outside quotes), or None."""
    if ";" not in text:
        return None
    return [p.strip() for p in split_outside_quotes(text, ";") if p.strip()]


def _register(args: str) -> int:
    """*ESE/*SRE: an 8-bit register value, decimal numeric data rounded to an integer."""
    return round(number(args, 0, 255))


# parameters --------------------------------------------------------------------------------
MULTIPLIERS = {
    "EX": 1e18,
    "PE": 1e15,
    "T": 1e12,
    "G": 1e9,
    "MA": 1e6,
    "K": 1e3,
    "M": 1e-3,
    "U": 1e-6,
    "N": 1e-9,
    "P": 1e-12,
    "F": 1e-15,
    "A": 1e-18,
}
"""IEEE 488.2 suffix multipliers: note M is milli and MA mega; MHZ and MOHM are the two
exceptions (mega)."""

_DECIMAL = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(.*)$", re.DOTALL)
_NON_DECIMAL = re.compile(r"#(?:([Hh][0-9A-Fa-f]+)|([Qq][0-7]+)|([Bb][01]+))$")
_SUFFIX = re.compile(r"[A-Za-z][A-Za-z0-9/.\-]*$")
_LIMIT_WORDS = {"MIN": "MIN", "MINIMUM": "MIN", "MAX": "MAX", "MAXIMUM": "MAX"}
_DEFAULT_WORDS = ("DEF", "DEFAULT")


def no_arguments(args: str) -> None:
    """A command that takes no parameter: one given is -108 Parameter not allowed."""
    if args.strip():
        raise CommandError(-108, f"Parameter not allowed: {args[:30]}")


def parameters(args: str) -> list[str]:
    """The parameters of a command, split at commas outside quotes ('' -> [])."""
    if not args.strip():
        return []
    return [p.strip() for p in split_outside_quotes(args, ",")]


def _one_parameter(args: str) -> str:
    found = parameters(args)
    if not found:
        raise CommandError(-109, "Missing parameter")
    if len(found) > 1:
        raise CommandError(-108, f"Parameter not allowed: {args[:30]}")
    if not found[0]:
        raise CommandError(-109, "Missing parameter")
    return found[0]


def _scale(suffix: str, unit: str | None) -> float:
    """The factor of a suffix (multiplier and unit) for a parameter in `unit`."""
    if unit is None:
        raise CommandError(-138, f"Suffix not allowed: {suffix[:20]}")
    if not _SUFFIX.match(suffix):
        raise CommandError(-131, f"Invalid suffix: {suffix[:20]}")
    s, u = suffix.upper(), unit.upper()
    if s == u:
        return 1.0
    if (s, u) in (("MHZ", "HZ"), ("MOHM", "OHM")):
        return 1e6
    for prefix, factor in MULTIPLIERS.items():
        if s == prefix + u:
            return factor
    raise CommandError(-131, f"Invalid suffix: {suffix[:20]} (unit {unit})")


def decimal(text: str, unit: str | None = None) -> float:
    """One decimal numeric value with an optional suffix (`1 mV`, `2.86GHZ`, `#H1F`)."""
    m = _NON_DECIMAL.match(text)
    if m:
        digits = next(g for g in m.groups() if g)
        return float(int(digits[1:], {"H": 16, "Q": 8, "B": 2}[digits[0].upper()]))
    m = _DECIMAL.match(text)
    if not m:  # a string, a block, character data: not a number
        raise CommandError(-104, f"Data type error: {text[:30]} is not a number")
    value = float(m.group(1))
    suffix = m.group(2).strip()
    if suffix:
        if not _SUFFIX.match(suffix):
            if re.match(r"[\d+\-.]", suffix):
                raise CommandError(-103, f"Invalid separator: {text[:30]}")
            raise CommandError(-131, f"Invalid suffix: {suffix[:20]}")
        value *= _scale(suffix, unit)
    return value


def number(
    args: str,
    low: float | None = None,
    high: float | None = None,
    unit: str | None = None,
    default: float | None = None,
) -> float:
    """Exactly one numeric parameter in [low, high]. `unit` (e.g. "HZ", "V", "S", "DBM") is
    the only suffix accepted, with any IEEE 488.2 multiplier; with no unit, any suffix is
    -138. MIN/MAX give the limits and DEF `default`. Never a silently dropped suffix:
    `1 mV` is 1e-3 V or an error."""
    text = _one_parameter(args)
    word = text.upper()
    if word in _LIMIT_WORDS:
        limit = low if _LIMIT_WORDS[word] == "MIN" else high
        if limit is None:
            raise CommandError(-224, f"Illegal parameter value: {text} (no such limit)")
        return float(limit)
    if word in _DEFAULT_WORDS:
        if default is None:
            raise CommandError(-224, f"Illegal parameter value: {text} (no default)")
        return float(default)
    value = decimal(text, unit)
    if not math.isfinite(value):
        raise CommandError(-222, f"Data out of range: {text[:30]}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise CommandError(-222, f"Data out of range: {value:g}")
    return value


def numeric_query(
    args: str, value: float, low: float, high: float, default: float | None = None
) -> float:
    """`FREQ?` -> the value, `FREQ? MAX` -> the limit (SCPI's MIN/MAX/DEF query forms)."""
    if not args.strip():
        return value
    word = _one_parameter(args).upper()
    if word in _LIMIT_WORDS:
        return float(low if _LIMIT_WORDS[word] == "MIN" else high)
    if word in _DEFAULT_WORDS and default is not None:
        return float(default)
    raise CommandError(-224, f"Illegal parameter value: {args[:30]}")


def boolean(args: str) -> bool:
    """SCPI Boolean: ON|OFF|1|0, and a number is rounded (non-zero is ON)."""
    text = _one_parameter(args)
    word = text.upper()
    if word == "ON":
        return True
    if word == "OFF":
        return False
    if text[:1] in "\"'#":
        raise CommandError(-104, f"Data type error: {text[:30]} is not ON/OFF")
    if not _DECIMAL.match(text):
        raise CommandError(-224, f"Illegal parameter value: {text[:30]} is not ON/OFF")
    value = decimal(text)
    if not math.isfinite(value):
        raise CommandError(-222, f"Data out of range: {text[:30]}")
    return round(value) != 0


def choice(args: str, options: Sequence[str]) -> str:
    """Character data from `options` given as SCPI mnemonics (e.g. "INTernal"): long or
    short form, any case; returns the short form (what the query answers)."""
    text = _one_parameter(args)
    for option in options:
        short = "".join(c for c in option if c.isupper() or c.isdigit()) or option
        if text.upper() in (short.upper(), option.upper()):
            return short.upper()
    if text[:1] in "\"'#":
        raise CommandError(-104, f"Data type error: {text[:30]}")
    raise CommandError(-224, f"Illegal parameter value: {text[:30]}")


def _unquote(text: str) -> str | None:
    """A complete string program data element ("..." or '...', the quote doubled inside)."""
    if len(text) < 2 or text[0] not in "\"'" or text[-1] != text[0]:
        return None
    q = text[0]
    body = text[1:-1]
    if body.replace(q * 2, "").count(q):
        return None
    return body.replace(q * 2, q)


def string(args: str) -> str:
    """Exactly one string parameter, in double or single quotes."""
    text = _one_parameter(args)
    value = _unquote(text)
    if value is None:
        raise CommandError(-151, f"Invalid string data: {text[:30]}")
    return value


def quoted(args: str) -> tuple[str, str]:
    """First quoted string and the parameters after its comma (as text)."""
    found = parameters(args)
    value = _unquote(found[0]) if found else None
    if value is None:
        raise CommandError(-151, f"Invalid string data: {args[:30]!r}")
    rest = args.strip()
    head_len = len(split_outside_quotes(rest, ",")[0])
    return value, rest[head_len:].lstrip().removeprefix(",").strip()
