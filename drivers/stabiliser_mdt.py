"""Phase stabiliser: a piezo fibre-stretcher driver following the Thorlabs MDT694B serial
subset (`xvoltage=`/`xvoltage?`, replies framed by the '>' prompt), with the lock-loop commands
of a stabiliser box (`lock`, `setpoint`, `error?`).
"""

from __future__ import annotations

from drivers.base import Driver, Health
from drivers.scpi import parse_float
from qnode.errors import InstrumentReplyError, InstrumentReportedError, LimitError


def bracketed_value(instrument: str, command: str, reply: str) -> str:
    """The MDT's query replies are '[value]' (after the echo has been stripped)."""
    reply = reply.strip()
    if not (reply.startswith("[") and reply.endswith("]")):
        raise InstrumentReplyError(
            instrument, f"reply to {command!r} is not '[value]': {reply[:40]!r}"
        )
    return reply[1:-1].strip()


class PiezoPhaseStabiliser(Driver):
    ROLE = "phase_stabiliser"
    FAMILY = "Thorlabs MDT694B piezo controller with a phase-lock loop"
    TRANSPORT = "serial"
    READ_TERMINATION = ">"
    WRITE_TERMINATION = "\r"
    RANGES = {"voltage_v": (0.0, 150.0)}

    def _exchange(self, command: str) -> str:
        reply = self.transport.query(command).strip()
        if reply.startswith("CMD_NOT_DEFINED") or reply.startswith("CMD_ARG_INVALID"):
            raise InstrumentReportedError(self.name, f"after {command!r}: {reply}")
        return reply

    def _set(self, command: str) -> None:
        reply = self._exchange(command)
        if reply:
            raise InstrumentReplyError(
                self.name, f"unexpected reply to {command!r}: {reply[:40]!r}"
            )

    def _bracketed(self, command: str) -> str:
        return bracketed_value(self.name, command, self._exchange(command))

    def identity(self) -> str:
        reply = self._exchange("id?")
        if "MDT" not in reply:
            raise InstrumentReplyError(
                self.name, f"id? reply {reply[:60]!r} is not an MDT controller"
            )
        return " ".join(reply.split())

    def set_voltage(self, volts: float) -> None:
        volts = self.check_limit("voltage_v", volts)
        self._set(f"xvoltage={volts:.2f}")

    def voltage(self) -> float:
        return parse_float(self.name, "xvoltage?", self._bracketed("xvoltage?"))

    def set_lock(self, on: bool) -> None:
        self._set(f"lock={1 if on else 0}")

    def locked(self) -> bool:
        value = self._bracketed("lock?")
        if value not in ("0", "1"):
            raise InstrumentReplyError(self.name, f"reply to 'lock?' is not 0 or 1: {value!r}")
        return value == "1"

    def set_setpoint(self, degrees: float) -> None:
        if not -360.0 <= degrees <= 360.0:  # (NaN too)
            raise LimitError(self.name, "setpoint_deg", degrees, (-360.0, 360.0))
        self._set(f"setpoint={degrees:.3f}")

    def setpoint(self) -> float:
        return parse_float(self.name, "setpoint?", self._bracketed("setpoint?"))

    def set_reference(self, on: bool) -> None:
        """The reference light through the interferometer (for the set-point calibration)."""
        self._set(f"ref={1 if on else 0}")

    def reference(self) -> bool:
        value = self._bracketed("ref?")
        if value not in ("0", "1"):
            raise InstrumentReplyError(self.name, f"reply to 'ref?' is not 0 or 1: {value!r}")
        return value == "1"

    def phase_error(self) -> float:
        """Residual interferometer phase error, degrees."""
        return parse_float(self.name, "error?", self._bracketed("error?"))

    def safe_state(self) -> None:
        self._set("ref=0")
        self._set("lock=0")
        self._set("xvoltage=0.00")

    def health(self) -> Health:
        state = f"lock {'on' if self.locked() else 'off'}, {self.voltage():.2f} V"
        return Health(self.identity(), state, [])
