"""Simulated Thorlabs MDT694B: a single-channel open-loop piezo controller on a serial line.

A plain high-voltage source for the interferometer's fibre stretcher, nothing more: no lock,
no set point, no reference light (the phase lock runs in qnode's midpoint software; the
stretcher's phase per volt is the midpoint physics', sim_backends/photonics.py).

What it follows (docs/instruments.md, "Piezo driver"): the MDT693B/MDT694B user guide was not
at hand. The replies are those recorded from real MDT694B and MDT693B units (firmware 1.10)
in the public repository jekktmoeder/Thorlabs_MDT (`mdt_command_discovery_results.json`,
`mdt_working_commands_results.json`): the unit's own command list (`?`), the lines of `id?`,
`serial?`, `xmin?`/`xmax?`, `CMD_NOT_DEFINED>` for `*IDN?`; and those the independent
drivers parse: pylablib 1.4.5 `MDT69xA` (the MDT693A interface `I`, `XV<volts>`, `XR?`, `%`,
reading back the echo of every command) and the `mdt69x` package (`echo?` answering
"Echo On"/"Echo Off", `xvoltage?` answering `[value]`, `cm=` switching the MDT693A/694A
compatibility mode that those legacy commands need).

- Commands end with CR; a query's reply is its lines, each ended by CR, then the '>' prompt;
  a set answers the prompt alone.
- Echo is on at power-up: every character of a command comes back before the reply.
  `echo=0` switches it off until the next power cycle (or `echo=1`, `restore`).
- `vlimit?` reports the front-panel output limit switch as the unit's list says (0=75 V,
  1=100 V, 2=150 V); an output voltage outside 0..limit is refused with `CMD_ARG_INVALID`
  and leaves the output as it was (assumed: refused, not clamped).
- `xvoltage?` reads the output back as the unit measures it, not the set value: a small
  offset and jitter, as the recorded units read 0.24/0.21/0.22 V (READBACK_OFFSET_V,
  READBACK_JITTER_V; the size is the recording's, the model of it assumed).
- Error replies: `CMD_NOT_DEFINED` (unknown command), `CMD_ARG_INVALID` (a bad argument),
  with the prompt and no CR.
- Compatibility mode (`cm=1`, kept through a power cycle like the friendly name, cleared by
  `restore`): the MDT693A commands pylablib sends are served too (`I`, `XV<v>`, `XR?`, `%`),
  in this unit's framing (assumed: the recorded units were probed with it off).
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Callable

import numpy as np

from sim_backends.device import Device, LoggedCommand
from sim_backends.framing import Message

MODEL = "Model MDT694B Piezo Control Module"
FIRMWARE = "1.10"
LIMIT_SWITCH_V = (75.0, 100.0, 150.0)
"""The front panel's output limit switch positions, `vlimit?` 0, 1, 2."""
MAX_OUTPUT_V = 150.5
"""`xmax?` of the recorded units: the output's own ceiling."""
READBACK_OFFSET_V = 0.22
READBACK_JITTER_V = 0.02
"""`xvoltage?` answers the measured output: set value + offset + uniform jitter (the recorded
MDT693B read 0.24, 0.21, 0.22 V)."""
HISTORY = 256
"""Output changes remembered for the midpoint's physics (the light of a past count period)."""
FRIENDLY_MAX = 64
NOT_DEFINED = "CMD_NOT_DEFINED"
ARG_INVALID = "CMD_ARG_INVALID"
NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
HELP = (
    ("?", "the list of commands"),
    ("ID?", "product header and firmware version"),
    ("RESTORE", "restores the default settings"),
    ("ECHO?", "echo status"),
    ("ECHO=", "echo on or off (1, 0)"),
    ("VLIMIT?", "output limit switch (0=75V, 1=100V, 2=150V)"),
    ("XVOLTAGE?", "output voltage"),
    ("XVOLTAGE=", "sets the output voltage"),
    ("XMIN?", "minimum output voltage"),
    ("XMAX?", "maximum output voltage"),
    ("FRIENDLY?", "friendly name"),
    ("FRIENDLY=", "sets the friendly name"),
    ("SERIAL?", "serial number"),
    ("CM?", "compatibility mode (0=Off, 1=On)"),
    ("CM=", "sets compatibility mode (0=Off, 1=On)"),
)
"""What this simulated unit serves of the real one's list (`?`): the commands, in its order;
the descriptions are this file's."""

Handler = Callable[[str], str]


class ArgumentInvalid(Exception):
    """The command is known but its argument is not acceptable."""


