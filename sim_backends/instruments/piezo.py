"""Simulated Thorlabs MDT694B: a single-channel open-loop piezo controller on a serial line.

A plain high-voltage source for the interferometer's fibre stretcher, nothing more: no lock,
no set point, no reference light (the phase lock runs in qnode's midpoint software; the
stretcher's phase per volt is the midpoint physics', sim_backends/photonics.py).

What it follows (docs/instruments.md, "Piezo driver"): the MDT693B/MDT694B user guide was not
at hand; the command set and reply formats are those the independent drivers of the unit
send and parse: pylablib's `pylablib.devices.Thorlabs.MDT69xA` (1.4.5: the MDT693A command
interface, which it says the B units keep: `I`, `XV<volts>`, `XR?`, `%`, and it reads the
echo of every command it writes) and the `mdt69x` package's `Controller` (Claudio Arena, UCL:
`id?` of several lines, `echo=`/`echo?` answering "Echo On"/"Echo Off", `xvoltage=`/
`xvoltage?` answering `[value]`, `vlimit?`, `serial?`, `friendly=`/`friendly?`, `restore`,
the '>' prompt after every command, `CMD_NOT_DEFINED` for a command it does not know).

- Commands end with CR; a query's reply is its lines, each ended by CR, then the '>' prompt;
  a set answers the prompt alone.
- Echo is on at power-up: every character of a command comes back before the reply.
  `echo=0` switches it off until the next power cycle (or `echo=1`, `restore`).
- `vlimit?` (and `%`) report the front-panel output limit switch (75, 100 or 150 V); an output
  voltage outside 0..limit is refused with `CMD_ARG_INVALID` and leaves the output as it was.
- Error replies: `CMD_NOT_DEFINED` (unknown command), `CMD_ARG_INVALID` (a bad argument).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from sim_backends.device import Device, LoggedCommand
from sim_backends.framing import Message

MODEL = "MDT694B Piezo Control Module"
FIRMWARE = "1.09"
LIMIT_SWITCH_V = (75.0, 100.0, 150.0)
"""The front panel's output limit switch positions."""
FRIENDLY_MAX = 64
NOT_DEFINED = "CMD_NOT_DEFINED"
ARG_INVALID = "CMD_ARG_INVALID"
NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"

Handler = Callable[[str], str]


class ArgumentInvalid(Exception):
    """The command is known but its argument is not acceptable."""


class SimPiezoDriver(Device):
    terminator = b"\r"
    reply_terminator = b">"
    allow_blocks = False
    scpi_headers = False

    def __init__(self, name: str, serial: int, limit_switch_v: float = 150.0) -> None:
        if limit_switch_v not in LIMIT_SWITCH_V:
            raise ValueError(f"{name}: the limit switch has positions {LIMIT_SWITCH_V}")
        self.serial = serial
        self.limit_switch_v = limit_switch_v
        """The front-panel switch: set by hand on the unit, never by a command."""
        self.friendly = ""
        super().__init__(name)

    def setup(self) -> None:
        self._commands.clear()  # no IEEE 488.2 common commands on this unit
        table: list[tuple[str, Handler]] = [
            (r"id\?", lambda a: self._identity()),
            (r"i", lambda a: self._identity()),  # the MDT693A interface's identity
            (r"\?", lambda a: self._help()),
            (r"echo=(.*)", self._set_echo),
            (r"echo\?", lambda a: "Echo On\r" if self.echo else "Echo Off\r"),
            (r"xvoltage=(.*)", self._set_voltage),
            (r"xvoltage\?", lambda a: self._bracketed(self.voltage)),
            (r"xv([-+0-9.eE ]*)", self._set_voltage),  # MDT693A: XV<volts>
            (r"xr\?", lambda a: self._bracketed(self.voltage)),  # MDT693A: XR?
            (r"vlimit\?", lambda a: f"[{self.limit_switch_v:.0f}]\r"),
            (r"%", lambda a: f"[{self.limit_switch_v:.0f}]\r"),  # MDT693A: %
            (r"serial\?", lambda a: f"{self.serial}\r"),
            (r"friendly=(.*)", self._set_friendly),
            (r"friendly\?", lambda a: f"{self.friendly}\r"),
            (r"restore", lambda a: self._restore()),
        ]
        for pattern, handler in table:
            self._commands.append((re.compile(pattern, re.IGNORECASE | re.DOTALL), handler))

    def reset_state(self) -> None:
        """Power-on: echo on, output at 0 V (the friendly name and the switch persist)."""
        self.echo = True
        self.voltage = 0.0
        self.changed_at = time.monotonic()

    # commands ---------------------------------------------------------------------------------
    def _identity(self) -> str:
        lines = [
            MODEL,
            f"Firmware Version: {FIRMWARE}",
            f"Current Voltage Range: {self.limit_switch_v:.0f}V",
            f"Serial#: {self.serial}",
            f"Name: {self.friendly}",
        ]
        return "".join(line + "\r" for line in lines)

    def _help(self) -> str:
        commands = ("id?", "echo=", "echo?", "xvoltage=", "xvoltage?", "vlimit?", "serial?")
        commands += ("friendly=", "friendly?", "restore")
        return "".join(c + "\r" for c in commands)

    def _set_echo(self, args: str) -> str:
        value = args.strip()
        if value not in ("0", "1"):
            raise ArgumentInvalid
        self.echo = value == "1"
        return ""

    def _set_voltage(self, args: str) -> str:
        match = re.fullmatch(NUMBER, args)
        if not match:
            raise ArgumentInvalid
        volts = float(match.group(1))
        if not 0.0 <= volts <= self.limit_switch_v:
            raise ArgumentInvalid
        self.voltage = volts
        self.changed_at = time.monotonic()
        return ""

    @staticmethod
    def _bracketed(value: float) -> str:
        return f"[{value:7.2f}]\r"

    def _set_friendly(self, args: str) -> str:
        name = args.strip()
        if len(name) > FRIENDLY_MAX or not name.isprintable():
            raise ArgumentInvalid
        self.friendly = name
        return ""

    def _restore(self) -> str:
        """Factory settings: echo on, no friendly name."""
        self.echo = True
        self.friendly = ""
        return ""

    # the wire ---------------------------------------------------------------------------------
    def execute(self, message: Message) -> str:
        """Echo (if on), then the reply's lines; the server adds the '>' prompt."""
        text = message.text
        self.log.append(LoggedCommand(time.time(), text, None))
        echo = text + "\r" if self.echo else ""
        return echo + self._dispatch(text.strip())

    def _dispatch(self, text: str) -> str:
        for pattern, handler in self._commands:
            match = pattern.fullmatch(text)
            if match is None:
                continue
            try:
                return handler(match.group(1) if match.groups() else "")
            except ArgumentInvalid:
                return ARG_INVALID
        return NOT_DEFINED

    def state(self) -> dict:
        return {
            "voltage_v": self.voltage,
            "echo": self.echo,
            "limit_switch_v": self.limit_switch_v,
            "friendly": self.friendly,
        }
