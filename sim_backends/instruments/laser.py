"""Simulated Cobolt-like laser controller on a serial line (CR in, CR LF out)."""

from __future__ import annotations

from sim_backends.device import CommandError, Device, number
from sim_backends.framing import Message
from sim_backends.node import SimLaserState

MAX_POWER_W = 0.5


class SimLaser(Device):
    terminator = b"\r"
    reply_terminator = b"\r\n"
    allow_blocks = False
    scpi_headers = False

    def __init__(self, name: str, laser: SimLaserState, serial: int, model: str) -> None:
        self.laser = laser
        self.serial = serial
        self.model = model
        super().__init__(name)

    def setup(self) -> None:
        laser = self.laser
        self._commands.clear()  # Cobolt speaks its own dialect, not SCPI
        self.add("l?", lambda a: "1" if laser.enabled else "0")
        self.add("l1", lambda a: self._ok(setattr(laser, "enabled", True)))
        self.add("l0", lambda a: self._ok(setattr(laser, "enabled", False)))
        self.add("p?", lambda a: f"{laser.power_w:.5f}")
        self.add("pa?", lambda a: f"{laser.power_w if laser.enabled else 0.0:.5f}")
        self.add("p", lambda a: self._ok(setattr(laser, "power_w", number(a, 0.0, MAX_POWER_W))))
        self.add("f?", lambda a: "0")
        self.add("ilk?", lambda a: "0")
        self.add("sn?", lambda a: str(self.serial))
        self.add("ver?", lambda a: "5.4.1-sim")
        self.add("glm?", lambda a: self.model)

    @staticmethod
    def _ok(_=None) -> str:
        return "OK"

    def reset_state(self) -> None:
        self.laser.enabled = False
        self.laser.power_w = 0.0

    def unknown_command(self, message: Message) -> str:
        return "Syntax error: illegal command"

    def error_reply(self, error: CommandError) -> str:
        return "Syntax error: illegal parameter"

    def state(self) -> dict:
        return {"enabled": self.laser.enabled, "power_w": self.laser.power_w}
