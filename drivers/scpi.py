"""The SCPI protocol layer: typed queries, identity, and the error queue.

It sits between a transport (bytes, timeouts, reconnects) and a driver (what the commands
mean), as in QMI's transport -> protocol -> instrument layering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivers.base import Driver
from drivers.transport import Transport
from qnode.errors import InstrumentReplyError, InstrumentReportedError


@dataclass(frozen=True)
class Identity:
    vendor: str
    model: str
    serial: str
    firmware: str

    def __str__(self) -> str:
        return f"{self.vendor} {self.model} SN {self.serial} FW {self.firmware}"


def parse_identity(instrument: str, reply: str) -> Identity:
    parts = [p.strip() for p in reply.split(",")]
    if len(parts) != 4 or not all(parts[:2]):
        raise InstrumentReplyError(
            instrument, f"*IDN? reply {reply!r} is not 'vendor,model,serial,firmware'"
        )
    return Identity(*parts)


def parse_float(instrument: str, command: str, reply: str) -> float:
    """A decimal number in any IEEE 488.2 response form (`2870000000`, `2.87E+09`,
    `+2.870000E+09`); anything else names the instrument and the reply."""
    try:
        value = float(reply.strip())
    except ValueError:
        raise InstrumentReplyError(
            instrument, f"reply to {command!r} is not a number: {reply[:40]!r}"
        ) from None
    if value != value:  # NaN is never a measured value here
        raise InstrumentReplyError(instrument, f"reply to {command!r} is NaN")
    return value


def parse_records(instrument: str, command: str, block: bytes, dtype: np.dtype) -> np.ndarray:
    """A binary block of fixed-size records (tags, clicks, waveform words), copied out."""
    if len(block) % dtype.itemsize:
        raise InstrumentReplyError(
            instrument,
            f"reply to {command!r}: {len(block)} bytes are not whole {dtype.itemsize}-byte records",
        )
    return np.frombuffer(block, dtype=dtype).copy()


def parse_int(instrument: str, command: str, reply: str) -> int:
    try:
        return int(reply.strip())
    except ValueError:
        raise InstrumentReplyError(
            instrument, f"reply to {command!r} is not an integer: {reply[:40]!r}"
        ) from None


def parse_bool(instrument: str, command: str, reply: str) -> bool:
    text = reply.strip().upper()
    if text in ("1", "ON"):
        return True
    if text in ("0", "OFF"):
        return False
    raise InstrumentReplyError(
        instrument, f"reply to {command!r} is not a boolean (0/1/ON/OFF): {reply[:40]!r}"
    )


def parse_error(instrument: str, reply: str) -> tuple[int, str] | None:
    """One `SYST:ERR?` reply, `<code>,"<message>"` (SCPI-1999): None for code 0; the
    message with its doubled quotes undone."""
    code_text, sep, message = reply.strip().partition(",")
    try:
        code = int(code_text)
    except ValueError:
        code = None
    text = message.strip()
    quoted = len(text) >= 2 and text[0] == text[-1] == '"'
    if code is None or not sep or not quoted:
        raise InstrumentReplyError(
            instrument, f"SYST:ERR? reply {reply!r} is not 'code,\"message\"'"
        )
    return None if code == 0 else (code, text[1:-1].replace('""', '"'))


class Scpi:
    """SCPI on top of a transport; `check_errors` drains `SYST:ERR?` after sets."""

    MAX_ERRORS = 32

    def __init__(self, instrument: str, transport: Transport, compound: bool = False) -> None:
        self.instrument = instrument
        self.transport = transport
        self.compound = compound
        """IEEE 488.2 compound messages: a checked write asks for the error queue in the
        same message (`cmd;:SYST:ERR?`), one round trip instead of two."""

    def write(self, command: str, check: bool = True) -> None:
        if check and self.compound and ";" not in command:
            first = self._error(self.transport.query(f"{command};:SYST:ERR?"))
            if first is not None:
                errors = [first, *self.errors()]
                listed = "; ".join(f"{code} {message}" for code, message in errors)
                raise InstrumentReportedError(self.instrument, f"after {command!r}: {listed}")
            return
        self.transport.write(command)
        if check:
            self.check_errors(after=command)

    def _error(self, reply: str) -> tuple[int, str] | None:
        """One `code,"message"` reply: None for 0 (no error)."""
        return parse_error(self.instrument, reply)

    def query(self, command: str) -> str:
        return self.transport.query(command)

    def query_float(self, command: str) -> float:
        return parse_float(self.instrument, command, self.query(command))

    def query_int(self, command: str) -> int:
        return parse_int(self.instrument, command, self.query(command))

    def query_bool(self, command: str) -> bool:
        return parse_bool(self.instrument, command, self.query(command))

    def identity(self) -> Identity:
        return parse_identity(self.instrument, self.query("*IDN?"))

    def errors(self) -> list[tuple[int, str]]:
        """Drain the error queue: every (code, message) until `0,"No error"`."""
        found: list[tuple[int, str]] = []
        for _ in range(self.MAX_ERRORS):
            error = self._error(self.query("SYST:ERR?"))
            if error is None:
                return found
            found.append(error)
        raise InstrumentReplyError(
            self.instrument, f"error queue still not empty after {self.MAX_ERRORS} reads"
        )

    def check_errors(self, after: str) -> None:
        errors = self.errors()
        if errors:
            listed = "; ".join(f"{code} {message}" for code, message in errors)
            raise InstrumentReportedError(self.instrument, f"after {after!r}: {listed}")

    def write_block(self, command: str, data: bytes, check: bool = True) -> None:
        self.transport.write_block(command, data)
        if check:
            self.check_errors(after=command)

    def query_block(self, command: str) -> bytes:
        return self.transport.query_block(command)


class ScpiDriver(Driver):
    """A driver whose instrument speaks SCPI with an error queue."""

    _scpi: Scpi | None = None
    COMPOUND = False
    """The instrument takes `cmd;:SYST:ERR?` (IEEE 488.2 compound messages)."""

    @property
    def scpi(self) -> Scpi:
        transport = self.transport  # raises a clear error if not open
        if self._scpi is None or self._scpi.transport is not transport:
            self._scpi = Scpi(self.name, transport, self.COMPOUND)
        return self._scpi

    def _on_open(self) -> None:
        self.scpi.write("*CLS", check=False)

    def identity(self) -> str:
        return str(self.scpi.identity())

    def error_list(self) -> list[str]:
        return [f"{code} {message}" for code, message in self.scpi.errors()]
