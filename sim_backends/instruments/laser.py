"""Simulated Cobolt laser (04-01 series or 06-01 series) on a serial line.

Written from Cobolt's own host software (the vendor's `pycobolt` library and its Micro-Manager
adapter, which identify a laser by `gfv?`/`glm?` and drive both series) and from the
independent drivers labs use (pylablib's Hubner `Cobolt`, microscope's `CoboltLaser`); the
owner's manuals themselves were not at hand (docs/instruments.md says what came from where).

Wire format: a command ends with CR (a following LF, as pylablib sends, is ignored); every
command answers one line ending CR LF: a set answers "OK", a query its value, anything the
series does not know "Syntax error: illegal command", a known command with a bad argument
"Syntax error: illegal parameter".

Modelled: the emission state and power set point (what the node's optics use), constant power
and constant current modes with a linear diode (the current follows the power and back), the
key switch (on), the interlock (a test may open it), the fault code, the autostart setting
(`@cobas`, factory default on, kept over a power cycle): with autostart on, a power-up starts
the laser by itself and `l1` is refused, as `l1` needs autostart off; `@cob1` runs the
autostart sequence whatever the setting, `@cob0` stops.

Turn-on: the emitted power (`pa?`, and the light the optics see) rises after `l1` as
1 - exp(-t / turn_on_s), not at once. The owner's manuals' turn-on times were not at hand:
the time constants (SeriesModel.turn_on_s) are this file's assumption, slow for the 04-01's
DPSS cavity, a few milliseconds for the 06-01 diode laser, so that software that counts light
right after `l1` sees less than it asked for.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sim_backends.device import CommandError, Device, number
from sim_backends.framing import Message
from sim_backends.node import SimLaserState

MAX_POWER_W = 0.5
ILLEGAL_COMMAND = "Syntax error: illegal command"
ILLEGAL_PARAMETER = "Syntax error: illegal parameter"
SERIES = ("04-01", "06-01")

# gom? (operating mode) and gam? (run mode) codes, as Cobolt's pycobolt names them
MODE_OFF, MODE_WAITING_FOR_KEY, MODE_CONTINUOUS, MODE_FAULT, MODE_ABORTED = 0, 1, 2, 5, 6
RUN_CONSTANT_CURRENT, RUN_CONSTANT_POWER, RUN_MODULATION = 0, 1, 2
# f? codes (pycobolt, pylablib): 0 none, 1 temperature, 3 interlock, 4 constant power timeout
FAULT_NONE, FAULT_INTERLOCK = 0, 3


@dataclass(frozen=True)
class SeriesModel:
    """What differs between the series: the current's unit and the simulated diode."""

    current_unit: float
    """Amperes per unit of slc/glc?/i?: 1 (A) on the 04-01 (DPSS pump diode), 1e-3 (mA) on
    the 06-01 (pylablib and pycobolt read 06-01 currents in mA, 04-01 ones in A)."""
    threshold_a: float
    slope_w_per_a: float
    model_number: str | None
    """The `glm?` reply (06-01 only); wavelength-series-type-power-..., the layout Cobolt's
    Micro-Manager adapter parses ('-06-01-' is the 06-MLD)."""
    firmware: str
    turn_on_s: float
    """Time constant of the emitted power's rise after `l1` (assumed, see the module)."""

    @property
    def max_current_a(self) -> float:
        return self.threshold_a + MAX_POWER_W / self.slope_w_per_a


MODELS = {
    # a DPSS laser's pump diode: amperes, a high threshold; firmware without a '.', which is
    # how Cobolt's pycobolt tells a 04-series laser
    "04-01": SeriesModel(1.0, 0.8, 0.2, None, "4001", 0.1),
    # a 06-MLD diode laser: milliamperes; its model number answers glm?
    "06-01": SeriesModel(1e-3, 0.04, 1.0, "0638-06-01-0500-100", "1.0.6-sim", 0.003),
}


