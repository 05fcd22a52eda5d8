"""Laser controller following the Cobolt (Hübner) serial ASCII subset.

Commands end with CR, replies with CR LF; sets answer "OK"; an unknown command answers
"Syntax error: illegal command". Power is in watts.
"""

from __future__ import annotations

from drivers.base import Driver, Health
from drivers.scpi import parse_bool, parse_float
from qnode.errors import InstrumentReplyError, InstrumentReportedError


def check_set_reply(instrument: str, command: str, reply: str) -> None:
    """A set answers OK; an error the laser reports is its own kind of error."""
    if reply.strip() != "OK":
        if "error" in reply.lower():
            raise InstrumentReportedError(instrument, f"after {command!r}: {reply.strip()}")
        raise InstrumentReplyError(instrument, f"reply to {command!r} is not OK: {reply[:40]!r}")


def check_query_reply(instrument: str, command: str, reply: str) -> str:
    reply = reply.strip()
    if "error" in reply.lower():
        raise InstrumentReportedError(instrument, f"after {command!r}: {reply}")
    return reply


class CoboltLaser(Driver):
    ROLE = "laser"
    FAMILY = "Cobolt 04-01 / 06-01 series (serial ASCII)"
    TRANSPORT = "serial"
    READ_TERMINATION = "\r\n"
    WRITE_TERMINATION = "\r"
    RANGES = {"power_w": (0.0, 0.5)}

    def _set(self, command: str) -> None:
        check_set_reply(self.name, command, self.transport.query(command))

    def _query(self, command: str) -> str:
        return check_query_reply(self.name, command, self.transport.query(command))

    def identity(self) -> str:
        model = self._query("glm?")
        serial_number = self._query("sn?")
        firmware = self._query("ver?")
        if not serial_number.isdigit():
            raise InstrumentReplyError(
                self.name, f"serial number reply {serial_number!r} is not a number"
            )
        return f"Cobolt {model} SN {serial_number} FW {firmware}"

    def set_power(self, watts: float) -> None:
        watts = self.check_limit("power_w", watts)
        self._set(f"p {watts:.5f}")

    def power(self) -> float:
        """Power set point, W."""
        return parse_float(self.name, "p?", self._query("p?"))

    def measured_power(self) -> float:
        return parse_float(self.name, "pa?", self._query("pa?"))

    def set_enabled(self, on: bool) -> None:
        self._set("l1" if on else "l0")

    def enabled(self) -> bool:
        return parse_bool(self.name, "l?", self._query("l?"))

    def fault(self) -> int:
        reply = self._query("f?")
        if not reply.isdigit():
            raise InstrumentReplyError(self.name, f"reply to 'f?' is not a fault code: {reply!r}")
        return int(reply)

    def safe_state(self) -> None:
        self._set("l0")

    def health(self) -> Health:
        fault = self.fault()
        state = f"{'on' if self.enabled() else 'off'}, set point {self.power() * 1e3:.2f} mW"
        return Health(self.identity(), state, [f"fault code {fault}"] if fault else [])