class NotDefined(Exception):
    """Not a command in the unit's present mode."""


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
        self.compatibility = False
        self.rng = np.random.default_rng(serial)
        self.xmax_v = MAX_OUTPUT_V
        """`xmax?`: the unit's own ceiling (a test may lower it, as a unit's soft limit)."""
        self._times: list[float] = []
        self._volts: list[float] = []
        super().__init__(name)

    def setup(self) -> None:
        self._commands.clear()  # no IEEE 488.2 common commands on this unit
        table: list[tuple[str, Handler]] = [
            (r"id\?", lambda a: self._identity()),
            (r"\?", lambda a: "".join(f"{c}\t\t{what}\r" for c, what in HELP)),
            (r"restore", lambda a: self._restore()),
            (r"echo=(.*)", self._set_echo),
            (r"echo\?", lambda a: "Echo On\r" if self.echo else "Echo Off\r"),
            (r"vlimit\?", lambda a: f"{LIMIT_SWITCH_V.index(self.limit_switch_v)}\r"),
            (r"xvoltage=(.*)", self._set_voltage),
            (r"xvoltage\?", lambda a: self._bracketed(self.measured_voltage())),
            (r"xmin\?", lambda a: "0\r"),
            (r"xmax\?", lambda a: f"{self.xmax_v:.2f}\r"),
            (r"friendly=(.*)", self._set_friendly),
            (r"friendly\?", lambda a: f"{self.friendly}\r"),
            (r"serial\?", lambda a: f"{self.serial}\r"),
            (r"cm=(.*)", self._set_compatibility),
            (r"cm\?", lambda a: f"{int(self.compatibility)}\r"),
            # the MDT693A interface, in compatibility mode only
            (r"i", lambda a: self._legacy(self._identity)),
            (r"xv([-+0-9.eE ]*)", lambda a: self._legacy(lambda: self._set_voltage(a))),
            (r"xr\?", lambda a: self._legacy(lambda: self._bracketed(self.measured_voltage()))),
            (r"%", lambda a: self._legacy(lambda: f"[{self.limit_switch_v:.0f}]\r")),
        ]
        for pattern, handler in table:
            self._commands.append((re.compile(pattern, re.IGNORECASE | re.DOTALL), handler))

    def reset_state(self) -> None:
        """Power-on: echo on, output at 0 V (the friendly name, the compatibility mode and
        the switch persist)."""
        self.echo = True
        self._set_output(0.0)

    def _set_output(self, volts: float) -> None:
        self.voltage = volts
        self.changed_at = time.monotonic()
        self._times.append(self.changed_at)
        self._volts.append(volts)
        if len(self._times) > HISTORY:
            del self._times[:-HISTORY], self._volts[:-HISTORY]

    def voltage_at(self, when: float) -> float:
        """The output at monotonic time `when` (its set value; before the remembered changes:
        the oldest one)."""
        k = bisect.bisect_right(self._times, when) - 1
        return self._volts[max(k, 0)] if self._volts else self.voltage

    def measured_voltage(self) -> float:
        """What `xvoltage?` reads: the output measured, a little off the set value."""
        jitter = float(self.rng.uniform(-READBACK_JITTER_V, READBACK_JITTER_V))
        return max(0.0, self.voltage + READBACK_OFFSET_V + jitter)

    # commands ---------------------------------------------------------------------------------
    def _identity(self) -> str:
        lines = [
            MODEL,
            f"Firmware Version: {FIRMWARE}",
            "Voltage Range: 0V to 150V",
            f"Serial#:{self.serial}",
            f"Friendly Name:{self.friendly}",
            "Thorlabs, Inc. Newton, NJ 07860",
            "www.thorlabs.com",
            "",
        ]
        return "".join(line + "\r" for line in lines)

    def _legacy(self, reply: Callable[[], str]) -> str:
        if not self.compatibility:
            raise NotDefined
        return reply()

    def _set_compatibility(self, args: str) -> str:
        value = args.strip()
        if value not in ("0", "1"):
            raise ArgumentInvalid
        self.compatibility = value == "1"
        return ""

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
        if not 0.0 <= volts <= min(self.limit_switch_v, self.xmax_v):
            raise ArgumentInvalid
        self._set_output(volts)
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
        """Default settings: echo on, no friendly name, compatibility mode off."""
        self.echo = True
        self.friendly = ""
        self.compatibility = False
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
            except NotDefined:
                return NOT_DEFINED
        return NOT_DEFINED

    def state(self) -> dict:
        return {
            "voltage_v": self.voltage,
            "echo": self.echo,
            "limit_switch_v": self.limit_switch_v,
            "friendly": self.friendly,
            "compatibility": self.compatibility,
        }
