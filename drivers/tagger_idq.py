"""ID Quantique Time Controller (ID900/ID1000): SCPI over ZeroMQ, as the real instrument.

Spellings from ID Quantique's "Time Controller Series User Manual" (section 9, SCPI command
reference) and IDQ's Python examples: a REQ socket to port 5555, one reply per request (empty
for a set), errors inline in the reply (IDQ's examples treat any reply holding `SCPI_ERR_` as
an error), per-input counters `INPU<n>:COUN:MODE CYCL;INTE <ms>;RESE` read with
`INPU<n>:COUN?`, and time stamps recorded with `RAW<n>:SEND ON` and `REC:DUR`/`REC:PLAY`/
`REC:STOP`/`REC:STAG?`. The time stamps leave on a separate data service (the resource's
`data=` endpoint, see docs/instruments.md): `NEXT` answers the next block of records.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from drivers.base import Driver, Health
from drivers.scpi import parse_bool, parse_float, parse_identity, parse_int, parse_records
from drivers.transport import ZmqTransport, split_zmq_resource
from qnode.errors import (
    InstrumentConnectionError,
    InstrumentReplyError,
    InstrumentReportedError,
    InstrumentTimeout,
)
from qnode.records import TAG_DTYPE

log = logging.getLogger("qnode.drivers.idq")

INPUTS = (1, 2, 3, 4)
INLINE_ERROR = "SCPI_ERR"
MAX_TAGS = 20_000_000
"""A read of time tags stops here (about 360 MB): a runaway recording cannot fill memory."""
OPEN_ENDED_RECORD_PS = 3600 * 10**12
"""`start_tags` records until `stop_tags` (at most an hour, the longest recording asked)."""
STAGE_POLL_S = 0.02
ACCUMULATE_UPDATE_MS = 1
"""The integration time sent with ACCUmulate mode (ms): if a unit updates the accumulated
value only at the end of each period (the manual's counter chapter was not at hand), a read
lags the light by at most this, which `fresh_counts` waits for as well."""


class TimeController(Driver):
    ROLE = "time_tagger"
    FAMILY = "ID Quantique ID900/ID1000 Time Controller (SCPI over ZeroMQ)"
    TRANSPORT = "zmq"
    READ_TERMINATION = ""
    WRITE_TERMINATION = ""
    RANGES = {"threshold_v": (-2.0, 2.0), "acquisition_s": (1e-6, 3600.0)}

    _data: ZmqTransport | None = None
    """The data service's connection, made at the first read of time tags."""
    _first_period_ends: dict[int, float] | None = None
    """Per input: when (monotonic) the first whole period after the last set_integration
    ends."""
    _integration_checked = False
    """The connection's first integration time was read back."""
    _accumulating: frozenset[int] = frozenset()
    """The inputs this connection put in ACCUmulate mode (`fresh_counts`)."""

    # the wire ---------------------------------------------------------------------------------
    def _ask(self, command: str) -> str:
        """One request and its reply; an inline error raises, naming the command."""
        reply = self.transport.query(command)
        if INLINE_ERROR in reply:
            raise InstrumentReportedError(self.name, f"after {command!r}: {reply.strip()}")
        return reply.strip()

    def _set(self, command: str) -> None:
        """A set: whatever it answers is fine unless it holds an inline error (IDQ's examples
        never check a set's reply; firmware answers empty or with text, 'Value set to 10')."""
        reply = self._ask(command)
        if reply:
            log.debug("%s: %r answered %r", self.name, command, reply[:60])

    def _check_input(self, channel: int) -> int:
        if channel not in INPUTS:
            raise ValueError(f"{self.name}: input {channel} does not exist (1..4)")
        return channel

    # identity, inputs -------------------------------------------------------------------------
    def identity(self) -> str:
        return str(parse_identity(self.name, self._ask("*IDN?")))

    def set_enabled(self, channel: int, on: bool) -> None:
        self._set(f"INPU{self._check_input(channel)}:ENAB {'ON' if on else 'OFF'}")

    def enabled(self, channel: int) -> bool:
        command = f"INPU{self._check_input(channel)}:ENAB?"
        return parse_bool(self.name, command, self._ask(command))

    def set_threshold(self, channel: int, volts: float) -> None:
        self._check_input(channel)
        volts = self.check_limit("threshold_v", volts)
        self._set(f"INPU{channel}:THRE {volts:.3f}V")

    def threshold(self, channel: int) -> float:
        """Volts (the reply may carry its unit: `-0.250V`)."""
        command = f"INPU{self._check_input(channel)}:THRE?"
        reply = self._ask(command)
        return parse_float(self.name, command, reply.removesuffix("V").removesuffix("v"))

    # counters ---------------------------------------------------------------------------------
    def set_integration(self, seconds: float, channel: int | None = None) -> None:
        """Every input's counter (or one input's) counts period after period of `seconds`
        (the manual's CYCLe mode), restarted together in one message so that the inputs'
        periods coincide."""
        seconds = self.check_limit("acquisition_s", seconds)
        channels = INPUTS if channel is None else (self._check_input(channel),)
        ms = f"{seconds * 1e3:.9g}"
        self._set(";:".join(f"INPU{ch}:COUN:MODE CYCL;INTE {ms};RESE" for ch in channels))
        self._accumulating -= set(channels)
        if not self._integration_checked:
            self._check_integration(channels[0], seconds)
        ends = time.monotonic() + 2 * seconds  # the period clock may not restart: wait for
        # one whole period that began after this set
        self._first_period_ends = {
            **(self._first_period_ends or {}),
            **dict.fromkeys(channels, ends),
        }

    def _check_integration(self, channel: int, seconds: float) -> None:
        """The first integration time of a connection read back: a unit that took the bare
        number in another unit than ms (IDQ's examples disagree) is found, not misread."""
        read = self.integration(channel)
        if abs(read - seconds) > 1e-6 * seconds:
            raise InstrumentReplyError(
                self.name,
                f"INPU{channel}:COUN:INTE reads back {read * 1e3:g} ms after "
                f"{seconds * 1e3:g} ms was sent: the unit takes the number in another unit",
            )
        self._integration_checked = True

    def fresh_counts(self, channels: list[int], seconds: float) -> dict[int, int]:
        """Counts of light that all arrived after this call, over at least `seconds`: the
        inputs in ACCUmulate mode, reset together in one message, a wait, one compound read
        (what the phase lock needs: never a count from before the piezo moved, whatever the
        unit's period clock does; only the inputs' shares matter, not the exact time)."""
        seconds = self.check_limit("acquisition_s", seconds)
        wanted = [self._check_input(ch) for ch in channels]
        if not set(wanted) <= self._accumulating:
            self._set(
                ";:".join(f"INPU{ch}:COUN:MODE ACCU;INTE {ACCUMULATE_UPDATE_MS}" for ch in wanted)
            )
            self._accumulating = self._accumulating | set(wanted)
        self._set(";:".join(f"INPU{ch}:COUN:RESE" for ch in wanted))
        time.sleep(seconds + ACCUMULATE_UPDATE_MS * 1e-3)
        return self._read_counts(wanted)

    def _await_first_period(self, channels: list[int]) -> None:
        """A counter just set has no whole period since to report: wait for one (a real
        unit would answer the previous or a partial one)."""
        ends = self._first_period_ends or {}
        wait = max((ends.get(ch, 0.0) for ch in channels), default=0.0) - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def integration(self, channel: int) -> float:
        """Seconds (the instrument answers milliseconds)."""
        command = f"INPU{self._check_input(channel)}:COUN:INTE?"
        return parse_float(self.name, command, self._ask(command).removesuffix("ms")) / 1e3

    def count(self, channel: int) -> int:
        """Counts on one input over its last completed integration period (reads of several
        inputs in a row see the same period)."""
        command = f"INPU{self._check_input(channel)}:COUN?"
        self._await_first_period([channel])
        return parse_int(self.name, command, self._ask(command))

    def counts(self, channels: list[int]) -> dict[int, int]:
        """Several inputs' counts in one message (one reply line each), as IDQ's examples
        read them: the same period for every input."""
        channels = [self._check_input(ch) for ch in channels]
        self._await_first_period(channels)
        return self._read_counts(channels)

    def _read_counts(self, channels: list[int]) -> dict[int, int]:
        command = ";:".join(f"INPU{ch}:COUN?" for ch in channels)
        lines = self._ask(command).splitlines()
        if len(lines) != len(channels):
            raise InstrumentReplyError(
                self.name, f"{command!r} answered {len(lines)} lines for {len(channels)} inputs"
            )
        return {
            ch: parse_int(self.name, command, line)
            for ch, line in zip(channels, lines, strict=True)
        }

    # time tags ----------------------------------------------------------------------------------
    def _raw_send(self, on: bool) -> None:
        state = "ON" if on else "OFF"
        self._set(";:".join(f"RAW{ch}:SEND {state}" for ch in INPUTS))

    def acquire_tags(self, seconds: float) -> np.ndarray:
        """Record time tags for `seconds` and return them (structured array, TAG_DTYPE)."""
        seconds = self.check_limit("acquisition_s", seconds)
        self._raw_send(True)
        try:
            self._set(f"REC:DUR {round(seconds * 1e12)}")
            self._set("REC:PLAY")
            deadline = time.monotonic() + seconds + self.timeout_s
            while self._ask("REC:STAG?").upper() == "PLAYING":
                if time.monotonic() > deadline:
                    raise InstrumentTimeout(
                        self.name, f"still recording {self.timeout_s:g} s after its {seconds:g} s"
                    )
                time.sleep(STAGE_POLL_S)
            return self.read_tags()
        finally:
            self._raw_send(False)

    def start_tags(self) -> None:
        """Arm: record tags (against the sync input) until stop_tags()."""
        self._raw_send(True)
        self._set(f"REC:DUR {OPEN_ENDED_RECORD_PS}")
        self._set("REC:PLAY")

    def stop_tags(self) -> np.ndarray:
        self._set("REC:STOP")
        try:
            return self.read_tags()
        finally:
            self._raw_send(False)

    def _data_service(self) -> ZmqTransport:
        if self._data is None:
            _, endpoint = split_zmq_resource(self.resource)
            if endpoint is None:
                raise InstrumentConnectionError(
                    self.name,
                    f"resource {self.resource!r} names no data service (,data=tcp://...)",
                )
            self._data = ZmqTransport(f"{self.name} data", endpoint, self.timeout_s)
            self._data.open()
        return self._data

    def read_tags(self) -> np.ndarray:
        """Every record of the finished recording, block after block from the data service,
        until an empty block."""
        data = self._data_service()
        parts, total = [], 0
        while True:
            block = parse_records(self.name, "NEXT", data.query_block("NEXT"), TAG_DTYPE)
            if block.size == 0:
                break
            total += block.size
            if total > MAX_TAGS:
                raise InstrumentReplyError(self.name, f"more than {MAX_TAGS} time tags")
            parts.append(block)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=TAG_DTYPE)

    def close(self) -> None:
        self._accumulating = frozenset()  # a unit met again may have been power-cycled
        self._integration_checked = False
        data, self._data = self._data, None
        if data is not None:
            data.close()
        super().close()

    # what every role offers --------------------------------------------------------------------
    def safe_state(self) -> None:
        self._set("REC:STOP")

    def error_list(self) -> list[str]:
        """Errors come inline, with the command that caused them: there is no queue."""
        return []

    def health(self) -> Health:
        enabled = [c for c in INPUTS if self.enabled(c)]
        return Health(self.identity(), f"inputs enabled: {enabled or 'none'}", self.error_list())
