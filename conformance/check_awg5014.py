"""QCoDeS's TektronixAWG5014 on node A's simulated AWG: its initialisation, every settable
parameter set and read back, a waveform upload with `send_waveform_to_list` and its read-back
(whole and a span), a sequence with the driver's sequence-element functions, run and stop,
then the instrument's error queue and event status clean.

Run by `make conformance` as `python conformance/check_awg5014.py RESOURCE_MAP_JSON` in the
conformance environment (QCoDeS, not qnode: this file imports nothing from qnode).

The simulated AWG is served on a raw socket, as a real AWG5014 serves one (its "socket
server", port 4000 by default): there a message ends with LF, the only end-of-message a raw
socket can carry (VXI-11 and GPIB have END). QCoDeS therefore needs `terminator="\\n"`, and
its `send_waveform_to_list`, which writes the block with `write_raw` and no terminator (on
VXI-11 or GPIB the write's END ends the message), is followed by the LF the socket needs.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
from qcodes.instrument_drivers.tektronix import TektronixAWG5014

INSTRUMENT = "A.awg"
WAVEFORM = "conformance"
POINTS = 1000

INSTRUMENT_SETTINGS: dict[str, object] = {
    "clock_source": "EXT",
    "ref_source": "EXT",
    "DC_output": 1,
    "trigger_impedance": 1000,
    "trigger_level": 0.5,
    "trigger_slope": "NEG",
    "trigger_source": "INT",
    "event_polarity": "NEG",
    "event_impedance": 50,
    "event_level": -0.75,
    "event_jump_timing": "SYNC",
    "clock_freq": 1e9,
    "trigger_mode": "GAT",
    "run_mode": "TRIG",
}
"""A value for every settable parameter of the instrument that is not the *RST value, so a
read-back proves the set (trigger_mode is run_mode's other name: set first, then run_mode)."""

NOT_SETTINGS = {"IDN", "timeout", "state", "setup_filename", "sequence_length", "sequence_pos"}
"""Read-only (state, setup_filename: not served, see docs/instruments.md), or set by the
sequence part below (sequence_length, sequence_pos)."""


def channel_settings(ch: int) -> dict[str, object]:
    filters = {1: 20e6, 2: 100e6, 3: float("inf"), 4: 20e6}
    return {
        "state": 1,
        "amp": 0.25 * ch,
        "offset": 0.1 * ch - 0.25,
        "direct_output": 1,
        "add_input": '"ESIG"',
        "filter": filters[ch],
        "DC_out": 0.5 * ch - 0.75,
        "waveform": WAVEFORM,
        "m1.delay": 0.25,
        "m1.high": 1.5,
        "m1.low": -0.5,
        "m2.delay": 0.75,
        "m2.high": 2.0,
        "m2.low": 0.25,
    }


def same(expected: object, got: object) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        try:
            return math.isclose(float(got), float(expected), rel_tol=1e-6, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return str(got).strip() == str(expected)


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, text: str) -> None:
        self.passed += ok
        self.failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {text}")

    def parameter(self, name: str, parameter, value: object, expected: object) -> None:
        try:
            parameter.set(value)
            got = parameter.get()
        except Exception as e:  # the check reports every parameter, then fails
            self.check(False, f"{name} = {value!r}: {type(e).__name__}: {e}")
            return
        self.check(same(expected, got), f"{name}: set {value!r}, read back {got!r}")


def expected_words(w: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """The INT words send_waveform_to_list makes (its own formula, the manual's format)."""
    return (8191 + 8191 * w + 2**14 * m1 + 2**15 * m2).astype("int").astype("<u2")


def main(resource_map: str) -> int:
    with open(resource_map) as f:
        address = json.load(f)["resources"][INSTRUMENT]
    report = Report()
    awg = TektronixAWG5014("awg", address, visalib="@py", terminator="\n", timeout=10)
    try:
        idn = awg.IDN()
        report.check(
            idn.get("vendor") == "TEKTRONIX" and idn.get("model") == "AWG5014C", f"IDN = {idn}"
        )
        # its __init__ set the trigger impedance to 50 Ohm and asked for the clock
        report.check(awg.trigger_impedance() == 50.0, "set-up: trigger_impedance 50 Ohm")
        awg.reset()
        report.check(awg.trigger_impedance() == 1000.0, "*RST: trigger_impedance 1 kOhm")

        # a waveform in the list, from QCoDeS's own upload
        t = np.arange(POINTS)
        w = 0.8 * np.sin(2 * np.pi * t / 100)
        m1 = (t % 50 < 10).astype(int)
        m2 = (t % 200 < 5).astype(int)
        awg.send_waveform_to_list(w, m1, m2, WAVEFORM)
        awg.visa_handle.write_raw(b"\n")  # the raw socket's end of message
        words = expected_words(w, m1, m2)
        report.check(awg.ask(f'WLISt:WAVeform:TYPE? "{WAVEFORM}"') == "INT", "waveform type INT")
        length = awg.ask(f'WLISt:WAVeform:LENGth? "{WAVEFORM}"')
        report.check(length == str(POINTS), f"waveform length {length}")
        back = awg.visa_handle.query_binary_values(
            f'WLISt:WAVeform:DATA? "{WAVEFORM}"', datatype="H", container=np.array
        )
        report.check(np.array_equal(back, words), f"waveform read back ({len(back)} points)")
        span = awg.visa_handle.query_binary_values(
            f'WLISt:WAVeform:DATA? "{WAVEFORM}",10,4', datatype="H", container=np.array
        )
        report.check(np.array_equal(span, words[10:14]), f"points 10..13 read back: {span}")
        size = awg.ask("WLISt:SIZE?")
        report.check(size == "1", f"WLISt:SIZE? = {size}")
        name = awg.ask("WLISt:NAME? 0")
        report.check(name == f'"{WAVEFORM}"', f"WLISt:NAME? 0 = {name}")

        # every settable parameter of the instrument and of its channels and markers
        names = sorted(set(awg.parameters) - NOT_SETTINGS)
        for parameter_name in names:
            if parameter_name not in INSTRUMENT_SETTINGS:
                report.check(False, f"{parameter_name}: a parameter this check has no value for")
        for parameter_name, value in INSTRUMENT_SETTINGS.items():
            report.parameter(parameter_name, awg.parameters[parameter_name], value, value)
        report.check(awg.trigger_mode() == "TRIG", "trigger_mode reads run_mode: TRIG")
        for ch in range(1, awg.num_channels + 1):
            channel = awg.submodules[f"ch{ch}"]
            settings = channel_settings(ch)
            declared = {n for n in channel.parameters} | {
                f"{m}.{n}" for m in ("m1", "m2") for n in channel.submodules[m].parameters
            }
            for missing in sorted(declared - set(settings)):
                report.check(False, f"ch{ch}.{missing}: a parameter this check has no value for")
            for key, value in settings.items():
                owner, _, parameter_name = key.rpartition(".")
                holder = channel.submodules[owner] if owner else channel
                expected: object = value
                if parameter_name == "delay":
                    expected = float(value) * 1e-9  # set in ns, the instrument answers s
                parameter = holder.parameters[parameter_name]
                report.parameter(f"ch{ch}.{key}", parameter, value, expected)

        # a sequence: three elements with the driver's sequence-element functions
        awg.sequence_length.set(3)
        report.check(awg.sequence_length() == 3, "sequence_length 3")
        for element in (1, 2, 3):
            for ch in (1, 2):
                awg.set_sqel_waveform(WAVEFORM, ch, element)
        got = awg.get_sqel_waveform(2, 3)
        report.check(got == f'"{WAVEFORM}"', f"element 3 channel 2 waveform {got}")
        got = awg.get_sqel_waveform(3, 1)
        report.check(got == '""', f"element 1 channel 3 (none) {got}")
        awg.set_sqel_loopcnt(25, 1)
        report.check(awg.get_sqel_loopcnt(1) == "25", "element 1 loop count 25")
        awg.set_sqel_loopcnt_to_inf(3, 1)
        got = awg.ask("SEQuence:ELEMent3:LOOP:INFinite?")
        report.check(got == "1", f"element 3 infinite loop {got}")
        got = awg.set_sqel_trigger_wait(1, 1)
        report.check(got == "1", f"element 1 waits for a trigger: {got}")
        report.check(awg.get_sqel_trigger_wait(2) == "0", "element 2 does not wait")
        awg.set_sqel_goto_state(2, 1)
        awg.set_sqel_goto_target_index(2, 1)
        got = awg.ask("SEQuence:ELEMent2:GOTO:STATe?") + "," + awg.ask("SEQ:ELEM2:GOTO:IND?")
        report.check(got == "1,1", f"element 2 goes to 1: {got}")
        awg.set_sqel_event_jump_type(1, "INDEX")
        awg.set_sqel_event_target_index(1, 3)
        awg.set_sqel_event_jump_target_index(2, 1)
        got = awg.ask("SEQ:ELEM1:JTAR:TYPE?") + "," + awg.ask("SEQ:ELEM1:JTAR:IND?")
        report.check(got == "IND,3", f"element 1 event jump: {got}")
        report.check(awg.get_sq_mode() == "HARD", "sequencer type HARD")
        awg.sequence_pos.set(2)
        report.check(int(awg.sequence_pos()) == 2, "sequence_pos 2 (jump)")

        # run and stop in sequence mode
        awg.run_mode.set("SEQ")
        awg.all_channels_on()
        state = awg.run()
        report.check(state == "Waiting for trigger", f"run: {state}")
        awg.force_trigger()
        awg.force_trigger_event()
        awg.force_event()
        report.check(awg.is_awg_ready(), "*OPC? answered")
        awg.stop()
        report.check(awg.get_state() == "Idle", "stop: Idle")
        awg.all_channels_off()
        report.check(
            all(awg.submodules[f"ch{ch}"].state() == 0 for ch in (1, 2, 3, 4)),
            "all channels off",
        )
        awg.delete_all_waveforms_from_list()
        report.check(awg.ask("WLISt:SIZE?") == "0", "waveform list empty after DELete ALL")

        error = awg.get_error()
        report.check(error == '0,"No error"', f"SYSTem:ERRor:NEXT? = {error}")
        esr = int(awg.ask("*ESR?"))
        report.check(esr & 0b0011_1100 == 0, f"*ESR? = {esr} (no error bits)")
    finally:
        awg.close()
    print(f"check_awg5014: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
