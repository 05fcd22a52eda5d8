"""Tektronix AWG5014 (B, C): the AWG5000 series programmer manual's commands for the waveform
list, the sequence table, channel levels and run control.

Waveforms go up in the INT format (one little-endian uint16 per point, bits 0-13 the DAC
code with 8191 = 0 V, bit 14 marker 1, bit 15 marker 2) and come back in whichever format the
waveform was made in: INT, or REAL (5 bytes a point: little-endian float32, then a byte with
marker 1 in bit 6 and marker 2 in bit 7), so that a waveform another program made reads back.
"""

from __future__ import annotations

import zlib

import numpy as np

from drivers.base import Health
from drivers.scpi import ScpiDriver, parse_records
from qnode.errors import InstrumentReplyError, InstrumentReportedError, LimitError

CHANNELS = (1, 2, 3, 4)
DAC_MID = 8191
RUN_STATES = {0: "stopped", 1: "waiting for trigger", 2: "running"}
REAL_POINT = np.dtype([("value", "<f4"), ("markers", "u1")])
WAVEFORM_TYPES = ("INT", "REAL")


def encode_int_waveform(
    samples: np.ndarray, marker1: np.ndarray | None = None, marker2: np.ndarray | None = None
) -> bytes:
    """Normalised samples in [-1, 1] and 0/1 markers to AWG5014 INT bytes (in place on one
    float buffer: a 1e6-sample waveform is encoded in about a millisecond)."""
    codes = np.multiply(np.asarray(samples, dtype=np.float64), DAC_MID)
    np.rint(codes, out=codes)
    codes += DAC_MID
    words = codes.astype("<u2")
    if marker1 is not None:
        words |= (np.asarray(marker1) != 0).astype("<u2") << 14
    if marker2 is not None:
        words |= (np.asarray(marker2) != 0).astype("<u2") << 15
    return words.tobytes()


