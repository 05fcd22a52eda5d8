"""Simulated R&S SGS100A-like microwave source; its carrier drives the node's qubit."""

from __future__ import annotations

from sim_backends.device import Device, boolean, number
from sim_backends.physics import MicrowaveDrive


class SimMicrowaveSource(Device):
    identity = "Rohde&Schwarz,SGS100A,1416.0505k02/{serial},4.2.76.0-sim"

    def __init__(self, name: str, drive: MicrowaveDrive, serial: int) -> None:
        self.drive = drive
        self.identity = self.identity.format(serial=serial)
        super().__init__(name)

    def setup(self) -> None:
        d = self.drive
        self.add(
            "[SOURce]:FREQuency[:CW]", lambda a: setattr(d, "frequency_hz", number(a, 1e6, 12.75e9))
        )
        self.add("[SOURce]:FREQuency[:CW]?", lambda a: f"{d.frequency_hz:.3f}")
        self.add(
            "[SOURce]:POWer[:LEVel][:IMMediate][:AMPLitude]",
            lambda a: setattr(d, "power_dbm", number(a, -120, 25)),
        )
        self.add("[SOURce]:POWer[:LEVel][:IMMediate][:AMPLitude]?", lambda a: f"{d.power_dbm:.2f}")
        self.add("OUTPut[:STATe]", lambda a: setattr(d, "output", boolean(a)))
        self.add("OUTPut[:STATe]?", lambda a: "1" if d.output else "0")
        self.add("[SOURce]:IQ:STATe", lambda a: setattr(self, "iq", boolean(a)))
        self.add("[SOURce]:IQ:STATe?", lambda a: "1" if self.iq else "0")

    def reset_state(self) -> None:
        self.drive.frequency_hz = 3.0e9
        self.drive.power_dbm = -30.0
        self.drive.output = False
        self.iq = False

    def state(self) -> dict:
        return {
            "frequency_hz": self.drive.frequency_hz,
            "power_dbm": self.drive.power_dbm,
            "output": self.drive.output,
            "iq": self.iq,
        }
