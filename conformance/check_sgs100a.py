"""QCoDeS's RohdeSchwarzSGS100A on node A's simulated microwave source: every parameter of
the driver set and read back, then the instrument's error queue and event status clean.

Run by `make conformance` as `python conformance/check_sgs100a.py RESOURCE_MAP_JSON` in the
conformance environment (QCoDeS, not qnode: this file imports nothing from qnode).
"""

from __future__ import annotations

import json
import math
import sys

from qcodes.instrument_drivers.rohde_schwarz import RohdeSchwarzSGS100A

INSTRUMENT = "A.mw"

SETTINGS: dict[str, object] = {
    "frequency": 2.87e9,
    "phase": 45.5,
    "power": -12.5,
    "status": True,
    "IQ_state": True,
    "pulsemod_state": True,
    "pulsemod_source": "EXT",
    "ref_osc_source": "EXT",
    "LO_source": "EXT",
    "ref_LO_out": "REF",
    "ref_osc_output_freq": "100MHz",
    "ref_osc_external_freq": "1000MHz",
    "IQ_impairments": True,
    "I_offset": 2.5,
    "Q_offset": -3.25,
    "IQ_gain_imbalance": 0.5,
    "IQ_angle": -4.0,
    "trigger_connector_mode": "PVO",
    "pulsemod_delay": 1e-6,
    "pulsemod_double_delay": 2e-6,
    "pulsemod_double_width": 3e-7,
    "pulsemod_mode": "DOUB",
    "pulsemod_period": 1e-5,
    "pulsemod_polarity": "INV",
    "pulsemod_trig_ext_gate_polarity": "INV",
    "pulsemod_trig_ext_impedance": "G10K",
    "pulsemod_trig_ext_slope": "NEG",
    "pulsemod_trig_mode": "EGAT",
    "pulsemod_width": 5e-7,
    "operation_mode": "BBBYpass",
}
"""A value for every parameter (not the *RST value, so a read-back proves the set)."""

NOT_SETTINGS = {"IDN", "timeout"}
READ_BACK = {"ref_osc_output_freq": "100MHZ", "ref_osc_external_freq": "1000MHZ"}
"""Character data reads back in the instrument's short form, upper case."""


def same(expected: object, got: object) -> bool:
    if isinstance(expected, bool):
        return got is expected
    if isinstance(expected, float):
        return isinstance(got, float) and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
    short = "".join(c for c in str(expected) if c.isupper() or c.isdigit())
    return str(got).upper() in (str(expected).upper(), short)


def main(resource_map: str) -> int:
    with open(resource_map) as f:
        address = json.load(f)["resources"][INSTRUMENT]
    failures = 0
    names: list[str] = []
    sgs = RohdeSchwarzSGS100A("sgs", address, visalib="@py", timeout=5)
    try:
        idn = sgs.IDN()
        ok = idn.get("vendor") == "Rohde&Schwarz" and idn.get("model") == "SGS100A"
        failures += not ok
        print(f"{'OK  ' if ok else 'FAIL'} IDN = {idn}")
        sgs.reset()
        names = sorted(set(sgs.parameters) - NOT_SETTINGS)
        for name in names:
            if name not in SETTINGS:
                failures += 1
                print(f"FAIL {name}: a parameter of the driver this check has no value for")
                continue
            value = SETTINGS[name]
            try:
                sgs.parameters[name].set(value)
                got = sgs.parameters[name].get()
            except Exception as e:  # the check reports every parameter, then fails
                failures += 1
                print(f"FAIL {name} = {value!r}: {type(e).__name__}: {e}")
                continue
            expected = READ_BACK.get(name, value)
            ok = same(expected, got)
            failures += not ok
            print(f"{'OK  ' if ok else 'FAIL'} {name}: set {value!r}, read back {got!r}")
        sgs.status(False)
        error = sgs.ask("SYST:ERR?")
        ok = error == '0,"No error"'
        failures += not ok
        print(f"{'OK  ' if ok else 'FAIL'} SYST:ERR? = {error}")
        esr = int(sgs.ask("*ESR?"))
        ok = esr & 0b0011_1100 == 0  # no query, device, execution or command error
        failures += not ok
        print(f"{'OK  ' if ok else 'FAIL'} *ESR? = {esr} (no error bits)")
    finally:
        sgs.close()
    checked = 1 + len(names) + 2
    print(f"check_sgs100a: {checked - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
