"""ID Quantique Time Controller (ID900/ID1000): SCPI over ZeroMQ, as the real instrument.

Spellings from ID Quantique's "Time Controller Series User Manual" (section 9, SCPI command
reference) and IDQ's Python examples: a REQ socket to port 5555, one reply per request (empty
for a set), errors inline in the reply (IDQ's examples treat any reply holding `SCPI_ERR_` as
an error), per-input counters `INPU<n>:COUN:MODE CYCL;INTE <ms>;RESE` read with
`INPU<n>:COUN?`, and time stamps recorded with `RAW<n>:SEND ON` and `REC:DUR`/`REC:PLAY`/
`REC:STOP`/`REC:STAG?`. The time stamps reach the host through IDQ's DataLinkTarget (DLT,
the manual's section 10; the resource's `dlt=` endpoint, port 6060 of the host): per input,
`start-stream --address <instrument> --channel <n> --stream-port <port> --with-ref-index`
opens an acquisition that streams section 6.3.4's pairs (uint64 timestamp: ps since the last
START event; uint64 reference index: START events so far) over a ZeroMQ PAIR socket; `status`
tells when the unit's end of recording arrived, `stop` closes it and counts the timestamps.

What the driver cannot know: a tag's time since the start of the recording once a sync (START
event) came, as the unit reports only the time since the last sync and the sync's index; such
tags have time_ps = -1 (UNKNOWN_TIME_PS). Before the first sync the reference is the start of
the recording, and time_ps is the timestamp. Tags come in time order (by reference index, then
timestamp). qnode's callers use delay_ps and channel only.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlsplit

import numpy as np

from drivers.base import Driver, Health
from drivers.scpi import parse_bool, parse_float, parse_identity, parse_int
from drivers.transport import (
    ZmqPairStream,
    ZmqTransport,
    free_local_port,
    split_zmq_resource,
)
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
"""A read of time tags stops here (about 320 MB of pairs): a runaway recording cannot fill
memory."""
UNKNOWN_TIME_PS = -1
"""time_ps of a tag after the first sync: the unit does not report it (module docstring)."""
PAIR = np.dtype([("timestamp", "<u8"), ("reference_index", "<u8")])
"""Section 6.3.4's binary timestamp data with --with-ref-index."""
DLT_POLL_S = 0.02
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

    _dlt: ZmqTransport | None = None
    """The host DLT's command connection, made at the first acquisition of time tags."""
    _acquisitions: dict[int, tuple[str, ZmqPairStream]] | None = None
    """Per input: the DLT acquisition's id and its stream, while tags are recorded."""
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
    _raw_sending = False
    """RAW<n>:SEND ON may have gone out (it was sent, perhaps unanswered) since the last OFF."""

    def _raw_send(self, on: bool) -> None:
        state = "ON" if on else "OFF"
        self._raw_sending = self._raw_sending or on
        self._set(";:".join(f"RAW{ch}:SEND {state}" for ch in INPUTS))
        self._raw_sending = on

    def acquire_tags(self, seconds: float) -> np.ndarray:
        """Record time tags for `seconds` and return them (structured array, TAG_DTYPE)."""
        seconds = self.check_limit("acquisition_s", seconds)
        self._open_acquisitions()
        try:
            self._raw_send(True)
            self._prepare_recording(round(seconds * 1e12))
            self._set("REC:PLAY")
            deadline = time.monotonic() + seconds + self.timeout_s
            while self._ask("REC:STAG?").upper() == "PLAYING":
                if time.monotonic() > deadline:
                    raise InstrumentTimeout(
                        self.name, f"still recording {self.timeout_s:g} s after its {seconds:g} s"
                    )
                time.sleep(STAGE_POLL_S)
            return self._collect_tags()
        finally:
            self._close_acquisitions()

    def _prepare_recording(self, duration_ps: int) -> None:
        """Every setting a recording depends on, as IDQ's examples send them: armed by
        REC:PLAY (MANUal), enabled, one recording of `duration_ps`; a unit left otherwise by
        another program (automatic arming, several recordings, disabled) records what was
        asked all the same."""
        self._set(f"REC:TRIG:ARM:MODE MANU;:REC:ENAB ON;:REC:NUM 1;:REC:DUR {duration_ps}")

    def start_tags(self) -> None:
        """Arm: record tags (against the sync input) until stop_tags()."""
        self._open_acquisitions()
        try:
            self._raw_send(True)
            self._prepare_recording(OPEN_ENDED_RECORD_PS)
            self._set("REC:PLAY")
        except Exception:
            self._close_acquisitions()
            raise

    def stop_tags(self) -> np.ndarray:
        self._set("REC:STOP")
        try:
            return self._collect_tags()
        finally:
            self._close_acquisitions()

    # the host's DataLinkTarget (manual, section 10) ----------------------------------------
    def _dlt_endpoint(self) -> str:
        _, endpoint = split_zmq_resource(self.resource)
        if endpoint is None:
            raise InstrumentConnectionError(
                self.name, f"resource {self.resource!r} names no DataLinkTarget (,dlt=tcp://...)"
            )
        return endpoint

    def _dlt_exec(self, command: str) -> object:
        """One DLT command and its JSON answer; an `{"error": ...}` answer raises."""
        if self._dlt is None:
            self._dlt = ZmqTransport(f"{self.name} DLT", self._dlt_endpoint(), self.timeout_s)
            self._dlt.open()
        reply = self._dlt.query(command)
        try:
            answer = json.loads(reply)
        except ValueError:
            raise InstrumentReplyError(
                self.name, f"the DLT answered {command!r} with {reply[:60]!r}, not JSON"
            ) from None
        if isinstance(answer, dict) and "error" in answer:
            error = answer["error"]
            text = error.get("description") if isinstance(error, dict) else error
            raise InstrumentReportedError(self.name, f"the DLT refused {command!r}: {text}")
        return answer

    def _dlt_object(self, command: str, key: str | None = None) -> dict:
        answer = self._dlt_exec(command)
        if key is not None and isinstance(answer, dict):
            answer = answer.get(key)
        if not isinstance(answer, dict):
            raise InstrumentReplyError(
                self.name, f"the DLT answered {command!r} with {answer!r}, not an object"
            )
        return answer

    def _open_stream(self, port: int) -> ZmqPairStream:
        """The PAIR socket the DLT streams to; connected before start-stream binds it (ZeroMQ
        connects when the other end appears)."""
        host = urlsplit(self._dlt_endpoint()).hostname or "127.0.0.1"
        stream = ZmqPairStream(self.name, f"tcp://{host}:{port}", self.timeout_s)
        stream.open()
        return stream

    def _stream_port(self) -> int:
        """The DLT runs on this host (the manual's set-up): a port free here."""
        return free_local_port()

    def _open_acquisitions(self) -> None:
        """A streamed acquisition per input, with reference indexes; on a failure, those
        already opened are stopped again."""
        self._close_acquisitions()
        address = urlsplit(split_zmq_resource(self.resource)[0]).hostname
        self._acquisitions = {}
        try:
            for ch in INPUTS:
                self._acquisitions[ch] = self._start_stream(str(address), ch)
        except Exception:
            self._close_acquisitions()
            raise

    def _start_stream(self, address: str, channel: int) -> tuple[str, ZmqPairStream]:
        port = self._stream_port()
        stream = self._open_stream(port)
        try:
            answer = self._dlt_object(
                f"start-stream --address {address} --channel {channel} --stream-port {port} "
                "--with-ref-index"
            )
            ident = answer.get("id")
            if not isinstance(ident, str):
                raise InstrumentReplyError(self.name, f"start-stream answered {answer!r}, no id")
        except Exception:
            stream.close()
            raise
        return ident, stream

    def _close_acquisitions(self) -> None:
        """The DLT acquisitions still open are stopped (their status dropped), every stream
        closed, and the unit sends no more timestamps."""
        acquisitions, self._acquisitions = self._acquisitions, None
        if acquisitions is None:
            return
        try:
            for ident, stream in acquisitions.values():
                stream.close()
                self._dlt_exec(f"stop --id {ident}")
        finally:
            for _, stream in acquisitions.values():
                stream.close()
            if self._raw_sending:
                self._raw_send(False)

    def _collect_tags(self) -> np.ndarray:
        """After the recording ended: per input, wait for the DLT to have the unit's end of
        acquisition, stop it (its count of timestamps), read that many from its stream."""
        if not self._acquisitions:
            raise InstrumentReplyError(self.name, "no time tags are being recorded")
        parts = []
        for ch, (ident, stream) in list(self._acquisitions.items()):
            deadline = time.monotonic() + self.timeout_s
            while self._dlt_object(f"status --id {ident}").get("acquisitions_count", 0) < 1:
                if time.monotonic() > deadline:
                    raise InstrumentTimeout(
                        self.name, f"the DLT has no end of recording for input {ch} ({ident})"
                    )
                time.sleep(DLT_POLL_S)
            status = self._dlt_object(f"stop --id {ident}", "status")
            del self._acquisitions[ch]
            errors = status.get("errors") or []
            if errors:
                raise InstrumentReportedError(
                    self.name, f"the DLT reports for input {ch}: {errors[:3]}"
                )
            try:
                parts.append((ch, self._read_stream(ch, stream, int(status["timestamps_count"]))))
            except (KeyError, TypeError, ValueError):
                raise InstrumentReplyError(
                    self.name, f"stop answered {status!r}, no timestamps_count"
                ) from None
            finally:
                stream.close()
        return self._merge(parts)

    def _read_stream(self, channel: int, stream: ZmqPairStream, count: int) -> np.ndarray:
        if count > MAX_TAGS:
            raise InstrumentReplyError(self.name, f"more than {MAX_TAGS} time tags")
        chunks, got = [], 0
        while got < count:
            message = stream.receive(f"the DLT's stream of input {channel}")
            if not message:
                raise InstrumentReplyError(
                    self.name,
                    f"the DLT's stream of input {channel} ended after {got} of {count} timestamps",
                )
            if len(message) % PAIR.itemsize:
                raise InstrumentReplyError(
                    self.name,
                    f"a message of {len(message)} bytes on input {channel}'s stream is not "
                    f"whole {PAIR.itemsize}-byte (timestamp, reference index) pairs",
                )
            chunk = np.frombuffer(message, dtype=PAIR)
            got += len(chunk)
            if got > count:
                raise InstrumentReplyError(
                    self.name,
                    f"input {channel}'s stream sent {got} timestamps, the DLT counted {count}",
                )
            chunks.append(chunk)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=PAIR)

    @staticmethod
    def _merge(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
        """Every input's pairs as TAG_DTYPE in time order (reference index, then timestamp)."""
        total = sum(len(p) for _, p in parts)
        tags = np.zeros(total, dtype=TAG_DTYPE)
        index = np.zeros(total, dtype=np.uint64)
        at = 0
        for ch, pairs in parts:
            end = at + len(pairs)
            tags["delay_ps"][at:end] = pairs["timestamp"].astype(np.int64)
            tags["channel"][at:end] = ch
            index[at:end] = pairs["reference_index"]
            at = end
        tags["time_ps"] = np.where(index == 0, tags["delay_ps"], UNKNOWN_TIME_PS)
        order = np.lexsort((tags["delay_ps"], index))
        return tags[order]

    def close(self) -> None:
        self._accumulating = frozenset()  # a unit met again may have been power-cycled
        self._integration_checked = False
        try:
            if self._acquisitions:
                self._close_acquisitions()
        except Exception:  # closing: the instrument may be gone
            pass
        dlt, self._dlt = self._dlt, None
        if dlt is not None:
            dlt.close()
        super().close()

    # what every role offers --------------------------------------------------------------------
    def safe_state(self) -> None:
        """No recording, and no input sending time stamps (an interrupted start_tags left
        them on)."""
        self._set("REC:STOP")
        self._raw_send(False)

    def error_list(self) -> list[str]:
        """Errors come inline, with the command that caused them: there is no queue."""
        return []

    def health(self) -> Health:
        enabled = [c for c in INPUTS if self.enabled(c)]
        return Health(self.identity(), f"inputs enabled: {enabled or 'none'}", self.error_list())
