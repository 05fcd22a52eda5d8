"""Microwave source: R&S SGS100A (and the SMB100A's identical subset), SCPI over TCP.

Commands in the manual's spelling (short forms of `[SOURce<hw>]:FREQuency[:CW]`,
`[SOURce<hw>]:POWer[:LEVel][:IMMediate][:AMPLitude]`, `OUTPut<hw>[:STATe]`, ...); every set is
checked with `SYST:ERR?` in the same message (IEEE 488.2 compound). See docs/instruments.md.
"""

from __future__ import annotations

from typing import Literal

from drivers.base import Health
from drivers.scpi import ScpiDriver
from qnode.errors import InstrumentReplyError

ReferenceSource = Literal["INT", "EXT"]


class RsSgs100a(ScpiDriver):
    ROLE = "microwave_source"
    FAMILY = "Rohde & Schwarz SGS100A / SMB100A"
    TRANSPORT = "tcp"
    COMPOUND = True
    RANGES = {"frequency_hz": (1e6, 12.75e9), "power_dbm": (-120.0, 25.0)}

    def set_frequency(self, hz: float) -> None:
        hz = self.check_limit("frequency_hz", hz)
        self.scpi.write(f"SOUR:FREQ {hz:.3f}")

    def frequency(self) -> float:
        """The carrier in Hz (any numeric reply form: `2870000000`, `2.87E+09`)."""
        return self.scpi.query_float("SOUR:FREQ?")

    def set_power(self, dbm: float) -> None:
        dbm = self.check_limit("power_dbm", dbm)
        self.scpi.write(f"SOUR:POW {dbm:.2f}")

    def power(self) -> float:
        return self.scpi.query_float("SOUR:POW?")

    def set_output(self, on: bool) -> None:
        self.scpi.write(f"OUTP:STAT {'ON' if on else 'OFF'}")

    def output(self) -> bool:
        return self.scpi.query_bool("OUTP:STAT?")

    def set_iq_modulation(self, on: bool) -> None:
        """The I/Q inputs (from the AWG) modulate the carrier."""
        self.scpi.write(f"SOUR:IQ:STAT {'ON' if on else 'OFF'}")

    def iq_modulation(self) -> bool:
        return self.scpi.query_bool("SOUR:IQ:STAT?")

    def set_reference_source(self, source: ReferenceSource) -> None:
        """INT: the internal oscillator; EXT: the lab's 10 MHz (or 100/1000 MHz) reference."""
        if source not in ("INT", "EXT"):
            raise ValueError(f"{self.name}: reference source {source!r} is not INT or EXT")
        self.scpi.write(f"SOUR:ROSC:SOUR {source}")

    def reference_source(self) -> ReferenceSource:
        reply = self.scpi.query("SOUR:ROSC:SOUR?").strip().upper()
        if reply in ("INT", "INTERNAL"):
            return "INT"
        if reply in ("EXT", "EXTERNAL"):
            return "EXT"
        raise InstrumentReplyError(
            self.name, f"reply to 'SOUR:ROSC:SOUR?' is not INT or EXT: {reply[:40]!r}"
        )

    def safe_state(self) -> None:
        self.scpi.write("OUTP:STAT OFF")

    def health(self) -> Health:
        state = (
            f"RF {'on' if self.output() else 'off'}, {self.frequency() / 1e9:.6f} GHz, "
            f"{self.power():.1f} dBm"
        )
        return Health(self.identity(), state, self.error_list())
