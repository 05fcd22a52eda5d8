"""Cobolt lasers of the 04-01 and 06-01 series over their serial ASCII protocol.

Commands end with CR, replies with CR LF; a set answers "OK", a query its value, an unknown
command "Syntax error: illegal command". Power is in watts on both series. The series is
told apart by `glm?` (model number): a 06-01 answers it, a 04-01 does not know it.

On open the driver sends `@cobas 0` (autostart off): with autostart on (the factory default)
a power cycle or a key turn starts the laser by itself, and a lab user expects a laser to
light only when the software asks. Nothing is cached: every reading asks the laser.
"""

from __future__ import annotations

from drivers.base import Driver, Health
from drivers.scpi import parse_bool, parse_float
from qnode.errors import InstrumentReplyError, InstrumentReportedError

SERIES_04 = "04-01"
SERIES_06 = "06-01"
ILLEGAL_COMMAND = "syntax error: illegal command"
FAULTS = {0: "", 1: "temperature error", 3: "interlock error", 4: "constant power time out"}
"""`f?` codes (the same on both series)."""
OPERATING_MODES = {
    0: "off",
    1: "waiting for key",
    2: "continuous",
    3: "on/off modulation",
    4: "modulation",
    5: "fault",
    6: "aborted",
}
"""`gom?` codes."""


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

    def _on_open(self) -> None:
        self.set_autostart(False)

    def _set(self, command: str) -> None:
        check_set_reply(self.name, command, self.transport.query(command))

    def _query(self, command: str) -> str:
        return check_query_reply(self.name, command, self.transport.query(command))

    def _query_int(self, command: str) -> int:
        reply = self._query(command)
        if not reply.isdigit():
            raise InstrumentReplyError(self.name, f"reply to {command!r} is not a code: {reply!r}")
        return int(reply)

    # identity ------------------------------------------------------------------------------
    def serial_number(self) -> str:
        """`sn?`, which both series answer (a number)."""
        reply = self._query("sn?")
        if not reply.isdigit():
            raise InstrumentReplyError(self.name, f"serial number reply {reply!r} is not a number")
        return reply

    def model_number(self) -> str | None:
        """`glm?`: the 06-01 series' model number; None from a 04-01, which does not know it."""
        reply = self.transport.query("glm?").strip()
        if reply.lower() == ILLEGAL_COMMAND:
            return None
        if "-06-" not in reply:
            raise InstrumentReplyError(
                self.name, f"reply to 'glm?' is neither a 06-series model nor refused: {reply!r}"
            )
        return reply

    def series(self) -> str:
        return SERIES_04 if self.model_number() is None else SERIES_06

    def firmware(self) -> str:
        """`gfv?` on either series."""
        return self._query("gfv?")

    def identity(self) -> str:
        serial_number = self.serial_number()
        model = self.model_number()
        series = f"06-01 {model}" if model is not None else "04-01"
        return f"Cobolt {series} SN {serial_number} FW {self.firmware()}"

    # settings and readings -------------------------------------------------------------------
    def set_power(self, watts: float) -> None:
        """Constant-power set point (the laser must be in constant power: `cp`)."""
        watts = self.check_limit("power_w", watts)
        self._set(f"p {watts:.6f}")

    def power(self) -> float:
        """Power set point, W."""
        return parse_float(self.name, "p?", self._query("p?"))

    def measured_power(self) -> float:
        """Output power the laser measures, W (0 while off)."""
        return parse_float(self.name, "pa?", self._query("pa?"))

    def set_constant_power(self) -> None:
        """Run in constant power (`cp`), the mode `set_power` steers (a laser left in constant
        current by another program ignores `p`), checked with `gam?` (1: constant power)."""
        self._set("cp")
        mode = self._query_int("gam?")
        if mode != 1:
            raise InstrumentReplyError(
                self.name, f"after 'cp' the run mode (gam?) is {mode}, not 1 (constant power)"
            )

    def drive_current(self) -> float:
        """`i?`: the diode current, in the series' unit (A on the 04-01, mA on the 06-01)."""
        return parse_float(self.name, "i?", self._query("i?"))

    def set_enabled(self, on: bool) -> None:
        """`l1`/`l0`; `l1` needs autostart off, which `open()` makes sure of."""
        self._set("l1" if on else "l0")

    def enabled(self) -> bool:
        return parse_bool(self.name, "l?", self._query("l?"))

    def set_autostart(self, on: bool) -> None:
        self._set(f"@cobas {int(on)}")

    def autostart(self) -> bool:
        return parse_bool(self.name, "@cobas?", self._query("@cobas?"))

    def operating_mode(self) -> str:
        """`gom?`: off, waiting for key, continuous, ..., fault, aborted."""
        code = self._query_int("gom?")
        if code not in OPERATING_MODES:
            raise InstrumentReplyError(self.name, f"reply to 'gom?' is no known mode: {code}")
        return OPERATING_MODES[code]

    def fault(self) -> int:
        """`f?`: 0 none, 1 temperature, 3 interlock, 4 constant power time out."""
        return self._query_int("f?")

    def clear_fault(self) -> None:
        self._set("cf")

    def interlock_open(self) -> bool:
        """`ilk?`: 1 when the interlock loop is open (the laser cannot emit)."""
        return parse_bool(self.name, "ilk?", self._query("ilk?"))

    def operating_hours(self) -> float:
        return parse_float(self.name, "hrs?", self._query("hrs?"))

    def safe_state(self) -> None:
        self._set("l0")

    def health(self) -> Health:
        fault = self.fault()
        state = f"{'on' if self.enabled() else 'off'}, set point {self.power() * 1e3:.2f} mW"
        problems = []
        if fault:
            problems.append(f"fault code {fault}: {FAULTS.get(fault, 'unknown')}")
        if self.interlock_open():
            problems.append("interlock open")
        return Health(self.identity(), state, problems)
