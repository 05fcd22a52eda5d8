"""Conformance: pylablib's Thorlabs MDT69xA driver against the simulated MDT694B piezo driver.

    python conformance/check_mdt694b.py RESOURCE_MAP_JSON

Imports nothing of qnode: the independent driver (pylablib.devices.Thorlabs.MDT69xA, the
MDT693A command interface it uses for the B units too, reading the echo of every command)
connects to the serial device the resource map names for the midpoint's piezo driver,
identifies it, sets and reads back voltages, reads the front-panel voltage limit, and checks
that every reply was free of the unit's error texts (CMD_NOT_DEFINED, CMD_ARG_INVALID; the
unit has no error queue). The B unit serves the MDT693A commands in its compatibility mode:
the check switches it on first with pyserial (`cm=1`, as a lab using pylablib would once),
and off again at the end. One line per checked item; exit status 1 on any failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import serial
from pylablib.devices import Thorlabs

INSTRUMENT_ROLE_NAME = "piezo"
READ_BACK_V = 0.3
"""The unit reads its output back measured, a few tenths of a volt off the set value (the
recorded MDT693B read 0.21-0.24 V)."""
"""The midpoint's piezo driver in labs/sim_two_node.toml: `<node>.piezo`."""

failures: list[str] = []
passes: list[str] = []


def check(item: str, test: Callable[[], object]) -> object:
    try:
        result = test()
    except Exception as e:  # every failure is reported, then the run goes on
        failures.append(item)
        print(f"FAIL {item}: {type(e).__name__}: {e}")
        return None
    passes.append(item)
    print(f"ok   {item}: {result}")
    return result


def expect(value: object, wanted: Callable[[object], bool], what: str) -> object:
    if not wanted(value):
        raise AssertionError(f"{value!r} is not {what}")
    return value


def main(resource_map: str) -> int:
    resources = json.loads(Path(resource_map).read_text())["resources"]
    names = [n for n in resources if n.split(".")[-1] == INSTRUMENT_ROLE_NAME]
    if not names:
        print(f"FAIL no '<node>.{INSTRUMENT_ROLE_NAME}' in the resource map: {sorted(resources)}")
        return 1
    port = resources[names[0]]
    check("compatibility mode on (cm=1, pyserial)", lambda: compatibility(port, True))
    piezo = check(f"connect to {names[0]} at {port}", lambda: Thorlabs.MDT69xA(port))
    if piezo is None:
        return 1
    try:
        check(
            "identify (I)",
            lambda: expect(piezo.get_id(), lambda r: "MDT694B" in r, "an MDT694B identity"),
        )
        limit = check(
            "voltage limit (%): the front-panel switch",
            lambda: expect(piezo.get_voltage_range(), lambda v: v in (75, 100, 150), "75/100/150"),
        )
        for volts in (12.5, 40.0, 0.0):
            check(
                f"set {volts} V (XV) and read back (XR?)",
                lambda v=volts: expect(
                    piezo.set_voltage(v), lambda r, v=v: abs(r - v) < READ_BACK_V, f"{v} V"
                ),
            )
            check(
                f"voltage reads {volts} V",
                lambda v=volts: expect(
                    piezo.get_voltage(), lambda r, v=v: abs(r - v) < READ_BACK_V, v
                ),
            )
        if limit:  # (pylablib's settings would also ask channels y and z: a 693B's)
            check(
                f"{limit + 10:g} V over the limit switch is refused, the output kept",
                lambda: over_limit(piezo, float(limit) + 10.0),
            )
        check(
            "no error text in any reply, still answering",
            lambda: expect(piezo.ask("echo?"), lambda r: r.strip() == "Echo On", "Echo On"),
        )
    finally:
        piezo.close()
        check("compatibility mode off (cm=0)", lambda: compatibility(port, False))
    print(f"check_mdt694b: {len(passes)} passed, {len(failures)} failed")
    return 1 if failures else 0


def compatibility(port: str, on: bool) -> str:
    """`cm=1|0` over a plain serial line: the prompt comes back, with the echo or without."""
    with serial.Serial(port, 115200, timeout=2.0) as line:
        line.reset_input_buffer()
        line.write(f"cm={int(on)}\r".encode())
        reply = line.read_until(b">")
    if not reply.endswith(b">") or b"CMD_" in reply:
        raise AssertionError(f"reply {reply!r}")
    return reply.decode("ascii", "replace").replace("\r", " ").strip()


def over_limit(piezo, volts: float) -> str:
    """The unit answers CMD_ARG_INVALID and keeps its output; pylablib's set_voltage writes
    without reading a reply and returns the voltage it reads back."""
    before = piezo.get_voltage()
    after = piezo.set_voltage(volts)
    if abs(after - before) > 0.1:  # both measured: a little jitter
        raise AssertionError(f"the output went from {before} V to {after} V")
    return f"refused, output still {after} V"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
