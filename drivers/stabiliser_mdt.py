"""Piezo driver of the interferometer's fibre stretcher: a Thorlabs MDT694B, a plain
single-channel high-voltage source. The phase lock is not here: it runs in qnode's midpoint
(controller/midpoint/phase_lock.py), which reads the reference light and sets the voltage.

The wire (docs/instruments.md, "Piezo driver"): commands end with CR; every reply ends with
the '>' prompt (the read termination), a query's lines each with a CR before it. A unit
echoes every command at power-up: the driver strips the echo of its own command from every
reply, switches it off with `echo=0` on open, and again whenever an echo comes back (the unit
was power-cycled), so that it works either way. `id?` answers several lines; `vlimit?` the
front-panel limit switch (0=75, 1=100, 2=150 V), which must cover the lab file's limit, as
must `xmin?`/`xmax?` (the unit's own output range, which it enforces). `xvoltage?` is the
measured output, a few tenths of a volt off the set value on real units.
Formats: docs/instruments.md ("Piezo driver"), from replies recorded from real units.
"""

from __future__ import annotations

from drivers.base import Driver, Health
from drivers.scpi import parse_float
from qnode.errors import InstrumentError, InstrumentReplyError, InstrumentReportedError

ERRORS = ("CMD_NOT_DEFINED", "CMD_ARG_INVALID")
MODELS = ("MDT694B", "MDT693B")
"""The single- and three-channel B units answer the same single-channel subset used here."""
LIMIT_SWITCH_V = (75.0, 100.0, 150.0)
"""The front panel's output limit switch, by its `vlimit?` setting 0, 1, 2."""


def bracketed_value(instrument: str, command: str, reply: str) -> str:
    """The MDT's query replies are '[value]' (after the echo has been stripped)."""
    reply = reply.strip()
    if not (reply.startswith("[") and reply.endswith("]")):
        raise InstrumentReplyError(
            instrument, f"reply to {command!r} is not '[value]': {reply[:40]!r}"
        )
    return reply[1:-1].strip()


def strip_echo(command: str, reply: str) -> tuple[str, bool]:
    """The reply without the echo of `command` in front of it, and whether there was one."""
    if reply.startswith(command) and reply[len(command) : len(command) + 1] in ("\r", "\n"):
        return reply[len(command) :].lstrip("\r\n"), True
    return reply, False


class MdtPiezoDriver(Driver):
    ROLE = "phase_stabiliser"
    FAMILY = "Thorlabs MDT694B piezo controller (single channel, open loop)"
    TRANSPORT = "serial"
    READ_TERMINATION = ">"
    WRITE_TERMINATION = "\r"
    RANGES = {"voltage_v": (0.0, 150.0)}

    # the wire ---------------------------------------------------------------------------------
    def _exchange(self, command: str) -> str:
        """Send one command; its reply with the echo stripped (an echo switches it off again:
        the unit came back from a power cycle) and the unit's error texts raised."""
        reply, echoed = strip_echo(command, self.transport.query(command))
        reply = reply.strip("\r\n")
        if reply in ERRORS:
            raise InstrumentReportedError(self.name, f"after {command!r}: {reply}")
        if echoed and command != "echo=0":
            self._set("echo=0")
        return reply

    def _set(self, command: str) -> None:
        reply = self._exchange(command)
        if reply:
            raise InstrumentReplyError(
                self.name, f"unexpected reply to {command!r}: {reply[:40]!r}"
            )

    def _bracketed(self, command: str) -> str:
        return bracketed_value(self.name, command, self._exchange(command))

    def _on_open(self) -> None:
        """Echo off, an MDT694B, a front-panel limit and the unit's own output range
        (`xmin?`/`xmax?`, which it enforces) that cover the lab's range."""
        self.set_echo(False)
        self.identity()
        switch = self.voltage_limit()
        low, high = self.limits["voltage_v"]
        if high > switch:
            raise InstrumentError(
                self.name,
                f"the lab file allows voltage_v up to {high:g} V but the unit's front-panel "
                f"limit switch is at {switch:g} V: lower the lab limit or set the switch",
            )
        unit_low, unit_high = self.output_range()
        if low < unit_low or high > unit_high:
            raise InstrumentError(
                self.name,
                f"the lab file's voltage_v {low:g}..{high:g} V is not inside the unit's own "
                f"output range {unit_low:g}..{unit_high:g} V (xmin?/xmax?): the unit would "
                "refuse or clamp the lock's voltages",
            )

    # what the midpoint uses ---------------------------------------------------------------------
    def identity(self) -> str:
        """`id?`: the model line and its 'label: value' lines, joined with '; '."""
        lines = [line.strip() for line in self._exchange("id?").splitlines() if line.strip()]
        if not lines or not any(model in lines[0] for model in MODELS):
            raise InstrumentReplyError(
                self.name, f"id? reply {lines[:1]!r} is not an MDT694B piezo controller"
            )
        return "; ".join(lines)

    def voltage_limit(self) -> float:
        """`vlimit?`: the front-panel output limit switch, volts (75, 100 or 150). The unit's
        command list gives the setting (0=75V, 1=100V, 2=150V); a reply in volts, or in
        brackets, is taken too (firmware that answers differently)."""
        reply = self._exchange("vlimit?").strip()
        if reply.startswith("[") and reply.endswith("]"):
            reply = reply[1:-1].strip()
        value = parse_float(self.name, "vlimit?", reply)
        if value in (0.0, 1.0, 2.0):
            return LIMIT_SWITCH_V[int(value)]
        if value in LIMIT_SWITCH_V:
            return value
        raise InstrumentReplyError(
            self.name, f"reply to 'vlimit?' is no limit switch setting: {reply[:40]!r}"
        )

    def _plain_value(self, command: str) -> float:
        """A number reply, bare (as the recorded units answer xmin?/xmax?) or in brackets."""
        reply = self._exchange(command).strip()
        if reply.startswith("[") and reply.endswith("]"):
            reply = reply[1:-1].strip()
        return parse_float(self.name, command, reply)

    def output_range(self) -> tuple[float, float]:
        """`xmin?`, `xmax?`: the unit's own output limits, volts."""
        return self._plain_value("xmin?"), self._plain_value("xmax?")

    def set_voltage(self, volts: float) -> None:
        volts = self.check_limit("voltage_v", volts)
        self._set(f"xvoltage={volts:.2f}")

    def voltage(self) -> float:
        return parse_float(self.name, "xvoltage?", self._bracketed("xvoltage?"))

    def set_echo(self, on: bool) -> None:
        self._set(f"echo={1 if on else 0}")

    def echo_enabled(self) -> bool:
        reply = self._exchange("echo?")
        if reply not in ("Echo On", "Echo Off"):
            raise InstrumentReplyError(self.name, f"reply to 'echo?' is {reply[:40]!r}")
        return reply == "Echo On"

    def serial_number(self) -> str:
        """`serial?` (empty on a unit whose serial number was never stored)."""
        reply = self._exchange("serial?")
        if not reply.isprintable():
            raise InstrumentReplyError(self.name, f"reply to 'serial?' is {reply[:40]!r}")
        return reply

    def safe_state(self) -> None:
        self._set("xvoltage=0.00")

    def health(self) -> Health:
        return Health(self.identity(), f"{self.voltage():.2f} V", [])
