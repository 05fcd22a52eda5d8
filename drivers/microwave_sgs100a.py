"""Microwave source following the R&S SGS100A / SMB100A SCPI subset (see docs/instruments.md)."""

from __future__ import annotations

from drivers.base import Health
from drivers.scpi import ScpiDriver


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

    def safe_state(self) -> None:
        self.scpi.write("OUTP:STAT OFF")

    def health(self) -> Health:
        state = (
            f"RF {'on' if self.output() else 'off'}, {self.frequency() / 1e9:.6f} GHz, "
            f"{self.power():.1f} dBm"
        )
        return Health(self.identity(), state, self.error_list())