class SimLaser(Device):
    terminator = b"\r"
    reply_terminator = b"\r\n"
    allow_blocks = False
    scpi_headers = False

    def __init__(self, name: str, laser: SimLaserState, serial: int, series: str) -> None:
        if series not in MODELS:
            raise ValueError(f"{name}: Cobolt series {series!r} is not one of {SERIES}")
        self.laser = laser
        self.serial = serial
        self.series = series
        self.spec = MODELS[series]
        # kept over a power cycle (the laser's non-volatile settings)
        self.autostart = True
        self.operating_hours = 1234.5
        # the lab's hardware, not the laser's settings
        self.key_on = True
        self.interlock_open = False
        self.on_since = 0.0
        """When emission last started (monotonic)."""
        super().__init__(name)

    # the command set -------------------------------------------------------------------------
    def setup(self) -> None:
        self._commands.clear()  # Cobolt speaks its own dialect, not SCPI
        spec, laser = self.spec, self.laser
        self.add("l?", lambda a: "1" if laser.enabled else "0")
        self.add("l1", lambda a: self._emission_on_by_command())
        self.add("l0", lambda a: self._stop())
        self.add("@cob1", lambda a: self._autostart_sequence())
        self.add("@cob0", lambda a: self._stop())
        self.add("@cobas?", lambda a: "1" if self.autostart else "0")
        self.add("@cobas", lambda a: self._ok(setattr(self, "autostart", _flag(a))))
        self.add("@cobasdr?", lambda a: "1" if self.direct_input else "0")
        self.add("@cobasdr", lambda a: self._ok(setattr(self, "direct_input", _flag(a))))
        self.add("@cobasp", lambda a: self._set_power(a))  # the autostart's power set point
        self.add("p?", lambda a: f"{self.power_setpoint_w:.6f}")
        self.add("p", lambda a: self._set_power(a))
        self.add("pa?", lambda a: f"{self.output_power_w():.6f}")
        self.add("slc", lambda a: self._set_current(a))
        self.add("glc?", lambda a: f"{self.current_setpoint_a / spec.current_unit:.4f}")
        self.add("i?", lambda a: f"{self.drive_current_a() / spec.current_unit:.4f}")
        self.add("gmlp?", lambda a: f"{MAX_POWER_W * 1e3:.4f}")  # mW, both drivers divide
        self.add("cp", lambda a: self._ok(setattr(self, "run_mode", RUN_CONSTANT_POWER)))
        self.add("ci", lambda a: self._ok(setattr(self, "run_mode", RUN_CONSTANT_CURRENT)))
        self.add("gam?", lambda a: str(self.run_mode))
        self.add("gom?", lambda a: str(self.operating_mode()))
        self.add("f?", lambda a: str(self.fault))
        self.add("cf", lambda a: self._clear_fault())
        self.add("ilk?", lambda a: "1" if self.interlock_open else "0")
        self.add("hrs?", lambda a: f"{self.operating_hours:.2f}")
        self.add("sn?", lambda a: str(self.serial))
        self.add("gfv?", lambda a: spec.firmware)
        if self.series == "04-01":
            self.add("leds?", lambda a: str(self._leds()))
        else:
            self.add("gsn?", lambda a: str(self.serial))
            self.add("glm?", lambda a: spec.model_number)
            self.add("gmlc?", lambda a: f"{spec.max_current_a / spec.current_unit:.4f}")
            self.add("rlc?", lambda a: f"{self.drive_current_a() / spec.current_unit:.4f}")
            self.add("@cobasks?", lambda a: "1" if self.key_on else "0")
            self.add("em", lambda a: self._ok(setattr(self, "run_mode", RUN_MODULATION)))

    # behaviour ---------------------------------------------------------------------------------
    @staticmethod
    def _ok(_: object = None) -> str:
        return "OK"

    def _can_emit(self) -> bool:
        return self.key_on and not self.interlock_open and self.fault == FAULT_NONE

    def _emission_on_by_command(self) -> str:
        """l1: emission on; needs autostart off (the laser's own sequence owns it otherwise)."""
        if self.autostart:
            return ILLEGAL_COMMAND
        if self._can_emit():
            self._emit(True)
        return "OK"

    def _autostart_sequence(self) -> str:
        """@cob1: restart through the autostart sequence (warm-up taken as instantaneous)."""
        self.aborted = False
        if self._can_emit():
            self._emit(True)
        return "OK"

    def _stop(self) -> str:
        self._emit(False)
        self.aborted = True
        return "OK"

    def _clear_fault(self) -> str:
        if not self.interlock_open:
            self.fault = FAULT_NONE
        return "OK"

    def _emit(self, on: bool) -> None:
        if on and not self.laser.enabled:
            self.on_since = time.monotonic()
        self.laser.enabled = on
        self._update_output()

    def _set_power(self, args: str) -> str:
        self.power_setpoint_w = _value(args, MAX_POWER_W)
        self._update_output()
        return "OK"

    def _set_current(self, args: str) -> str:
        self.current_setpoint_a = _value(args, self.spec.max_current_a / self.spec.current_unit)
        self.current_setpoint_a *= self.spec.current_unit
        self._update_output()
        return "OK"

    def _update_output(self) -> None:
        """The power the optics see while emitting: the set point in constant power, the
        diode's power at the set current in constant current."""
        if self.run_mode == RUN_CONSTANT_CURRENT:
            spec = self.spec
            self.laser.power_w = max(0.0, (self.current_setpoint_a - spec.threshold_a)) * (
                spec.slope_w_per_a
            )
        else:
            self.laser.power_w = self.power_setpoint_w

    def output_power_w(self, at: float | None = None) -> float:
        """The power emitted at monotonic time `at` (now): rising after `l1` (turn_on_s)."""
        if not self.laser.enabled:
            return 0.0
        since = (time.monotonic() if at is None else at) - self.on_since
        if since <= 0:
            return 0.0
        return self.laser.power_w * (1.0 - math.exp(-since / self.spec.turn_on_s))

    @property
    def enabled(self) -> bool:
        """Emission on (the midpoint's physics asks)."""
        return self.laser.enabled

    def drive_current_a(self) -> float:
        if not self.laser.enabled:
            return 0.0
        if self.run_mode == RUN_CONSTANT_CURRENT:
            return self.current_setpoint_a
        return self.spec.threshold_a + self.laser.power_w / self.spec.slope_w_per_a

    def operating_mode(self) -> int:
        if self.fault != FAULT_NONE:
            return MODE_FAULT
        if self.laser.enabled:
            return MODE_CONTINUOUS
        if not self.key_on:
            return MODE_WAITING_FOR_KEY
        return MODE_ABORTED if self.aborted else MODE_OFF

    def _leds(self) -> int:
        """04-01 `leds?`: bit 0 power, bit 1 laser on, bit 2 lock, bit 3 error."""
        on = self.laser.enabled
        return 1 | (2 if on else 0) | (4 if on else 0) | (8 if self.fault else 0)

    # what the lab and tests do to it ---------------------------------------------------------
    def set_interlock_open(self, is_open: bool) -> None:
        """The interlock loop: opening it stops emission with fault 3 until `cf` after closing."""
        self.interlock_open = is_open
        if is_open:
            self.fault = FAULT_INTERLOCK
            self._emit(False)

    def reset_state(self) -> None:
        """Power-up: volatile settings back to their defaults; with autostart on and the key
        on, the laser starts by itself (the factory default a lab user must know about)."""
        self.laser.enabled = False
        self.power_setpoint_w = 0.0
        self.current_setpoint_a = 0.0
        self.run_mode = RUN_CONSTANT_POWER
        self.direct_input = False
        self.fault = FAULT_INTERLOCK if self.interlock_open else FAULT_NONE
        self.aborted = False
        self._update_output()
        if self.autostart and self._can_emit():
            self._emit(True)

    def unknown_command(self, message: Message) -> str:
        return ILLEGAL_COMMAND

    def error_reply(self, error: CommandError) -> str:
        return ILLEGAL_PARAMETER

    def state(self) -> dict:
        return {
            "enabled": self.laser.enabled,
            "power_w": self.laser.power_w,
            "emitted_w": self.output_power_w(),
            "series": self.series,
            "autostart": self.autostart,
            "run_mode": self.run_mode,
            "fault": self.fault,
            "interlock_open": self.interlock_open,
        }


def _flag(args: str) -> bool:
    text = args.strip()
    if text not in ("0", "1"):
        raise CommandError(-224, f"illegal parameter {args[:20]!r}")
    return text == "1"


def _value(args: str, high: float) -> float:
    """One number in 0..high: a missing, extra or out-of-range argument is refused."""
    if len(args.split()) != 1:
        raise CommandError(-109, f"expected one number, got {args[:20]!r}")
    return number(args, 0.0, high)