def decode_int_waveform(
    data: bytes, instrument: str = "AWG5014"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples in [-1, 1 + 1/8191] (the 14-bit DAC codes) and the two marker bits, from the
    AWG's 16-bit words."""
    words = parse_records(instrument, "WLIS:WAV:DATA?", data, np.dtype("<u2"))
    samples = ((words & 0x3FFF).astype(np.float64) - DAC_MID) / DAC_MID
    return samples, (words >> 14) & 1, (words >> 15) & 1


def decode_real_waveform(
    data: bytes, instrument: str = "AWG5014"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples and the two marker bits from the REAL format's 5-byte points."""
    points = parse_records(instrument, "WLIS:WAV:DATA?", data, REAL_POINT)
    markers = points["markers"]
    return points["value"].astype(np.float64), (markers >> 6) & 1, (markers >> 7) & 1


class TektronixAwg5014(ScpiDriver):
    ROLE = "awg"
    FAMILY = "Tektronix AWG5014 (C)"
    TRANSPORT = "tcp"
    COMPOUND = True
    RANGES = {
        "amplitude_vpp": (0.02, 4.5),
        "sample_rate_hz": (1e7, 1.2e9),
        "waveform_points": (1, 16_200_000),
    }

    last_upload_crc32: int | None = None
    _entries_epoch: tuple[int, int] | None = None  # the connection _entries belong to
    _entries: dict[str, int]

    def _check_channel(self, channel: int) -> int:
        if channel not in CHANNELS:
            raise ValueError(f"{self.name}: channel {channel} does not exist (1..4)")
        return channel

    def upload_waveform(
        self,
        name: str,
        samples: np.ndarray,
        marker1: np.ndarray | None = None,
        marker2: np.ndarray | None = None,
    ) -> None:
        if not name or '"' in name or len(name) > 32:
            raise ValueError(f"{self.name}: waveform name {name!r} must be 1-32 chars, no quotes")
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 1:
            raise ValueError(f"{self.name}: waveform {name!r} must be one-dimensional")
        n = self.check_limit("waveform_points", samples.size)
        for marker, label in ((marker1, "marker1"), (marker2, "marker2")):
            if marker is not None and np.shape(marker) != samples.shape:
                raise ValueError(f"{self.name}: {label} of {name!r} has a different length")
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        if not np.isfinite(peak) or peak > 1.0:
            raise LimitError(self.name, f"waveform {name!r} sample", peak, (-1.0, 1.0))
        data = encode_int_waveform(samples, marker1, marker2)
        points = int(n)
        known = self._made_here().get(name) == points
        if not known:
            self._make_entry(name, points)
        try:
            self.scpi.write_block(f'WLIS:WAV:DATA "{name}",0,{points},', data)
        except InstrumentReportedError:
            if not known:
                raise
            # the entry went behind this driver's back (front panel, another client): again
            self._make_entry(name, points)
            self.scpi.write_block(f'WLIS:WAV:DATA "{name}",0,{points},', data)
        self.last_upload_crc32 = zlib.crc32(data)

    def _made_here(self) -> dict[str, int]:
        """Waveform entries this driver made on this connection (name -> points): uploading
        one again overwrites its data, without the delete and new round trips. A reconnect
        (the instrument may have restarted) forgets them."""
        epoch = (id(self.transport), self.transport.reconnects)
        if self._entries_epoch != epoch:
            self._entries_epoch, self._entries = epoch, {}
        return self._entries

    def _make_entry(self, name: str, points: int) -> None:
        self.scpi.write(f'WLIS:WAV:DEL "{name}"', check=False)
        self.scpi.errors()  # deleting a name that does not exist yet is not a fault
        self.scpi.write(f'WLIS:WAV:NEW "{name}",{points},INT')
        self._made_here()[name] = points

    def waveform_type(self, name: str) -> str:
        """INT or REAL: the format the waveform was made in, and comes back in."""
        command = f'WLIS:WAV:TYPE? "{name}"'
        reply = self.scpi.query(command).strip().upper()
        if reply not in WAVEFORM_TYPES:
            raise InstrumentReplyError(
                self.name, f"reply to {command!r} is not INT or REAL: {reply[:40]!r}"
            )
        return reply

    def download_waveform(
        self, name: str, start: int = 0, size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples, marker 1 and marker 2 of points start..start+size (all by default)."""
        if start < 0 or (size is not None and size < 1):
            raise ValueError(f"{self.name}: no points {start}+{size} of {name!r} to read")
        decode = decode_int_waveform if self.waveform_type(name) == "INT" else decode_real_waveform
        command = f'WLIS:WAV:DATA? "{name}"'
        if size is not None:
            command += f",{start},{size}"
        elif start:
            command += f",{start}"
        return decode(self.scpi.query_block(command), self.name)

    def set_sequence(self, elements: list[dict[int, str]]) -> None:
        """Sequence element k+1 plays segment k of the sequencer's program: each element
        waits for its trigger (the sequencer's AWG_TRIG k) and plays once. The table is
        cleared first (length 0): a shorter length keeps the first elements as they were, with
        waveforms on channels the new elements do not name."""
        self.scpi.write("SEQ:LENG 0")
        self.scpi.write(f"SEQ:LENG {len(elements)}")
        for k, element in enumerate(elements, start=1):
            for channel, waveform in element.items():
                self._check_channel(channel)
                self.scpi.write(f'SEQ:ELEM{k}:WAV{channel} "{waveform}"')
            self.scpi.write(f"SEQ:ELEM{k}:TWA 1")
        self.scpi.write("AWGC:RMOD SEQ")

    def set_amplitude(self, channel: int, vpp: float) -> None:
        self._check_channel(channel)
        vpp = self.check_limit("amplitude_vpp", vpp)
        self.scpi.write(f"SOUR{channel}:VOLT:AMPL {vpp:.4f}")

    def amplitude(self, channel: int) -> float:
        return self.scpi.query_float(f"SOUR{self._check_channel(channel)}:VOLT:AMPL?")

    def set_sample_rate(self, hz: float) -> None:
        hz = self.check_limit("sample_rate_hz", hz)
        self.scpi.write(f"SOUR1:FREQ {hz:.1f}")

    def set_output(self, channel: int, on: bool) -> None:
        self.scpi.write(f"OUTP{self._check_channel(channel)}:STAT {'ON' if on else 'OFF'}")

    def output(self, channel: int) -> bool:
        return self.scpi.query_bool(f"OUTP{self._check_channel(channel)}:STAT?")

    def run(self) -> None:
        self.scpi.write("AWGC:RUN")

    def stop(self) -> None:
        self.scpi.write("AWGC:STOP")

    def run_state(self) -> int:
        """0 stopped, 1 waiting for trigger, 2 running (as AWGC:RST? on the 5014)."""
        state = self.scpi.query_int("AWGC:RST?")
        if state not in RUN_STATES:
            raise InstrumentReplyError(
                self.name, f"reply to 'AWGC:RST?' is not a run state (0, 1, 2): {state}"
            )
        return state

    def safe_state(self) -> None:
        self.scpi.write("AWGC:STOP")
        for channel in CHANNELS:
            self.scpi.write(f"OUTP{channel}:STAT OFF")

    def health(self) -> Health:
        outputs = [c for c in CHANNELS if self.output(c)]
        state = (
            f"{RUN_STATES[self.run_state()]}, "
            f"outputs on: {outputs or 'none'}, {self.scpi.query_int('WLIS:SIZE?')} waveforms"
        )
        return Health(self.identity(), state, self.error_list())
