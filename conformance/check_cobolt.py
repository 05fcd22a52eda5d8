"""Conformance: the simulated Cobolt lasers driven by independent drivers, nothing from qnode.

    python conformance/check_cobolt.py RESOURCE_MAP_JSON

microscope's `microscope.lights.cobolt.CoboltLaser` (written against a 04 series laser) drives
the 04-01 laser and the 06-01 laser; pylablib's `pylablib.devices.Hubner.Cobolt` (written for
the 06 series, MLD/DPL) drives the 06-01 laser. Each step's read-back is checked, and at the
end each laser's fault code (`f?`) is 0 and its interlock closed. One line per checked item;
the exit status is non-zero if any failed.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

LASER_04 = "A.laser_red"
"""The lab file's 04-01 series laser (model = "04-01")."""
LASER_06 = "A.laser_green"
"""A 06-01 series laser (the simulated lab's default series)."""
POWER_TOLERANCE_W = 1e-4

failures: list[str] = []
passes: list[str] = []


def check(item: str, step: Callable[[], Any], expected: Callable[[Any], bool]) -> Any:
    """Run one step, print one line, remember a failure (an exception counts as one)."""
    try:
        value = step()
    except Exception as error:  # a driver error is a failed item, not the end of the run
        failures.append(item)
        print(f"FAIL {item}: {type(error).__name__}: {error}")
        traceback.print_exc(limit=2, file=sys.stdout)
        return None
    if expected(value):
        passes.append(item)
        print(f"ok   {item}: {value!r}")
    else:
        failures.append(item)
        print(f"FAIL {item}: got {value!r}")
    return value


def near(target_w: float) -> Callable[[Any], bool]:
    return lambda value: abs(float(value) - target_w) <= POWER_TOLERANCE_W


def ramped(read: Callable[[], float], target_w: float, timeout_s: float = 2.0) -> float:
    """The emitted power once it reached `target_w` (a laser ramps up after it is turned on),
    or the last reading after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    value = float(read())
    while abs(value - target_w) > POWER_TOLERANCE_W and time.monotonic() < deadline:
        time.sleep(0.01)
        value = float(read())
    return value


def check_microscope(label: str, port: str) -> None:
    from microscope.lights.cobolt import CoboltLaser

    who = f"microscope {label}"
    # connect: sn?, @cobas 0, gmlp?, then its initialize(): @cobasdr 0, @cob1
    laser = check(f"{who}: connect", lambda: CoboltLaser(com=port, timeout=1.0), bool)
    if laser is None:
        return
    # no close here: microscope's own __del__ shuts the device down again on its open port
    check(f"{who}: identify (sn?)", lambda: laser.send(b"sn?").decode(), str.isdigit)
    check(f"{who}: autostart off (@cobas?)", lambda: laser.send(b"@cobas?"), _is(b"0"))
    check(f"{who}: on after initialize (@cob1)", laser.get_is_on, _true)
    check(f"{who}: maximum power (gmlp?)", lambda: laser._max_power_mw, lambda v: v == 500)
    check(f"{who}: disable (l0)", lambda: (laser.disable(), laser.get_is_on())[1], _false)
    check(f"{who}: enable (l1)", lambda: (laser.enable(), laser.get_is_on())[1], _true)
    check(f"{who}: set power 10 mW (@cobasp)", lambda: _set_power(laser, 0.02), _none)
    check(f"{who}: read power (pa?)", lambda: ramped(lambda: laser.power * 0.5, 0.010), near(0.010))
    check(f"{who}: set point (p?)", lambda: float(laser.send(b"p?")), near(0.010))
    status = check(f"{who}: status", laser.get_status, lambda s: len(s) == 5)
    if status is not None:
        check(f"{who}: status says on", lambda: status[0], lambda s: s.endswith(" 1"))
    check(f"{who}: current (i?)", lambda: float(laser.send(b"i?")), lambda v: v > 0)
    check(f"{who}: clear fault (cf)", laser.clearFault, lambda s: s[3].endswith(" 0"))
    check(f"{who}: disable again", lambda: (laser.disable(), laser.get_is_on())[1], _false)
    check(f"{who}: power while off", lambda: laser.power, lambda v: v == 0.0)
    check(f"{who}: no fault at the end (f?)", lambda: laser.send(b"f?"), _is(b"0"))
    check(f"{who}: interlock closed (ilk?)", lambda: laser.send(b"ilk?"), _is(b"0"))
    check(f"{who}: shutdown (l0, @cob0)", laser.shutdown, _none)


def _set_power(laser: Any, fraction: float) -> None:
    laser.power = fraction


def check_pylablib(label: str, port: str) -> None:
    from pylablib.devices import Hubner

    who = f"pylablib {label}"
    laser = check(f"{who}: connect", lambda: Hubner.Cobolt(port), bool)
    if laser is None:
        return
    try:
        check(f"{who}: serial number (gsn?)", lambda: laser.query("gsn?"), str.isdigit)
        check(f"{who}: model (glm?)", lambda: laser.query("glm?"), lambda m: "-06-" in m)
        check(f"{who}: firmware (gfv?)", lambda: laser.query("gfv?"), bool)
        check(f"{who}: autostart off (@cobas 0)", lambda: laser.query("@cobas 0"), _is("OK"))
        check(f"{who}: autostart read (@cobas?)", laser.is_autostart_enabled, _false)
        check(
            f"{who}: disable (@cob0)", lambda: (laser.enable(False), laser.is_enabled())[1], _false
        )
        check(f"{who}: set power 20 mW (p)", lambda: _pylablib_power(laser, 0.02), near(0.02))
        check(f"{who}: enable (@cob1)", lambda: (laser.enable(True), laser.is_enabled())[1], _true)
        check(
            f"{who}: output power (pa?)",
            lambda: ramped(laser.get_output_power, 0.02),
            near(0.02),
        )
        check(f"{who}: maximum power (gmlp?)", laser.get_max_output_power, near(0.5))
        check(f"{who}: current (rlc?)", laser.get_output_current, lambda v: v > 0)
        check(f"{who}: current set point (glc?)", laser.get_output_current_setpoint, _number)
        check(f"{who}: operating mode (gom?)", laser.get_operating_mode, _is("continuous"))
        check(f"{who}: key switch (@cobasks?)", laser.get_key_switch, _true)
        check(f"{who}: interlock closed (ilk?)", laser.get_interlock, _true)
        check(f"{who}: clear fault (cf)", laser.clear_error, _is("none"))
        check(f"{who}: disable again", lambda: (laser.enable(False), laser.is_enabled())[1], _false)
        check(f"{who}: no fault at the end (f?)", laser.get_error_state, _is("none"))
    finally:
        laser.close()


def _pylablib_power(laser: Any, watts: float) -> float:
    laser.set_output_power(watts, set_mode=False)
    return laser.get_output_power_setpoint()


def _true(value: Any) -> bool:
    return value is True


def _false(value: Any) -> bool:
    return value is False


def _none(value: Any) -> bool:
    return value is None


def _number(value: Any) -> bool:
    return isinstance(value, float)


def _is(expected: Any) -> Callable[[Any], bool]:
    return lambda value: value == expected


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        resources = json.load(f)["resources"]
    check_microscope(f"{LASER_04} (04-01)", resources[LASER_04])
    check_microscope(f"{LASER_06} (06-01)", resources[LASER_06])
    check_pylablib(f"{LASER_06} (06-01)", resources[LASER_06])
    print(f"check_cobolt: {len(passes)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
